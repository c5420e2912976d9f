package node

import (
	"net/netip"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestDetectAddress(t *testing.T) {
	tests := []struct {
		name    string
		in      interfaceAddrs
		want    string
		wantErr string
	}{
		{"default route interface wins", interfaceAddrs{DefaultRoute: addrs("192.0.2.10"), All: addrs("127.0.0.1", "10.1.1.1", "192.0.2.10")}, "192.0.2.10", ""},
		{"v4 preferred over v6 on the default route", interfaceAddrs{DefaultRoute: addrs("2001:db8::1", "192.0.2.10")}, "192.0.2.10", ""},
		{"link-local on the default route skipped", interfaceAddrs{DefaultRoute: addrs("fe80::1", "169.254.3.3", "2001:db8::5")}, "2001:db8::5", ""},
		{"only non-loopback address", interfaceAddrs{All: addrs("127.0.0.1", "::1", "fe80::1", "10.9.8.7")}, "10.9.8.7", ""},
		{"several candidates", interfaceAddrs{All: addrs("127.0.0.1", "10.9.8.7", "10.9.9.9")}, "", "several addresses (10.9.8.7, 10.9.9.9); set node.address"},
		{"nothing", interfaceAddrs{All: addrs("127.0.0.1")}, "", "no default route and no non-loopback address; set node.address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := detectAddress(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}
