package routes

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/kroute"
)

// countingHandler counts log records by level.
type countingHandler struct {
	mu     sync.Mutex
	counts map[slog.Level]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[r.Level]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[l]
}

// A foreign route at a desired destination fails every pass (the item
// stays pending and is retried) but is logged at Warn only once, is never
// written over, and once it goes weft's route is programmed.
func TestForeignRouteReportedOnceAndRetried(t *testing.T) {
	k := newFake("eth0")
	static := netlink.Route{Dst: kroute.IPNet(pfx("10.244.1.0/26")), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_STATIC,
		Type: unix.RTN_UNICAST, LinkIndex: 2, Gw: addr("192.168.1.9").AsSlice()}
	k.routes["10.244.1.0/26"] = static
	h := &countingHandler{counts: map[slog.Level]int{}}
	m := NewWithKernel(Config{Logger: slog.New(h)}, k)
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{
		{Dst: pfx("10.244.1.0/26"), Type: dataplane.RouteBlackhole},
		{Dst: pfx("10.244.2.0/26"), Type: dataplane.RouteBlackhole},
	}})
	for i := range 3 {
		err := pass(m)
		if !errors.Is(err, dataplane.ErrForeignRoute) || !strings.Contains(err.Error(), "10.244.1.0/26 via 192.168.1.9 dev eth0 proto static") {
			t.Fatalf("pass %d: got %v", i, err)
		}
	}
	if got := k.routes["10.244.1.0/26"]; got.Protocol != unix.RTPROT_STATIC || got.Type != unix.RTN_UNICAST {
		t.Fatalf("foreign route overwritten: %+v", got)
	}
	if strings.Join(k.replaces, ",") != "10.244.2.0/26" || len(k.deletes) != 0 {
		t.Errorf("wrote %v, deleted %v", k.replaces, k.deletes)
	}
	if n := h.count(slog.LevelWarn); n != 1 {
		t.Errorf("conflict logged at Warn %d times, want once", n)
	}

	delete(k.routes, "10.244.1.0/26")
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if got := k.routes["10.244.1.0/26"]; got.Protocol != dataplane.RouteProtocol || got.Type != unix.RTN_BLACKHOLE {
		t.Errorf("weft's route not programmed once the destination was free: %+v", got)
	}

	// A new conflict is a new warning.
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{{Dst: pfx("10.244.3.0/26"), Type: dataplane.RouteBlackhole}}})
	k.routes["10.244.3.0/26"] = netlink.Route{Dst: kroute.IPNet(pfx("10.244.3.0/26")), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT, Type: unix.RTN_UNREACHABLE}
	if err := pass(m); !errors.Is(err, dataplane.ErrForeignRoute) {
		t.Fatalf("got %v", err)
	}
	if n := h.count(slog.LevelWarn); n != 2 {
		t.Errorf("%d warnings after a second conflict, want 2", n)
	}
}

// A weft route the cache does not know yet (the links plumber wrote a
// workload host route after the last dump) is adopted when it already is
// the desired route, and replaced when it differs: it is weft's.
func TestUncachedWeftRouteIsAdoptedOrReplaced(t *testing.T) {
	k := newFake("eth0", "weft0123456789a")
	m := NewWithKernel(Config{}, k)
	m.Set(&dataplane.Desired{})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	host := dataplane.Route{Dst: pfx("10.244.1.2/32"), Dev: "weft0123456789a"}
	k.routes["10.244.1.2/32"] = *kroute.FromDesired(host, 3).Netlink()
	k.routes["10.244.5.0/26"] = *kroute.FromDesired(dataplane.Route{Dst: pfx("10.244.5.0/26"), Type: dataplane.RouteBlackhole}, 0).Netlink()
	k.reset()
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{host, {Dst: pfx("10.244.5.0/26"), Dev: "eth0", Via: addr("192.168.1.5")}}})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if strings.Join(k.replaces, ",") != "10.244.5.0/26" {
		t.Errorf("wrote %v, want only the differing weft route", k.replaces)
	}
	if got := k.routes["10.244.5.0/26"]; got.Type != unix.RTN_UNICAST || got.LinkIndex != 2 {
		t.Errorf("weft route not replaced: %+v", got)
	}
	if m.KernelWrites() != 1 {
		t.Errorf("%d writes, want 1", m.KernelWrites())
	}
}
