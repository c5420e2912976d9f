package ipip

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
	"github.com/weftnet/weft/internal/testtier"
)

type node struct {
	ns     *nstest.NS
	under  netip.Addr
	tunnel netip.Addr
	block  string
}

func (n node) device() *dataplane.IPIPDevice {
	return &dataplane.IPIPDevice{TunnelAddr: n.tunnel, Source: n.under}
}

func twoNodes(t *testing.T) (a, b node) {
	t.Helper()
	a = node{ns: nstest.New(t, "a"), under: netip.MustParseAddr("192.168.62.1"), tunnel: netip.MustParseAddr("10.244.1.0"), block: "10.244.1.0/26"}
	b = node{ns: nstest.New(t, "b"), under: netip.MustParseAddr("192.168.62.2"), tunnel: netip.MustParseAddr("10.244.2.0"), block: "10.244.2.0/26"}
	nstest.Veth(t, a.ns, "upl", netip.MustParsePrefix("192.168.62.1/24"), b.ns, "upl", netip.MustParsePrefix("192.168.62.2/24"))
	return a, b
}

func newManager(t *testing.T, n node, cfg Config) *Manager {
	t.Helper()
	cfg.NetNS = n.ns.Path
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func apply(m *Manager) error {
	ctx := context.Background()
	return errors.Join(m.Apply(ctx, dataplane.PhaseUpdate), m.Apply(ctx, dataplane.PhaseRemove))
}

func mustApply(t *testing.T, m *Manager) {
	t.Helper()
	if err := apply(m); err != nil {
		t.Fatal(err)
	}
}

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// requireIPIP skips unless this kernel can create IP-in-IP devices.
func requireIPIP(t *testing.T) {
	t.Helper()
	testtier.Kernel(t)
	if s := ProbeSystem(); !s.Available {
		t.Skipf("needs a kernel with IP-in-IP, which this one lacks (platform-notes.md: no ipip module): %s", s.Reason)
	}
}

// TestIPIPLifecycle runs where the kernel has IP-in-IP: two nodes get the
// device (local = underlay, MTU underlay − 20, tunnel /32, up), a block
// route "via <peer underlay> dev weft.ipip onlink" each way carries pings
// between the tunnel addresses encapsulated, re-applies and a restarted
// manager write nothing, drift (MTU, down, a foreign address, deletion)
// is repaired, and removal deletes only weft's device.
func TestIPIPLifecycle(t *testing.T) {
	requireIPIP(t)
	a, b := twoNodes(t)
	ma, mb := newManager(t, a, Config{}), newManager(t, b, Config{})
	ma.Set(&dataplane.Desired{IPIP: a.device()})
	mb.Set(&dataplane.Desired{IPIP: b.device()})
	mustApply(t, ma)
	mustApply(t, mb)
	check := func(n node) {
		t.Helper()
		mustContain(t, "link", n.ns.Run("ip", "-d", "link", "show", dataplane.DefaultIPIPIface),
			"mtu 1480", "ipip ", "remote any local "+n.under.String()+" ", "UP")
		mustContain(t, "addresses", n.ns.Run("ip", "addr", "show", "dev", dataplane.DefaultIPIPIface), "inet "+n.tunnel.String()+"/32")
	}
	check(a)
	check(b)

	a.ns.Run("ip", "route", "add", b.block, "via", b.under.String(), "dev", dataplane.DefaultIPIPIface, "onlink")
	b.ns.Run("ip", "route", "add", a.block, "via", a.under.String(), "dev", dataplane.DefaultIPIPIface, "onlink")
	// The only route between the blocks is through the devices.
	a.ns.Run("ping", "-c2", "-W2", "-I", a.tunnel.String(), b.tunnel.String())

	w := ma.KernelWrites()
	mustApply(t, ma)
	ma.QueueResync()
	mustApply(t, ma)
	if d := ma.KernelWrites() - w; d != 0 {
		t.Errorf("re-apply made %d writes", d)
	}
	ma2 := newManager(t, a, Config{})
	ma2.Set(&dataplane.Desired{IPIP: a.device()})
	mustApply(t, ma2)
	if n := ma2.KernelWrites(); n != 0 {
		t.Errorf("adoption made %d writes", n)
	}

	// Drift: repaired on the watch's kick.
	ctx, cancel := context.WithCancel(context.Background())
	kicks := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- ma2.Watch(ctx, func() { kicks <- struct{}{} }) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for waiting := true; waiting; {
		a.ns.Run("ip", "link", "set", dataplane.DefaultIPIPIface, "mtu", "1300")
		select {
		case <-kicks:
			waiting = false
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no kick for an MTU change")
			}
		}
	}
	a.ns.Run("ip", "addr", "add", "10.9.9.9/32", "dev", dataplane.DefaultIPIPIface)
	a.ns.Run("ip", "link", "set", dataplane.DefaultIPIPIface, "down")
	ma2.QueueResync()
	mustApply(t, ma2)
	check(a)
	if out := a.ns.Run("ip", "addr", "show", "dev", dataplane.DefaultIPIPIface); strings.Contains(out, "10.9.9.9") {
		t.Errorf("foreign address kept:\n%s", out)
	}
	a.ns.Run("ip", "link", "del", dataplane.DefaultIPIPIface)
	select {
	case <-kicks:
	case <-time.After(5 * time.Second):
		t.Fatal("no kick after the device was deleted")
	}
	mustApply(t, ma2)
	check(a)

	// A new underlay address: recreated with the new local address.
	a.ns.Run("ip", "addr", "add", "192.168.62.11/24", "dev", "upl")
	moved := a.device()
	moved.Source = netip.MustParseAddr("192.168.62.11")
	ma2.Set(&dataplane.Desired{IPIP: moved})
	mustApply(t, ma2)
	mustContain(t, "link", a.ns.Run("ip", "-d", "link", "show", dataplane.DefaultIPIPIface), "local 192.168.62.11")

	// Removed: weft's device goes, the kernel's tunl0 stays.
	ma2.Set(&dataplane.Desired{})
	mustApply(t, ma2)
	links := a.ns.Run("ip", "-o", "link")
	if strings.Contains(links, dataplane.DefaultIPIPIface) {
		t.Errorf("device left after removal:\n%s", links)
	}
}

