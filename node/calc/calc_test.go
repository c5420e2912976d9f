package calc

import (
	"encoding/json"
	"math/rand"
	"net/netip"
	"reflect"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/store"
)

func obj(t *testing.T, kind, ns, name string, v any) store.Object {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return store.Object{Key: store.Key{Kind: kind, Namespace: ns, Name: name}, Value: b}
}

func node(t *testing.T, name, addr, tunnel string) store.Object {
	n := api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: addr}, IPv4VXLANTunnelAddr: tunnel}}
	n.Metadata.Name = name
	return obj(t, api.KindNode, "", name, n)
}

func pool(t *testing.T, name, cidr, vxlan string, nat bool) store.Object {
	p := api.IPPool{Spec: api.IPPoolSpec{CIDR: cidr, BlockSize: 26, VXLANMode: vxlan, NATOutgoing: nat}}
	p.Metadata.Name = name
	return obj(t, api.KindIPPool, "", name, p)
}

func block(t *testing.T, cidr, owner string, allocs map[int]string) store.Object {
	b := ipam.Block{CIDR: cidr, Affinity: "host:" + owner}
	size := 64
	b.Allocations = make([]*int, size)
	for ord, holder := range allocs {
		i := len(b.Attributes)
		b.Attributes = append(b.Attributes, ipam.AllocationAttribute{Handle: "h" + holder, Node: holder})
		b.Allocations[ord] = &i
	}
	return obj(t, ipam.KindBlock, "", ipam.BlockName(cidr), b)
}

func wep(t *testing.T, ns, name, node, iface, ip string) store.Object {
	w := api.WorkloadEndpoint{Spec: api.WorkloadEndpointSpec{Node: node, Workload: name, InterfaceName: iface, IPNetworks: []string{ip}, Endpoint: "eth0"}}
	w.Metadata.Name, w.Metadata.Namespace = node+"-weft-"+name+"-eth0", ns
	w.Metadata.Annotations = map[string]string{AnnotationNetNS: "/run/netns/" + name}
	return obj(t, api.KindWorkloadEndpoint, ns, w.Metadata.Name, w)
}

var testCfg = Config{
	NodeName:       "n1",
	Address:        netip.MustParseAddr("192.168.7.1"),
	UnderlayPrefix: netip.MustParsePrefix("192.168.7.0/24"),
	UnderlayIface:  "eth0",
	VXLANIface:     "weft.vxlan",
}

func scenario(t *testing.T, vxlanMode string) []store.Object {
	return []store.Object{
		node(t, "n1", "192.168.7.1/24", "10.244.0.0"),
		node(t, "n2", "192.168.7.2/24", "10.244.0.64"),
		node(t, "n3", "192.168.8.3/24", "10.244.0.128"),
		pool(t, "p", "10.244.0.0/16", vxlanMode, true),
		block(t, "10.244.0.0/26", "n1", map[int]string{0: "n1", 5: "n1", 9: "n2"}),
		block(t, "10.244.0.64/26", "n2", map[int]string{0: "n2", 1: "n1"}),
		block(t, "10.244.0.128/26", "n3", map[int]string{0: "n3"}),
		wep(t, "default", "a", "n1", "weft0123456789a", "10.244.0.5/32"),
		wep(t, "default", "b", "n2", "weftbbbbbbbbbbb", "10.244.0.65/32"),
		wep(t, "default", "c", "n1", "weftccccccccccc", "10.244.0.65/32"),
	}
}

func compute(objs []store.Object) dataplane.Desired {
	return computeWith(testCfg, objs)
}

