package routes

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// setupNode makes a namespace with an uplink "upl" (192.168.50.1/24,
// fd00:50::1/64) whose peer lives in a second namespace.
func setupNode(t *testing.T) *nstest.NS {
	t.Helper()
	node, peer := nstest.New(t, "n"), nstest.New(t, "p")
	nstest.Veth(t, node, "upl", pfx("192.168.50.1/24"), peer, "dwn", pfx("192.168.50.2/24"))
	return node
}

func newManager(t *testing.T, node *nstest.NS) *Manager {
	t.Helper()
	m, err := New(Config{NetNS: node.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func apply(t *testing.T, m *Manager) {
	t.Helper()
	ctx := context.Background()
	if err := m.Apply(ctx, dataplane.PhaseUpdate); err != nil {
		t.Fatalf("update: %v", err)
	}
	if err := m.Apply(ctx, dataplane.PhaseRemove); err != nil {
		t.Fatalf("remove: %v", err)
	}
}

var testRoutes = []dataplane.Route{
	{Dst: pfx("10.244.1.0/26"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole},
	{Dst: pfx("10.244.2.0/26"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteUnicast, Dev: "upl", Via: addr("192.168.50.2")},
	{Dst: pfx("10.244.3.0/26"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteUnicast, Dev: "upl", Via: addr("10.99.0.7"), OnLink: true},
	{Dst: pfx("10.244.4.5/32"), Class: dataplane.RouteClassWorkload, Type: dataplane.RouteUnicast, Dev: "upl"},
	{Dst: pfx("10.244.5.0/26"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteUnicast, Dev: "upl", Via: addr("192.168.50.2"), Src: addr("192.168.50.1")},
	{Dst: pfx("fd00:244:1::/64"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole},
	{Dst: pfx("fd00:244:2::/64"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteUnicast, Dev: "upl", Via: addr("fe80::2")},
	// The same destination in a table of weft's own is another route.
	{Dst: pfx("10.244.2.0/26"), Table: 7, Class: dataplane.RouteClassWireGuard, Type: dataplane.RouteUnicast, Dev: "upl"},
	// A throw route: the lookup goes on in the next rule's table.
	{Dst: pfx("10.244.2.5/32"), Table: 7, Class: dataplane.RouteClassWireGuard, Type: dataplane.RouteThrow},
}

func weftRoutes(t *testing.T, node *nstest.NS) []string {
	t.Helper()
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(strings.TrimSpace(node.Run("ip", fam, "route", "show", "table", "all", "proto", "87")), "\n") {
			if l != "" {
				out = append(out, strings.TrimSpace(l))
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestRoutesLifecycle(t *testing.T) {
	node := setupNode(t)
	// Foreign state that must survive: another protocol's route. A weft
	// route the desired state does not list goes, also one on a workload
	// interface, in any table: this manager is the one writer of them.
	node.Run("ip", "route", "add", "blackhole", "10.244.9.0/24", "proto", "static")
	node.Run("ip", "link", "add", "weftdeadbeef012", "type", "veth", "peer", "name", "wl0")
	node.Run("ip", "link", "set", "weftdeadbeef012", "up")
	node.Run("ip", "route", "add", "10.244.8.8/32", "dev", "weftdeadbeef012", "proto", "87")
	node.Run("ip", "route", "add", "blackhole", "10.244.8.0/24", "proto", "87", "table", "9")

	m := newManager(t, node)
	m.Set(&dataplane.Desired{Routes: testRoutes})
	apply(t, m)
	got := weftRoutes(t, node)
	want := []string{
		"10.244.2.0/26 via 192.168.50.2 dev upl",
		"10.244.3.0/26 via 10.99.0.7 dev upl onlink",
		"10.244.4.5 dev upl scope link",
		"10.244.5.0/26 via 192.168.50.2 dev upl src 192.168.50.1",
		"10.244.2.0/26 dev upl table 7 scope link",
		"throw 10.244.2.5 table 7",
		"blackhole 10.244.1.0/26",
		"blackhole fd00:244:1::/64 dev lo metric 1024 pref medium",
		"fd00:244:2::/64 via fe80::2 dev upl metric 1024 pref medium",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
			t.Errorf("missing %q in\n%s", w, strings.Join(got, "\n"))
		}
	}
	for _, g := range got {
		if strings.Contains(g, "10.244.8.") {
			t.Errorf("undesired weft route %q left", g)
		}
	}
	if n := m.KernelWrites(); n != uint64(len(testRoutes)+2) {
		t.Errorf("%d writes for %d routes and 2 removals", n, len(testRoutes))
	}

	// Idempotent, with and without a resync.
	apply(t, m)
	m.QueueResync()
	apply(t, m)
	if n := m.KernelWrites(); n != uint64(len(testRoutes)+2) {
		t.Errorf("re-apply wrote: %d writes in total", n)
	}

	// A restarted agent adopts the routes: no write, nothing flaps.
	m2 := newManager(t, node)
	m2.Set(&dataplane.Desired{Routes: testRoutes})
	apply(t, m2)
	if n := m2.KernelWrites(); n != 0 {
		t.Errorf("adoption made %d writes", n)
	}
	if after := weftRoutes(t, node); !slices.Equal(after, got) {
		t.Errorf("routes changed on adoption:\n%v\n%v", got, after)
	}

	// One changed route is one write, replaced in place.
	changed := slices.Clone(testRoutes)
	changed[1].Via = addr("192.168.50.3")
	m2.Set(&dataplane.Desired{Routes: changed})
	apply(t, m2)
	if n := m2.KernelWrites(); n != 1 {
		t.Errorf("a changed route took %d writes", n)
	}
	if !slices.Contains(weftRoutes(t, node), "10.244.2.0/26 via 192.168.50.3 dev upl") {
		t.Errorf("route not changed: %v", weftRoutes(t, node))
	}

	// Drift: deleted routes come back at the next resync.
	node.Run("ip", "route", "del", "10.244.1.0/26")
	node.Run("ip", "-6", "route", "del", "fd00:244:2::/64")
	m2.QueueResync()
	apply(t, m2)
	now := weftRoutes(t, node)
	if !slices.Contains(now, "blackhole 10.244.1.0/26") || !slices.ContainsFunc(now, func(s string) bool { return strings.HasPrefix(s, "fd00:244:2::/64") }) {
		t.Errorf("not repaired: %v", now)
	}

	// A device deleted and recreated: routes through it return without a
	// resync, because the index changed.
	node.Run("ip", "link", "del", "upl")
	peer := nstest.New(t, "q")
	nstest.Veth(t, node, "upl", pfx("192.168.50.1/24"), peer, "dwn", pfx("192.168.50.2/24"))
	apply(t, m2)
	if !slices.Contains(weftRoutes(t, node), "10.244.4.5 dev upl scope link") {
		t.Errorf("routes through the recreated device not restored: %v", weftRoutes(t, node))
	}

	// Removing everything removes only weft's routes.
	m2.Set(&dataplane.Desired{})
	apply(t, m2)
	if left := weftRoutes(t, node); len(left) != 0 {
		t.Errorf("left after removal: %v", left)
	}
	if all := node.Run("ip", "route", "show"); !strings.Contains(all, "blackhole 10.244.9.0/24 proto static") {
		t.Errorf("foreign route removed:\n%s", all)
	}
}

func TestRoutesWatchRepairsAtOnce(t *testing.T) {
	node := setupNode(t)
	m := newManager(t, node)
	m.Set(&dataplane.Desired{Routes: testRoutes})
	apply(t, m)

	ctx, cancel := context.WithCancel(context.Background())
	kicks := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- m.Watch(ctx, func() { kicks <- struct{}{} }) }()
	t.Cleanup(func() { cancel(); <-done })

	// Delete until the subscription is live (the first delete may precede
	// it), then the next pass repairs without an explicit resync.
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.QueueResync()
		apply(t, m)
		node.Run("ip", "route", "del", "10.244.1.0/26")
		select {
		case <-kicks:
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no kick for a deleted weft route")
			}
			continue
		}
		break
	}
	apply(t, m)
	if !slices.Contains(weftRoutes(t, node), "blackhole 10.244.1.0/26") {
		t.Fatalf("not repaired: %v", weftRoutes(t, node))
	}
}
