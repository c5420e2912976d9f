package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
)

// Dual stack: with an IPv4 and an IPv6 pool, `weft workload add` gives
// every workload one address of each family, and IPv6 blocks are routed
// natively between nodes that share an IPv6 subnet (the test bed's hosts
// do), so every pair of workloads reaches each other over IPv6 too.
func TestWorkloadsDualStackNative(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 3, IPv6: true, ExtraTOML: `
[[network.pool]]
name = "native-ipv4"
cidr = "10.245.0.0/16"
vxlan_mode = "Never"
nat_outgoing = true
[[network.pool]]
name = "native-ipv6"
cidr = "fd00:245::/48"
vxlan_mode = "Never"
`})
	ws := wlAttachTwoEach(t, site)
	v6 := map[*wlWorkload]string{}
	for _, w := range ws {
		for _, p := range w.info.IPs {
			if pp, err := netip.ParsePrefix(p); err == nil && pp.Addr().Is6() {
				if pp.Bits() != 128 || !netip.MustParsePrefix("fd00:245::/48").Contains(pp.Addr()) {
					t.Fatalf("%s got IPv6 %s, want a /128 from fd00:245::/48", w.Name(), p)
				}
				v6[w] = pp.Addr().String()
			}
		}
		if v6[w] == "" || w.info.Gateway6 == "" {
			t.Fatalf("%s: no IPv6 address or gateway: %+v", w.Name(), w.info)
		}
	}
	var checks []testbed.Check
	for _, a := range ws {
		for _, b := range ws {
			if a != b {
				checks = append(checks,
					testbed.Reach(a.Netns(), v6[b], testbed.Ping()),
					testbed.Reach(a.Netns(), b.ip, testbed.Ping()))
			}
		}
	}
	site.ExpectWithin(60*time.Second, checks...)

	// The routes: a blackhole for the node's own IPv6 block, and the other
	// nodes' blocks via their IPv6 underlay addresses, all weft's.
	hosts := site.Hosts()
	out, err := hosts[0].Exec("ip", "-6", "route", "show", "proto", "87")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "blackhole fd00:245:") {
		t.Errorf("h1 has no IPv6 blackhole for its own block:\n%s", out)
	}
	for _, h := range hosts[1:] {
		if !strings.Contains(out, fmt.Sprintf("via %s ", h.Address6())) {
			t.Errorf("h1 routes nothing via %s (%s):\n%s", h.Address6(), h.Name(), out)
		}
	}
	// Inside a workload: its /128 and the default route via the host
	// side's link-local address.
	in, err := ws[0].Exec("ip", "-6", "route", "show", "default")
	if err != nil || !strings.Contains(in, "via fe80::ecee:eeff:feee:eeee") {
		t.Errorf("workload's IPv6 default route %q (%v)", in, err)
	}
}
