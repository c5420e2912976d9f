package links

import (
	"errors"
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// A workload address the host already routes by another protocol is
// refused by the precheck a workload add runs before it records anything,
// with an error naming the route, and the route is left as it was. A weft
// route to the address (left over from an earlier workload) is weft's to
// replace. (That the routes manager never overwrites a foreign route that
// appears later is dataplane/routes' test.)
func TestPrecheckRefusesAForeignHostRoute(t *testing.T) {
	host := nstest.New(t, "h")
	wa, wb := nstest.New(t, "a"), nstest.New(t, "b")
	p := newPlumber(t, host)

	host.Run("ip", "route", "add", "blackhole", "10.65.0.2/32", "proto", "static")
	a := workload(t, wa, "a", "10.65.0.2/32")
	err := p.Precheck(a)
	if !errors.Is(err, dataplane.ErrForeignRoute) || !strings.Contains(err.Error(), "blackhole 10.65.0.2/32 proto static") {
		t.Fatalf("precheck over a foreign route: got %v", err)
	}
	if got := host.Run("ip", "route", "show", "10.65.0.2/32"); !strings.Contains(got, "blackhole 10.65.0.2 proto static") {
		t.Errorf("foreign route changed: %q", got)
	}

	host.Run("ip", "route", "add", "blackhole", "10.65.0.3/32", "proto", "87")
	b := workload(t, wb, "b", "10.65.0.3/32")
	if err := p.Precheck(b); err != nil {
		t.Fatalf("precheck over a weft route: %v", err)
	}

	// Once the foreign route is gone, the precheck passes.
	host.Run("ip", "route", "del", "10.65.0.2/32")
	if err := p.Precheck(a); err != nil {
		t.Fatalf("precheck after the foreign route went: %v", err)
	}
}
