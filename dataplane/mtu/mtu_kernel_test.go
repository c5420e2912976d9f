package mtu

import (
	"net/netip"
	"testing"

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
