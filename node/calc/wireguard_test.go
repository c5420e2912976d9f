package calc

import (
	"math/rand"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/store"
)

func wgKey(b byte) dataplane.WireGuardKey {
	var k dataplane.WireGuardKey
	for i := range k {
		k[i] = b
	}
	return k
}

// wgNode is a Node with WireGuard details; key "" publishes none.
func wgNode(t *testing.T, name, addr, vxlanTunnel, key, wgAddr string, ann map[string]string) store.Object {
	n := api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: addr}, IPv4VXLANTunnelAddr: vxlanTunnel}}
	n.Metadata.Name = name
	n.Metadata.Annotations = ann
	n.Status.WireguardPublicKey = key
	if wgAddr != "" {
		n.Spec.Wireguard = &api.NodeWireguardSpec{InterfaceIPv4Address: wgAddr}
	}
	return obj(t, api.KindNode, "", name, n)
}

var (
	k1, k2, k3 = wgKey(1), wgKey(2), wgKey(3)
	wgCfg      = func() Config {
		c := testCfg
		c.UnderlayMTU = 1500
		c.WireGuard = WireGuardConfig{Enabled: true, Interface: "weft.wg", ListenPort: 51820}
		return c
	}()
)

// wgScenario: n1 (this node) and n2 publish keys, n3 does not. n2 holds
// 10.244.0.9 borrowed from n1's block; in n2's block n1 holds 10.244.0.65
// (the local workload c) and n3 holds 10.244.0.67.
func wgScenario(t *testing.T) []store.Object {
	return []store.Object{
		wgNode(t, "n1", "192.168.7.1/24", "10.244.0.0", k1.String(), "10.244.0.1", nil),
		wgNode(t, "n2", "192.168.7.2/24", "10.244.0.64", k2.String(), "10.244.0.66", nil),
		wgNode(t, "n3", "192.168.8.3/24", "10.244.0.128", "", "", nil),
		pool(t, "p", "10.244.0.0/16", api.EncapAlways, true),
		block(t, "10.244.0.0/26", "n1", map[int]string{0: "n1", 1: "n1", 5: "n1", 9: "n2"}),
		block(t, "10.244.0.64/26", "n2", map[int]string{0: "n2", 2: "n2", 1: "n1", 3: "n3"}),
		block(t, "10.244.0.128/26", "n3", map[int]string{0: "n3"}),
		wep(t, "default", "a", "n1", "weft0123456789a", "10.244.0.5/32"),
		wep(t, "default", "c", "n1", "weftccccccccccc", "10.244.0.65/32"),
	}
}

