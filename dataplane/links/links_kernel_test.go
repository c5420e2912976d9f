package links

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
func (c *fakeClock) NewTimer(time.Duration) dataplane.Timer { panic("not used") }

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func newPlumber(t *testing.T, host *nstest.NS, clock dataplane.Clock) *Plumber {
	t.Helper()
	p, err := NewPlumber(Config{HostNS: host.Path, MTU: 1400, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func workload(t *testing.T, ns *nstest.NS, name string, ips ...string) dataplane.Workload {
	t.Helper()
	iface, err := dataplane.WorkloadIfaceName("weft", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	w := dataplane.Workload{Namespace: "default", Name: name, HostIface: iface, NetNS: ns.Path}
	for _, ip := range ips {
		w.IPs = append(w.IPs, netip.MustParsePrefix(ip))
	}
	return w
}

func hostLinks(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	ls, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	return names
}

func TestPlumberAddCheckDel(t *testing.T) {
	host := nstest.New(t, "h")
	host.Sysctl("net/ipv6/conf/all/forwarding", "1")
	wa, wb := nstest.New(t, "a"), nstest.New(t, "b")
	p := newPlumber(t, host, nil)
	ctx := context.Background()
	a := workload(t, wa, "a", "10.65.0.2/32", "fd00:65::2/128")
	b := workload(t, wb, "b", "10.65.0.3/32", "fd00:65::3/128")

	for _, w := range []dataplane.Workload{a, b} {
		res, err := p.Add(ctx, w)
		if err != nil {
			t.Fatalf("add %s: %v", w.Name, err)
		}
		if res.HostIface != w.HostIface || res.Iface != "eth0" || res.HostMAC.String() != "ee:ee:ee:ee:ee:ee" || len(res.MAC) != 6 {
			t.Fatalf("result %+v", res)
		}
		if err := p.Check(ctx, w); err != nil {
			t.Fatalf("check after add: %v", err)
		}
	}

	// What the kernel holds, as an operator would see it.
	routes := host.Run("ip", "route", "show", "proto", "87")
	for _, want := range []string{"10.65.0.2 dev " + a.HostIface + " scope link", "10.65.0.3 dev " + b.HostIface + " scope link"} {
		if !strings.Contains(routes, want) {
			t.Errorf("host routes lack %q:\n%s", want, routes)
		}
	}
	inA := wa.Run("ip", "route", "show")
	for _, want := range []string{"default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 proto static scope link"} {
		if !strings.Contains(inA, want) {
			t.Errorf("workload routes lack %q:\n%s", want, inA)
		}
	}
	if in6 := wa.Run("ip", "-6", "route", "show", "default"); !strings.Contains(in6, "via fe80::ecee:eeff:feee:eeee dev eth0") {
		t.Errorf("workload IPv6 default route: %s", in6)
	}
	if mtu := wa.Run("cat", "/sys/class/net/eth0/mtu"); strings.TrimSpace(mtu) != "1400" {
		t.Errorf("workload MTU %s", mtu)
	}
	if v := host.Run("cat", "/proc/sys/net/ipv4/conf/"+a.HostIface+"/proxy_arp"); strings.TrimSpace(v) != "1" {
		t.Errorf("proxy_arp = %s", v)
	}

	// Traffic flows workload to workload through the host, both families.
	wa.Run("ping", "-c1", "-W2", "10.65.0.3")
	wa.Run("ping", "-6", "-c1", "-W2", "fd00:65::3")

	// Re-adding changes nothing.
	before := p.KernelWrites()
	if _, err := p.Add(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got := p.KernelWrites() - before; got != 0 {
		t.Errorf("idempotent add made %d kernel writes", got)
	}

	// A restarted agent (new plumber) finds everything in place.
	p2 := newPlumber(t, host, nil)
	if err := p2.Check(ctx, a); err != nil {
		t.Fatalf("check from a new plumber: %v", err)
	}
	if _, err := p2.Add(ctx, a); err != nil || p2.KernelWrites() != 0 {
		t.Fatalf("adopting add: err %v, writes %d", err, p2.KernelWrites())
	}

	// Drift is seen by Check and repaired by Add.
	wa.Run("ip", "route", "del", "default")
	host.Run("ip", "route", "del", "10.65.0.2/32", "dev", a.HostIface)
	err := p.Check(ctx, a)
	if !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), "route 0.0.0.0/0 missing") || !strings.Contains(err.Error(), "host route 10.65.0.2/32") {
		t.Fatalf("check after drift: %v", err)
	}
	if _, err := p.Add(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(ctx, a); err != nil {
		t.Fatalf("check after repair: %v", err)
	}

	// A foreign route survives deletion; the workload leaves nothing.
	host.Run("ip", "route", "add", "192.0.2.0/24", "dev", "lo")
	if err := p.Del(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := p.Del(ctx, a); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	hh := host.Netlink()
	for _, n := range hostLinks(t, hh) {
		if n == a.HostIface {
			t.Errorf("%s still exists", n)
		}
	}
	if out := wa.Run("ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("eth0 still in the workload: %s", out)
	}
	routes = host.Run("ip", "route", "show")
	if strings.Contains(routes, "10.65.0.2") || !strings.Contains(routes, "192.0.2.0/24 dev lo") {
		t.Errorf("routes after delete:\n%s", routes)
	}
	if err := p.Check(ctx, b); err != nil {
		t.Errorf("the other workload was disturbed: %v", err)
	}
}

func TestPlumberRejectsBadInputAndLeavesNothing(t *testing.T) {
	host := nstest.New(t, "h")
	wl := nstest.New(t, "w")
	p := newPlumber(t, host, nil)
	ctx := context.Background()
	hh := host.Netlink()
	baseline := len(hostLinks(t, hh))
	nothingNew := func(t *testing.T) {
		t.Helper()
		if got := hostLinks(t, hh); len(got) != baseline {
			t.Errorf("links left behind: %v", got)
		}
	}

	t.Run("missing namespace", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.9/32")
		w.NetNS = filepath.Join(t.TempDir(), "nope")
		_, err := p.Add(ctx, w)
		if !errors.Is(err, ErrBadNetNS) || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("got %v", err)
		}
		nothingNew(t)
	})
	t.Run("not a namespace", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.9/32")
		w.NetNS = filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(w.NetNS, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Add(ctx, w); !errors.Is(err, ErrBadNetNS) {
			t.Fatalf("got %v", err)
		}
		w.NetNS = "/proc/self/ns/mnt"
		if _, err := p.Add(ctx, w); !errors.Is(err, ErrBadNetNS) {
			t.Fatalf("mount namespace: got %v", err)
		}
		nothingNew(t)
	})
	t.Run("host namespace", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.9/32")
		w.NetNS = host.Path
		if _, err := p.Add(ctx, w); !errors.Is(err, ErrBadNetNS) {
			t.Fatalf("got %v", err)
		}
		nothingNew(t)
	})
	t.Run("host interface taken", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.9/32")
		host.Run("ip", "link", "add", w.HostIface, "type", "bridge")
		defer host.Run("ip", "link", "del", w.HostIface)
		if _, err := p.Add(ctx, w); !errors.Is(err, ErrIfaceTaken) {
			t.Fatalf("got %v", err)
		}
		if err := p.Del(ctx, w); !errors.Is(err, ErrIfaceTaken) {
			t.Fatalf("delete of a foreign interface: %v", err)
		}
		if out := host.Run("ip", "-o", "link", "show", w.HostIface); !strings.Contains(out, w.HostIface) {
			t.Fatal("foreign interface deleted")
		}
	})
	t.Run("workload interface taken", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.9/32")
		wl.Run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other")
		defer wl.Run("ip", "link", "del", "eth0")
		if _, err := p.Add(ctx, w); !errors.Is(err, ErrIfaceTaken) {
			t.Fatalf("got %v", err)
		}
		nothingNew(t)
	})
	t.Run("another workload's veth", func(t *testing.T) {
		other := nstest.New(t, "o")
		w := workload(t, other, "x", "10.65.0.9/32")
		if _, err := p.Add(ctx, w); err != nil {
			t.Fatal(err)
		}
		defer p.Del(ctx, w)
		w.NetNS = wl.Path // same name, different namespace
		if _, err := p.Add(ctx, w); !errors.Is(err, ErrIfaceTaken) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("rolls back a failure midway", func(t *testing.T) {
		// IPv6 disabled on new interfaces in the workload: the veth is
		// created, then adding the IPv6 address fails.
		wl.Sysctl("net/ipv6/conf/default/disable_ipv6", "1")
		defer wl.Sysctl("net/ipv6/conf/default/disable_ipv6", "0")
		w := workload(t, wl, "x", "10.65.0.9/32", "fd00:65::9/128")
		_, err := p.Add(ctx, w)
		if err == nil {
			t.Fatal("add succeeded with IPv6 disabled")
		}
		nothingNew(t)
		if out := wl.Run("ip", "-o", "link"); strings.Contains(out, "eth0") {
			t.Errorf("half-made peer left: %s", out)
		}
		if out := host.Run("ip", "route", "show", "proto", "87"); out != "" {
			t.Errorf("routes left: %s", out)
		}
	})
	t.Run("invalid workload", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.0/24")
		if _, err := p.Add(ctx, w); err == nil {
			t.Fatal("accepted a /24 workload address")
		}
		w = workload(t, wl, "x", "10.65.0.9/32")
		w.HostIface = "cali1234567890a"
		if _, err := p.Add(ctx, w); err == nil {
			t.Fatal("accepted a host interface without weft's prefix")
		}
		nothingNew(t)
	})
}

func desiredOf(ws ...dataplane.Workload) *dataplane.Desired {
	return &dataplane.Desired{Workloads: ws}
}

func applyBoth(t *testing.T, m *Manager) {
	t.Helper()
	ctx := context.Background()
	if err := m.Apply(ctx, dataplane.PhaseUpdate); err != nil {
		t.Fatalf("update phase: %v", err)
	}
	if err := m.Apply(ctx, dataplane.PhaseRemove); err != nil {
		t.Fatalf("remove phase: %v", err)
	}
}

func TestManagerAdoptRepairRemove(t *testing.T) {
	host := nstest.New(t, "h")
	wa, wb := nstest.New(t, "a"), nstest.New(t, "b")
	clock := &fakeClock{now: time.Unix(1000, 0)}
	p := newPlumber(t, host, clock)
	ctx := context.Background()
	a := workload(t, wa, "a", "10.65.0.2/32")
	b := workload(t, wb, "b", "10.65.0.3/32")

	var goneMu sync.Mutex
	var gone []string
	m, err := NewManager(ManagerConfig{Plumber: p, Grace: 10 * time.Second, OnNetNSGone: func(w dataplane.Workload) {
		goneMu.Lock()
		defer goneMu.Unlock()
		gone = append(gone, w.Name)
	}})
	if err != nil {
		t.Fatal(err)
	}
	m.Set(desiredOf(a, b))
	applyBoth(t, m)
	for _, w := range []dataplane.Workload{a, b} {
		if err := p.Check(ctx, w); err != nil {
			t.Fatal(err)
		}
	}

	// Re-apply and resync change nothing.
	before := p.KernelWrites()
	applyBoth(t, m)
	m.QueueResync()
	applyBoth(t, m)
	if d := p.KernelWrites() - before; d != 0 {
		t.Errorf("re-apply made %d writes", d)
	}

	// After a restart a new manager adopts the plumbing without a write.
	p2 := newPlumber(t, host, clock)
	m2, err := NewManager(ManagerConfig{Plumber: p2, Grace: 10 * time.Second, OnNetNSGone: m.cfg.OnNetNSGone,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	m2.Set(desiredOf(a, b))
	applyBoth(t, m2)
	if p2.KernelWrites() != 0 {
		t.Errorf("adoption made %d writes", p2.KernelWrites())
	}

	// Deleting a veth behind weft's back: the link event wakes the loop,
	// the next pass recreates it.
	wctx, cancel := context.WithCancel(ctx)
	kicks := make(chan struct{}, 16)
	watchDone := make(chan error, 1)
	go func() { watchDone <- m2.Watch(wctx, func() { kicks <- struct{}{} }) }()
	t.Cleanup(func() { cancel(); <-watchDone })
	waitWatching(t, host, m2, kicks)

	host.Run("ip", "link", "del", a.HostIface)
	select {
	case <-kicks:
	case <-time.After(5 * time.Second):
		t.Fatal("no kick after the veth was deleted")
	}
	applyBoth(t, m2)
	if err := p2.Check(ctx, a); err != nil {
		t.Fatalf("not repaired: %v", err)
	}
	wb.Run("ping", "-c1", "-W2", "10.65.0.2")

	// A workload whose namespace disappears is reported, not retried hot.
	for len(kicks) > 0 {
		<-kicks
	}
	wb.Delete()
	// The kernel tears the namespace down asynchronously; its veth goes
	// with it.
	hh := host.Netlink()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := hh.LinkByName(b.HostIface); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("veth of a deleted namespace still exists")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-kicks:
	case <-time.After(5 * time.Second):
		t.Fatal("no kick after the workload namespace went away")
	}
	applyBoth(t, m2)
	goneMu.Lock()
	if len(gone) != 1 || gone[0] != "b" {
		t.Errorf("gone reports %v", gone)
	}
	goneMu.Unlock()
	applyBoth(t, m2) // reported once only
	goneMu.Lock()
	if len(gone) != 1 {
		t.Errorf("gone reported again: %v", gone)
	}
	goneMu.Unlock()

	// Dropping a workload from the desired state removes it.
	m2.Set(desiredOf())
	applyBoth(t, m2)
	for _, n := range hostLinks(t, host.Netlink()) {
		if strings.HasPrefix(n, "weft") {
			t.Errorf("%s left behind", n)
		}
	}
}

// waitWatching makes sure the subscription is live before the test
// deletes anything: it sets a watched interface down until a kick comes,
// and checks the pass repairs it.
func waitWatching(t *testing.T, host *nstest.NS, m *Manager, kicks chan struct{}) {
	t.Helper()
	var iface string
	m.mu.Lock()
	for n := range m.watched {
		iface = n
		break
	}
	m.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		host.Run("ip", "link", "set", iface, "down")
		select {
		case <-kicks:
			// Setting the link down also flushed its routes: the pass
			// the kick asks for repairs that.
			applyBoth(t, m)
			if err := m.p.Check(context.Background(), m.ok[iface]); err != nil {
				t.Fatalf("not repaired after down/up: %v", err)
			}
			for len(kicks) > 0 {
				<-kicks
			}
			return
		case <-time.After(100 * time.Millisecond):
			host.Run("ip", "link", "set", iface, "up")
		}
	}
	t.Fatal("watch never reported a change")
}

func TestManagerRaceWithSynchronousAddDel(t *testing.T) {
	host := nstest.New(t, "h")
	wa, wb := nstest.New(t, "a"), nstest.New(t, "b")
	clock := &fakeClock{now: time.Unix(1000, 0)}
	p := newPlumber(t, host, clock)
	ctx := context.Background()
	a := workload(t, wa, "a", "10.65.0.2/32")
	b := workload(t, wb, "b", "10.65.0.3/32")
	m, err := NewManager(ManagerConfig{Plumber: p, Grace: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m.Set(desiredOf(a))
	applyBoth(t, m)

	// "workload add b" ran, the desired state does not know b yet: a
	// resync must not sweep it.
	if _, err := p.Add(ctx, b); err != nil {
		t.Fatal(err)
	}
	m.QueueResync()
	applyBoth(t, m)
	if err := p.Check(ctx, b); err != nil {
		t.Fatalf("fresh workload swept: %v", err)
	}
	// "workload del a" ran, the desired state still has a: not resurrected.
	if err := p.Del(ctx, a); err != nil {
		t.Fatal(err)
	}
	m.QueueResync()
	applyBoth(t, m)
	if err := p.Check(ctx, a); !errors.Is(err, ErrDrift) {
		t.Fatalf("deleted workload resurrected: %v", err)
	}

	// Past the grace period the desired state rules again: b, never
	// desired, is a stray and goes; a, still desired, comes back.
	clock.Advance(11 * time.Second)
	m.QueueResync()
	applyBoth(t, m)
	clock.Advance(11 * time.Second)
	m.QueueResync()
	applyBoth(t, m)
	if err := p.Check(ctx, a); err != nil {
		t.Fatalf("desired workload not restored: %v", err)
	}
	if err := p.Check(ctx, b); !errors.Is(err, ErrDrift) {
		t.Fatalf("stray not removed: %v", err)
	}
}
