package calc

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/store"
)

var bgpCfg = func() Config {
	c := testCfg
	c.BGP = true
	return c
}()

func bgpConfig(t *testing.T, name string, spec api.BGPConfigurationSpec) store.Object {
	c := api.BGPConfiguration{TypeMeta: api.TypeMeta{Kind: api.KindBGPConfiguration, APIVersion: "projectcalico.org/v3"}, Spec: spec}
	c.Metadata.Name = name
	return obj(t, api.KindBGPConfiguration, "", name, c)
}

func bgpPeer(t *testing.T, name string, spec api.BGPPeerSpec) store.Object {
	p := api.BGPPeer{TypeMeta: api.TypeMeta{Kind: api.KindBGPPeer, APIVersion: "projectcalico.org/v3"}, Spec: spec}
	p.Metadata.Name = name
	return obj(t, api.KindBGPPeer, "", name, p)
}

// bgpNode is a node with labels, an AS and a route-reflector cluster ID.
func bgpNode(t *testing.T, name, addr, addr6 string, labels map[string]string, as uint32, rr string) store.Object {
	n := api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: addr, IPv6Address: addr6, RouteReflectorClusterID: rr}}}
	if as != 0 {
		a := api.ASNumber(as)
		n.Spec.BGP.ASNumber = &a
	}
	n.Metadata.Name, n.Metadata.Labels = name, labels
	return obj(t, api.KindNode, "", name, n)
}

