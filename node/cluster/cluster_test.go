package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/storetest"
)

func newService(t *testing.T, name string) (*Service, *store.Node) {
	t.Helper()
	st := storetest.Single(t, func(r *store.Registry) {
		Register(r)
		ipam.Register(r, slog.New(slog.DiscardHandler))
	})
	self := Self{Name: name, Labels: map[string]string{"zone": "a"}, Address4: netip.MustParsePrefix("192.0.2.5/24")}
	return New(st, self, nil), st
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte("[node]\nname = \"unit\"\n"), "unit.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSeedOnce(t *testing.T) {
	_, st := newService(t, "unit")
	cfg := testConfig(t)
	ctx := context.Background()
	if err := Seed(ctx, st, cfg); err != nil {
		t.Fatal(err)
	}
	pools, _ := st.List(api.KindIPPool, "")
	tiers, _ := st.List(api.KindTier, "")
	if len(pools) != 1 || pools[0].Name != "default-ipv4" || len(tiers) != 1 {
		t.Fatalf("seeded pools %v tiers %v", pools, tiers)
	}
	// A second seed (another node's config, a restart) changes nothing,
	// even after the pool was deleted by an operator.
	if _, err := st.Txn(ctx, []store.Op{{Type: store.OpDelete, Key: pools[0].Key}}); err != nil {
		t.Fatal(err)
	}
	if err := Seed(ctx, st, cfg); err != nil {
		t.Fatal(err)
	}
	if pools, _ := st.List(api.KindIPPool, ""); len(pools) != 0 {
		t.Fatalf("seeded again: %v", pools)
	}
}

func node(t *testing.T, st *store.Node, name string) *api.Node {
	t.Helper()
	o, ok := st.Get(store.Key{Kind: api.KindNode, Name: name})
	if !ok {
		t.Fatalf("no Node %s", name)
	}
	r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*api.Node)
}