func computeOut(t *testing.T, cfg Config, objs []store.Object) Output {
	t.Helper()
	c := New(cfg)
	for _, o := range objs {
		c.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	out, err := c.Compute(0)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// allRoutes lists every route as "table: route".
func allRoutes(rs []dataplane.Route) []string {
	var out []string
	for _, r := range rs {
		if r.Class == dataplane.RouteClassWorkload {
			continue
		}
		out = append(out, r.String())
	}
	sort.Strings(out)
	return out
}

func TestWireGuardPeersRoutesAndOnePath(t *testing.T) {
	out := computeOut(t, wgCfg, wgScenario(t))
	d := out.Desired
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"10.244.0.128/26 via 10.244.0.128 dev weft.vxlan onlink", // n3: no key, VXLAN as its pool says
		"10.244.0.64/26 dev weft.wg table 87",
		"10.244.0.67/32 via 10.244.0.128 dev weft.vxlan onlink", // n3's borrowed address in n2's block
		"10.244.0.9/32 dev weft.wg table 87",
		"blackhole 10.244.0.0/26",  // our block
		"blackhole 10.244.0.64/26", // n2's block: never anywhere but WireGuard
		"blackhole 10.244.0.9/32",  // n2's borrowed address
		"throw 10.244.0.65/32 table 87",
		"throw 10.244.0.67/32 table 87",
	}
	sort.Strings(want)
	if got := allRoutes(d.Routes); !reflect.DeepEqual(got, want) {
		t.Fatalf("routes:\n got %q\nwant %q", got, want)
	}
	wg := d.WireGuard
	if wg == nil {
		t.Fatal("no WireGuard device")
	}
	if wg.PublicKey != k1 || wg.ListenPort != 51820 || wg.Mark != dataplane.WireGuardMark || wg.MTU != 1440 ||
		!reflect.DeepEqual(wg.Addresses, []netip.Prefix{netip.MustParsePrefix("10.244.0.1/32")}) {
		t.Fatalf("device = %+v", wg)
	}
	wantPeer := dataplane.WireGuardPeer{Node: "n2", PublicKey: k2, Endpoint: netip.MustParseAddrPort("192.168.7.2:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.0.64/26"), netip.MustParsePrefix("10.244.0.9/32")}}
	if len(wg.Peers) != 1 || !wg.Peers[0].Equal(wantPeer) {
		t.Fatalf("peers = %+v, want %+v", wg.Peers, wantPeer)
	}
	// One path: no VXLAN peer for the WireGuard node.
	if len(d.VXLANPeers) != 1 || d.VXLANPeers[0].Node != "n3" {
		t.Fatalf("vxlan peers = %+v: want n3 only", d.VXLANPeers)
	}
	wantRule := dataplane.Rule{Family: 4, Priority: 99, Table: 87, Mark: dataplane.WireGuardMark, Mask: dataplane.WireGuardMark, Invert: true}
	if !reflect.DeepEqual(d.Rules, []dataplane.Rule{wantRule}) {
		t.Fatalf("rules = %v", d.Rules)
	}
	for _, w := range d.Workloads {
		if w.MTU != 1440 {
			t.Fatalf("workload MTU %d, want 1500-60", w.MTU)
		}
	}
	if len(out.Problems) != 0 {
		t.Fatalf("problems %v", out.Problems)
	}
	if !out.Tunnels.VXLAN.Wanted || !out.Tunnels.WireGuard.Wanted || out.Tunnels.WireGuardV6.Wanted {
		t.Fatalf("tunnel needs %+v", out.Tunnels)
	}
}

// With wireguard.require a node without a key is not reached at all: its
// addresses are blackholed, the node is listed as blocked and reported,
// and there is no VXLAN device (nothing listens for VXLAN either).
func TestWireGuardRequire(t *testing.T) {
	cfg := wgCfg
	cfg.WireGuard.Require = true
	out := computeOut(t, cfg, wgScenario(t))
	d := out.Desired
	want := []string{
		"10.244.0.64/26 dev weft.wg table 87",
		"10.244.0.9/32 dev weft.wg table 87",
		"blackhole 10.244.0.0/26",
		"blackhole 10.244.0.128/26",
		"blackhole 10.244.0.64/26",
		"blackhole 10.244.0.67/32",
		"blackhole 10.244.0.9/32",
		"throw 10.244.0.65/32 table 87",
		"throw 10.244.0.67/32 table 87",
	}
	if got := allRoutes(d.Routes); !reflect.DeepEqual(got, want) {
		t.Fatalf("routes:\n got %q\nwant %q", got, want)
	}
	if d.VXLAN != nil || len(d.VXLANPeers) != 0 || out.Tunnels.VXLAN.Wanted {
		t.Fatalf("VXLAN under require: device %+v peers %+v need %+v", d.VXLAN, d.VXLANPeers, out.Tunnels.VXLAN)
	}
	if !reflect.DeepEqual(d.WireGuard.Blocked, []string{"n3"}) {
		t.Fatalf("blocked = %v", d.WireGuard.Blocked)
	}
	if len(out.Problems) != 1 || !strings.Contains(out.Problems[0], "node n3 is not reached (wireguard.require is set): it publishes no WireGuard key") {
		t.Fatalf("problems = %q", out.Problems)
	}
	// Until this node's own key is published, nobody is reached.
	objs := wgScenario(t)
	objs[0] = wgNode(t, "n1", "192.168.7.1/24", "10.244.0.0", "", "10.244.0.1", nil)
	out = computeOut(t, cfg, objs)
	if len(out.Desired.WireGuard.Peers) != 0 || len(out.Desired.WireGuard.Blocked) != 2 {
		t.Fatalf("unpublished self: peers %v blocked %v", out.Desired.WireGuard.Peers, out.Desired.WireGuard.Blocked)
	}
	for _, r := range out.Desired.Routes {
		if r.Dev == "weft.vxlan" || (r.Class == dataplane.RouteClassBlock && r.Type != dataplane.RouteBlackhole) {
			t.Fatalf("route %s while nothing may be reached", r)
		}
	}
}

