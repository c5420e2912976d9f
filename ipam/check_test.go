package ipam

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// healthy builds a state with two nodes, endpoints for every workload
// address and a tunnel address on n1: Check finds nothing.
func healthy(t *testing.T) (*fakeStore, Assignment, Assignment) {
	t.Helper()
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 26)
	a := assignIP(t, f, "wa", "n1")
	b := assignIP(t, f, "wb", "n2")
	putEndpoint(t, f, "default", "wa", a.HostCIDR)
	putEndpoint(t, f, "default", "wb", b.HostCIDR)
	tr, _ := TunnelRequest(TunnelWireguard, "n1", false)
	tun := mustAssign(t, f, tr).Addresses[0]
	putNode(t, f, "n1", api.NodeSpec{Wireguard: &api.NodeWireguardSpec{InterfaceIPv4Address: tun.IP}})
	putNode(t, f, "n2", api.NodeSpec{})
	return f, a, b
}

func kinds(rep *CheckReport) map[string]int {
	out := map[string]int{}
	for _, p := range rep.Problems {
		out[p.Kind]++
	}
	return out
}

func TestCheckHealthy(t *testing.T) {
	f, _, _ := healthy(t)
	rep, err := Check(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 {
		t.Fatalf("problems in a healthy state: %+v", rep.Problems)
	}
	if rep.Allocations != 3 || rep.Blocks != 2 || rep.Handles != 3 || rep.InUse != 3 {
		t.Fatalf("counts %+v", rep)
	}
	if rep.TopNodes[0] != (NodeCount{"n1", 2}) {
		t.Fatalf("top nodes %+v", rep.TopNodes)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(b.String(), "Check complete; found 0 problems\n") {
		t.Fatalf("text:\n%s", b.String())
	}
}

// mutate returns the state's objects with changes applied, bypassing the
// validators (to craft states the store would refuse).
func mutate(f *fakeStore, change func(objs map[store.Key]store.Object)) Objects {
	objs := map[store.Key]store.Object{}
	for _, m := range f.kinds {
		for k, o := range m {
			objs[k] = o
		}
	}
	change(objs)
	var out Objects
	for _, o := range objs {
		out = append(out, o)
	}
	return out
}

func setJSON(objs map[store.Key]store.Object, k store.Key, v any) {
	b, _ := json.Marshal(v)
	o := objs[k]
	o.Key, o.Value = k, b
	objs[k] = o
}

func TestCheckFindsEachProblem(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(t *testing.T, f *fakeStore, a, b Assignment, objs map[store.Key]store.Object)
		want   string
		n      int
	}{
		"leaked": {func(_ *testing.T, _ *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			delete(objs, store.Key{Kind: KindWorkloadEndpoint, Namespace: "default", Name: "wa"})
		}, ProblemLeaked, 1},
		"multiple owners": {func(_ *testing.T, _ *fakeStore, a, _ Assignment, objs map[store.Key]store.Object) {
			setJSON(objs, store.Key{Kind: KindWorkloadEndpoint, Namespace: "default", Name: "wc"},
				api.WorkloadEndpoint{Spec: api.WorkloadEndpointSpec{IPNetworks: []string{a.HostCIDR}}})
		}, ProblemMultipleOwners, 1},
		"outside pools": {func(_ *testing.T, _ *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			setJSON(objs, store.Key{Kind: KindWorkloadEndpoint, Namespace: "default", Name: "wc"},
				api.WorkloadEndpoint{Spec: api.WorkloadEndpointSpec{IPNetworks: []string{"192.168.0.1/32"}}})
		}, ProblemOutsidePools, 1},
		"no allocation": {func(_ *testing.T, _ *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			setJSON(objs, store.Key{Kind: KindNode, Name: "n2"}, api.Node{Spec: api.NodeSpec{IPv4VXLANTunnelAddr: "10.0.0.99"}})
		}, ProblemNoAllocation, 1},
		"empty handle": {func(_ *testing.T, _ *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			setJSON(objs, HandleKey("ghost"), Handle{HandleID: "ghost", Blocks: map[string]int{"10.0.0.0-26": 1}})
		}, ProblemEmptyHandle, 1},
		"missing handle": {func(_ *testing.T, _ *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			delete(objs, HandleKey("wa"))
		}, ProblemMissingHandle, 1},
		"handle mismatch": {func(_ *testing.T, _ *fakeStore, a, _ Assignment, objs map[store.Key]store.Object) {
			setJSON(objs, HandleKey("wa"), Handle{HandleID: "wa", Blocks: map[string]int{BlockName(a.Block): 2}})
		}, ProblemHandleMismatch, 1},
		"invalid block": {func(t *testing.T, f *fakeStore, a, _ Assignment, objs map[store.Key]store.Object) {
			b := getBlock(t, f, a.Block)
			b.Unallocated = append(b.Unallocated, 0) // ordinal 0 is allocated
			setJSON(objs, BlockKey(a.Block), b)
		}, ProblemInvalidBlock, 1},
		"undecodable block": {func(_ *testing.T, _ *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			o := objs[BlockKey("10.0.0.64/26")]
			o.Value = []byte("{")
			objs[o.Key] = o
		}, ProblemInvalidBlock, 1},
		"block outside pools": {func(t *testing.T, f *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			setJSON(objs, BlockKey("10.9.0.0/26"), newBlock(mustPrefix("10.9.0.0/26"), "", f.now, 1))
		}, ProblemInvalidBlock, 1},
		"affinity without block": {func(_ *testing.T, _ *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			setJSON(objs, AffinityKey("n1", "10.0.0.128/26"), BlockAffinity{Node: "n1", CIDR: "10.0.0.128/26"})
		}, ProblemAffinityMismatch, 1},
		"block without affinity": {func(_ *testing.T, _ *fakeStore, a, _ Assignment, objs map[store.Key]store.Object) {
			delete(objs, AffinityKey("n1", a.Block))
		}, ProblemAffinityMismatch, 1},
		"dead node": {func(_ *testing.T, _ *fakeStore, _, _ Assignment, objs map[store.Key]store.Object) {
			delete(objs, store.Key{Kind: KindNode, Name: "n2"})
		}, ProblemDeadNode, 1},
	} {
		t.Run(name, func(t *testing.T) {
			f, a, b := healthy(t)
			objs := mutate(f, func(objs map[store.Key]store.Object) { tc.change(t, f, a, b, objs) })
			rep, err := Check(objs)
			if err != nil {
				t.Fatal(err)
			}
			if got := kinds(rep); got[tc.want] != tc.n || len(rep.Problems) != tc.n {
				t.Fatalf("problems %+v, want %d of %s", rep.Problems, tc.n, tc.want)
			}
			if !strings.Contains(rep.Summary(), "found 1 problems") {
				t.Fatalf("summary %q", rep.Summary())
			}
		})
	}
}

func TestShowAndUsage(t *testing.T) {
	f, a, _ := healthy(t)
	addPool(t, f, "v6", "fd00::/64", 122)
	addReservation(t, f, "r", "10.0.0.250/31")
	rep, err := Show(f, ShowOptions{ShowBlocks: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 4 || rep.Rows[0].Grouping != "IP Pool" || rep.Rows[1].Grouping != "Block" || rep.Rows[3].CIDR != "fd00::/64" {
		t.Fatalf("rows %+v", rep.Rows)
	}
	p := rep.Rows[0]
	if p.Total.Int64() != 256 || p.InUse != 3 || p.Reserved.Int64() != 2 || p.Free.Int64() != 251 {
		t.Fatalf("pool row %+v", p)
	}
	if rep.Rows[1].Node != "n1" || rep.Rows[1].InUse != 2 || rep.Rows[1].Free.Int64() != 62 {
		t.Fatalf("block row %+v", rep.Rows[1])
	}
	if got := rep.Rows[3].Total.String(); got != "18446744073709551616" {
		t.Fatalf("v6 /64 total %s", got)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GROUPING", "IPS RESERVED", "IP Pool", "10.0.0.0/24", "3 (1%)", "251 (98%)"} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("show text lacks %q:\n%s", want, text.String())
		}
	}
	ip, err := Show(f, ShowOptions{IP: a.IP})
	if err != nil {
		t.Fatal(err)
	}
	if ip.IP.State != "allocated" || ip.IP.Attributes.Handle != "wa" || len(ip.IP.UsedBy) != 1 || ip.IP.BlockOwner != "n1" {
		t.Fatalf("--ip %+v", ip.IP)
	}
	text.Reset()
	if err := ip.WriteText(&text); err != nil || !strings.Contains(text.String(), "is in use") || !strings.Contains(text.String(), "handle: wa") {
		t.Fatalf("--ip text %q %v", text.String(), err)
	}
	for addr, state := range map[string]string{"10.0.0.200": "not in any block", "10.0.0.60": "free", "10.0.0.251": "reserved", "8.8.8.8": "outside every pool"} {
		d, err := Show(f, ShowOptions{IP: addr})
		if err != nil || d.IP.State != state {
			t.Fatalf("--ip %s: %+v %v, want %s", addr, d.IP, err, state)
		}
	}

	u, err := Usage(f)
	if err != nil {
		t.Fatal(err)
	}
	if u.InUse != 3 || u.Blocks != 2 || u.Borrowed != 0 || len(u.Pools) != 2 || u.Pools[0].InUse != 3 || u.Pools[0].Size != 256 ||
		u.Pools[0].Reserved != 2 || u.Pools[1].Size != 18446744073709551616 || len(u.Nodes) != 2 || u.Nodes[0] != (NodeUsage{"n1", 2, 0, 1}) {
		t.Fatalf("usage %+v", u)
	}
}
