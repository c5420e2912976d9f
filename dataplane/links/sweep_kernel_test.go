package links

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// Only interfaces with the exact shape of a workload interface (the prefix
// and 11 hex characters) are weft's: a host veth that merely starts with the
// prefix, such as "weftbr-up", is neither swept as a stray nor deleted,
// while a stray with the workload shape goes.
func TestSweepAndDelLeaveLookalikeInterfacesAlone(t *testing.T) {
	host := nstest.New(t, "h")
	p := newPlumber(t, host)
	ctx := context.Background()

	const lookalike = "weftbr-up"
	host.Run("ip", "link", "add", lookalike, "type", "veth", "peer", "name", "brpeer")
	stray, err := dataplane.WorkloadIfaceName("weft", "default", "gone")
	if err != nil {
		t.Fatal(err)
	}
	host.Run("ip", "link", "add", stray, "type", "veth", "peer", "name", "straypeer")

	m, err := NewManager(ManagerConfig{Plumber: p})
	if err != nil {
		t.Fatal(err)
	}
	m.Set(desiredOf())
	applyBoth(t, m)

	links := strings.Join(hostLinks(t, host.Netlink()), " ")
	if !strings.Contains(links, lookalike) {
		t.Errorf("%s was swept as a stray workload interface: %s", lookalike, links)
	}
	if strings.Contains(links, stray) {
		t.Errorf("stray workload interface %s not swept: %s", stray, links)
	}

	if err := p.remove(lookalike); !errors.Is(err, ErrIfaceTaken) {
		t.Errorf("remove of %s: got %v, want ErrIfaceTaken", lookalike, err)
	}
	if links := strings.Join(hostLinks(t, host.Netlink()), " "); !strings.Contains(links, lookalike) {
		t.Errorf("Del removed %s: %s", lookalike, links)
	}
	// Nor does the plumber make an interface of that name: weft creates
	// only what it would delete again.
	wl := nstest.New(t, "w")
	w := workload(t, wl, "x", "10.65.0.9/32")
	w.HostIface = "weftnot-a-hash"
	if _, err := p.reconcile(ctx, w); err == nil || !strings.Contains(err.Error(), "11 hex characters") {
		t.Errorf("reconcile with host interface %s: got %v", w.HostIface, err)
	}
	if err := p.Precheck(w); err == nil {
		t.Errorf("precheck accepted host interface %s", w.HostIface)
	}
}
