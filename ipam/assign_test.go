package ipam

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

func TestAssignClaimsBlockAndReturnsMasks(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p4", "10.244.0.0/16", 26)
	a := assignIP(t, f, "h1", "n1")
	if a.IP != "10.244.0.0" || a.CIDR != "10.244.0.0/26" || a.HostCIDR != "10.244.0.0/32" ||
		a.Block != "10.244.0.0/26" || a.Pool != "p4" || a.Family != 4 || a.Borrowed {
		t.Fatalf("assignment = %+v", a)
	}
	if a.SequenceNumber != f.index {
		t.Fatalf("sequence number %d, want the raft index %d", a.SequenceNumber, f.index)
	}
	if !hasAffinity(f, "n1", "10.244.0.0/26") {
		t.Fatal("no affinity for the claimed block")
	}
	b := getBlock(t, f, "10.244.0.0/26")
	if b.Affinity != "host:n1" || b.AffinityClaimTime == nil || !b.AffinityClaimTime.Equal(f.now) {
		t.Fatalf("block affinity %q claimed %v", b.Affinity, b.AffinityClaimTime)
	}
	attr, _ := b.attribute(0)
	if attr.Handle != "h1" || attr.Node != "n1" || attr.Namespace != "default" || attr.WorkloadEndpoint != "default/h1" ||
		attr.Type != TypeWorkload || !attr.Timestamp.Equal(f.now) {
		t.Fatalf("attributes %+v", attr)
	}
	// Own block first: the next address comes from the same block.
	if b := assignIP(t, f, "h2", "n1"); b.IP != "10.244.0.1" {
		t.Fatalf("second address %s", b.IP)
	}
	// Another node claims its own block.
	if c := assignIP(t, f, "h3", "n2"); c.Block != "10.244.0.64/26" || c.Borrowed {
		t.Fatalf("other node got %+v", c)
	}
	o, ok := f.get(HandleKey("h1"))
	if !ok {
		t.Fatal("no IPAMHandle for h1")
	}
	h := decodeInto[Handle](t, o.Value, nil)
	if h.HandleID != "h1" || len(h.Blocks) != 1 || h.Blocks[BlockName("10.244.0.0/26")] != 1 {
		t.Fatalf("handle %+v", h)
	}
	assertConsistent(t, f)
}

func TestAssignIdempotentHandle(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p4", "10.0.0.0/24", 26)
	addPool(t, f, "p6", "fd00::/120", 122)
	req := wl("h1", "n1")
	req.Num6 = 1
	first := mustAssign(t, f, req)
	if len(first.Addresses) != 2 || first.Addresses[0].Family != 4 || first.Addresses[1].Family != 6 {
		t.Fatalf("dual stack = %+v", first.Addresses)
	}
	before := f.dump()
	again := mustAssign(t, f, req)
	if fmt.Sprint(first) != fmt.Sprint(again) {
		t.Fatalf("second answer %+v, first %+v", again, first)
	}
	// Asking again wrote nothing (the command ran, nothing changed).
	if string(before) != string(f.dump()) {
		t.Fatal("idempotent assign changed the state")
	}
	// Asking the same handle for a different specific address is refused.
	req.IP4 = "10.0.0.9"
	_, err := tryAssign(f, req)
	errorIs(t, err, ErrHandleMismatch)
	// A handle holding v4 only gets its v6 added.
	f2 := newFake(t)
	addPool(t, f2, "p4", "10.0.0.0/24", 26)
	addPool(t, f2, "p6", "fd00::/120", 122)
	one := mustAssign(t, f2, wl("h", "n1"))
	both := wl("h", "n1")
	both.Num6 = 1
	got := mustAssign(t, f2, both)
	if len(got.Addresses) != 2 || got.Addresses[0] != one.Addresses[0] {
		t.Fatalf("v6 added = %+v", got.Addresses)
	}
}

