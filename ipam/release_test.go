package ipam

import (
	"fmt"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

func TestReleaseThenReuseFIFO(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/29", 29)
	var ips []string
	for i := range 6 {
		ips = append(ips, assignIP(t, f, fmt.Sprintf("h%d", i), "n1").IP)
	}
	// Release .3 then .1: the two never-used addresses (.6, .7) go first,
	// then .3, then .1.
	for _, ip := range []string{ips[3], ips[1]} {
		resp, err := release(f, ReleaseRequest{IP: ip})
		if err != nil || len(resp.Released) != 1 || resp.Released[0].IP != ip {
			t.Fatalf("release %s: %+v %v", ip, resp, err)
		}
	}
	var got []string
	for i := range 4 {
		got = append(got, assignIP(t, f, fmt.Sprintf("again%d", i), "n1").IP)
	}
	want := []string{"10.0.0.6", "10.0.0.7", ips[3], ips[1]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("reuse order %v, want %v", got, want)
	}
	assertConsistent(t, f)
}

func TestReleaseABAProtection(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/30", 30)
	first := assignIP(t, f, "old", "n1")
	if _, err := release(f, ReleaseRequest{IP: first.IP, Handle: "old", SequenceNumber: ptr(first.SequenceNumber)}); err != nil {
		t.Fatal(err)
	}
	// Fill the block so the address is reused.
	var reused Assignment
	for i := range 4 {
		a := assignIP(t, f, fmt.Sprintf("new%d", i), "n1")
		if a.IP == first.IP {
			reused = a
		}
	}
	if reused.IP == "" || reused.SequenceNumber == first.SequenceNumber {
		t.Fatalf("reused %+v, first %+v", reused, first)
	}
	// A late release by the old owner (its sequence number) is refused.
	assertUnchanged(t, f, func() {
		_, err := release(f, ReleaseRequest{IP: first.IP, SequenceNumber: ptr(first.SequenceNumber)})
		errorIs(t, err, ErrSequence)
		errorIs(t, err, store.ErrConflict)
	})
	// ...and so is one naming the old handle.
	assertUnchanged(t, f, func() {
		_, err := release(f, ReleaseRequest{IP: first.IP, Handle: "old"})
		errorIs(t, err, ErrHandleMismatch)
	})
	// The current holder's release works.
	if _, err := release(f, ReleaseRequest{IP: reused.IP + "/30", Handle: "new" + fmt.Sprint(indexOf(t, f, reused)), SequenceNumber: ptr(reused.SequenceNumber)}); err != nil {
		t.Fatal(err)
	}
}

// indexOf finds the number of the "new<i>" handle holding a.
func indexOf(t *testing.T, f *fakeStore, a Assignment) int {
	t.Helper()
	rep, err := Show(f, ShowOptions{IP: a.IP})
	if err != nil || rep.IP.Attributes == nil {
		t.Fatalf("show %s: %v", a.IP, err)
	}
	var i int
	if _, err := fmt.Sscanf(rep.IP.Attributes.Handle, "new%d", &i); err != nil {
		t.Fatal(err)
	}
	return i
}

func TestReleaseErrors(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 26)
	assignIP(t, f, "h1", "n1")
	for _, tc := range []struct {
		cmd  string
		req  any
		kind error
		msg  string
	}{
		{CmdReleaseHandle, ReleaseHandleRequest{Handle: "nope"}, ErrUnknownHandle, "handle nope holds no address"},
		{CmdRelease, ReleaseRequest{IP: "10.0.0.9"}, ErrNotAllocated, "address 10.0.0.9 is not allocated"},
		{CmdRelease, ReleaseRequest{IP: "10.0.0.200"}, ErrNotAllocated, "not allocated"},
		{CmdRelease, ReleaseRequest{IP: "192.168.0.1"}, ErrNotAllocated, "not allocated"},
		{CmdRelease, ReleaseRequest{IP: "banana"}, ErrBadRequest, "invalid IP address"},
		{CmdReleaseHandle, ReleaseHandleRequest{}, ErrBadRequest, "handle is required"},
		{CmdReleaseHost, ReleaseHostRequest{}, ErrBadRequest, "node is required"},
	} {
		assertUnchanged(t, f, func() {
			_, err := f.command(tc.cmd, tc.req)
			errorIs(t, err, tc.kind)
			errContains(t, err, tc.msg)
		})
	}
}

