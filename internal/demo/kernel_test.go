package demo

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
	"github.com/weftnet/weft/internal/site"
)

// weftRoutes shows the routes carrying weft's protocol in the main table,
// sorted and formatted as `ip route show proto 87`, and nothing else.
func TestKernelWeftRoutes(t *testing.T) {
	ns := nstest.New(t, "d")
	nl := ns.Netlink()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(lo, &netlink.Addr{IPNet: site.IPNet(netip.MustParsePrefix("198.51.100.1/24"))}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []netlink.Route{
		{Dst: site.IPNet(netip.MustParsePrefix("10.250.80.64/26")), Type: unix.RTN_BLACKHOLE, Protocol: dataplane.RouteProtocol},
		{Dst: site.IPNet(netip.MustParsePrefix("10.250.80.1/32")), LinkIndex: lo.Attrs().Index, Scope: netlink.SCOPE_LINK, Protocol: dataplane.RouteProtocol},
		{Dst: site.IPNet(netip.MustParsePrefix("10.250.81.0/26")), Gw: netip.MustParseAddr("198.51.100.2").AsSlice(), LinkIndex: lo.Attrs().Index, Protocol: dataplane.RouteProtocol},
		{Dst: site.IPNet(netip.MustParsePrefix("10.250.82.0/26")), LinkIndex: lo.Attrs().Index, Scope: netlink.SCOPE_LINK}, // not weft's
		{Dst: site.IPNet(netip.MustParsePrefix("10.250.83.0/26")), Type: unix.RTN_BLACKHOLE, Protocol: dataplane.RouteProtocol, Table: 100},
	} {
		if err := nl.RouteAdd(&r); err != nil {
			t.Fatalf("add %v: %v", r, err)
		}
	}
	rs, err := weftRoutes(nl, unix.RT_TABLE_MAIN)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, r.format(false))
	}
	want := "10.250.80.1 dev lo scope link\nblackhole 10.250.80.64/26\n10.250.81.0/26 via 198.51.100.2 dev lo"
	if strings.Join(got, "\n") != want {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), want)
	}
}