// A /28 pool with /30 blocks holds exactly 16 addresses, whichever nodes
// ask, then says "pool exhausted".
func TestSmallPoolExhaustion(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strictAffinity=%v", strict), func(t *testing.T) {
			f := newFake(t)
			addPool(t, f, "small", "10.9.0.0/28", 30)
			if strict {
				configure(t, f, ConfigureRequest{StrictAffinity: ptr(true)})
			}
			seen := map[string]bool{}
			nodes := []string{"n1", "n2", "n3", "n4", "n5"}
			lastErr := map[string]error{}
			for i := range 40 {
				node := nodes[i%len(nodes)]
				resp, err := tryAssign(f, wl(fmt.Sprintf("h%d", i), node))
				lastErr[node] = err
				if err != nil {
					continue
				}
				ip := resp.Addresses[0].IP
				if seen[ip] {
					t.Fatalf("%s handed out twice", ip)
				}
				seen[ip] = true
			}
			if len(seen) != 16 {
				t.Fatalf("handed out %d addresses, want 16", len(seen))
			}
			for _, n := range nodes {
				err := lastErr[n]
				errorIs(t, err, ErrExhausted)
				errContains(t, err, "pool exhausted")
				errorIs(t, err, store.ErrConflict)
				if strict {
					errContains(t, err, "strictAffinity forbids borrowing")
				}
			}
			if strict {
				// Strict affinity: the fifth node never got a block.
				rep, err := Usage(f)
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range rep.Nodes {
					if n.Borrowed != 0 || (n.Node == "n5" && n.InUse != 0) {
						t.Fatalf("strict affinity usage %+v", rep.Nodes)
					}
				}
			}
			assertConsistent(t, f)
		})
	}
}

// With the same pool and one node per block, strictAffinity=true still
// hands out all 16.
func TestSmallPoolStrictFourNodes(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "small", "10.9.0.0/28", 30)
	configure(t, f, ConfigureRequest{StrictAffinity: ptr(true)})
	n := 0
	for i := range 16 {
		if _, err := tryAssign(f, wl(fmt.Sprintf("h%d", i), fmt.Sprintf("n%d", i%4))); err != nil {
			t.Fatalf("assignment %d: %v", i, err)
		}
		n++
	}
	_, err := tryAssign(f, wl("more", "n0"))
	errorIs(t, err, ErrExhausted)
	assertConsistent(t, f)
}

func TestBorrowing(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "one", "10.1.0.0/30", 30) // a single block
	a := assignIP(t, f, "h1", "n1")
	b := assignIP(t, f, "h2", "n2")
	if !b.Borrowed || b.Block != a.Block || a.Borrowed {
		t.Fatalf("n2 should borrow from n1's block: a=%+v b=%+v", a, b)
	}
	if hasAffinity(f, "n2", "10.1.0.0/30") {
		t.Fatal("borrowing must not claim the block")
	}
	rep, err := Show(f, ShowOptions{ShowBorrowed: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Borrowed) != 1 || rep.Borrowed[0].IP != b.IP || rep.Borrowed[0].BorrowingNode != "n2" || rep.Borrowed[0].BlockOwner != "n1" ||
		rep.Borrowed[0].AllocatedTo != "default/h2" {
		t.Fatalf("show borrowed = %+v", rep.Borrowed)
	}

	// With strictAffinity the same request fails and changes nothing.
	configure(t, f, ConfigureRequest{StrictAffinity: ptr(true)})
	assertUnchanged(t, f, func() {
		_, err := tryAssign(f, wl("h3", "n3"))
		errorIs(t, err, ErrExhausted)
	})
	// ...and so does a specific address in another node's block.
	req := wl("h4", "n3")
	req.IP4 = "10.1.0.3"
	assertUnchanged(t, f, func() {
		_, err := tryAssign(f, req)
		errorIs(t, err, ErrStrictAffinity)
	})
}

func TestBorrowOrderDependsOnNode(t *testing.T) {
	blocks := func() []netip.Prefix {
		return BlockCIDRs(netip.MustParsePrefix("10.0.0.0/20"), 26, 100)
	}
	a, b, a2 := blocks(), blocks(), blocks()
	borrowOrder("node-a", a)
	borrowOrder("node-b", b)
	borrowOrder("node-a", a2)
	if fmt.Sprint(a) != fmt.Sprint(a2) {
		t.Fatal("order is not deterministic")
	}
	if fmt.Sprint(a) == fmt.Sprint(b) {
		t.Fatal("two nodes get the same order")
	}
}