func TestReleaseHandle(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p4", "10.0.0.0/24", 26)
	addPool(t, f, "p6", "fd00::/120", 122)
	r := wl("h1", "n1")
	r.Num6 = 1
	got := mustAssign(t, f, r)
	resp := run[ReleaseResponse](t, f, CmdReleaseHandle, ReleaseHandleRequest{Handle: "h1"})
	if len(resp.Released) != 2 || resp.Released[0].IP != got.Addresses[0].IP || resp.Released[1].IP != got.Addresses[1].IP {
		t.Fatalf("released %+v", resp.Released)
	}
	if _, ok := f.get(HandleKey("h1")); ok {
		t.Fatal("handle survived its release")
	}
	// The blocks stay with n1 (they are its), empty.
	if b := getBlock(t, f, "10.0.0.0/26"); !b.empty() || b.EmptySince == nil || !b.EmptySince.Equal(f.now) {
		t.Fatalf("block after release: empty=%v since=%v", b.empty(), b.EmptySince)
	}
	_, err := f.command(CmdReleaseHandle, ReleaseHandleRequest{Handle: "h1"})
	errorIs(t, err, ErrUnknownHandle)
	assertConsistent(t, f)
}

func TestReleaseHost(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/29", 30) // two blocks of 4
	for i := range 4 {
		assignIP(t, f, fmt.Sprintf("n1-%d", i), "n1") // n1 fills 10.0.0.0/30
	}
	n2 := assignIP(t, f, "n2-0", "n2") // n2 claims 10.0.0.4/30
	b1 := assignIP(t, f, "n1-4", "n1") // n1 claims... no block left: borrows from n2
	if !b1.Borrowed || b1.Block != n2.Block {
		t.Fatalf("n1 should borrow from n2: %+v", b1)
	}
	if _, err := release(f, ReleaseRequest{IP: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	n2b := assignIP(t, f, "n2-1", "n2") // n2 is full after 3 more... borrows from n1
	_ = n2b
	for i := 2; ; i++ {
		a, err := tryAssign(f, wl(fmt.Sprintf("n2-%d", i), "n2"))
		if err != nil {
			break
		}
		if a.Addresses[0].Block == "10.0.0.0/30" {
			break // n2 now holds an address in n1's block
		}
	}
	resp := run[ReleaseHostResponse](t, f, CmdReleaseHost, ReleaseHostRequest{Node: "n1"})
	for _, r := range resp.Released {
		if r.Node != "n1" {
			t.Fatalf("released another node's address %+v", r)
		}
	}
	if len(resp.Released) != 4 { // 3 in its block + 1 borrowed
		t.Fatalf("released %d addresses: %+v", len(resp.Released), resp.Released)
	}
	if len(f.List(KindBlockAffinity, "n1")) != 0 {
		t.Fatal("n1 still has affinities")
	}
	// n1's block holds an address of n2: it loses its affinity but stays.
	if len(resp.BlocksUnclaimed) != 1 || resp.BlocksUnclaimed[0] != "10.0.0.0/30" {
		t.Fatalf("unclaimed %v deleted %v", resp.BlocksUnclaimed, resp.BlocksDeleted)
	}
	if b := getBlock(t, f, "10.0.0.0/30"); b.Affinity != "" || b.inUse() != 1 {
		t.Fatalf("block after releaseHost: affinity %q in use %d", b.Affinity, b.inUse())
	}
	// n2's addresses are untouched.
	for _, o := range f.List(KindBlock, "") {
		b, _, _ := decodeBlock(o.Value)
		for ord := range b.Allocations {
			if a, ok := b.attribute(ord); ok && a.Node != "n2" {
				t.Fatalf("address of %s left: %+v", a.Node, a)
			}
		}
	}
	// Releasing n2's last address in the orphaned block deletes it.
	for ord := range 4 {
		ip := addrAt(mustPrefix("10.0.0.0/30"), ord).String()
		if _, err := release(f, ReleaseRequest{IP: ip}); err == nil {
			break
		}
	}
	if _, ok := f.get(BlockKey("10.0.0.0/30")); ok {
		t.Fatal("an empty block without a node was kept")
	}
	// Releasing the node again is a no-op.
	again := run[ReleaseHostResponse](t, f, CmdReleaseHost, ReleaseHostRequest{Node: "n1"})
	if len(again.Released)+len(again.BlocksDeleted)+len(again.BlocksUnclaimed) != 0 {
		t.Fatalf("second releaseHost did something: %+v", again)
	}
	assertConsistent(t, f)
}

func TestReclaimEmpty(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 30)
	addPool(t, f, "p6", "fd00::/120", 126)
	// n1 holds three v4 blocks and one v6 block, then frees everything.
	var hs []string
	for i := range 12 {
		h := fmt.Sprintf("h%d", i)
		assignIP(t, f, h, "n1")
		hs = append(hs, h)
	}
	mustAssign(t, f, AssignRequest{Handle: "v6", Node: "n1", Num6: 1})
	hs = append(hs, "v6")
	keep := assignIP(t, f, "busy", "n2") // n2 keeps one busy block
	for _, h := range hs {
		if _, err := f.command(CmdReleaseHandle, ReleaseHandleRequest{Handle: h}); err != nil {
			t.Fatal(err)
		}
	}
	// Not yet past the grace period: nothing happens.
	resp := run[ReclaimEmptyResponse](t, f, CmdReclaimEmpty, ReclaimEmptyRequest{GracePeriodSeconds: ptr(int64(300))})
	if len(resp.Released) != 0 {
		t.Fatalf("released before the grace period: %v", resp.Released)
	}
	f.advance(DefaultEmptyBlockGrace)
	resp = run[ReclaimEmptyResponse](t, f, CmdReclaimEmpty, ReclaimEmptyRequest{})
	// n1 keeps its lowest v4 block and its only v6 block.
	if fmt.Sprint(resp.Released) != "[10.0.0.4/30 10.0.0.8/30]" {
		t.Fatalf("released %v", resp.Released)
	}
	if !hasAffinity(f, "n1", "10.0.0.0/30") || !hasAffinity(f, "n1", "fd00::/126") || !hasAffinity(f, "n2", keep.Block) {
		t.Fatal("a node lost its last block")
	}
	// Running it again changes nothing.
	assertUnchanged(t, f, func() {
		if _, err := f.command(CmdReclaimEmpty, ReclaimEmptyRequest{}); err != nil {
			t.Fatal(err)
		}
	})
	assertConsistent(t, f)
}

// An address a WorkloadEndpoint or a node's tunnel uses is not released
// unless forced (Calico's rule): the next allocation would hand it to a
// second workload.
func TestReleaseRefusesAnAddressInUseUnlessForced(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 26)
	live := assignIP(t, f, "live", "n1")
	putEndpoint(t, f, "default", "live", live.HostCIDR)
	tun := assignIP(t, f, "vxlan-tunnel-addr-n2", "n2")
	n := api.Node{Spec: api.NodeSpec{IPv4VXLANTunnelAddr: tun.IP}}
	n.Metadata.Name = "n2"
	if err := f.put(store.Key{Kind: KindNode, Name: "n2"}, n); err != nil {
		t.Fatal(err)
	}
	for ip, who := range map[string]string{live.IP: "WorkloadEndpoint default/live", tun.IP: "Node n2 (vxlanTunnelAddress)"} {
		assertUnchanged(t, f, func() {
			_, err := release(f, ReleaseRequest{IP: ip})
			errorIs(t, err, ErrInUse)
			errorIs(t, err, store.ErrConflict)
			errContains(t, err, who)
			errContains(t, err, "--force")
		})
		if resp, err := release(f, ReleaseRequest{IP: ip, Force: true}); err != nil || len(resp.Released) != 1 {
			t.Fatalf("forced release of %s: %+v, %v", ip, resp, err)
		}
	}
}
