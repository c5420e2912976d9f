package rules

import (
	"context"
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

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

func newManager(t *testing.T, ns *nstest.NS) *Manager {
	t.Helper()
	m, err := New(Config{NetNS: ns.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var wgRule4 = dataplane.Rule{Family: 4, Priority: 99, Table: 7, Mark: 0x100000, Mask: 0x100000, Invert: true}
var plainRule6 = dataplane.Rule{Family: 6, Priority: 98, Table: 8}

// Rules are programmed with weft's protocol, adopted after a restart
// without a write, repaired on a resync, and removed when no longer
// desired, while rules weft does not own (another protocol, even at the
// same priority) are never touched.
func TestRulesLifecycle(t *testing.T) {
	ns := nstest.New(t, "r")
	ns.Run("ip", "rule", "add", "pref", "99", "lookup", "9") // foreign, same priority
	m := newManager(t, ns)
	m.Set(&dataplane.Desired{Rules: []dataplane.Rule{wgRule4, plainRule6}})
	apply(t, m)
	v4, v6 := ns.Run("ip", "-4", "rule", "show"), ns.Run("ip", "-6", "rule", "show")
	if !strings.Contains(v4, "99:	not from all fwmark 0x100000/0x100000 lookup 7 proto 87") {
		t.Fatalf("IPv4 rules:\n%s", v4)
	}
	if !strings.Contains(v6, "98:	from all lookup 8 proto 87") {
		t.Fatalf("IPv6 rules:\n%s", v6)
	}
	if m.KernelWrites() != 2 {
		t.Errorf("%d writes for 2 rules", m.KernelWrites())
	}

	// Idempotent, and a new manager adopts without writing.
	m.QueueResync()
	apply(t, m)
	m2 := newManager(t, ns)
	m2.Set(&dataplane.Desired{Rules: []dataplane.Rule{wgRule4, plainRule6}})
	apply(t, m2)
	if m.KernelWrites() != 2 || m2.KernelWrites() != 0 {
		t.Errorf("re-apply or adoption wrote: %d, %d", m.KernelWrites(), m2.KernelWrites())
	}

	// Drift: deleted behind weft's back, back after a resync.
	ns.Run("ip", "-6", "rule", "del", "pref", "98", "lookup", "8")
	m2.QueueResync()
	apply(t, m2)
	if v6 := ns.Run("ip", "-6", "rule", "show"); !strings.Contains(v6, "lookup 8 proto 87") {
		t.Fatalf("not repaired:\n%s", v6)
	}

	// Removal removes only weft's rules.
	m2.Set(&dataplane.Desired{})
	apply(t, m2)
	v4 = ns.Run("ip", "-4", "rule", "show")
	if strings.Contains(v4, "proto 87") || strings.Contains(ns.Run("ip", "-6", "rule", "show"), "proto 87") {
		t.Errorf("weft rules left:\n%s", v4)
	}
	if !strings.Contains(v4, "99:	from all lookup 9") {
		t.Errorf("foreign rule removed:\n%s", v4)
	}
}
