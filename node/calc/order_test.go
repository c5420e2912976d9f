package calc

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/store"
)

// sections splits an output into the part each resolver owns, so that a
// difference names the resolver at fault.
func sections(o Output) map[string]any {
	byClass := map[dataplane.RouteClass][]dataplane.Route{}
	for _, r := range o.Desired.Routes {
		byClass[r.Class] = append(byClass[r.Class], r)
	}
	return map[string]any{
		"workloads":    [2]any{o.Desired.Workloads, byClass[dataplane.RouteClassWorkload]},
		"vxlan":        [2]any{o.Desired.VXLAN, o.Desired.VXLANPeers},
		"ipip":         o.Desired.IPIP,
		"loop":         o.Desired.Loop,
		"block-routes": byClass[dataplane.RouteClassBlock],
		"nat":          o.Desired.NAT,
		"tunnels":      o.Tunnels,
		"rules":        o.Desired.Rules,
		"policy":       o.Desired.Policy,
		"wireguard":    [2]any{o.Desired.WireGuard, byClass[dataplane.RouteClassWireGuard]},
	}
}

// orderScenarios are states the calculation must reach whatever the order
// of the events that built them.
func orderScenarios(t *testing.T) map[string][]store.Object {
	dual := scenario(t, api.EncapNever)
	dual = append(dual,
		pool(t, "p6", "fd00:244::/48", api.EncapNever, false),
		wep(t, "default", "d6", "n1", "weftddddddddddd", "fd00:244::7/128"),
	)
	conflicting := scenario(t, api.EncapAlways)
	conflicting = append(conflicting,
		// Two local endpoints claiming one address: the older stays.
		withRev(wep(t, "default", "x", "n1", "weftxxxxxxxxxxx", "10.244.0.9/32"), 50),
		withRev(wep(t, "default", "y", "n1", "weftyyyyyyyyyyy", "10.244.0.9/32"), 40),
	)
	felix := append(scenario(t, api.EncapAlways),
		felixConfig(t, "default", api.FelixConfigurationSpec{VXLANPort: new(4790), NATOutgoingAddress: "192.0.2.9", LogSeverityScreen: "Debug"}),
		felixConfig(t, "node.n1", api.FelixConfigurationSpec{VXLANVNI: new(4097), LogSeverityScreen: "Error"}),
		felixConfig(t, "node.n2", api.FelixConfigurationSpec{VXLANVNI: new(1)}),
	)
	return map[string][]store.Object{
		"ipip always":     ipipScenario(t, api.EncapAlways),
		"ipip cross":      ipipScenario(t, api.EncapCrossSubnet),
		"felix":           felix,
		"vxlan always":    scenario(t, api.EncapAlways),
		"native":          scenario(t, api.EncapNever),
		"cross subnet":    scenario(t, api.EncapCrossSubnet),
		"dual stack":      dual,
		"local conflicts": conflicting,
		"wireguard":       wgScenario(t),
		"no self node": {
			node(t, "n2", "192.168.7.2/24", "10.244.0.64"),
			pool(t, "p", "10.244.0.0/16", api.EncapAlways, true),
			block(t, "10.244.0.64/26", "n2", map[int]string{0: "n2"}),
		},
	}
}

func withRev(o store.Object, rev uint64) store.Object {
	o.Revision, o.CreateRevision = rev, rev
	return o
}

