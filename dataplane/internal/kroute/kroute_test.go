package kroute

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
)

func TestRoundTrip(t *testing.T) {
	for _, r := range []dataplane.Route{
		{Dst: netip.MustParsePrefix("10.0.0.0/26"), Type: dataplane.RouteBlackhole},
		{Dst: netip.MustParsePrefix("10.0.0.1/32"), Dev: "weft1"},
		{Dst: netip.MustParsePrefix("10.1.0.0/26"), Dev: "weft.vxlan", Via: netip.MustParseAddr("10.1.0.0"), OnLink: true},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0", Via: netip.MustParseAddr("192.168.1.1"), Src: netip.MustParseAddr("192.168.1.2")},
		{Dst: netip.MustParsePrefix("fd00::/64"), Dev: "eth0", Via: netip.MustParseAddr("fe80::1")},
		{Dst: netip.MustParsePrefix("fd00::1/128"), Dev: "weft1"},
	} {
		k := FromDesired(r, 7)
		nr := k.Netlink()
		if nr.Protocol != dataplane.RouteProtocol || nr.Table != unix.RT_TABLE_MAIN {
			t.Errorf("%s: not marked as weft's: %+v", r, nr)
		}
		back, ok := FromNetlink(*nr)
		if !ok || back != k {
			t.Errorf("%s: round trip %+v → %+v", r, k, back)
		}
	}
}

// Learned routes carry their own protocol and metric, and keep them
// through the kernel's form.
func TestLearnedRouteRoundTrip(t *testing.T) {
	for _, r := range []dataplane.Route{
		{Dst: netip.MustParsePrefix("10.2.0.0/26"), Class: dataplane.RouteClassBGP, Via: netip.MustParseAddr("192.168.1.1"), Recursive: true},
		{Dst: netip.MustParsePrefix("fd00:2::/64"), Class: dataplane.RouteClassBGP, Via: netip.MustParseAddr("fd00::1"), Recursive: true},
	} {
		k := FromDesired(r, 3)
		nr := k.Netlink()
		if int(nr.Protocol) != dataplane.RouteProtocolBGP || nr.Priority != r.Metric() || !IsWeft(*nr) {
			t.Errorf("%s: %+v", r, nr)
		}
		back, ok := FromNetlink(*nr)
		if !ok || back != k {
			t.Errorf("%s: round trip %+v → %+v", r, k, back)
		}
	}
}

func TestFromNetlinkNormalisesKernelForms(t *testing.T) {
	// The kernel reports IPv6 blackholes on lo and IPv6 routes with
	// universe scope; a 16-byte IPv4 gateway is still IPv4.
	bh, ok := FromNetlink(netlink.Route{Dst: IPNet(netip.MustParsePrefix("fd00::/64")), Type: unix.RTN_BLACKHOLE, LinkIndex: 1, Protocol: dataplane.RouteProtocol})
	if !ok || bh != FromDesired(dataplane.Route{Dst: netip.MustParsePrefix("fd00::/64"), Type: dataplane.RouteBlackhole}, 0) {
		t.Errorf("v6 blackhole %+v", bh)
	}
	gw, ok := FromNetlink(netlink.Route{Dst: IPNet(netip.MustParsePrefix("10.0.0.0/8")), Type: unix.RTN_UNICAST, LinkIndex: 3, Gw: net.ParseIP("192.168.1.1")})
	if !ok || gw.Gw != netip.MustParseAddr("192.168.1.1") {
		t.Errorf("gateway %+v", gw)
	}
	if _, ok := FromNetlink(netlink.Route{Dst: IPNet(netip.MustParsePrefix("10.0.0.0/8")), MultiPath: []*netlink.NexthopInfo{{}}}); ok {
		t.Error("multipath accepted")
	}
}
