package tunnels

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/cluster"
	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/storetest"
)

const pools = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.80.0.0/16, blockSize: 26, vxlanMode: Always}
`

// run wires the controller to the real calculation over a one-node store,
// as the agent does: the calc sees the pools, the Node and the blocks and
// hands the controller its needs.
func run(t *testing.T) (*store.Node, context.Context) {
	t.Helper()
	st := storetest.Single(t, func(r *store.Registry) {
		cluster.Register(r)
		ipam.Register(r, slog.New(slog.DiscardHandler))
	})
	ctx, cancel := context.WithCancel(context.Background())
	reg := cluster.New(st, cluster.Self{Name: "n1", Address4: netip.MustParsePrefix("192.0.2.1/24")}, nil)
	if err := reg.RegisterNode(ctx, cluster.Tunnel{}); err != nil {
		t.Fatal(err)
	}
	c := New(Config{Node: "n1", RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}, st, reg)
	disp := calc.New(calc.Config{NodeName: "n1", Address: netip.MustParseAddr("192.0.2.1")})
	done := make(chan struct{}, 2)
	go func() { c.Run(ctx); done <- struct{}{} }()
	go func() {
		defer func() { done <- struct{}{} }()
		events, err := st.Watch(ctx, 0, store.WatchFilter{Kinds: disp.Kinds()})
		if err != nil {
			t.Error(err)
			return
		}
		for ev := range events {
			disp.OnEvent(ev)
			if out, err := disp.Compute(ev.Revision); err == nil {
				c.Set(out.Tunnels)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return st, ctx
}

func apply(t *testing.T, st *store.Node, doc string) {
	t.Helper()
	rs, err := api.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	api.Default(rs[0])
	v, _ := api.StoreValue(rs[0])
	kind, ns, name := api.Key(rs[0])
	if _, err := st.Txn(context.Background(), []store.Op{{Type: store.OpPut, Key: store.Key{Kind: kind, Namespace: ns, Name: name}, Value: v}}); err != nil {
		t.Fatal(err)
	}
}

// node1 is n1's Node as stored (an empty one when absent).
func node1(st *store.Node) *api.Node {
	o, ok := st.Get(store.Key{Kind: api.KindNode, Name: "n1"})
	if !ok {
		return &api.Node{}
	}
	r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
	if err != nil {
		return &api.Node{}
	}
	return r.(*api.Node)
}

func tunnelOf(st *store.Node) (addr, mac string) {
	n := node1(st)
	return n.Spec.IPv4VXLANTunnelAddr, n.Spec.VXLANTunnelMACAddr
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A VXLAN pool gives the node a tunnel address from IPAM, recorded with
// its VTEP MAC; an address taken away in IPAM is replaced at once (the
// calculation sees the block change: no periodic check); no VXLAN pool
// any more gives it back.
func TestTunnelAddressFollowsThePools(t *testing.T) {
	st, ctx := run(t)
	apply(t, st, pools)
	waitFor(t, "a tunnel address", func() bool { a, m := tunnelOf(st); return a != "" && m == dataplane.VXLANMAC("n1").String() })
	first, _ := tunnelOf(st)
	handle := ipam.TunnelHandle(ipam.TunnelVXLAN, "n1", false)
	if _, ok := st.Get(ipam.HandleKey(handle)); !ok {
		t.Fatal("no IPAM handle for the tunnel address")
	}

	// Someone releases it (ipam release, a forced pool delete).
	if _, err := ipam.NewClient(st).ReleaseHandle(ctx, handle); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the tunnel address allocated again", func() bool {
		_, ok := st.Get(ipam.HandleKey(handle))
		a, _ := tunnelOf(st)
		return ok && a != ""
	})
	if a, _ := tunnelOf(st); a == "" {
		t.Fatalf("no address after re-allocation (was %s)", first)
	}

	// No pool uses VXLAN any more.
	apply(t, st, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.80.0.0/16, blockSize: 26, vxlanMode: Never}
`)
	waitFor(t, "the tunnel address given back", func() bool {
		_, held := st.Get(ipam.HandleKey(handle))
		a, _ := tunnelOf(st)
		return !held && a == ""
	})
}

func TestNeedsSettled(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	for _, tc := range []struct {
		s    calc.TunnelState
		want bool
	}{
		{calc.TunnelState{}, true},
		{calc.TunnelState{Addr: a}, false},
		{calc.TunnelState{Wanted: true}, false},
		{calc.TunnelState{Wanted: true, Addr: a}, false},
		{calc.TunnelState{Wanted: true, Addr: a, Allocated: true}, false},
		{calc.TunnelState{Wanted: true, Addr: a, Allocated: true, MACCurrent: true}, true},
	} {
		if got := tc.s.Settled(); got != tc.want {
			t.Errorf("%+v settled = %v", tc.s, got)
		}
	}
}

func ipipOf(st *store.Node) string {
	if n := node1(st); n.Spec.BGP != nil {
		return n.Spec.BGP.IPv4IPIPTunnelAddr
	}
	return ""
}

// An IP-in-IP pool gives the node its IP-in-IP tunnel address
// (ipip-tunnel-addr-n1, recorded as spec.bgp.ipv4IPIPTunnelAddr) from a
// pool with IP-in-IP, and takes it back when no pool uses IP-in-IP; the
// VXLAN address is not touched.
func TestIPIPTunnelAddressFollowsThePools(t *testing.T) {
	st, _ := run(t)
	apply(t, st, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p2}
spec: {cidr: 10.81.0.0/16, blockSize: 26, ipipMode: Always}
`)
	waitFor(t, "an IP-in-IP tunnel address", func() bool { return ipipOf(st) != "" })
	if a := netip.MustParseAddr(ipipOf(st)); !netip.MustParsePrefix("10.81.0.0/16").Contains(a) {
		t.Errorf("IP-in-IP tunnel address %s outside the IP-in-IP pool", a)
	}
	handle := ipam.TunnelHandle(ipam.TunnelIPIP, "n1", false)
	if _, ok := st.Get(ipam.HandleKey(handle)); !ok {
		t.Fatalf("no IPAM handle %s", handle)
	}
	if a, _ := tunnelOf(st); a != "" {
		t.Errorf("VXLAN tunnel address %s with no VXLAN pool", a)
	}
	apply(t, st, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p2}
spec: {cidr: 10.81.0.0/16, blockSize: 26, ipipMode: Never}
`)
	waitFor(t, "the IP-in-IP tunnel address given back", func() bool {
		_, held := st.Get(ipam.HandleKey(handle))
		return !held && ipipOf(st) == ""
	})
}
