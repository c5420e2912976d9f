package routes

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
)

// TestRoutesWatchRepairsLinkDown: setting a device down makes the kernel
// flush the IPv4 routes through it without any route event. The link
// event must kick a resync, so the next pass (after whoever owns the
// device set it up again) puts the routes back without waiting for the
// periodic resync.
func TestRoutesWatchRepairsLinkDown(t *testing.T) {
	node := setupNode(t)
	node.Run("ip", "link", "add", "dmy0", "type", "veth", "peer", "name", "dmy1")
	node.Run("ip", "link", "set", "dmy1", "up")
	node.Run("ip", "link", "set", "dmy0", "up")
	const viaDummy = "10.244.7.0/26 via 10.98.0.1 dev dmy0 onlink"
	m := newManager(t, node)
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{
		{Dst: pfx("10.244.1.0/26"), Type: dataplane.RouteBlackhole},
		{Dst: pfx("10.244.7.0/26"), Type: dataplane.RouteUnicast, Dev: "dmy0", Via: addr("10.98.0.1"), OnLink: true},
	}})
	apply(t, m)
	if !slices.Contains(weftRoutes(t, node), viaDummy) {
		t.Fatalf("route through dmy0 not programmed: %v", weftRoutes(t, node))
	}

	ctx, cancel := context.WithCancel(context.Background())
	kicks := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- m.Watch(ctx, func() { kicks <- struct{}{} }) }()
	t.Cleanup(func() { cancel(); <-done })

	// Flap the device until the subscription is live (the first flap may
	// precede it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.QueueResync()
		apply(t, m)
		node.Run("ip", "link", "set", "dmy0", "down")
		node.Run("ip", "link", "set", "dmy0", "up")
		if slices.Contains(weftRoutes(t, node), viaDummy) {
			t.Fatal("the kernel kept the route through a device set down: the test proves nothing")
		}
		select {
		case <-kicks:
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no kick for a device set down")
			}
			continue
		}
		break
	}
	apply(t, m)
	if !slices.Contains(weftRoutes(t, node), viaDummy) {
		t.Fatalf("not repaired: %v", weftRoutes(t, node))
	}
}