func TestSpecificAddress(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.5.0.0/24", 26)
	addPool(t, f, "off", "10.6.0.0/24", 26, func(s *api.IPPoolSpec) { s.Disabled = true })
	addReservation(t, f, "gw", "10.5.0.1")
	req := wl("h1", "n1")
	req.IP4 = "10.5.0.70"
	a := mustAssign(t, f, req).Addresses[0]
	if a.IP != "10.5.0.70" || a.CIDR != "10.5.0.70/26" || a.Block != "10.5.0.64/26" {
		t.Fatalf("specific = %+v", a)
	}
	if !hasAffinity(f, "n1", "10.5.0.64/26") {
		t.Fatal("the block of a specific address is claimed for the node")
	}
	for _, tc := range []struct {
		ip, handle string
		kind       error
		msg        string
	}{
		{"10.5.0.70", "h2", ErrAllocated, "address 10.5.0.70 is already allocated to handle h1"},
		{"192.168.1.1", "h2", ErrNoPool, "address 192.168.1.1 is outside every IP pool"},
		{"10.6.0.5", "h2", ErrNoPool, "disabled"},
		{"10.5.0.1", "h2", ErrReserved, "reserved by IPReservation gw"},
	} {
		r := wl(tc.handle, "n2")
		r.IP4 = tc.ip
		assertUnchanged(t, f, func() {
			_, err := tryAssign(f, r)
			errorIs(t, err, tc.kind)
			errContains(t, err, tc.msg)
		})
	}
	// Another node may take a specific address in n1's block (no strict
	// affinity): it is borrowed.
	r := wl("h3", "n2")
	r.IP4 = "10.5.0.71"
	if got := mustAssign(t, f, r).Addresses[0]; !got.Borrowed {
		t.Fatalf("%+v should be borrowed", got)
	}
	assertConsistent(t, f)
}

func TestBadRequests(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.5.0.0/24", 26)
	for name, r := range map[string]AssignRequest{
		"no handle":     {Node: "n1", Num4: 1},
		"no node":       {Handle: "h", Num4: 1},
		"nothing":       {Handle: "h", Node: "n1"},
		"two":           {Handle: "h", Node: "n1", Num4: 2},
		"v6 in ip4":     {Handle: "h", Node: "n1", IP4: "fd00::1"},
		"garbage ip":    {Handle: "h", Node: "n1", IP4: "10.0.0.300"},
		"bad use":       {Handle: "h", Node: "n1", Num4: 1, Use: "LoadBalancer"},
		"space handle":  {Handle: "a b", Node: "n1", Num4: 1},
		"unknown pool":  {Handle: "h", Node: "n1", Num4: 1, Pools: []string{"nope"}},
		"bad encap":     {Handle: "h", Node: "n1", Num4: 1, Encapsulation: "GRE"},
		"no v6 pool":    {Handle: "h", Node: "n1", Num6: 1},
		"half dual":     {Handle: "h", Node: "n1", Num4: 1, Num6: 1},
		"empty pool nm": {Handle: "h", Node: "n1", Num4: 1, Pools: []string{""}},
	} {
		t.Run(name, func(t *testing.T) {
			assertUnchanged(t, f, func() {
				_, err := tryAssign(f, r)
				if err == nil {
					t.Fatal("accepted")
				}
				errorIs(t, err, store.ErrInvalid)
			})
		})
	}
	// A malformed payload is a clear error too.
	_, err := f.command(CmdAssign, "not an object")
	errorIs(t, err, ErrBadRequest)
}

func TestReservationsHonoured(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.7.0.0/26", 28)
	// The whole first block and two addresses of the second are reserved.
	addReservation(t, f, "r", "10.7.0.0/28", "10.7.0.16/31")
	var got []string
	for i := range 14 {
		got = append(got, assignIP(t, f, fmt.Sprintf("h%d", i), "n1").IP)
	}
	if got[0] != "10.7.0.18" {
		t.Fatalf("first address %s, want 10.7.0.18 (block 10.7.0.0/28 and .16-.17 reserved)", got[0])
	}
	for _, ip := range got {
		a := netip.MustParseAddr(ip)
		if netip.MustParsePrefix("10.7.0.0/28").Contains(a) || ip == "10.7.0.16" || ip == "10.7.0.17" {
			t.Fatalf("reserved address %s handed out", ip)
		}
	}
	if _, err := f.get(BlockKey("10.7.0.0/28")); err {
		t.Fatal("a fully reserved block was claimed")
	}
	rep, err := Show(f, ShowOptions{ShowBlocks: true})
	if err != nil {
		t.Fatal(err)
	}
	pool := rep.Rows[0]
	if pool.Total.Int64() != 64 || pool.InUse != 14 || pool.Reserved.Int64() != 18 || pool.Free.Int64() != 64-14-18 {
		t.Fatalf("pool row %+v", pool)
	}
}

