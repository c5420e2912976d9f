package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/bgptest"
	"github.com/weftnet/weft/internal/testbed"
)

// Route reflectors as calicoctl's recipe sets them up, with weft's
// commands: the mesh turned off in BGPConfiguration (every TOML still says
// node_mesh = true), a node made a reflector with `weft patch node`,
// labelled with `weft label node`, and one BGPPeer making every node peer
// with the reflectors. A client learns another subnet's blocks from the
// reflector, next hop unchanged, and reaches them; the cluster ID an
// operator set survives the reflector's agent re-registering its Node.
func TestBGPRouteReflectors(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 4, Subnets: 2, ExtraTOML: bgpNativeTOML, HostTOML: rackTOML})
	hosts := site.Hosts()
	h1, h2, h3, h4 := hosts[0], hosts[1], hosts[2], hosts[3]
	if h2.Subnet() != 0 || h4.Subnet() != 1 {
		t.Fatalf("subnets: h2 %d, h4 %d", h2.Subnet(), h4.Subnet())
	}
	w2 := wlAttach(t, site, h2, "w2")
	w4 := wlAttach(t, site, h4, "w4")
	bgptest.StartBIRD(t, site.Router(), "bird-router",
		bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: bgptest.NodePeers(hosts, false)}.Config())
	applyYAML(t, h1, rackPeers(site, false))

	weft := func(h *testbed.Host, args ...string) string {
		t.Helper()
		out, err := h.Weft(args...)
		if err != nil {
			t.Fatalf("weft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	weft(h1, "patch", "bgpconfiguration", "default", "-p", `{"spec":{"nodeToNodeMeshEnabled":false}}`)
	for _, rr := range []*testbed.Host{h1, h3} {
		weft(h2, "patch", "node", rr.Name(), "-p", `{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}`)
		weft(h2, "label", "node", rr.Name(), "route-reflector=true")
	}
	applyYAML(t, h2, `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec: {nodeSelector: all(), peerSelector: route-reflector == 'true'}
`)
	sn := site.Subnets()
	// Clients peer with the reflectors and the router only.
	for _, c := range []*testbed.Host{h2, h4} {
		c := c
		router := sn[c.Subnet()].RouterAddr().String()
		bgptest.Eventually(t, c.Name()+": sessions to the reflectors and the router only", 60*time.Second, func() error {
			st, err := bgptest.Status(c)
			if err != nil {
				return err
			}
			var got []string
			for _, p := range st.Peers {
				if p.State != "up" {
					return fmt.Errorf("%s: %s %s", p.PeerAddress, p.State, p.Info)
				}
				got = append(got, p.PeerAddress+" "+p.PeerType)
			}
			want := []string{router + " node specific", h1.Address() + " node specific", h3.Address() + " node specific"}
			if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
				return fmt.Errorf("sessions %v, want %v", got, want)
			}
			return nil
		})
	}
	// The reflectors see the clients as such.
	bgptest.WaitSessions(t, h1, 60*time.Second, h2.Address(), h4.Address(), h3.Address())
	st, err := bgptest.Status(h1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testbed.Host{h2, h4} {
		if p, _ := bgptest.PeerOf(st, c.Address()); p.PeerType != "route reflector client" {
			t.Errorf("h1's session to %s: type %q", c.Name(), p.PeerType)
		}
	}
	// h2 learned h4's block from a reflector, next hop h4.
	bgptest.Eventually(t, "h2 learns h4's block through a reflector", 30*time.Second, func() error {
		rs, err := bgpRoutesOf(h2)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Prefix == blockOf(w4.ip) && r.Best && r.NextHop == h4.Address() && (r.FromPeer == h1.Address() || r.FromPeer == h3.Address()) {
				return nil
			}
		}
		return fmt.Errorf("BGP table %+v", rs)
	})
	site.ExpectWithin(30*time.Second,
		testbed.Reach(w2.Netns(), w4.ip, testbed.Ping()),
		testbed.Reach(w4.Netns(), w2.ip, testbed.TCP(wlPort)))

	// The reflector's agent re-registers its Node at start: the cluster
	// ID stays, and so do the labels set with weft label.
	if err := h1.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := weft(h2, "get", "node", "h1", "-o", "json")
	var n api.Node
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatal(err)
	}
	if n.Spec.BGP == nil || n.Spec.BGP.RouteReflectorClusterID != "244.0.0.1" || n.Metadata.Labels["route-reflector"] != "true" || n.Metadata.Labels["rack"] != "r0" {
		t.Fatalf("h1's Node after its restart: labels %v, bgp %+v", n.Metadata.Labels, n.Spec.BGP)
	}
}

