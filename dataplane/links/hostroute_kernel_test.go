package links

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// A workload address the host already routes by another protocol is
// refused before anything is made, with an error naming the route, and the
// route is left as it was. A weft route to the address (left over from an
// earlier workload) is weft's to replace.
func TestHostRouteNeverReplacesAForeignRoute(t *testing.T) {
	host := nstest.New(t, "h")
	wa, wb := nstest.New(t, "a"), nstest.New(t, "b")
	p := newPlumber(t, host, nil)
	ctx := context.Background()
	hh := host.Netlink()
	baseline := len(hostLinks(t, hh))

	host.Run("ip", "route", "add", "blackhole", "10.65.0.2/32", "proto", "static")
	a := workload(t, wa, "a", "10.65.0.2/32")
	_, err := p.Add(ctx, a)
	if !errors.Is(err, dataplane.ErrForeignRoute) || !strings.Contains(err.Error(), "blackhole 10.65.0.2/32 proto static") {
		t.Fatalf("add over a foreign route: got %v", err)
	}
	if got := hostLinks(t, hh); len(got) != baseline {
		t.Errorf("links left behind: %v", got)
	}
	if out := wa.Run("ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("peer made although the add was refused: %s", out)
	}
	if got := host.Run("ip", "route", "show", "10.65.0.2/32"); !strings.Contains(got, "blackhole 10.65.0.2 proto static") {
		t.Errorf("foreign route changed: %q", got)
	}

	// weft's own leftover route is replaced by the workload's.
	host.Run("ip", "route", "add", "blackhole", "10.65.0.3/32", "proto", "87")
	b := workload(t, wb, "b", "10.65.0.3/32")
	if _, err := p.Add(ctx, b); err != nil {
		t.Fatalf("add over a weft route: %v", err)
	}
	if got := host.Run("ip", "route", "show", "10.65.0.3/32"); !strings.Contains(got, "10.65.0.3 dev "+b.HostIface+" proto 87 scope link") {
		t.Errorf("weft's leftover route not replaced: %q", got)
	}

	// An operator's route takes the address of a plumbed workload: Check
	// sees the drift, Add refuses to take the address back.
	host.Run("ip", "route", "replace", "blackhole", "10.65.0.3/32", "proto", "static")
	if err := p.Check(ctx, b); !errors.Is(err, ErrDrift) {
		t.Fatalf("check: got %v, want drift", err)
	}
	if _, err := p.Add(ctx, b); !errors.Is(err, dataplane.ErrForeignRoute) {
		t.Fatalf("repair over a foreign route: got %v", err)
	}
	if got := host.Run("ip", "route", "show", "10.65.0.3/32"); !strings.Contains(got, "blackhole 10.65.0.3 proto static") {
		t.Errorf("foreign route changed: %q", got)
	}

	// Once the foreign route is gone, Add plumbs the address.
	host.Run("ip", "route", "del", "10.65.0.2/32")
	if _, err := p.Add(ctx, a); err != nil {
		t.Fatalf("add after the foreign route went: %v", err)
	}
	if err := p.Check(ctx, a); err != nil {
		t.Fatal(err)
	}
}
