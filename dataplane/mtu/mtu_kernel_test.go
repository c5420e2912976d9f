package mtu

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

func TestDetect(t *testing.T) {
	node, peer := nstest.New(t, "n"), nstest.New(t, "p")
	nstest.Veth(t, node, "upl", netip.MustParsePrefix("192.168.80.1/24"), peer, "x", netip.Prefix{})
	nstest.Veth(t, node, "eth0", netip.Prefix{}, peer, "y", netip.Prefix{})
	nstest.Veth(t, node, "eth1", netip.Prefix{}, peer, "z", netip.Prefix{})
	node.Run("ip", "link", "set", "upl", "mtu", "1400")
	node.Run("ip", "link", "set", "eth0", "mtu", "9000")
	node.Run("ip", "link", "set", "eth1", "mtu", "1480")

	u, err := Detect(Config{NetNS: node.Path}, netip.MustParseAddr("192.168.80.1"))
	if err != nil || u != (Underlay{MTU: 1400, Iface: "upl", How: "address"}) {
		t.Errorf("by address: %+v, %v", u, err)
	}
	u, err = Detect(Config{NetNS: node.Path}, netip.MustParseAddr("192.0.2.1"))
	if err != nil || u != (Underlay{MTU: 1480, Iface: "eth1", How: "pattern"}) {
		t.Errorf("by pattern: %+v, %v", u, err)
	}
	empty := nstest.New(t, "e")
	u, err = Detect(Config{NetNS: empty.Path})
	if err != nil || u != (Underlay{MTU: Fallback, How: "fallback"}) {
		t.Errorf("fallback: %+v, %v", u, err)
	}
}

// TestWatchReportsMTUChanges: Watch reports the links at once and again
// when an interface's MTU changes; ignored interfaces never appear.
func TestWatchReportsMTUChanges(t *testing.T) {
	node, peer := nstest.New(t, "n"), nstest.New(t, "p")
	nstest.Veth(t, node, "eth0", netip.MustParsePrefix("192.168.81.1/24"), peer, "x", netip.Prefix{})
	nstest.Veth(t, node, "weftabc", netip.Prefix{}, peer, "y", netip.Prefix{})
	got := make(chan []dataplane.Link, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, Config{NetNS: node.Path, Ignore: func(n string) bool { return strings.HasPrefix(n, "weft") }},
			[]netip.Addr{netip.MustParseAddr("192.168.81.1")}, func(ls []dataplane.Link) { got <- ls })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	mtuOf := func(ls []dataplane.Link, name string) int {
		for _, l := range ls {
			if strings.HasPrefix(l.Name, "weft") {
				t.Errorf("ignored interface %s reported", l.Name)
			}
			if l.Name == name {
				return l.MTU
			}
		}
		return 0
	}
	waitFor := func(want int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ls := <-got:
				if mtuOf(ls, "eth0") == want {
					u, err := dataplane.SelectUnderlay(ls, nil)
					if err != nil || u.MTU != want || u.How != "address" {
						t.Errorf("selected %+v, %v; want %d by address", u, err, want)
					}
					return
				}
			case <-deadline:
				t.Fatalf("no report with eth0 at MTU %d", want)
			}
		}
	}
	waitFor(1500)
	node.Run("ip", "link", "set", "eth0", "mtu", "1400")
	waitFor(1400)
	node.Run("ip", "link", "set", "weftabc", "mtu", "1300") // ignored: no report needed
	node.Run("ip", "link", "set", "eth0", "mtu", "9000")
	waitFor(9000)
}