// Passwords (TCP MD5): a BGPPeer's password.secretKeyRef names a file in
// each node's bgp.secrets_dir. With the router's password the session
// comes up; with a wrong one it does not; without the file the status says
// which file is missing, and once the file is right the session comes up.
func TestBGPPasswords(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 3, ExtraTOML: bgpNativeTOML, HostTOML: func(h *testbed.Host) string {
		return fmt.Sprintf("[bgp]\nsecrets_dir = %q\n", filepath.Join(h.Dir(), "secrets"))
	}})
	hosts := site.Hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	var peers []bgptest.Peer
	for _, h := range hosts {
		peers = append(peers, bgptest.Peer{Name: h.Name(), Addr: h.Address(), AS: 64512, Password: "s3cret-site"})
	}
	bgptest.StartBIRD(t, site.Router(), "bird-router", bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: peers, Static: []string{"198.51.100.0/24"}}.Config())
	secret := func(h *testbed.Host, value string) {
		t.Helper()
		dir := filepath.Join(h.Dir(), "secrets", "bgp")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "tor"), []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	secret(h1, "s3cret-site")
	secret(h2, "wrong")
	applyYAML(t, h1, fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: %q, asNumber: %d, password: {secretKeyRef: {name: bgp, key: tor}}}
`, site.RouterAddress(), bgptest.RouterAS))
	bgptest.WaitSessions(t, h1, 30*time.Second, site.RouterAddress())
	bgptest.Eventually(t, "h3 says its password file is missing", 20*time.Second, func() error {
		st, err := bgptest.Status(h3)
		if err != nil {
			return err
		}
		p, ok := bgptest.PeerOf(st, site.RouterAddress())
		if !ok || p.State != "down" || !strings.Contains(p.Info, "secrets/bgp/tor does not exist") {
			return fmt.Errorf("h3's session to the router: %+v", p)
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	st, err := bgptest.Status(h2)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := bgptest.PeerOf(st, site.RouterAddress()); p.State == "up" {
		t.Fatalf("h2's session came up with a wrong password: %+v", p)
	}
	secret(h2, "s3cret-site")
	secret(h3, "s3cret-site")
	bgptest.WaitSessions(t, h2, 60*time.Second, site.RouterAddress())
	bgptest.WaitSessions(t, h3, 60*time.Second, site.RouterAddress())
}

// IPv6: sessions over the nodes' IPv6 underlay (the mesh and the router),
// an IPv6 pool routed natively between two subnets only through BGP, like
// the IPv4 test.
func TestBGPIPv6BetweenSubnets(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 2, Subnets: 2, IPv6: true, HostTOML: rackTOML, ExtraTOML: `
[[network.pool]]
name = "native-v4"
cidr = "10.246.0.0/16"
vxlan_mode = "Never"
[[network.pool]]
name = "native-v6"
cidr = "fd00:246::/48"
vxlan_mode = "Never"
`})
	hosts := site.Hosts()
	h1, h2 := hosts[0], hosts[1]
	w1 := wlAttach(t, site, h1, "w1")
	w2 := wlAttach(t, site, h2, "w2")
	v6 := func(w *wlWorkload) string {
		for _, p := range w.info.IPs {
			if strings.Contains(p, ":") {
				return strings.Split(p, "/")[0]
			}
		}
		t.Fatalf("%s has no IPv6 address: %v", w.Name(), w.info.IPs)
		return ""
	}
	a1, a2 := v6(w1), v6(w2)
	bgptest.WaitSessions(t, h1, 30*time.Second, h2.Address(), h2.Address6())
	site.ExpectWithin(20*time.Second, testbed.NoReach(w1.Netns(), a2, testbed.Ping()))
	r := bgptest.StartBIRD(t, site.Router(), "bird-router",
		bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: bgptest.NodePeers(hosts, true), Static: []string{"2001:db8:99::/48"}}.Config())
	applyYAML(t, h1, rackPeers(site, true))
	sn := site.Subnets()
	bgptest.WaitSessions(t, h1, 30*time.Second, sn[0].RouterAddr6().String())
	bgptest.WaitSessions(t, h2, 30*time.Second, sn[1].RouterAddr6().String())
	site.ExpectWithin(30*time.Second,
		testbed.Reach(w1.Netns(), a2, testbed.Ping()),
		testbed.Reach(w2.Netns(), a1, testbed.Ping()),
		testbed.Reach(w1.Netns(), w2.ip, testbed.Ping()))
	routes, err := r.Routes()
	if err != nil {
		t.Fatal(err)
	}
	blk := func(a string) string {
		p, _ := netipPrefix(a, 122)
		return p
	}
	if routes[blk(a1)] != "h1_v6" || routes[blk(a2)] != "h2_v6" {
		t.Errorf("BIRD's IPv6 routes: %v", routes)
	}
	bgptest.Eventually(t, "the router's IPv6 route installed on h1", 10*time.Second, func() error {
		ls, err := bgptest.LearnedRoutes(h1)
		if err != nil {
			return err
		}
		for _, l := range ls {
			if strings.HasPrefix(l, "2001:db8:99::/48 via ") {
				return nil
			}
		}
		return fmt.Errorf("learned %v", ls)
	})
	out, err := h1.Weft("node", "status")
	if err != nil || !strings.Contains(out, "IPv6 BGP status") || !strings.Contains(out, sn[0].RouterAddr6().String()) {
		t.Errorf("node status (%v):\n%s", err, out)
	}
}