func TestPoolSelection(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "zone-a", "10.1.0.0/24", 26, func(s *api.IPPoolSpec) { s.NodeSelector = "zone == 'a'" })
	addPool(t, f, "manual", "10.2.0.0/24", 26, func(s *api.IPPoolSpec) { s.AssignmentMode = api.AssignmentManual })
	addPool(t, f, "tunnels", "10.3.0.0/24", 26, func(s *api.IPPoolSpec) {
		s.AllowedUses = []string{api.UseTunnel}
		s.VXLANMode = api.EncapAlways
	})
	addPool(t, f, "off", "10.4.0.0/24", 26, func(s *api.IPPoolSpec) { s.Disabled = true })

	r := wl("h1", "n1")
	r.NodeLabels = map[string]string{"zone": "a"}
	if a := mustAssign(t, f, r).Addresses[0]; a.Pool != "zone-a" {
		t.Fatalf("got pool %s", a.Pool)
	}
	r = wl("h2", "n2")
	r.NodeLabels = map[string]string{"zone": "b"}
	_, err := tryAssign(f, r)
	errorIs(t, err, ErrNoPool)
	errContains(t, err, "node n2")

	// Node labels come from the stored Node when the request has none.
	if err := f.put(store.Key{Kind: KindNode, Name: "n3"}, api.Node{Metadata: api.ObjectMeta{Name: "n3", Labels: map[string]string{"zone": "a"}}}); err != nil {
		t.Fatal(err)
	}
	if a := mustAssign(t, f, wl("h3", "n3")).Addresses[0]; a.Pool != "zone-a" {
		t.Fatalf("got pool %s", a.Pool)
	}

	// A Manual pool only when named, and then selectors do not apply.
	r = wl("h4", "n2")
	r.Pools = []string{"manual"}
	if a := mustAssign(t, f, r).Addresses[0]; a.Pool != "manual" {
		t.Fatalf("got pool %s", a.Pool)
	}
	// A Tunnel-only pool serves tunnels, not workloads.
	r = wl("h5", "n2")
	r.Pools = []string{"tunnels"}
	_, err = tryAssign(f, r)
	errorIs(t, err, ErrNoPool)
	tr, err := TunnelRequest(TunnelVXLAN, "n2", false)
	if err != nil {
		t.Fatal(err)
	}
	tun := mustAssign(t, f, tr)
	if tun.Handle != "vxlan-tunnel-addr-n2" || tun.Addresses[0].Pool != "tunnels" {
		t.Fatalf("tunnel = %+v", tun)
	}
	// A disabled pool is never used, even by name.
	r = wl("h6", "n2")
	r.Pools = []string{"off"}
	_, err = tryAssign(f, r)
	errContains(t, err, "disabled")
}