func mustCompute(t *testing.T, d *Dispatcher) Output {
	t.Helper()
	out, err := d.Compute(1)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSections(t *testing.T, what string, got, want Output) {
	t.Helper()
	gs, ws := sections(got), sections(want)
	for name := range ws {
		if !reflect.DeepEqual(gs[name], ws[name]) {
			t.Errorf("%s: resolver %s differs:\n got %+v\nwant %+v", what, name, gs[name], ws[name])
		}
	}
}

// Every resolver's section depends on the state only: the events of a
// scenario replayed in shuffled orders — with objects that came and went
// and objects first seen in an older version — give the same output, and
// deleting everything, in any order, gives the empty output.
func TestOrderIndependenceOfEveryResolver(t *testing.T) {
	wgRequire := wgCfg
	wgRequire.WireGuard.Require = true
	for name, objs := range orderScenarios(t) {
		for cfgName, cfg := range map[string]Config{"": testCfg, " wireguard": wgCfg, " wireguard require": wgRequire} {
			t.Run(name+cfgName, func(t *testing.T) { checkOrderIndependence(t, cfg, objs) })
		}
	}
}

func checkOrderIndependence(t *testing.T, cfg Config, objs []store.Object) {
	name := t.Name()
	{
		{
			ref := New(cfg)
			for _, o := range objs {
				ref.OnEvent(store.Event{Type: store.EventPut, Object: o})
			}
			want := mustCompute(t, ref)
			rng := rand.New(rand.NewSource(int64(len(name))))
			for i := 0; i < 30; i++ {
				d := New(cfg)
				shuffled := append([]store.Object(nil), objs...)
				rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
				transient := []store.Object{
					node(t, "gone", "192.168.7.9/24", "10.244.1.0"),
					block(t, "10.244.1.0/26", "gone", map[int]string{1: "n1"}),
					wep(t, "default", "tmp", "n1", "weft00000000tmp", "10.244.1.1/32"),
				}
				for _, o := range transient {
					d.OnEvent(store.Event{Type: store.EventPut, Object: o})
				}
				for j, o := range shuffled {
					if j%3 == 0 {
						// An older version first: a pool with another mode,
						// a node without its tunnel address.
						d.OnEvent(store.Event{Type: store.EventPut, Object: older(t, o)})
					}
					d.OnEvent(store.Event{Type: store.EventPut, Object: o})
				}
				for _, o := range transient {
					d.OnEvent(store.Event{Type: store.EventDelete, Object: o})
				}
				diffSections(t, fmt.Sprintf("order %d", i), mustCompute(t, d), want)
				rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
				for _, o := range shuffled {
					d.OnEvent(store.Event{Type: store.EventDelete, Object: o})
				}
				diffSections(t, fmt.Sprintf("order %d torn down", i), mustCompute(t, d), mustCompute(t, New(cfg)))
				if t.Failed() {
					return
				}
			}
		}
	}
}

// older returns another valid version of o (what an earlier event may
// have carried).
func older(t *testing.T, o store.Object) store.Object {
	switch o.Kind {
	case api.KindIPPool:
		return pool(t, o.Name, "10.244.0.0/16", api.EncapNever, false)
	case api.KindNode:
		return node(t, o.Name, "192.168.99.1/24", "")
	case api.KindFelixConfiguration:
		return felixConfig(t, o.Name, api.FelixConfigurationSpec{VXLANPort: new(5555), LogSeverityScreen: "Info"})
	}
	return o
}

// Of two routes to one destination the lower class wins, whatever the
// order: a workload's host route beats a block route through a tunnel.
func TestRouteClassPrecedence(t *testing.T) {
	objs := scenario(t, api.EncapAlways)
	// n2 borrowed 10.244.0.9 from n1's block (a block route via VXLAN);
	// now a local workload holds it too (a host route).
	objs = append(objs, wep(t, "default", "z", "n1", "weftzzzzzzzzzzz", "10.244.0.9/32"))
	d := compute(objs)
	var got []dataplane.Route
	for _, r := range d.Routes {
		if r.Dst == netip.MustParsePrefix("10.244.0.9/32") {
			got = append(got, r)
		}
	}
	if len(got) != 1 || got[0].Class != dataplane.RouteClassWorkload {
		t.Fatalf("routes to 10.244.0.9/32: %v; want only the host route", got)
	}
}

// The workload MTU follows the pools: the underlay's, less the VXLAN
// overhead when a pool uses VXLAN; network.mtu wins.
func TestWorkloadMTU(t *testing.T) {
	cfg := testCfg
	cfg.UnderlayMTU = 1500
	for _, tc := range []struct {
		mode     string
		override int
		want     int
	}{{api.EncapAlways, 0, 1450}, {api.EncapNever, 0, 1500}, {api.EncapAlways, 1300, 1300}} {
		cfg.MTU = tc.override
		d := computeWith(cfg, scenario(t, tc.mode))
		for _, w := range d.Workloads {
			if w.MTU != tc.want {
				t.Errorf("mode %s override %d: workload %s MTU %d, want %d", tc.mode, tc.override, w.Name, w.MTU, tc.want)
			}
		}
	}
	// Unknown underlay: the kernel default.
	if d := compute(scenario(t, api.EncapAlways)); d.Workloads[0].MTU != 0 {
		t.Errorf("MTU %d without an underlay MTU", d.Workloads[0].MTU)
	}
}

// The tunnel needs come from the pools, the Node and the blocks.
func TestTunnelNeeds(t *testing.T) {
	run := func(objs []store.Object) TunnelState {
		d := New(testCfg)
		for _, o := range objs {
			d.OnEvent(store.Event{Type: store.EventPut, Object: o})
		}
		return mustCompute(t, d).Tunnels.VXLAN
	}
	objs := scenario(t, api.EncapAlways)
	// n1's tunnel address 10.244.0.0 is not held by its tunnel handle in
	// the scenario's blocks.
	if st := run(objs); !st.Wanted || st.Addr.String() != "10.244.0.0" || st.Allocated {
		t.Errorf("tunnel %+v: want wanted, address 10.244.0.0, not allocated", st)
	}
	if st := run(scenario(t, api.EncapNever)); st.Wanted {
		t.Errorf("tunnel %+v: no pool uses VXLAN", st)
	}
}

// Two local endpoints claiming one address (which the store's invariants
// prevent): the older keeps it, whatever their names, and the problem is
// reported.
func TestOlderEndpointWinsAConflict(t *testing.T) {
	for _, revs := range [][2]uint64{{50, 40}, {40, 50}} {
		d := New(testCfg)
		for _, o := range []store.Object{
			withRev(wep(t, "default", "x", "n1", "weftxxxxxxxxxxx", "10.244.0.9/32"), revs[0]),
			withRev(wep(t, "default", "y", "n1", "weftyyyyyyyyyyy", "10.244.0.9/32"), revs[1]),
		} {
			d.OnEvent(store.Event{Type: store.EventPut, Object: o})
		}
		out := mustCompute(t, d)
		want := "x"
		if revs[1] < revs[0] {
			want = "y"
		}
		if len(out.Desired.Workloads) != 1 || out.Desired.Workloads[0].Name != want || len(out.Problems) != 1 {
			t.Errorf("revisions %v: workloads %+v, problems %v; want %s kept", revs, out.Desired.Workloads, out.Problems, want)
		}
	}
}
