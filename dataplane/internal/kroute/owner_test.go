package kroute

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
)

func TestDescribe(t *testing.T) {
	names := func(i int) string { return map[int]string{2: "eth0"}[i] }
	for _, tc := range []struct {
		nr   netlink.Route
		want string
	}{
		{netlink.Route{Dst: IPNet(netip.MustParsePrefix("10.0.0.0/26")), Type: unix.RTN_UNICAST, LinkIndex: 2, Gw: net.ParseIP("192.168.1.1"), Protocol: unix.RTPROT_STATIC},
			"10.0.0.0/26 via 192.168.1.1 dev eth0 proto static"},
		{netlink.Route{Dst: IPNet(netip.MustParsePrefix("10.0.0.5/32")), Type: unix.RTN_BLACKHOLE, LinkIndex: 1, Protocol: unix.RTPROT_BOOT},
			"blackhole 10.0.0.5/32 proto boot"},
		{netlink.Route{Family: netlink.FAMILY_V6, Type: unix.RTN_UNICAST, LinkIndex: 9, Gw: net.ParseIP("fe80::1"), Protocol: unix.RTPROT_RA, Priority: 1024},
			"::/0 via fe80::1 dev if9 proto ra metric 1024"},
		{netlink.Route{Dst: IPNet(netip.MustParsePrefix("10.0.0.0/8")), Type: unix.RTN_UNICAST, Protocol: dataplane.RouteProtocol,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: 2, Gw: net.ParseIP("192.168.1.1")}, {LinkIndex: 3, Gw: net.ParseIP("192.168.2.1")}}},
			"10.0.0.0/8 nexthop via 192.168.1.1 dev eth0 nexthop via 192.168.2.1 dev if3 proto 87"},
	} {
		if got := Describe(tc.nr, names); got != tc.want {
			t.Errorf("Describe = %q, want %q", got, tc.want)
		}
	}
}

func TestHoldingMatchesDestinationAndWeftsMetric(t *testing.T) {
	v4 := netip.MustParsePrefix("10.0.0.0/26")
	v6 := netip.MustParsePrefix("fd00::/64")
	r := func(dst netip.Prefix, metric int) netlink.Route {
		return netlink.Route{Dst: IPNet(dst), Table: unix.RT_TABLE_MAIN, Priority: metric, Protocol: unix.RTPROT_STATIC}
	}
	all := []netlink.Route{
		r(v4, 0), r(v4, 100), r(netip.MustParsePrefix("10.0.0.0/25"), 0),
		r(v6, 1024), r(v6, 0) /* as a fake kernel stores it */, r(v6, 256),
	}
	if got := Holding(all, v4); len(got) != 1 || got[0].Priority != 0 {
		t.Errorf("v4: %+v", got)
	}
	if got := Holding(all, v6); len(got) != 2 {
		t.Errorf("v6: %+v", got)
	}
	if err := Conflict(v4, Holding(all, v4), nil); !errors.Is(err, dataplane.ErrForeignRoute) {
		t.Errorf("conflict: %v", err)
	}
	weft := r(v4, 0)
	weft.Protocol = dataplane.RouteProtocol
	if err := Conflict(v4, []netlink.Route{weft}, nil); err != nil {
		t.Errorf("weft's own route is a conflict: %v", err)
	}
}