func TestTunnelRequests(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "plain", "10.1.0.0/24", 26)
	addPool(t, f, "vx", "10.2.0.0/24", 26, func(s *api.IPPoolSpec) { s.VXLANMode = api.EncapCrossSubnet })
	addPool(t, f, "vx6", "fd00::/120", 122, func(s *api.IPPoolSpec) { s.VXLANMode = api.EncapAlways })
	for _, tc := range []struct {
		kind   TunnelKind
		v6     bool
		handle string
		typ    string
		pool   string
	}{
		{TunnelVXLAN, false, "vxlan-tunnel-addr-n1", TypeVXLANTunnel, "vx"},
		{TunnelVXLAN, true, "vxlan-v6-tunnel-addr-n1", TypeVXLANV6Tunnel, "vx6"},
		// WireGuard may use any pool: n1's own block in vx comes first.
		{TunnelWireguard, false, "wireguard-tunnel-addr-n1", TypeWireguardTunnel, "vx"},
		{TunnelWireguard, true, "wireguard-v6-tunnel-addr-n1", TypeWireguardV6Tunnel, "vx6"},
	} {
		r, err := TunnelRequest(tc.kind, "n1", tc.v6)
		if err != nil {
			t.Fatal(err)
		}
		got := mustAssign(t, f, r)
		again := mustAssign(t, f, r)
		a := got.Addresses[0]
		if got.Handle != tc.handle || a.Pool != tc.pool || again.Addresses[0] != a {
			t.Fatalf("%s v6=%v: %+v (again %+v)", tc.kind, tc.v6, got, again)
		}
		blk := getBlock(t, f, a.Block)
		o, _ := ordinalOf(netip.MustParsePrefix(a.Block), netip.MustParseAddr(a.IP))
		if attr, _ := blk.attribute(o); attr.Type != tc.typ || attr.Node != "n1" {
			t.Fatalf("attributes %+v", attr)
		}
	}
	if _, err := TunnelRequest(TunnelIPIP, "n1", true); err == nil {
		t.Fatal("IPIP v6 accepted")
	}
	r, _ := TunnelRequest(TunnelIPIP, "n1", false)
	_, err := tryAssign(f, r)
	errContains(t, err, "IPIP")
}

func TestBlockLimit(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 30)
	configure(t, f, ConfigureRequest{StrictAffinity: ptr(true), MaxBlocksPerHost: ptr(int32(2))})
	for i := range 8 {
		assignIP(t, f, fmt.Sprintf("h%d", i), "n1")
	}
	_, err := tryAssign(f, wl("h9", "n1"))
	errorIs(t, err, ErrBlockLimit)
	errContains(t, err, "maxBlocksPerHost is 2")
}

func TestAutoAllocateBlocksOff(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 26)
	configure(t, f, ConfigureRequest{StrictAffinity: ptr(true), AutoAllocateBlocks: ptr(false)})
	_, err := tryAssign(f, wl("h", "n1"))
	errorIs(t, err, ErrExhausted)
	// A specific address still claims its block (Calico's AssignIP).
	r := wl("h", "n1")
	r.IP4 = "10.0.0.5"
	mustAssign(t, f, r)
	if a := assignIP(t, f, "h2", "n1"); a.Block != "10.0.0.0/26" {
		t.Fatalf("got %+v", a)
	}
}

func TestReclaimEmptyBlockFromAnotherNode(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "one", "10.1.0.0/30", 30)
	configure(t, f, ConfigureRequest{StrictAffinity: ptr(true)})
	a := assignIP(t, f, "h1", "n1")
	if _, err := release(f, ReleaseRequest{IP: a.IP}); err != nil {
		t.Fatal(err)
	}
	// Claimed less than a minute ago: n2 may not take it.
	_, err := tryAssign(f, wl("h2", "n2"))
	errorIs(t, err, ErrExhausted)
	f.advance(EmptyBlockMinReclaimAge)
	b := assignIP(t, f, "h2", "n2")
	if b.Borrowed || b.Block != "10.1.0.0/30" {
		t.Fatalf("n2 got %+v", b)
	}
	if hasAffinity(f, "n1", b.Block) || !hasAffinity(f, "n2", b.Block) {
		t.Fatal("affinity did not move to n2")
	}
	assertConsistent(t, f)
}

func TestAffinityWithoutBlockIsRepaired(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p", "10.0.0.0/24", 26)
	// An affinity left behind without its block (e.g. by an older writer).
	if err := f.put(AffinityKey("n1", "10.0.0.128/26"), BlockAffinity{Node: "n1", CIDR: "10.0.0.128/26"}); err != nil {
		t.Fatal(err)
	}
	if a := assignIP(t, f, "h", "n1"); a.Block != "10.0.0.128/26" {
		t.Fatalf("got %+v, want the affine block recreated", a)
	}
	assertConsistent(t, f)
}