// A key published by two nodes is used by neither (with a problem each),
// and a malformed key neither; both nodes are then reached as their pools
// say.
func TestWireGuardDuplicateAndMalformedKeys(t *testing.T) {
	objs := wgScenario(t)
	objs[2] = wgNode(t, "n3", "192.168.8.3/24", "10.244.0.128", k2.String(), "", nil)
	out := computeOut(t, wgCfg, objs)
	if len(out.Desired.WireGuard.Peers) != 0 {
		t.Fatalf("peers %+v with a duplicate key", out.Desired.WireGuard.Peers)
	}
	if len(out.Desired.VXLANPeers) != 2 {
		t.Fatalf("vxlan peers %+v: want both", out.Desired.VXLANPeers)
	}
	if len(out.Problems) != 2 || !strings.Contains(out.Problems[0], "also published by n3") || !strings.Contains(out.Problems[1], "also published by n2") {
		t.Fatalf("problems %q", out.Problems)
	}

	objs[2] = wgNode(t, "n3", "192.168.8.3/24", "10.244.0.128", "not-a-key", "", nil)
	out = computeOut(t, wgCfg, objs)
	if len(out.Desired.WireGuard.Peers) != 1 || len(out.Problems) != 1 || !strings.Contains(out.Problems[0], "malformed") {
		t.Fatalf("malformed key: peers %+v problems %q", out.Desired.WireGuard.Peers, out.Problems)
	}

	// Another node publishing this node's key: this node is reached over
	// WireGuard by nobody, so it uses WireGuard with nobody.
	objs[2] = wgNode(t, "n3", "192.168.8.3/24", "10.244.0.128", k1.String(), "", nil)
	out = computeOut(t, wgCfg, objs)
	if len(out.Desired.WireGuard.Peers) != 0 || len(out.Desired.VXLANPeers) != 2 {
		t.Fatalf("own key claimed twice: peers %+v vxlan %+v", out.Desired.WireGuard.Peers, out.Desired.VXLANPeers)
	}
}

// During a rotation the device uses the next key at once; the others
// keep using the published one until it changes.
func TestWireGuardRotationKey(t *testing.T) {
	objs := wgScenario(t)
	objs[0] = wgNode(t, "n1", "192.168.7.1/24", "10.244.0.0", k1.String(), "10.244.0.1",
		map[string]string{AnnotationWireGuardNextKey: k3.String()})
	out := computeOut(t, wgCfg, objs)
	if out.Desired.WireGuard.PublicKey != k3 || len(out.Desired.WireGuard.Peers) != 1 {
		t.Fatalf("device key %s peers %d", out.Desired.WireGuard.PublicKey, len(out.Desired.WireGuard.Peers))
	}
	if out.Tunnels.WireGuardNode.NextKey != k3 || out.Tunnels.WireGuardNode.PublicKey != k1 {
		t.Fatalf("node state %+v", out.Tunnels.WireGuardNode)
	}
}