func computeBGP(t *testing.T, cfg Config, objs []store.Object, speaker *BGPSpeakerState) Output {
	t.Helper()
	d := New(cfg)
	for _, o := range objs {
		d.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	if speaker != nil {
		if err := d.OnLocal(LocalInput{Kind: LocalKindBGP, Value: speaker}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := d.Compute(1)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sessions renders the peers as "address type AS [flags]".
func sessions(c *BGPConfig) []string {
	var out []string
	for _, p := range c.Peers {
		s := fmt.Sprintf("%s %s %d", netip.AddrPortFrom(p.Address, p.Port), p.Type, p.AS)
		if p.Passive {
			s += " passive"
		}
		if p.RRClient {
			s += " rr-client"
		}
		if p.Multihop {
			s += " multihop"
		}
		if p.Node != "" {
			s += " node=" + p.Node
		}
		out = append(out, s)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func threeNodes(t *testing.T) []store.Object {
	return []store.Object{
		bgpNode(t, "n1", "192.168.7.1/24", "fd00:7::1/64", map[string]string{"zone": "a"}, 0, ""),
		bgpNode(t, "n2", "192.168.7.2/24", "fd00:7::2/64", map[string]string{"zone": "a"}, 0, ""),
		bgpNode(t, "n3", "192.168.8.3/24", "", map[string]string{"zone": "b", "rr": "true"}, 0, ""),
	}
}

func TestBGPMeshSessions(t *testing.T) {
	cfg := bgpCfg
	cfg.Address6 = netip.MustParseAddr("fd00:7::1")
	cfg.UnderlayPrefix6 = netip.MustParsePrefix("fd00:7::/64")
	out := computeBGP(t, cfg, threeNodes(t), nil)
	c := out.BGP
	if c == nil || c.AS != 64512 || c.RouterID != cfg.Address || c.ListenPort != 179 {
		t.Fatalf("config %+v", c)
	}
	want := []string{
		"192.168.7.2:0 node-to-node mesh 64512 passive node=n2",
		"192.168.8.3:0 node-to-node mesh 64512 passive node=n3",
		"[fd00:7::2]:0 node-to-node mesh 64512 passive node=n2",
	}
	if got := sessions(c); !slices.Equal(got, want) {
		t.Fatalf("sessions:\n got %q\nwant %q", got, want)
	}
	p := c.Peers[0]
	if p.Keepalive != time.Second || p.HoldTime != 3*time.Second || p.RestartTime != 120*time.Second || p.SourceAddr != cfg.Address {
		t.Errorf("mesh session timers %+v", p)
	}
	// No speaker on a node with bgp.enabled = false.
	if out := computeBGP(t, testCfg, threeNodes(t), nil); out.BGP != nil || out.Desired.HoldBGPRoutes {
		t.Errorf("bgp off: %+v", out.BGP)
	}
	// The mesh off (BGPConfiguration wins over every TOML); timers and a
	// node's own AS (an eBGP mesh across subnets goes multihop).
	objs := append(threeNodes(t), bgpConfig(t, "default", api.BGPConfigurationSpec{NodeToNodeMeshEnabled: ptr(false)}))
	if c := computeBGP(t, cfg, objs, nil).BGP; len(c.Peers) != 0 {
		t.Errorf("mesh off: %q", sessions(c))
	}
	objs = append(threeNodes(t)[:2], bgpNode(t, "n3", "192.168.8.3/24", "", nil, 65003, ""),
		bgpConfig(t, "default", api.BGPConfigurationSpec{ASNumber: ptr(api.ASNumber(65000)), KeepaliveTime: &api.Duration{Duration: 2 * time.Second}, HoldTime: &api.Duration{Duration: 6 * time.Second}, NodeMeshMaxRestartTime: &api.Duration{Duration: 30 * time.Second}}),
		bgpConfig(t, "node.n1", api.BGPConfigurationSpec{ListenPort: 1179, BindMode: api.BindModeNodeIP, LogSeverityScreen: "Debug"}))
	c = computeBGP(t, bgpCfg, objs, nil).BGP
	want = []string{
		"192.168.7.2:0 node-to-node mesh 65000 passive node=n2",
		"192.168.8.3:0 node-to-node mesh 65003 passive multihop node=n3",
	}
	if got := sessions(c); !slices.Equal(got, want) || c.AS != 65000 || c.ListenPort != 1179 || c.LogLevel != "debug" ||
		!slices.Equal(c.ListenAddrs, []netip.Addr{bgpCfg.Address}) {
		t.Fatalf("sessions %q, config %+v", got, c)
	}
	if p := c.Peers[0]; p.Keepalive != 2*time.Second || p.HoldTime != 6*time.Second || p.RestartTime != 30*time.Second {
		t.Errorf("timers %+v", p)
	}
}

func TestBGPPeersFromResources(t *testing.T) {
	objs := append(threeNodes(t),
		// The site's router for everyone.
		bgpPeer(t, "tor", api.BGPPeerSpec{PeerIP: "192.168.7.254", ASNumber: 65000}),
		// A router for zone a only, on another port, with a password.
		bgpPeer(t, "zone-a", api.BGPPeerSpec{NodeSelector: "zone == 'a'", PeerIP: "192.168.7.253:1179", ASNumber: 65001,
			Password: &api.BGPPassword{SecretKeyRef: &api.SecretKeySelector{Name: "bgp", Key: "zone-a"}}, KeepaliveTime: &api.Duration{Duration: 10 * time.Second}}),
		// A router for zone b only: not this node's.
		bgpPeer(t, "zone-b", api.BGPPeerSpec{NodeSelector: "zone == 'b'", PeerIP: "192.168.8.254", ASNumber: 65002}),
		// A weft node's address without asNumber: that node's AS; it
		// replaces the mesh session to n2.
		bgpPeer(t, "to-n2", api.BGPPeerSpec{Node: "n1", PeerIP: "192.168.7.2"}),
		// Bad ones: this node's own address, a router without asNumber.
		bgpPeer(t, "self", api.BGPPeerSpec{PeerIP: "192.168.7.1", ASNumber: 65000}),
		bgpPeer(t, "no-as", api.BGPPeerSpec{PeerIP: "203.0.113.1"}),
		bgpConfig(t, "default", api.BGPConfigurationSpec{NodeToNodeMeshEnabled: ptr(true)}),
	)
	out := computeBGP(t, bgpCfg, objs, nil)
	want := []string{
		"192.168.7.2:0 node specific 64512 node=n2",
		"192.168.7.253:1179 node specific 65001",
		"192.168.7.254:0 global 65000",
		"192.168.8.3:0 node-to-node mesh 64512 passive node=n3",
	}
	if got := sessions(out.BGP); !slices.Equal(got, want) {
		t.Fatalf("sessions:\n got %q\nwant %q", got, want)
	}
	za := out.BGP.Peers[1]
	if za.Password != (SecretRef{Name: "bgp", Key: "zone-a"}) || za.Keepalive != 10*time.Second || za.HoldTime != 30*time.Second || za.Multihop {
		t.Errorf("zone-a session %+v", za)
	}
	problems := strings.Join(out.Problems, "\n")
	for _, p := range []string{"BGPPeer self: peerIP 192.168.7.1 is this node's own address", "BGPPeer no-as: asNumber is required"} {
		if !strings.Contains(problems, p) {
			t.Errorf("problems %q lack %q", problems, p)
		}
	}
}

// Route reflectors (calico.md §6.2): the mesh off, every node peers with
// the nodes labelled as reflectors; a reflector treats the others as its
// clients (the reverse peering), not a reflector of its own cluster.
func TestBGPRouteReflectors(t *testing.T) {
	objs := []store.Object{
		bgpNode(t, "n1", "192.168.7.1/24", "", nil, 0, ""),
		bgpNode(t, "n2", "192.168.7.2/24", "", nil, 0, ""),
		bgpNode(t, "rr1", "192.168.7.10/24", "", map[string]string{"route-reflector": "true"}, 0, "224.0.0.1"),
		bgpNode(t, "rr2", "192.168.7.11/24", "", map[string]string{"route-reflector": "true"}, 0, "224.0.0.1"),
		bgpConfig(t, "default", api.BGPConfigurationSpec{NodeToNodeMeshEnabled: ptr(false)}),
		bgpPeer(t, "peer-with-rrs", api.BGPPeerSpec{NodeSelector: "all()", PeerSelector: "has(route-reflector)"}),
	}
	client := computeBGP(t, bgpCfg, objs, nil).BGP
	if got, want := sessions(client), []string{"192.168.7.10:0 node specific 64512 node=rr1", "192.168.7.11:0 node specific 64512 node=rr2"}; !slices.Equal(got, want) {
		t.Fatalf("client sessions:\n got %q\nwant %q", got, want)
	}
	rrCfg := bgpCfg
	rrCfg.NodeName, rrCfg.Address = "rr1", netip.MustParseAddr("192.168.7.10")
	rr := computeBGP(t, rrCfg, objs, nil).BGP
	want := []string{
		"192.168.7.1:0 route reflector client 64512 rr-client node=n1",
		"192.168.7.2:0 route reflector client 64512 rr-client node=n2",
		"192.168.7.11:0 node specific 64512 node=rr2",
	}
	if got := sessions(rr); !slices.Equal(got, want) || rr.RRClusterID != netip.MustParseAddr("224.0.0.1") {
		t.Fatalf("reflector sessions:\n got %q\nwant %q (cluster %s)", got, want, rr.RRClusterID)
	}
	// reversePeering: Manual: the reflector gets no automatic sessions.
	objs[len(objs)-1] = bgpPeer(t, "peer-with-rrs", api.BGPPeerSpec{NodeSelector: "all()", PeerSelector: "has(route-reflector)", ReversePeering: api.ReversePeeringManual})
	rr = computeBGP(t, rrCfg, objs, nil).BGP
	if got := sessions(rr); !slices.Equal(got, []string{"192.168.7.11:0 node specific 64512 node=rr2"}) {
		t.Errorf("manual reverse peering: %q", got)
	}
}

func TestBGPAdvertisesOwnBlocksAndBorrowedAddresses(t *testing.T) {
	objs := scenario(t, api.EncapNever)
	noExport := api.IPPool{Spec: api.IPPoolSpec{CIDR: "10.99.0.0/16", BlockSize: 26, DisableBGPExport: true}}
	noExport.Metadata.Name = "hidden"
	objs = append(objs,
		obj(t, api.KindIPPool, "", "hidden", noExport),
		block(t, "10.99.0.0/26", "n1", map[int]string{0: "n1"}),
		// n1 borrowed 10.244.0.65 from n2's block (the workload c).
		bgpConfig(t, "default", api.BGPConfigurationSpec{
			Communities:          []api.Community{{Name: "site", Value: "65000:100"}},
			PrefixAdvertisements: []api.PrefixAdvertisement{{CIDR: "10.244.0.0/16", Communities: []string{"site", "65000:1:2"}}},
		}),
	)
	c := computeBGP(t, bgpCfg, objs, nil).BGP
	var got []string
	for _, p := range c.Paths {
		got = append(got, fmt.Sprintf("%s nh %s needs %s %v %v", p.Prefix, p.NextHop, p.Needs, p.Communities, p.LargeCommunities))
	}
	want := []string{
		"10.244.0.0/26 nh 192.168.7.1 needs 10.244.0.0/26 [4259840100] [[65000 1 2]]",
		"10.244.0.65/32 nh 192.168.7.1 needs 10.244.0.65/32 [4259840100] [[65000 1 2]]",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paths:\n got %q\nwant %q", got, want)
	}
	if !slices.Equal(c.ExportPrefixes, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}) {
		t.Errorf("export prefixes %v", c.ExportPrefixes)
	}
}

func TestBGPLearnedRoutes(t *testing.T) {
	objs := append(scenario(t, api.EncapNever),
		pool(t, "vx", "10.50.0.0/16", api.EncapAlways, false))
	speaker := &BGPSpeakerState{Learned: []LearnedRoute{
		// n2's block, native on this subnet: the block route wins.
		{Prefix: netip.MustParsePrefix("10.244.0.64/26"), NextHop: netip.MustParseAddr("192.168.7.2")},
		// n3's block on another subnet: only BGP knows it.
		{Prefix: netip.MustParsePrefix("10.244.0.128/26"), NextHop: netip.MustParseAddr("192.168.8.3")},
		// The router's routes outside all pools.
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: netip.MustParseAddr("192.168.7.254")},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), NextHop: netip.MustParseAddr("192.168.7.254")},
		// Inside a VXLAN pool: the tunnel routes own it.
		{Prefix: netip.MustParsePrefix("10.50.1.0/26"), NextHop: netip.MustParseAddr("192.168.7.2")},
		// Back to this node.
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), NextHop: netip.MustParseAddr("192.168.7.1")},
	}}
	out := computeBGP(t, bgpCfg, objs, speaker)
	var got []string
	for _, r := range out.Desired.Routes {
		if r.Class == dataplane.RouteClassBGP {
			got = append(got, r.String())
		}
	}
	want := []string{
		"0.0.0.0/0 via 192.168.7.254 dev  recursive",
		"10.244.0.128/26 via 192.168.8.3 dev  recursive",
		"198.51.100.0/24 via 192.168.7.254 dev  recursive",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("learned routes:\n got %q\nwant %q", got, want)
	}
	if routeMap(out.Desired.Routes)["10.244.0.64/26"] != "10.244.0.64/26 via 192.168.7.2 dev " {
		t.Errorf("the native block route lost to the learned one: %v", routeMap(out.Desired.Routes))
	}
	if out.Desired.HoldBGPRoutes {
		t.Error("hold set with a synced speaker")
	}
}

