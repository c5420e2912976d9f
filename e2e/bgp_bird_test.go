package e2e

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgptest"
	"github.com/weftnet/weft/internal/testbed"
)

// BIRD 2 as the site's router between two underlay subnets, the pool
// routed natively: workloads on different subnets reach each other only
// through BGP (the router learns the nodes' blocks over eBGP and routes
// them; each node learns the other subnet's blocks over the mesh, whose
// next hop lies beyond its subnet and is resolved through the router).
// The router's own routes are installed (proto 88), BIRD receives from
// each node only that node's blocks, and the peers are node-specific
// BGPPeers selected by label, applied and deleted at runtime.
func TestBGPWithBIRDRouterBetweenSubnets(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 3, Subnets: 2, ExtraTOML: bgpNativeTOML, HostTOML: rackTOML})
	hosts := site.Hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	if h1.Subnet() != 0 || h2.Subnet() != 0 || h3.Subnet() != 1 {
		t.Fatalf("subnets %d %d %d", h1.Subnet(), h2.Subnet(), h3.Subnet())
	}
	w1 := wlAttach(t, site, h1, "w1")
	w2 := wlAttach(t, site, h2, "w2")
	w3 := wlAttach(t, site, h3, "w3")

	// The mesh crosses the router: h1 has h3's block via the router,
	// but the router knows no block yet, so nothing crosses subnets.
	bgptest.WaitSessions(t, h1, 30*time.Second, h2.Address(), h3.Address())
	bgptest.Eventually(t, "h1 routes h3's block via the router (recursive next hop)", 20*time.Second, func() error {
		via, err := bgptest.RouteVia(h1, blockOf(w3.ip))
		if err != nil || via != h1.Gateway() {
			return fmt.Errorf("via %q (%v), want %s", via, err, h1.Gateway())
		}
		return nil
	})
	site.ExpectWithin(30*time.Second,
		testbed.Reach(w1.Netns(), w2.ip, testbed.Ping()),
		testbed.NoReach(w1.Netns(), w3.ip, testbed.Ping()),
		testbed.NoReach(w3.Netns(), w2.ip, testbed.Ping()))

	// The router: BIRD with every node as an eBGP neighbour, on its
	// defaults; the nodes peer with it through BGPPeers applied now.
	r := bgptest.StartBIRD(t, site.Router(), "bird-router",
		bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: bgptest.NodePeers(hosts, false), Static: []string{"198.51.100.0/24"}}.Config())
	applyYAML(t, h1, rackPeers(site, false))
	sn := site.Subnets()
	bgptest.WaitSessions(t, h1, 30*time.Second, sn[0].RouterAddr().String())
	bgptest.WaitSessions(t, h3, 30*time.Second, sn[1].RouterAddr().String())
	site.ExpectWithin(30*time.Second,
		testbed.Reach(w1.Netns(), w3.ip, testbed.Ping()),
		testbed.Reach(w3.Netns(), w1.ip, testbed.Ping()),
		testbed.Reach(w2.Netns(), w3.ip, testbed.TCP(wlPort)))

	// BIRD has each node's block from that node only: no node passes
	// another's blocks to an eBGP peer.
	routes, err := r.Routes()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		ip   string
		host *testbed.Host
	}{{w1.ip, h1}, {w2.ip, h2}, {w3.ip, h3}} {
		if got := routes[blockOf(w.ip)]; got != w.host.Name() {
			t.Errorf("BIRD's best route to %s (%s's block) comes from %q", blockOf(w.ip), w.host.Name(), got)
		}
		out, err := r.Birdc("show", "route", "protocol", w.host.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, other := range []string{w1.ip, w2.ip, w3.ip} {
			if other != w.ip && blockOf(other) != blockOf(w.ip) && strings.Contains(out, blockOf(other)+" ") {
				t.Errorf("%s passed another node's block %s to the router:\n%s", w.host.Name(), blockOf(other), out)
			}
		}
	}
	// The router's own route is in every node's kernel, weft's BGP
	// protocol, via the router on its subnet.
	for _, h := range hosts {
		h := h
		bgptest.Eventually(t, h.Name()+" installs the router's route", 10*time.Second, func() error {
			ls, err := bgptest.LearnedRoutes(h)
			if err != nil {
				return err
			}
			want := "198.51.100.0/24 via " + h.Gateway()
			for _, l := range ls {
				if l == want {
					return nil
				}
			}
			return fmt.Errorf("learned routes %v, want %q", ls, want)
		})
	}

	// Status: calicoctl's table, -o json, `weft bgp routes`, metrics.
	out, err := h1.Weft("node", "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"IPv4 BGP status", "PEER ADDRESS", "node-to-node mesh", "node specific", "Established", "No IPv6 peers found."} {
		if !strings.Contains(out, want) {
			t.Errorf("weft node status lacks %q:\n%s", want, out)
		}
	}
	br, err := bgpRoutesOf(h1)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rt := range br {
		if rt.Prefix == "198.51.100.0/24" && rt.FromPeer == sn[0].RouterAddr().String() && rt.Best && !rt.Stale && rt.NextHop == sn[0].RouterAddr().String() {
			found = true
		}
	}
	if !found {
		t.Errorf("weft bgp routes lacks the router's route: %+v", br)
	}
	metrics := scrapeMetrics(t, h1)
	for _, want := range []string{
		fmt.Sprintf(`bgp_peer_up{peer=%q,type="node specific"} 1`, sn[0].RouterAddr()),
		fmt.Sprintf(`bgp_peer_up{peer=%q,type="node-to-node mesh"} 1`, h3.Address()),
		fmt.Sprintf(`weft_bgp_prefixes_received{peer=%q} `, sn[0].RouterAddr()),
		fmt.Sprintf(`weft_bgp_prefixes_advertised{peer=%q} 1`, sn[0].RouterAddr()),
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A BGPPeer deleted at runtime: h3's session to the router goes, the
	// router forgets h3's block, cross-subnet traffic stops; applied
	// again, it is back.
	if out, err := h1.Weft("delete", "bgppeer", "rack-1"); err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	bgptest.Eventually(t, "h3's session to the router removed", 10*time.Second, func() error {
		st, err := bgptest.Status(h3)
		if err != nil {
			return err
		}
		if _, ok := bgptest.PeerOf(st, sn[1].RouterAddr().String()); ok {
			return fmt.Errorf("still a session: %+v", st.Peers)
		}
		return nil
	})
	bgptest.Eventually(t, "the router forgot h3's block", 10*time.Second, func() error {
		routes, err := r.Routes()
		if err != nil {
			return err
		}
		if p, ok := routes[blockOf(w3.ip)]; ok {
			return fmt.Errorf("still routed, from %s", p)
		}
		return nil
	})
	site.ExpectWithin(20*time.Second, testbed.NoReach(w1.Netns(), w3.ip, testbed.Ping()))
	applyYAML(t, h1, rackPeers(site, false))
	bgptest.WaitSessions(t, h3, 30*time.Second, sn[1].RouterAddr().String())
	site.ExpectWithin(30*time.Second, testbed.Reach(w1.Netns(), w3.ip, testbed.Ping()))
}

// scrapeMetrics fetches h's /metrics over the underlay.
func scrapeMetrics(t *testing.T, h *testbed.Host) string {
	t.Helper()
	resp, err := h.Netns().HTTPClient(5 * time.Second).Get(fmt.Sprintf("http://%s:%d/metrics", h.Address(), testbed.MetricsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