// Host encryption on both sides adds the peer's own address to its
// allowed IPs and the table, never blackholed (the tunnel runs over it);
// on one side only it does nothing.
func TestWireGuardHostEncryption(t *testing.T) {
	cfg := wgCfg
	cfg.WireGuard.HostEncryption = true
	objs := wgScenario(t)
	out := computeOut(t, cfg, objs)
	if p, _ := out.Desired.WireGuard.Peer("n2"); slices.Contains(p.AllowedIPs, netip.MustParsePrefix("192.168.7.2/32")) {
		t.Fatal("host address routed although n2 does not encrypt host traffic")
	}
	objs[1] = wgNode(t, "n2", "192.168.7.2/24", "10.244.0.64", k2.String(), "10.244.0.66",
		map[string]string{AnnotationWireGuardHostEncryption: "true", AnnotationWireGuardPort: "51999"})
	out = computeOut(t, cfg, objs)
	p, _ := out.Desired.WireGuard.Peer("n2")
	if !slices.Contains(p.AllowedIPs, netip.MustParsePrefix("192.168.7.2/32")) || p.Endpoint.Port() != 51999 {
		t.Fatalf("peer %+v", p)
	}
	routes := allRoutes(out.Desired.Routes)
	if !slices.Contains(routes, "192.168.7.2/32 dev weft.wg table 87") || slices.Contains(routes, "blackhole 192.168.7.2/32") {
		t.Fatalf("routes %q", routes)
	}
}

