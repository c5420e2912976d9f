package ipam

import (
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

func putEndpoint(t *testing.T, f *fakeStore, ns, name string, ips ...string) {
	t.Helper()
	w := api.WorkloadEndpoint{Metadata: api.ObjectMeta{Name: name, Namespace: ns}, Spec: api.WorkloadEndpointSpec{IPNetworks: ips}}
	if err := f.put(store.Key{Kind: KindWorkloadEndpoint, Namespace: ns, Name: name}, w); err != nil {
		t.Fatal(err)
	}
}

func putNode(t *testing.T, f *fakeStore, name string, spec api.NodeSpec) {
	t.Helper()
	n := api.Node{Metadata: api.ObjectMeta{Name: name}, Spec: spec}
	if err := f.put(store.Key{Kind: KindNode, Name: name}, n); err != nil {
		t.Fatal(err)
	}
}

func gcPass(t *testing.T, f *fakeStore, grace *int64) GCResponse {
	t.Helper()
	return run[GCResponse](t, f, CmdGC, GCRequest{GracePeriodSeconds: grace})
}

func TestGCReleasesLeaksAfterGrace(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p4", "10.0.0.0/24", 26)
	live := assignIP(t, f, "live", "n1")
	putEndpoint(t, f, "default", "live", live.HostCIDR)
	gone := assignIP(t, f, "gone", "n1")
	// The endpoint exists but lists another address: leaked too.
	moved := assignIP(t, f, "moved", "n1")
	putEndpoint(t, f, "default", "moved", "10.0.0.200/32")
	// An endpoint still being set up (no addresses yet) counts as in use.
	assignIP(t, f, "setup", "n1")
	putEndpoint(t, f, "default", "setup")
	// An allocation that names no endpoint cannot be judged.
	mustAssign(t, f, AssignRequest{Handle: "anon", Node: "n1", Num4: 1})

	resp := gcPass(t, f, nil)
	if resp.Candidates != 2 || len(resp.CandidateHandles) != 2 || resp.CandidateHandles[0] != "gone" ||
		resp.CandidateHandles[1] != "moved" || len(resp.Reclaimed) != 0 {
		t.Fatalf("first pass %+v", resp)
	}
	f.advance(10 * time.Minute)
	if resp := gcPass(t, f, nil); len(resp.Reclaimed) != 0 || resp.Candidates != 2 {
		t.Fatalf("within the grace period: %+v", resp)
	}
	f.advance(5 * time.Minute)
	resp = gcPass(t, f, nil)
	if len(resp.Reclaimed) != 2 || resp.Candidates != 0 || resp.Reclaimed[0].IP != gone.IP || resp.Reclaimed[1].IP != moved.IP {
		t.Fatalf("after the grace period: %+v", resp)
	}
	for _, h := range []string{"gone", "moved"} {
		if _, ok := f.get(HandleKey(h)); ok {
			t.Fatalf("handle %s survived", h)
		}
	}
	if resp := gcPass(t, f, nil); resp.Candidates != 0 || len(resp.Reclaimed) != 0 {
		t.Fatalf("nothing left to collect: %+v", resp)
	}
	// Check agrees: setup and anon look leaked (GC waits for setup and
	// cannot judge anon), the endpoint's foreign address has no
	// allocation, and n1 has no Node object.
	rep, err := Check(f)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, p := range rep.Problems {
		kinds[p.Kind]++
	}
	if kinds[ProblemLeaked] != 2 || kinds[ProblemNoAllocation] != 1 || kinds[ProblemDeadNode] != 1 || len(rep.Problems) != 4 {
		t.Fatalf("check: %+v", rep.Problems)
	}
}

func TestGCAllOrNone(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p4", "10.0.0.0/24", 26)
	addPool(t, f, "p6", "fd00::/120", 122)
	r := wl("dual", "n1")
	r.Num6 = 1
	dual := mustAssign(t, f, r)
	// The endpoint lists both addresses: in use.
	putEndpoint(t, f, "default", "dual", dual.Addresses[0].HostCIDR, dual.Addresses[1].HostCIDR)
	if resp := gcPass(t, f, ptr(int64(0))); resp.Candidates != 0 || len(resp.Reclaimed) != 0 {
		t.Fatalf("in use: %+v", resp)
	}
	// The endpoint lists only v4 now: the v6 address is leaked, the v4
	// one is not, so the handle is kept whole.
	putEndpoint(t, f, "default", "dual", dual.Addresses[0].HostCIDR)
	if resp := gcPass(t, f, ptr(int64(0))); resp.Candidates != 0 || len(resp.Reclaimed) != 0 {
		t.Fatalf("partly in use: %+v", resp)
	}
	// The endpoint goes: both are released together.
	if err := f.del(store.Key{Kind: KindWorkloadEndpoint, Namespace: "default", Name: "dual"}); err != nil {
		t.Fatal(err)
	}
	// Even with no grace period, the first pass only marks the handle
	// (an add may be writing its endpoint right now); a later pass
	// releases both addresses together.
	if resp := gcPass(t, f, ptr(int64(0))); resp.Candidates != 2 || len(resp.Reclaimed) != 0 {
		t.Fatalf("gone, first sighting: %+v", resp)
	}
	f.advance(time.Second)
	if resp := gcPass(t, f, ptr(int64(0))); len(resp.Reclaimed) != 2 {
		t.Fatalf("gone: %+v", resp)
	}
	assertConsistent(t, f)
}

func TestGCCandidateRecovers(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p4", "10.0.0.0/24", 26)
	a := assignIP(t, f, "slow", "n1")
	if resp := gcPass(t, f, nil); resp.Candidates != 1 {
		t.Fatalf("%+v", resp)
	}
	o, _ := f.get(HandleKey("slow"))
	if h := decodeInto[Handle](t, o.Value, nil); h.LeakedSince == nil || !h.LeakedSince.Equal(f.now) {
		t.Fatalf("candidate not recorded: %+v", h)
	}
	// The endpoint appears before the grace period ends: no longer a
	// candidate, and the clock restarts.
	putEndpoint(t, f, "default", "slow", a.HostCIDR)
	f.advance(20 * time.Minute)
	if resp := gcPass(t, f, nil); resp.Candidates != 0 || len(resp.Reclaimed) != 0 {
		t.Fatalf("%+v", resp)
	}
	o, _ = f.get(HandleKey("slow"))
	if h := decodeInto[Handle](t, o.Value, nil); h.LeakedSince != nil {
		t.Fatalf("recovered candidate still marked: %+v", h)
	}
	if err := f.del(store.Key{Kind: KindWorkloadEndpoint, Namespace: "default", Name: "slow"}); err != nil {
		t.Fatal(err)
	}
	if resp := gcPass(t, f, nil); resp.Candidates != 1 || len(resp.Reclaimed) != 0 {
		t.Fatalf("the grace period must restart: %+v", resp)
	}
}

func TestGCTunnelAddressesFollowNodes(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p4", "10.0.0.0/24", 26)
	putNode(t, f, "n1", api.NodeSpec{})
	for _, n := range []string{"n1", "n2"} {
		r, _ := TunnelRequest(TunnelWireguard, n, false)
		mustAssign(t, f, r)
	}
	gcPass(t, f, ptr(int64(0))) // first sighting: marked
	f.advance(time.Second)
	resp := gcPass(t, f, ptr(int64(0)))
	if len(resp.Reclaimed) != 1 || resp.Reclaimed[0].Handle != "wireguard-tunnel-addr-n2" {
		t.Fatalf("%+v", resp)
	}
}