func computeWith(cfg Config, objs []store.Object) dataplane.Desired {
	c := New(cfg)
	for _, o := range objs {
		c.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	out, err := c.Compute(0)
	if err != nil {
		panic(err)
	}
	return out.Desired
}

// routeMap lists the block routes (host routes are checked separately).
func routeMap(rs []dataplane.Route) map[string]string {
	m := map[string]string{}
	for _, r := range rs {
		if r.Class == dataplane.RouteClassBlock {
			m[r.Dst.String()] = r.String()
		}
	}
	return m
}

func TestVXLANAlways(t *testing.T) {
	d := compute(scenario(t, api.EncapAlways))
	want := map[string]string{
		"10.244.0.0/26":   "blackhole 10.244.0.0/26",
		"10.244.0.64/26":  "10.244.0.64/26 via 10.244.0.64 dev weft.vxlan onlink",
		"10.244.0.128/26": "10.244.0.128/26 via 10.244.0.128 dev weft.vxlan onlink",
		"10.244.0.9/32":   "10.244.0.9/32 via 10.244.0.64 dev weft.vxlan onlink", // n2 borrowed from our block
	}
	if got := routeMap(d.Routes); !reflect.DeepEqual(got, want) {
		t.Fatalf("routes:\n got %v\nwant %v", got, want)
	}
	if d.VXLAN == nil || d.VXLAN.TunnelAddr.String() != "10.244.0.0" || d.VXLAN.Source != testCfg.Address {
		t.Fatalf("vxlan device = %+v", d.VXLAN)
	}
	if len(d.VXLANPeers) != 2 || d.VXLANPeers[0].Node != "n2" || d.VXLANPeers[1].UnderlayIP.String() != "192.168.8.3" {
		t.Fatalf("peers = %+v", d.VXLANPeers)
	}
	if len(d.Workloads) != 2 {
		t.Fatalf("workloads = %+v (want n1's two)", d.Workloads)
	}
	var host []string
	for _, r := range d.Routes {
		if r.Class == dataplane.RouteClassWorkload {
			host = append(host, r.String())
		}
	}
	if want := []string{"10.244.0.5/32 dev weft0123456789a", "10.244.0.65/32 dev weftccccccccccc"}; !reflect.DeepEqual(host, want) {
		t.Fatalf("host routes %v, want %v", host, want)
	}
	if len(d.NAT.MasqPools) != 1 || len(d.NAT.AllPools) != 1 || len(d.NAT.ExcludeDests) != 3 {
		t.Fatalf("nat = %+v", d.NAT)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("desired state invalid: %v", err)
	}
}

func TestNativeAndCrossSubnet(t *testing.T) {
	d := compute(scenario(t, api.EncapNever))
	want := map[string]string{
		"10.244.0.0/26":  "blackhole 10.244.0.0/26",
		"10.244.0.64/26": "10.244.0.64/26 via 192.168.7.2 dev ",
		"10.244.0.9/32":  "10.244.0.9/32 via 192.168.7.2 dev ",
		// n3 is on another subnet: no route without BGP.
	}
	if got := routeMap(d.Routes); !reflect.DeepEqual(got, want) {
		t.Fatalf("native routes:\n got %v\nwant %v", got, want)
	}
	if d.VXLAN != nil {
		t.Fatalf("no pool uses VXLAN but device = %+v", d.VXLAN)
	}
	d = compute(scenario(t, api.EncapCrossSubnet))
	want["10.244.0.128/26"] = "10.244.0.128/26 via 10.244.0.128 dev weft.vxlan onlink"
	if got := routeMap(d.Routes); !reflect.DeepEqual(got, want) {
		t.Fatalf("cross-subnet routes:\n got %v\nwant %v", got, want)
	}
}

// The result depends on the state only: any order of the same events, and
// deletes of things that came and went, give the same desired state; and
// tearing everything down gives the empty state.
func TestOrderIndependence(t *testing.T) {
	objs := scenario(t, api.EncapAlways)
	want := compute(objs)
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 50; i++ {
		shuffled := append([]store.Object(nil), objs...)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		c := New(testCfg)
		extra := node(t, "gone", "192.168.7.9/24", "10.244.1.0")
		c.OnEvent(store.Event{Type: store.EventPut, Object: extra})
		for _, o := range shuffled {
			c.OnEvent(store.Event{Type: store.EventPut, Object: o})
		}
		c.OnEvent(store.Event{Type: store.EventDelete, Object: extra})
		if got := desired(t, c); !reflect.DeepEqual(got, want) {
			t.Fatalf("order %d gave a different state:\n got %+v\nwant %+v", i, got, want)
		}
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		for _, o := range shuffled {
			c.OnEvent(store.Event{Type: store.EventDelete, Object: o})
		}
		if got := desired(t, c); !reflect.DeepEqual(got, dataplane.Desired{}) {
			t.Fatalf("torn down to %+v, want empty", got)
		}
	}
}

func TestVXLANRoutesWaitForDevice(t *testing.T) {
	objs := scenario(t, api.EncapAlways)
	objs[0] = node(t, "n1", "192.168.7.1/24", "") // our tunnel address not allocated yet
	d := compute(objs)
	if d.VXLAN != nil {
		t.Fatal("device without a tunnel address")
	}
	for _, r := range d.Routes {
		if r.Dev == "weft.vxlan" {
			t.Fatalf("route %s through a device that cannot exist yet", r)
		}
	}
}

func TestBadObjectsAreSkipped(t *testing.T) {
	c := New(testCfg)
	c.OnEvent(store.Event{Type: store.EventPut, Object: store.Object{Key: store.Key{Kind: api.KindIPPool, Name: "x"}, Value: []byte("{")}})
	if out, _ := c.Compute(0); len(out.Problems) != 1 {
		t.Fatalf("problems = %v", out.Problems)
	}
	c.OnEvent(store.Event{Type: store.EventDelete, Object: store.Object{Key: store.Key{Kind: api.KindIPPool, Name: "x"}}})
	if out, _ := c.Compute(0); len(out.Problems) != 0 {
		t.Fatalf("problems after delete = %v", out.Problems)
	}
}

// IPv6 blocks are routed natively to peers on this node's IPv6 subnet.
func TestNativeIPv6(t *testing.T) {
	cfg := testCfg
	cfg.Address6 = netip.MustParseAddr("fd00:7::1")
	cfg.UnderlayPrefix6 = netip.MustParsePrefix("fd00:7::/64")
	node6 := func(name, v4, v6 string) store.Object {
		n := api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: v4, IPv6Address: v6}}}
		n.Metadata.Name = name
		return obj(t, api.KindNode, "", name, n)
	}
	v6block := func(cidr, owner string) store.Object {
		b := ipam.Block{CIDR: cidr, Affinity: "host:" + owner, Allocations: make([]*int, 64)}
		return obj(t, ipam.KindBlock, "", ipam.BlockName(cidr), b)
	}
	c := New(cfg)
	for _, o := range []store.Object{
		node6("n1", "192.168.7.1/24", "fd00:7::1/64"),
		node6("n2", "192.168.7.2/24", "fd00:7::2/64"),
		node6("n3", "192.168.8.3/24", "fd00:8::3/64"),
		pool(t, "p6", "fd00:244::/48", api.EncapNever, false),
		v6block("fd00:244::/122", "n1"),
		v6block("fd00:244::40/122", "n2"),
		v6block("fd00:244::80/122", "n3"),
	} {
		c.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	d := desired(t, c)
	want := map[string]string{
		"fd00:244::/122":   "blackhole fd00:244::/122",
		"fd00:244::40/122": "fd00:244::40/122 via fd00:7::2 dev ",
		// n3 is on another IPv6 subnet: no route without BGP.
	}
	if got := routeMap(d.Routes); !reflect.DeepEqual(got, want) {
		t.Fatalf("routes:\n got %v\nwant %v", got, want)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(d.NAT.ExcludeDests) != 6 {
		t.Fatalf("NAT exclusions %v: want both addresses of all three nodes", d.NAT.ExcludeDests)
	}
}

// One bad Node (a multicast VTEP MAC, a tunnel address another node also
// claims) must not make the whole desired state invalid: the offending
// items are dropped, everything else stays.
func TestBadNodesAreContained(t *testing.T) {
	objs := scenario(t, api.EncapAlways)
	bad := api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: "192.168.7.2/24"}, IPv4VXLANTunnelAddr: "10.244.0.64", VXLANTunnelMACAddr: "01:00:5e:00:00:01"}}
	bad.Metadata.Name = "n2"
	objs[1] = obj(t, api.KindNode, "", "n2", bad)
	objs[2] = node(t, "n3", "192.168.8.3/24", "10.244.0.64") // n2's tunnel address
	c := New(testCfg)
	for _, o := range objs {
		c.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	d := desired(t, c)
	if err := d.Validate(); err != nil {
		t.Fatalf("desired state invalid: %v", err)
	}
	if len(d.VXLANPeers) != 1 || d.VXLANPeers[0].Node != "n2" || d.VXLANPeers[0].VTEPMAC[0]&1 != 0 {
		t.Fatalf("peers %+v: want n2 only, with a unicast MAC", d.VXLANPeers)
	}
	for _, r := range d.Routes {
		if r.Via.String() == "10.244.0.64" {
			t.Fatalf("route %s via an address two nodes claim", r)
		}
	}
	out, _ := c.Compute(0)
	if len(d.Workloads) != 2 || len(out.Problems) == 0 {
		t.Fatalf("workloads %d, problems %v", len(d.Workloads), out.Problems)
	}
}

func desired(t *testing.T, c *Dispatcher) dataplane.Desired {
	t.Helper()
	out, err := c.Compute(0)
	if err != nil {
		t.Fatal(err)
	}
	return out.Desired
}
