package ipam

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// poolObj builds an IPPool.
func poolObj(name, cidr string, blockSize int, mods ...func(*api.IPPoolSpec)) api.IPPool {
	p := api.IPPool{
		TypeMeta: api.TypeMeta{Kind: KindIPPool, APIVersion: api.Group},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.IPPoolSpec{CIDR: cidr, BlockSize: blockSize},
	}
	for _, m := range mods {
		m(&p.Spec)
	}
	return p
}

func addPool(t testing.TB, f *fakeStore, name, cidr string, blockSize int, mods ...func(*api.IPPoolSpec)) {
	t.Helper()
	if err := f.put(store.Key{Kind: KindIPPool, Name: name}, poolObj(name, cidr, blockSize, mods...)); err != nil {
		t.Fatalf("create pool %s: %v", name, err)
	}
}

func addReservation(t testing.TB, f *fakeStore, name string, cidrs ...string) {
	t.Helper()
	r := api.IPReservation{Metadata: api.ObjectMeta{Name: name}, Spec: api.IPReservationSpec{ReservedCIDRs: cidrs}}
	if err := f.put(store.Key{Kind: KindIPReservation, Name: name}, r); err != nil {
		t.Fatalf("create reservation %s: %v", name, err)
	}
}

func configure(t testing.TB, f *fakeStore, r ConfigureRequest) {
	t.Helper()
	if _, err := f.command(CmdConfigure, r); err != nil {
		t.Fatalf("configure: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// wl is a workload request for IPv4 on node.
func wl(handle, node string) AssignRequest {
	return AssignRequest{Handle: handle, Node: node, Num4: 1,
		Attrs: Attributes{Namespace: "default", Workload: handle, WorkloadEndpoint: "default/" + handle}}
}

func tryAssign(f *fakeStore, r AssignRequest) (AssignResponse, error) {
	out, err := f.command(CmdAssign, r)
	if err != nil {
		return AssignResponse{}, err
	}
	var resp AssignResponse
	err = json.Unmarshal(out, &resp)
	return resp, err
}

func mustAssign(t testing.TB, f *fakeStore, r AssignRequest) AssignResponse {
	t.Helper()
	resp, err := tryAssign(f, r)
	if err != nil {
		t.Fatalf("assign %s on %s: %v", r.Handle, r.Node, err)
	}
	return resp
}

// assignIP assigns one IPv4 address and returns it.
func assignIP(t testing.TB, f *fakeStore, handle, node string) Assignment {
	t.Helper()
	resp := mustAssign(t, f, wl(handle, node))
	if len(resp.Addresses) != 1 {
		t.Fatalf("assign %s: got %d addresses", handle, len(resp.Addresses))
	}
	return resp.Addresses[0]
}

func release(f *fakeStore, r ReleaseRequest) (ReleaseResponse, error) {
	out, err := f.command(CmdRelease, r)
	if err != nil {
		return ReleaseResponse{}, err
	}
	var resp ReleaseResponse
	err = json.Unmarshal(out, &resp)
	return resp, err
}

func decodeInto[T any](t testing.TB, out []byte, err error) T {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// getBlock reads a stored block.
func getBlock(t testing.TB, f *fakeStore, cidr string) *Block {
	t.Helper()
	o, ok := f.get(BlockKey(cidr))
	if !ok {
		t.Fatalf("block %s does not exist", cidr)
	}
	b, _, err := decodeBlock(o.Value)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hasAffinity(f *fakeStore, node, cidr string) bool {
	_, ok := f.get(AffinityKey(node, cidr))
	return ok
}

// assertUnchanged runs fn and fails if the state changed.
func assertUnchanged(t *testing.T, f *fakeStore, fn func()) {
	t.Helper()
	before := f.dump()
	fn()
	if after := f.dump(); !bytes.Equal(before, after) {
		t.Fatalf("state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// assertConsistent runs Check and fails on any structural problem (leaks
// and dead nodes are expected: the fake has no endpoints or nodes), and
// checks that no address is allocated twice.
func assertConsistent(t testing.TB, f *fakeStore) {
	t.Helper()
	rep, err := Check(f)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	for _, p := range rep.Problems {
		switch p.Kind {
		case ProblemLeaked, ProblemDeadNode:
			continue
		}
		t.Fatalf("inconsistent state: %+v", p)
	}
	seen := map[netip.Addr]string{}
	for _, o := range f.List(KindBlock, "") {
		b, p, err := decodeBlock(o.Value)
		if err != nil {
			t.Fatal(err)
		}
		for ord := range b.Allocations {
			if attr, ok := b.attribute(ord); ok {
				a := addrAt(p, ord)
				if prev, dup := seen[a]; dup {
					t.Fatalf("address %s allocated twice: %s and %s", a, prev, attr.Handle)
				}
				seen[a] = attr.Handle
			}
		}
	}
}

func errContains(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want it to contain %q", err, want)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// run executes a command that must succeed and decodes its response.
func run[T any](t testing.TB, f *fakeStore, cmd string, req any) T {
	t.Helper()
	out, err := f.command(cmd, req)
	return decodeInto[T](t, out, err)
}
