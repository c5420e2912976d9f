package routes

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
)

// A destination already routed by another protocol at the metric weft uses
// is reported and left alone: weft neither replaces the foreign route nor,
// later, deletes it. Everything else is still programmed, and once the
// foreign route is gone weft's route follows.
func TestForeignRouteIsNeverReplacedOrDeleted(t *testing.T) {
	node := setupNode(t)
	node.Run("ip", "route", "add", "10.244.1.0/26", "via", "192.168.50.2", "dev", "upl", "proto", "static")
	node.Run("ip", "-6", "route", "add", "fd00:244:1::/64", "via", "fe80::2", "dev", "upl", "proto", "static")
	foreign := func() string {
		return node.Run("ip", "route", "show", "10.244.1.0/26") + node.Run("ip", "-6", "route", "show", "fd00:244:1::/64")
	}
	before := foreign()

	m := newManager(t, node)
	m.Set(&dataplane.Desired{Routes: testRoutes})
	ctx := context.Background()
	for range 2 { // still reported when retried
		err := m.Apply(ctx, dataplane.PhaseUpdate)
		if !errors.Is(err, dataplane.ErrForeignRoute) {
			t.Fatalf("update: got %v, want ErrForeignRoute", err)
		}
		for _, want := range []string{"10.244.1.0/26 via 192.168.50.2 dev upl proto static", "fd00:244:1::/64 via fe80::2 dev upl proto static metric 1024"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name the foreign route %q: %v", want, err)
			}
		}
		if err := m.Apply(ctx, dataplane.PhaseRemove); err != nil {
			t.Fatalf("remove: %v", err)
		}
	}
	if after := foreign(); after != before {
		t.Fatalf("foreign routes changed:\n%s\nbecame\n%s", before, after)
	}
	if !slices.Contains(weftRoutes(t, node), "10.244.2.0/26 via 192.168.50.2 dev upl") {
		t.Errorf("the other routes were not programmed: %v", weftRoutes(t, node))
	}

	// No longer desired: weft removes its own routes, not the foreign ones.
	m.Set(&dataplane.Desired{})
	apply(t, m)
	if after := foreign(); after != before {
		t.Fatalf("foreign routes changed on removal:\n%s\nbecame\n%s", before, after)
	}
	if left := weftRoutes(t, node); len(left) != 0 {
		t.Errorf("weft routes left: %v", left)
	}

	// The foreign routes go: weft's take their place.
	node.Run("ip", "route", "del", "10.244.1.0/26")
	node.Run("ip", "-6", "route", "del", "fd00:244:1::/64")
	m.Set(&dataplane.Desired{Routes: testRoutes})
	apply(t, m)
	now := weftRoutes(t, node)
	if !slices.Contains(now, "blackhole 10.244.1.0/26") || !slices.ContainsFunc(now, func(s string) bool { return strings.HasPrefix(s, "blackhole fd00:244:1::/64") }) {
		t.Errorf("weft's routes not programmed once the destination was free: %v", now)
	}
}

// An operator replacing one of weft's routes with their own (a route event,
// not a deletion) makes weft re-read the table: a later change of the
// desired route does not overwrite the operator's route.
func TestForeignReplaceOfAWeftRouteIsNoticed(t *testing.T) {
	node := setupNode(t)
	m := newManager(t, node)
	m.Set(&dataplane.Desired{Routes: testRoutes})
	apply(t, m)

	ctx, cancel := context.WithCancel(context.Background())
	kicks := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- m.Watch(ctx, func() { kicks <- struct{}{} }) }()
	t.Cleanup(func() { cancel(); <-done })

	// Wait until the subscription is live: a deleted weft route kicks.
	deadline := time.Now().Add(5 * time.Second)
	for live := false; !live; {
		apply(t, m)
		node.Run("ip", "route", "del", "10.244.1.0/26")
		select {
		case <-kicks:
			live = true
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no kick for a deleted weft route")
			}
		}
	}
	apply(t, m)
	for len(kicks) > 0 {
		<-kicks
	}

	node.Run("ip", "route", "replace", "10.244.1.0/26", "via", "192.168.50.3", "dev", "upl", "proto", "static")
	select {
	case <-kicks:
	case <-time.After(5 * time.Second):
		t.Fatal("no kick after a foreign route replaced a weft route")
	}
	changed := slices.Clone(testRoutes)
	changed[0] = dataplane.Route{Dst: pfx("10.244.1.0/26"), Type: dataplane.RouteUnicast, Dev: "upl", Via: addr("192.168.50.2")}
	m.Set(&dataplane.Desired{Routes: changed})
	if err := m.Apply(ctx, dataplane.PhaseUpdate); !errors.Is(err, dataplane.ErrForeignRoute) {
		t.Fatalf("update: got %v, want ErrForeignRoute", err)
	}
	if got := node.Run("ip", "route", "show", "10.244.1.0/26"); !strings.Contains(got, "via 192.168.50.3 dev upl proto static") {
		t.Errorf("operator's route overwritten: %s", got)
	}
}

// Even with a stale cache (the operator's replace not yet seen), removing a
// weft route does not remove the foreign route that took its place: the
// delete names weft's protocol, which the kernel matches.
func TestStaleCacheNeverDeletesAForeignRoute(t *testing.T) {
	node := setupNode(t)
	m := newManager(t, node)
	m.Set(&dataplane.Desired{Routes: testRoutes})
	apply(t, m)
	node.Run("ip", "route", "replace", "10.244.1.0/26", "via", "192.168.50.3", "dev", "upl", "proto", "static")
	node.Run("ip", "-6", "route", "replace", "fd00:244:1::/64", "via", "fe80::3", "dev", "upl", "proto", "static")
	m.Set(&dataplane.Desired{})
	apply(t, m)
	if got := node.Run("ip", "route", "show", "10.244.1.0/26"); !strings.Contains(got, "via 192.168.50.3 dev upl proto static") {
		t.Errorf("foreign IPv4 route deleted: %q", got)
	}
	if got := node.Run("ip", "-6", "route", "show", "fd00:244:1::/64"); !strings.Contains(got, "via fe80::3 dev upl proto static") {
		t.Errorf("foreign IPv6 route deleted: %q", got)
	}
	if left := weftRoutes(t, node); len(left) != 0 {
		t.Errorf("weft routes left: %v", left)
	}
}