// Registering writes the agent's own fields and keeps what operators set
// on the Node; a tunnel change records or clears the VXLAN address.
func TestRegisterNodeKeepsOperatorFields(t *testing.T) {
	s, st := newService(t, "n1")
	ctx := context.Background()
	if err := s.RegisterNode(ctx, Tunnel{}); err != nil {
		t.Fatal(err)
	}
	n := node(t, st, "n1")
	if n.Spec.BGP == nil || n.Spec.BGP.IPv4Address != "192.0.2.5/24" || n.Metadata.Labels["zone"] != "a" {
		t.Fatalf("registered %+v", n)
	}
	// An operator sets an AS number, a reflector cluster ID and a label.
	asn := api.ASNumber(65001)
	n.Spec.BGP.ASNumber = &asn
	n.Spec.BGP.RouteReflectorClusterID = "224.0.0.1"
	n.Metadata.Labels["rack"] = "r7"
	v, _ := api.StoreValue(n)
	if _, err := st.Txn(ctx, []store.Op{{Type: store.OpPut, Key: store.Key{Kind: api.KindNode, Name: "n1"}, Value: v}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterNode(ctx, Tunnel{VXLANAddr: "10.244.0.1", VXLANMAC: "66:00:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	n = node(t, st, "n1")
	if n.Spec.BGP.ASNumber == nil || *n.Spec.BGP.ASNumber != 65001 || n.Spec.BGP.RouteReflectorClusterID != "224.0.0.1" || n.Metadata.Labels["rack"] != "r7" {
		t.Fatalf("operator fields lost: %+v", n.Spec.BGP)
	}
	if n.Spec.IPv4VXLANTunnelAddr != "10.244.0.1" || n.Spec.VXLANTunnelMACAddr != "66:00:00:00:00:01" {
		t.Fatalf("tunnel not recorded: %+v", n.Spec)
	}
	if err := s.RegisterNode(ctx, Tunnel{}); err != nil {
		t.Fatal(err)
	}
	if n = node(t, st, "n1"); n.Spec.IPv4VXLANTunnelAddr != "10.244.0.1" {
		t.Fatal("a plain re-register dropped the tunnel address")
	}
	if err := s.RegisterNode(ctx, Tunnel{Clear: true}); err != nil {
		t.Fatal(err)
	}
	if n = node(t, st, "n1"); n.Spec.IPv4VXLANTunnelAddr != "" || n.Spec.VXLANTunnelMACAddr != "" {
		t.Fatalf("tunnel not cleared: %+v", n.Spec)
	}
}

// Removing a dead node deletes what it held (calico.md §1.13): its
// endpoints, node-scoped peers and configurations, host endpoints and its
// Node; nothing of other nodes.
func TestRemoveNodeCascade(t *testing.T) {
	s, st := newService(t, "n1")
	ctx := context.Background()
	put := func(r api.Resource) {
		t.Helper()
		api.Default(r)
		v, err := api.StoreValue(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Txn(ctx, []store.Op{{Type: store.OpPut, Key: storeKey(r), Value: v}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"n1", "dead"} {
		nd := &api.Node{}
		nd.Metadata.Name = n
		put(nd)
		wep := &api.WorkloadEndpoint{}
		wep.Metadata.Namespace = "default"
		wep.Spec = api.WorkloadEndpointSpec{Orchestrator: api.OrchestratorWeft, Workload: "w-" + n, Node: n, Endpoint: "eth0",
			InterfaceName: "weft0000000000" + n[:1], IPNetworks: []string{"10.9.0." + map[string]string{"n1": "1", "dead": "2"}[n] + "/32"}}
		put(wep)
		peer := &api.BGPPeer{}
		peer.Metadata.Name = "peer-" + n
		peer.Spec.Node, peer.Spec.PeerIP = n, "192.0.2.1"
		peer.Spec.ASNumber = 65000
		put(peer)
	}
	res, err := s.RemoveNode(ctx, "dead")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deleted) != 3 {
		t.Fatalf("deleted %v: want the Node, its endpoint and its peer", res.Deleted)
	}
	for _, kind := range []string{api.KindNode, api.KindWorkloadEndpoint, api.KindBGPPeer} {
		objs, _ := st.List(kind, "")
		if len(objs) != 1 {
			b, _ := json.Marshal(objs)
			t.Errorf("%s left: %s", kind, b)
		}
	}
	if _, err := s.RemoveNode(ctx, "n1"); err == nil {
		t.Error("removing this node from itself was accepted")
	}
}

// [bgp] seeds the BGPConfiguration "default" once; [[bgp.peer]] seeds no
// global peer (they are each node's own, see node/bgpsvc).
func TestSeedBGPConfiguration(t *testing.T) {
	_, st := newService(t, "unit")
	cfg, err := config.Parse([]byte("[bgp]\nas_number = 65100\nnode_mesh = false\nhold_time = \"6s\"\nkeepalive = \"2s\"\n[[bgp.peer]]\naddress = \"192.0.2.1\"\nas_number = 65000\n"), "unit.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := Seed(context.Background(), st, cfg); err != nil {
		t.Fatal(err)
	}
	o, ok := st.Get(store.Key{Kind: api.KindBGPConfiguration, Name: "default"})
	if !ok {
		t.Fatal("no BGPConfiguration seeded")
	}
	r, err := api.FromStore(api.KindBGPConfiguration, o.Value, o.UID, o.Revision, o.Created)
	if err != nil {
		t.Fatal(err)
	}
	c := r.(*api.BGPConfiguration)
	if *c.Spec.ASNumber != 65100 || *c.Spec.NodeToNodeMeshEnabled || c.Spec.ListenPort != 179 ||
		c.Spec.HoldTime.Duration != 6e9 || c.Spec.KeepaliveTime.Duration != 2e9 {
		t.Fatalf("seeded %+v", c.Spec)
	}
	if peers, _ := st.List(api.KindBGPPeer, ""); len(peers) != 0 {
		t.Fatalf("[[bgp.peer]] seeded global peers: %v", peers)
	}
}

// The TOML's labels win for their keys at every registration; a key
// dropped from the TOML goes; labels set with `weft label node` stay.
func TestRegisterNodeConfigLabels(t *testing.T) {
	s, st := newService(t, "n1")
	ctx := context.Background()
	s.self.Labels = map[string]string{"zone": "a", "rack": "r1"}
	if err := s.RegisterNode(ctx, Tunnel{}); err != nil {
		t.Fatal(err)
	}
	n := node(t, st, "n1")
	n.Metadata.Labels["route-reflector"] = "true" // weft label node n1 route-reflector=true
	n.Metadata.Labels["zone"] = "b"               // weft label node n1 zone=b --overwrite
	v, _ := api.StoreValue(n)
	if _, err := st.Txn(ctx, []store.Op{{Type: store.OpPut, Key: store.Key{Kind: api.KindNode, Name: "n1"}, Value: v}}); err != nil {
		t.Fatal(err)
	}
	s.self.Labels = map[string]string{"zone": "a"} // rack removed from the TOML
	if err := s.RegisterNode(ctx, Tunnel{}); err != nil {
		t.Fatal(err)
	}
	got := node(t, st, "n1").Metadata.Labels
	want := map[string]string{"zone": "a", "route-reflector": "true"}
	if len(got) != len(want) || got["zone"] != "a" || got["route-reflector"] != "true" {
		t.Fatalf("labels %v, want %v", got, want)
	}
}
