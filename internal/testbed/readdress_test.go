package testbed

import (
	"net/netip"
	"testing"
)

func TestLastAddr(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{
		{"10.200.7.0/24", "10.200.7.255"},
		{"10.200.7.0/23", "10.200.7.255"},
		{"10.200.6.0/23", "10.200.7.255"},
		{"192.0.2.64/26", "192.0.2.127"},
		{"192.0.2.5/32", "192.0.2.5"},
		{"10.0.0.0/8", "10.255.255.255"},
	} {
		if got := lastAddr(netip.MustParsePrefix(tc.prefix)); got.String() != tc.want {
			t.Errorf("lastAddr(%s) = %s, want %s", tc.prefix, got, tc.want)
		}
	}
}