// Dual stack: IPv6 blocks are allowed IPs and routed in the table with an
// IPv6 rule; an IPv6 tunnel address is wanted.
func TestWireGuardDualStack(t *testing.T) {
	objs := append(wgScenario(t),
		pool(t, "p6", "fd00:244::/48", api.EncapNever, false),
		obj(t, ipam.KindBlock, "", ipam.BlockName(netip.MustParsePrefix("fd00:244::40/122").String()), ipam.Block{CIDR: "fd00:244::40/122", Affinity: "host:n2", Allocations: make([]*int, 64)}),
	)
	out := computeOut(t, wgCfg, objs)
	p, _ := out.Desired.WireGuard.Peer("n2")
	if !slices.Contains(p.AllowedIPs, netip.MustParsePrefix("fd00:244::40/122")) {
		t.Fatalf("peer %+v", p)
	}
	if len(out.Desired.Rules) != 2 || out.Desired.Rules[1].Family != 6 {
		t.Fatalf("rules %v", out.Desired.Rules)
	}
	if !out.Tunnels.WireGuardV6.Wanted {
		t.Fatal("no IPv6 tunnel address wanted")
	}
	if err := out.Desired.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Disabled: no device, the Node is to be cleared, VXLAN as before.
func TestWireGuardDisabled(t *testing.T) {
	cfg := wgCfg
	cfg.WireGuard.Enabled = false
	out := computeOut(t, cfg, wgScenario(t))
	if out.Desired.WireGuard != nil || len(out.Desired.Rules) != 0 || len(out.Desired.VXLANPeers) != 2 {
		t.Fatalf("disabled: %+v rules %v vxlan %v", out.Desired.WireGuard, out.Desired.Rules, out.Desired.VXLANPeers)
	}
	if out.Tunnels.WireGuard.Wanted || out.Tunnels.WireGuardNode.Settled() {
		t.Fatalf("needs %+v: want the published key cleared", out.Tunnels)
	}
	for _, w := range out.Desired.Workloads {
		if w.MTU != 1450 {
			t.Fatalf("MTU %d without WireGuard", w.MTU)
		}
	}
}

// Any order of the same events gives the same state; tearing it down
// gives nothing; a node removed takes its peer and routes with it.
func TestWireGuardOrderIndependence(t *testing.T) {
	cfg := wgCfg
	cfg.WireGuard.PersistentKeepalive = 25 * time.Second
	objs := wgScenario(t)
	want := computeOut(t, cfg, objs).Desired
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 30; i++ {
		shuffled := slices.Clone(objs)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		c := New(cfg)
		for _, o := range shuffled {
			c.OnEvent(store.Event{Type: store.EventPut, Object: o})
		}
		if got := desired(t, c); !got.Equal(&want) || !reflect.DeepEqual(got, want) {
			t.Fatalf("order %d:\n got %+v\nwant %+v", i, got.WireGuard, want.WireGuard)
		}
		c.OnEvent(store.Event{Type: store.EventDelete, Object: objs[1]}) // n2's Node
		if d := desired(t, c); len(d.WireGuard.Peers) != 0 || slices.ContainsFunc(d.Routes, func(r dataplane.Route) bool { return r.Dev == "weft.wg" }) {
			t.Fatalf("n2 removed: peers %+v routes %v", d.WireGuard.Peers, d.Routes)
		}
		for _, o := range shuffled {
			c.OnEvent(store.Event{Type: store.EventDelete, Object: o})
		}
		if got := desired(t, c); !reflect.DeepEqual(got, dataplane.Desired{}) {
			t.Fatalf("torn down to %+v", got)
		}
	}
}

// A native pool (nodes on one subnet): WireGuard peers get no native route
// either, only the table and the blackhole; a node without WireGuard keeps
// its native route.
func TestWireGuardNativePoolOnePath(t *testing.T) {
	objs := wgScenario(t)
	objs[2] = wgNode(t, "n3", "192.168.7.3/24", "", "", "", nil) // n3 on our subnet, no key
	objs[3] = pool(t, "p", "10.244.0.0/16", api.EncapNever, true)
	d := computeOut(t, wgCfg, objs).Desired
	routes := allRoutes(d.Routes)
	for _, r := range routes {
		if strings.Contains(r, "via 192.168.7.2") {
			t.Fatalf("native route to the WireGuard peer n2: %s", r)
		}
	}
	for _, want := range []string{"10.244.0.64/26 dev weft.wg table 87", "blackhole 10.244.0.64/26", "10.244.0.128/26 via 192.168.7.3 dev "} {
		if !slices.Contains(routes, want) {
			t.Errorf("routes %q lack %q", routes, want)
		}
	}
	if d.VXLAN != nil {
		t.Fatal("a VXLAN device without a VXLAN pool")
	}
}

// The FelixConfiguration wireguard* fields weft applies override the
// config file live: listen port (the device's and the one the Node must
// publish; a node publishing none is reached on it), keepalive, host
// encryption, MTU (device and workloads) and the rule's priority; a node.
// config wins over default; a port equal to the VXLAN port is not taken.
func TestWireGuardFelixFields(t *testing.T) {
	objs := append(wgScenario(t),
		felixConfig(t, "default", api.FelixConfigurationSpec{
			WireguardListeningPort: new(51830), WireguardMTU: new(1380), WireguardRoutingRulePriority: new(98),
			WireguardKeepAlive: &api.Duration{Duration: 25 * time.Second},
		}),
		felixConfig(t, "node.n1", api.FelixConfigurationSpec{WireguardHostEncryptionEnabled: new(true), WireguardMTU: new(1400)}),
	)
	objs[1] = wgNode(t, "n2", "192.168.7.2/24", "10.244.0.64", k2.String(), "10.244.0.66",
		map[string]string{AnnotationWireGuardHostEncryption: "true"})
	out := computeOut(t, wgCfg, objs)
	d := out.Desired
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	wg := d.WireGuard
	if wg == nil || wg.ListenPort != 51830 || wg.MTU != 1400 {
		t.Fatalf("device = %+v: want port 51830, MTU 1400 (node.n1 over default)", wg)
	}
	p, _ := wg.Peer("n2")
	if p.Endpoint != netip.MustParseAddrPort("192.168.7.2:51830") || p.PersistentKeepalive != 25*time.Second ||
		!slices.Contains(p.AllowedIPs, netip.MustParsePrefix("192.168.7.2/32")) {
		t.Fatalf("peer %+v: want endpoint on port 51830 (n2 publishes none), keepalive 25s, host address (host encryption)", p)
	}
	if len(d.Rules) != 1 || d.Rules[0].Priority != 98 {
		t.Fatalf("rules = %v: want priority 98", d.Rules)
	}
	for _, w := range d.Workloads {
		if w.MTU != 1400 {
			t.Fatalf("workload MTU %d, want wireguardMTU 1400", w.MTU)
		}
	}
	if n := out.Tunnels.WireGuardNode; n.WantPort != 51830 || !n.WantHostEncryption {
		t.Fatalf("node state %+v: want port 51830 and host encryption published", n)
	}
	if len(out.Problems) != 0 {
		t.Fatalf("problems %v", out.Problems)
	}

	// Above the underlay less the overhead: used, and reported.
	objs = append(objs, felixConfig(t, "node.n1", api.FelixConfigurationSpec{WireguardMTU: new(1460)}))
	if out = computeOut(t, wgCfg, objs); out.Desired.WireGuard.MTU != 1460 || !hasProblem(out, "wireguardMTU 1460") {
		t.Fatalf("MTU %d, problems %v", out.Desired.WireGuard.MTU, out.Problems)
	}

	// The VXLAN port: the config file's port is kept.
	cfg := wgCfg
	cfg.VXLANPort = 51830
	if out = computeOut(t, cfg, objs); out.Desired.WireGuard.ListenPort != 51820 || !hasProblem(out, "wireguardListeningPort 51830 is the VXLAN port") {
		t.Fatalf("port %d, problems %v", out.Desired.WireGuard.ListenPort, out.Problems)
	}
}

// An IP-in-IP pool: a WireGuard node's blocks and borrowed addresses go
// through WireGuard only (no route over weft.ipip, none in clear); a node
// without a key keeps IP-in-IP; workloads get the smaller of the two MTUs.
// With wireguard.require there is no IP-in-IP device nor tunnel address.
func TestWireGuardIPIPPoolOnePath(t *testing.T) {
	ipipNodeWG := func(name, addr, ipipTunnel, key string) store.Object {
		n := api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: addr, IPv4IPIPTunnelAddr: ipipTunnel}}}
		n.Metadata.Name = name
		n.Status.WireguardPublicKey = key
		return obj(t, api.KindNode, "", name, n)
	}
	objs := []store.Object{
		ipipNodeWG("n1", "192.168.7.1/24", "10.244.0.1", k1.String()),
		ipipNodeWG("n2", "192.168.7.2/24", "10.244.0.65", k2.String()),
		ipipNodeWG("n3", "192.168.8.3/24", "10.244.0.129", ""),
		ipipPool(t, "p", "10.244.0.0/16", api.EncapAlways),
		block(t, "10.244.0.0/26", "n1", map[int]string{0: "n1", 5: "n1", 9: "n2"}),
		block(t, "10.244.0.64/26", "n2", map[int]string{0: "n2"}),
		block(t, "10.244.0.128/26", "n3", map[int]string{0: "n3"}),
		wep(t, "default", "a", "n1", "weft0123456789a", "10.244.0.5/32"),
	}
	out := run(t, wgCfg, objs)
	d := out.Desired
	routes := allRoutes(d.Routes)
	for _, r := range routes {
		if strings.Contains(r, "via 192.168.7.2") {
			t.Fatalf("route to the WireGuard peer n2 outside WireGuard: %s (all %q)", r, routes)
		}
	}
	for _, want := range []string{
		"10.244.0.64/26 dev weft.wg table 87", "10.244.0.9/32 dev weft.wg table 87",
		"blackhole 10.244.0.64/26", "blackhole 10.244.0.9/32",
		"10.244.0.128/26 via 192.168.8.3 dev weft.ipip onlink",
	} {
		if !slices.Contains(routes, want) {
			t.Errorf("routes %q lack %q", routes, want)
		}
	}
	if d.IPIP == nil {
		t.Fatal("no IP-in-IP device for n3")
	}
	for _, w := range d.Workloads {
		if w.MTU != 1440 {
			t.Fatalf("workload MTU %d, want min(1500-20, 1500-60)", w.MTU)
		}
	}

	cfg := wgCfg
	cfg.WireGuard.Require = true
	out = run(t, cfg, objs)
	if out.Desired.IPIP != nil || out.Tunnels.IPIP.Wanted {
		t.Fatalf("IP-in-IP device %+v, tunnel wanted %v under wireguard.require", out.Desired.IPIP, out.Tunnels.IPIP.Wanted)
	}
	if routes := allRoutes(out.Desired.Routes); !slices.Contains(routes, "blackhole 10.244.0.128/26") {
		t.Fatalf("n3 (no key) reachable under require: %q", routes)
	}
}