// Graceful restart: until the speaker has reported, and while it says it
// is syncing, the kernel's learned routes stay.
func TestBGPHoldWhileSyncing(t *testing.T) {
	objs := scenario(t, api.EncapNever)
	if out := computeBGP(t, bgpCfg, objs, nil); !out.Desired.HoldBGPRoutes {
		t.Error("no speaker report yet: learned routes not held")
	}
	if out := computeBGP(t, bgpCfg, objs, &BGPSpeakerState{Syncing: true}); !out.Desired.HoldBGPRoutes {
		t.Error("syncing: learned routes not held")
	}
	if out := computeBGP(t, bgpCfg, objs, &BGPSpeakerState{}); out.Desired.HoldBGPRoutes {
		t.Error("synced: learned routes held")
	}
}

// Withdraw before removal: a block released while the speaker still
// announces it keeps its blackhole until the speaker has withdrawn it.
func TestBGPKeepsBlackholeUntilWithdrawn(t *testing.T) {
	objs := scenario(t, api.EncapNever)
	released := netip.MustParsePrefix("10.244.3.0/26")
	out := computeBGP(t, bgpCfg, objs, &BGPSpeakerState{Advertised: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/26"), released}})
	if got := routeMap(out.Desired.Routes)[released.String()]; got != "blackhole 10.244.3.0/26" {
		t.Errorf("released block still advertised: route %q", got)
	}
	out = computeBGP(t, bgpCfg, objs, &BGPSpeakerState{Advertised: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/26")}})
	if _, ok := routeMap(out.Desired.Routes)[released.String()]; ok {
		t.Error("blackhole kept after the withdrawal")
	}
	// A block that moved to another node meanwhile is routed to it, not
	// blackholed here.
	moved := append(scenario(t, api.EncapNever), block(t, "10.244.3.0/26", "n2", nil))
	out = computeBGP(t, bgpCfg, moved, &BGPSpeakerState{Advertised: []netip.Prefix{released}})
	if got := routeMap(out.Desired.Routes)[released.String()]; got != "10.244.3.0/26 via 192.168.7.2 dev " {
		t.Errorf("moved block: route %q", got)
	}
}

// A node the speaker found dead loses the routes this node derives to its
// blocks and borrowed addresses; a node merely restarting keeps them.
func TestDeadNodeLosesItsDerivedRoutes(t *testing.T) {
	objs := scenario(t, api.EncapAlways)
	alive := routeMap(computeBGP(t, bgpCfg, objs, &BGPSpeakerState{}).Desired.Routes)
	dead := routeMap(computeBGP(t, bgpCfg, objs, &BGPSpeakerState{Dead: []netip.Addr{netip.MustParseAddr("192.168.7.2")}}).Desired.Routes)
	for _, k := range []string{"10.244.0.64/26", "10.244.0.9/32"} {
		if _, ok := alive[k]; !ok {
			t.Fatalf("%s not routed while n2 is alive: %v", k, alive)
		}
		if _, ok := dead[k]; ok {
			t.Errorf("%s still routed to the dead n2: %v", k, dead)
		}
	}
	if dead["10.244.0.128/26"] == "" || dead["10.244.0.0/26"] == "" {
		t.Errorf("other routes went too: %v", dead)
	}
}

// The BGP section depends on the state only, whatever the order of events.
func TestBGPOrderIndependence(t *testing.T) {
	objs := append(threeNodes(t),
		pool(t, "p", "10.244.0.0/16", api.EncapNever, false),
		block(t, "10.244.0.0/26", "n1", map[int]string{1: "n1"}),
		block(t, "10.244.0.64/26", "n2", map[int]string{1: "n1"}),
		bgpPeer(t, "tor", api.BGPPeerSpec{PeerIP: "192.168.7.254", ASNumber: 65000}),
		bgpPeer(t, "rrs", api.BGPPeerSpec{NodeSelector: "all()", PeerSelector: "has(rr)"}),
		bgpConfig(t, "default", api.BGPConfigurationSpec{ASNumber: ptr(api.ASNumber(65100))}),
	)
	want := computeBGP(t, bgpCfg, objs, nil).BGP
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 30; i++ {
		shuffled := slices.Clone(objs)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		got := computeBGP(t, bgpCfg, shuffled, nil).BGP
		if !got.Equal(want) {
			t.Fatalf("order %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	if !reflect.DeepEqual(want, want) || !want.Equal(want) {
		t.Fatal("Equal is not reflexive")
	}
}

// BenchmarkComputeWithLearnedRoutes: one computation with 10,000 learned
// routes (what the calculation redoes while a router's table arrives),
// listed in prefix order (as the speaker lists them) and shuffled.
func BenchmarkComputeWithLearnedRoutes(b *testing.B) {
	for _, order := range []string{"sorted", "shuffled"} {
		b.Run(order, func(b *testing.B) {
			t := &testing.T{}
			d := New(bgpCfg)
			for _, o := range scenario(t, api.EncapNever) {
				d.OnEvent(store.Event{Type: store.EventPut, Object: o})
			}
			st := &BGPSpeakerState{}
			for i := range 10000 {
				st.Learned = append(st.Learned, LearnedRoute{
					Prefix:  netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i>>16), byte(i >> 8), byte(i)}), 32),
					NextHop: netip.MustParseAddr("192.168.7.254"), Peer: netip.MustParseAddr("192.168.7.254"),
				})
			}
			if order == "shuffled" {
				rand.New(rand.NewSource(2)).Shuffle(len(st.Learned), func(i, j int) {
					st.Learned[i], st.Learned[j] = st.Learned[j], st.Learned[i]
				})
			}
			if err := d.OnLocal(LocalInput{Kind: LocalKindBGP, Value: st}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := d.Compute(1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