// A request that fails half-way (v4 assigned, then v6 fails) changes
// nothing.
func TestFailedCommandIsAtomic(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "p4", "10.0.0.0/24", 26)
	addPool(t, f, "p6", "fd00::/122", 122)
	configure(t, f, ConfigureRequest{StrictAffinity: ptr(true)})
	r := wl("first", "n1")
	r.Num6 = 1
	mustAssign(t, f, r)
	for i := range 63 {
		r := AssignRequest{Handle: fmt.Sprintf("v6-%d", i), Node: "n1", Num6: 1}
		mustAssign(t, f, r)
	}
	r = wl("second", "n2")
	r.Num6 = 1
	assertUnchanged(t, f, func() {
		_, err := tryAssign(f, r)
		errorIs(t, err, ErrExhausted)
	})
}

func TestCooldownDelaysReuse(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "one", "10.1.0.0/30", 30)
	configure(t, f, ConfigureRequest{IPCooldownSeconds: ptr(int32(60))})
	var ips []string
	for i := range 4 {
		ips = append(ips, assignIP(t, f, fmt.Sprintf("h%d", i), "n1").IP)
	}
	if _, err := release(f, ReleaseRequest{IP: ips[1]}); err != nil {
		t.Fatal(err)
	}
	_, err := tryAssign(f, wl("x", "n1"))
	errorIs(t, err, ErrExhausted)
	r := wl("y", "n1")
	r.IP4 = ips[1]
	_, err = tryAssign(f, r)
	errorIs(t, err, ErrCoolingDown)
	rep, _ := Show(f, ShowOptions{IP: ips[1]})
	if rep.IP.State != "cooling down" {
		t.Fatalf("--ip state %q", rep.IP.State)
	}
	f.advance(60 * time.Second)
	if got := assignIP(t, f, "x", "n1"); got.IP != ips[1] {
		t.Fatalf("after cooldown got %s, want %s", got.IP, ips[1])
	}
}

func TestIPv6Assign(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "v6", "fd00:10::/48", 0) // default /122 blocks
	addReservation(t, f, "r", "fd00:10::/126")
	a := mustAssign(t, f, AssignRequest{Handle: "h", Node: "n1", Num6: 1}).Addresses[0]
	if a.IP != "fd00:10::4" || a.CIDR != "fd00:10::4/122" || a.HostCIDR != "fd00:10::4/128" || a.Family != 6 || a.Block != "fd00:10::/122" {
		t.Fatalf("v6 assignment %+v", a)
	}
	b := mustAssign(t, f, AssignRequest{Handle: "h2", Node: "n2", Num6: 1}).Addresses[0]
	if b.Block != "fd00:10::40/122" {
		t.Fatalf("second node's block %s", b.Block)
	}
	r := AssignRequest{Handle: "h3", Node: "n3", IP6: "fd00:10:0:ffff::1234"}
	if c := mustAssign(t, f, r).Addresses[0]; c.Block != "fd00:10:0:ffff::1200/122" {
		t.Fatalf("specific v6 %+v", c)
	}
	assertConsistent(t, f)
}

func TestSelectorErrorsAndNamespaceSelector(t *testing.T) {
	f := newFake(t)
	addPool(t, f, "gpu", "10.1.0.0/24", 26, func(s *api.IPPoolSpec) { s.NodeSelector = "gpu == 'true'" })
	_, err := tryAssign(f, wl("h", "n1"))
	errContains(t, err, "no IP pool matches node n1 (IPv4)")
	addPool(t, f, "team-a", "10.2.0.0/24", 26, func(s *api.IPPoolSpec) {
		s.NamespaceSelector = "projectcalico.org/name == 'team-a'"
		s.AllowedUses = []string{api.UseWorkload}
	})
	r := wl("h", "n1")
	r.Attrs.Namespace = "team-a"
	if a := mustAssign(t, f, r).Addresses[0]; a.Pool != "team-a" {
		t.Fatalf("got %+v", a)
	}
	r = wl("h2", "n1")
	r.Attrs.Namespace = "team-b"
	_, err = tryAssign(f, r)
	errorIs(t, err, ErrNoPool)
	// Labels given in the request replace the default name label.
	r.NamespaceLabels = map[string]string{"projectcalico.org/name": "team-a"}
	mustAssign(t, f, r)
}