// TestIPIPUnsupportedKernel runs where the kernel has no IP-in-IP (this
// machine): a desired device fails with dataplane.ErrUnsupported, the
// agent's callback hears why once, nothing is created, and later passes
// do not try again; with no device desired the manager is content.
func TestIPIPUnsupportedKernel(t *testing.T) {
	testtier.Kernel(t)
	if s := ProbeSystem(); s.Available {
		t.Skipf("needs a kernel without IP-in-IP; this one has it: %s", s.Reason)
	}
	a, _ := twoNodes(t)
	var reasons []string
	m := newManager(t, a, Config{Unsupported: func(r string) { reasons = append(reasons, r) }})
	m.Set(&dataplane.Desired{IPIP: a.device()})
	for range 2 {
		if err := apply(m); !errors.Is(err, dataplane.ErrUnsupported) {
			t.Fatalf("apply = %v, want ErrUnsupported", err)
		}
	}
	if len(reasons) != 1 || !strings.Contains(reasons[0], "no ipip module") {
		t.Errorf("Unsupported called with %q, want one reason naming the missing module", reasons)
	}
	if out := a.ns.Run("ip", "-o", "link"); strings.Contains(out, dataplane.DefaultIPIPIface) || m.KernelWrites() != 0 {
		t.Errorf("something was created (%d writes):\n%s", m.KernelWrites(), out)
	}
	m.Set(&dataplane.Desired{})
	mustApply(t, m)
}

// TestIPIPForeignDeviceRefused: an interface of weft's device name that is
// not an IP-in-IP device is an error, never deleted.
func TestIPIPForeignDeviceRefused(t *testing.T) {
	a, _ := twoNodes(t)
	a.ns.Run("ip", "link", "add", dataplane.DefaultIPIPIface, "type", "veth", "peer", "name", "x")
	m := newManager(t, a, Config{})
	m.Set(&dataplane.Desired{})
	if err := apply(m); err == nil || !strings.Contains(err.Error(), "not an IP-in-IP device") {
		t.Errorf("apply = %v, want a refusal", err)
	}
	mustContain(t, "links", a.ns.Run("ip", "-o", "link"), dataplane.DefaultIPIPIface)
}
