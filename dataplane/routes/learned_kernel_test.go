package routes

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
)

// learnedRoutes lists the kernel's routes of weft's BGP protocol.
func learnedRoutes(t *testing.T, ns interface{ Run(...string) string }) []string {
	t.Helper()
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(strings.TrimSpace(ns.Run("ip", fam, "route", "show", "table", "all", "proto", "88")), "\n") {
			if l != "" {
				out = append(out, strings.TrimSpace(l))
			}
		}
	}
	slices.Sort(out)
	return out
}

func bgpRoute(dst, via string) dataplane.Route {
	return dataplane.Route{Dst: pfx(dst), Class: dataplane.RouteClassBGP, Via: addr(via), Recursive: true}
}

// Learned routes: their own protocol and metric (so a route the host
// already has to the destination stays and nothing collides), next hops
// beyond the connected subnet resolved to the first hop, adopted without
// a write after a restart.
func TestLearnedRoutesRecursiveAndTheirOwnMetric(t *testing.T) {
	node := setupNode(t)
	node.Run("ip", "route", "add", "10.99.0.0/16", "via", "192.168.50.2", "proto", "static")
	node.Run("ip", "route", "add", "198.51.100.0/24", "via", "192.168.50.2", "proto", "static")
	node.Run("ip", "-6", "addr", "add", "fd00:50::1/64", "dev", "upl", "nodad")
	node.Run("ip", "-6", "route", "add", "fd00:99::/32", "via", "fd00:50::2", "proto", "static")
	m := newManager(t, node)
	d := &dataplane.Desired{Routes: []dataplane.Route{
		bgpRoute("10.244.7.0/26", "10.99.0.7"),    // two hops away
		bgpRoute("10.244.8.0/26", "192.168.50.2"), // connected
		bgpRoute("198.51.100.0/24", "192.168.50.2"),
		bgpRoute("fd00:244:7::/64", "fd00:99::7"),
	}}
	m.Set(d)
	apply(t, m)
	want := []string{
		"10.244.7.0/26 via 192.168.50.2 dev upl metric 32",
		"10.244.8.0/26 via 192.168.50.2 dev upl metric 32",
		"198.51.100.0/24 via 192.168.50.2 dev upl metric 32",
		"fd00:244:7::/64 via fd00:50::2 dev upl metric 1056 pref medium",
	}
	if got := learnedRoutes(t, node); !slices.Equal(got, want) {
		t.Fatalf("learned routes:\n got %q\nwant %q", got, want)
	}
	if !strings.Contains(node.Run("ip", "route", "show", "198.51.100.0/24"), "proto static") {
		t.Error("the host's own route to 198.51.100.0/24 is gone")
	}

	// The first hop moves: the next pass follows it.
	node.Run("ip", "route", "replace", "10.99.0.0/16", "via", "192.168.50.3", "proto", "static")
	m.QueueResync()
	apply(t, m)
	if got := learnedRoutes(t, node); got[0] != "10.244.7.0/26 via 192.168.50.3 dev upl metric 32" {
		t.Errorf("after the first hop moved: %q", got)
	}

	// A restarted agent adopts them untouched.
	m2 := newManager(t, node)
	m2.Set(d)
	apply(t, m2)
	if m2.KernelWrites() != 0 {
		t.Errorf("a restart rewrote %d routes", m2.KernelWrites())
	}
}

// A destination moving between a block route and a learned route is
// never unrouted: the new route (its own metric) is added before the old
// one goes.
func TestRouteChangingClassIsAddedBeforeTheOldGoes(t *testing.T) {
	node := setupNode(t)
	m := newManager(t, node)
	block := dataplane.Route{Dst: pfx("10.244.9.0/26"), Class: dataplane.RouteClassBlock, Via: addr("192.168.50.2")}
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{block}})
	apply(t, m)
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{bgpRoute("10.244.9.0/26", "192.168.50.2")}})
	// After the update phase alone both exist: nothing unrouted between.
	if err := m.Apply(context.Background(), dataplane.PhaseUpdate); err != nil {
		t.Fatal(err)
	}
	all := node.Run("ip", "route", "show", "10.244.9.0/26")
	if !strings.Contains(all, "proto 88") {
		t.Fatalf("learned route missing after the update phase: %q", all)
	}
	if err := m.Apply(context.Background(), dataplane.PhaseRemove); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(node.Run("ip", "route", "show", "10.244.9.0/26")); got != "10.244.9.0/26 via 192.168.50.2 dev upl proto 88 metric 32" {
		t.Errorf("after the pass: %q", got)
	}
	// And back.
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{block}})
	apply(t, m)
	if got := strings.TrimSpace(node.Run("ip", "route", "show", "10.244.9.0/26")); got != "10.244.9.0/26 via 192.168.50.2 dev upl proto 87" {
		t.Errorf("back to a block route: %q", got)
	}
	// A leftover of both (an agent killed between the add and the delete)
	// is cleaned up by the next start.
	node.Run("ip", "route", "add", "10.244.9.0/26", "via", "192.168.50.2", "proto", "88", "metric", "32")
	m2 := newManager(t, node)
	m2.Set(&dataplane.Desired{Routes: []dataplane.Route{block}})
	apply(t, m2)
	if got := strings.TrimSpace(node.Run("ip", "route", "show", "10.244.9.0/26")); got != "10.244.9.0/26 via 192.168.50.2 dev upl proto 87" {
		t.Errorf("leftover not removed: %q", got)
	}
}

// Graceful restart: while HoldBGPRoutes is set, learned routes the state
// no longer lists stay; the other classes are managed as always.
func TestHoldKeepsLearnedRoutes(t *testing.T) {
	node := setupNode(t)
	m := newManager(t, node)
	learned := bgpRoute("10.244.10.0/26", "192.168.50.2")
	block := dataplane.Route{Dst: pfx("10.244.11.0/26"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole}
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{learned, block}})
	apply(t, m)

	// A restarted agent, its speaker not synced yet.
	m2 := newManager(t, node)
	m2.Set(&dataplane.Desired{HoldBGPRoutes: true})
	apply(t, m2)
	if got := learnedRoutes(t, node); len(got) != 1 {
		t.Fatalf("learned route not held: %q", got)
	}
	if strings.Contains(node.Run("ip", "route", "show", "proto", "87"), "10.244.11.0") {
		t.Error("a block route no longer desired was kept")
	}
	m2.Set(&dataplane.Desired{})
	apply(t, m2)
	if got := learnedRoutes(t, node); len(got) != 0 {
		t.Errorf("learned route kept after the hold ended: %q", got)
	}
}

// A next hop the kernel cannot reach fails that route alone, and the
// pass reports which route.
func TestUnreachableNextHopFailsThatRouteOnly(t *testing.T) {
	node := setupNode(t)
	m := newManager(t, node)
	bad := bgpRoute("10.244.12.0/26", "203.0.113.9")
	good := bgpRoute("10.244.13.0/26", "192.168.50.2")
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{bad, good}})
	ctx := context.Background()
	err := errors.Join(m.Apply(ctx, dataplane.PhaseUpdate), m.Apply(ctx, dataplane.PhaseRemove))
	if err == nil || !strings.Contains(err.Error(), "203.0.113.9") {
		t.Fatalf("err = %v", err)
	}
	probs := m.RouteProblems()
	if _, ok := probs[bad.Key()]; !ok || len(probs) != 1 {
		t.Errorf("route problems %v", probs)
	}
	if got := learnedRoutes(t, node); len(got) != 1 || !strings.HasPrefix(got[0], "10.244.13.0/26") {
		t.Errorf("learned routes %q", got)
	}
}
