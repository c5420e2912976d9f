package links

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/kroute"
	"github.com/weftnet/weft/internal/netns/nstest"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func newPlumber(t *testing.T, host *nstest.NS) *Plumber {
	t.Helper()
	p, err := NewPlumber(Config{HostNS: host.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// plumb does what one dataplane pass does for w: the links manager's
// write (the plumber's reconcile), then the host routes, which the routes
// manager owns and the test writes as it would.
func plumb(t *testing.T, host *nstest.NS, p *Plumber, w dataplane.Workload) error {
	t.Helper()
	if _, err := p.reconcile(context.Background(), w); err != nil {
		return err
	}
	h := host.Netlink()
	l, err := h.LinkByName(w.HostIface)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range w.HostRoutes() {
		if err := h.RouteReplace(kroute.FromDesired(r, l.Attrs().Index).Netlink()); err != nil {
			t.Fatalf("host route %s: %v", r, err)
		}
	}
	return nil
}

func workload(t *testing.T, ns *nstest.NS, name string, ips ...string) dataplane.Workload {
	t.Helper()
	iface, err := dataplane.WorkloadIfaceName("weft", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	w := dataplane.Workload{Namespace: "default", Name: name, HostIface: iface, NetNS: ns.Path, MTU: 1400}
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
	p := newPlumber(t, host)
	ctx := context.Background()
	a := workload(t, wa, "a", "10.65.0.2/32", "fd00:65::2/128")
	a.MAC = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	b := workload(t, wb, "b", "10.65.0.3/32", "fd00:65::3/128")

	for _, w := range []dataplane.Workload{a, b} {
		if err := p.Precheck(w); err != nil {
			t.Fatalf("precheck %s: %v", w.Name, err)
		}
		if err := plumb(t, host, p, w); err != nil {
			t.Fatalf("add %s: %v", w.Name, err)
		}
		if err := p.Check(ctx, w); err != nil {
			t.Fatalf("check after add: %v", err)
		}
	}
	if out := host.Run("ip", "-o", "link", "show", a.HostIface); !strings.Contains(out, "ee:ee:ee:ee:ee:ee") {
		t.Errorf("host side MAC: %s", out)
	}
	if out := wa.Run("ip", "-o", "link", "show", "eth0"); !strings.Contains(out, a.MAC.String()) {
		t.Errorf("workload side MAC (the desired one): %s", out)
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

	// Re-plumbing changes nothing.
	before := p.KernelWrites()
	if _, err := p.reconcile(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got := p.KernelWrites() - before; got != 0 {
		t.Errorf("idempotent reconcile made %d kernel writes", got)
	}

	// A restarted agent (new plumber) finds everything in place.
	p2 := newPlumber(t, host)
	if err := p2.Check(ctx, a); err != nil {
		t.Fatalf("check from a new plumber: %v", err)
	}
	if _, err := p2.reconcile(ctx, a); err != nil || p2.KernelWrites() != 0 {
		t.Fatalf("adopting reconcile: err %v, writes %d", err, p2.KernelWrites())
	}

	// Drift is seen by Check (the host route too, which the routes
	// manager repairs) and the plumbing repaired by a reconcile.
	wa.Run("ip", "route", "del", "default")
	host.Run("ip", "route", "del", "10.65.0.2/32", "dev", a.HostIface)
	err := p.Check(ctx, a)
	if !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), "route 0.0.0.0/0 missing") || !strings.Contains(err.Error(), "host route 10.65.0.2/32") {
		t.Fatalf("check after drift: %v", err)
	}
	if err := p.checkPlumbing(a); !errors.Is(err, ErrDrift) || strings.Contains(err.Error(), "host route") {
		t.Fatalf("plumbing check after drift (host routes are not the plumber's): %v", err)
	}
	if err := plumb(t, host, p, a); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(ctx, a); err != nil {
		t.Fatalf("check after repair: %v", err)
	}

	// A foreign route survives deletion; the workload leaves nothing.
	host.Run("ip", "route", "add", "192.0.2.0/24", "dev", "lo")
	if err := p.remove(a.HostIface); err != nil {
		t.Fatal(err)
	}
	if err := p.remove(a.HostIface); err != nil {
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
	p := newPlumber(t, host)
	ctx := context.Background()
	hh := host.Netlink()
	baseline := len(hostLinks(t, hh))
	// add is what the dataplane does, preceded by the precheck a workload
	// add runs: both must refuse, and leave nothing.
	add := func(w dataplane.Workload) error {
		if err := p.Precheck(w); err != nil {
			if _, rerr := p.reconcile(ctx, w); rerr == nil {
				t.Errorf("precheck refused (%v) what reconcile made", err)
			}
			return err
		}
		_, err := p.reconcile(ctx, w)
		return err
	}
	nothingNew := func(t *testing.T) {
		t.Helper()
		if got := hostLinks(t, hh); len(got) != baseline {
			t.Errorf("links left behind: %v", got)
		}
	}

	t.Run("missing namespace", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.9/32")
		w.NetNS = filepath.Join(t.TempDir(), "nope")
		err := add(w)
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
		if err := add(w); !errors.Is(err, ErrBadNetNS) {
			t.Fatalf("got %v", err)
		}
		w.NetNS = "/proc/self/ns/mnt"
		if err := add(w); !errors.Is(err, ErrBadNetNS) {
			t.Fatalf("mount namespace: got %v", err)
		}
		nothingNew(t)
	})
	t.Run("host namespace", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.9/32")
		w.NetNS = host.Path
		if err := add(w); !errors.Is(err, ErrBadNetNS) {
			t.Fatalf("got %v", err)
		}
		nothingNew(t)
	})
	t.Run("host interface taken", func(t *testing.T) {
		w := workload(t, wl, "x", "10.65.0.9/32")
		host.Run("ip", "link", "add", w.HostIface, "type", "bridge")
		defer host.Run("ip", "link", "del", w.HostIface)
		if err := add(w); !errors.Is(err, ErrIfaceTaken) {
			t.Fatalf("got %v", err)
		}
		if err := p.remove(w.HostIface); !errors.Is(err, ErrIfaceTaken) {
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
		if err := add(w); !errors.Is(err, ErrIfaceTaken) {
			t.Fatalf("got %v", err)
		}
		nothingNew(t)
	})
	t.Run("another workload's veth", func(t *testing.T) {
		other := nstest.New(t, "o")
		w := workload(t, other, "x", "10.65.0.9/32")
		if err := add(w); err != nil {
			t.Fatal(err)
		}
		defer p.remove(w.HostIface)
		w.NetNS = wl.Path // same name, different namespace
		if err := add(w); !errors.Is(err, ErrIfaceTaken) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("rolls back a failure midway", func(t *testing.T) {
		// IPv6 disabled on new interfaces in the workload: the veth is
		// created, then adding the IPv6 address fails.
		wl.Sysctl("net/ipv6/conf/default/disable_ipv6", "1")
		defer wl.Sysctl("net/ipv6/conf/default/disable_ipv6", "0")
		w := workload(t, wl, "x", "10.65.0.9/32", "fd00:65::9/128")
		_, err := p.reconcile(ctx, w)
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
		if err := add(w); err == nil {
			t.Fatal("accepted a /24 workload address")
		}
		w = workload(t, wl, "x", "10.65.0.9/32")
		w.HostIface = "cali1234567890a"
		if err := add(w); err == nil {
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
	p := newPlumber(t, host)
	ctx := context.Background()
	a := workload(t, wa, "a", "10.65.0.2/32")
	b := workload(t, wb, "b", "10.65.0.3/32")

	m, err := NewManager(ManagerConfig{Plumber: p})
	if err != nil {
		t.Fatal(err)
	}
	m.Set(desiredOf(a, b))
	applyBoth(t, m)
	for _, w := range []dataplane.Workload{a, b} {
		if err := p.checkPlumbing(w); err != nil {
			t.Fatal(err)
		}
	}
	if pr := m.WorkloadProblems(); len(pr) != 0 {
		t.Fatalf("problems after a clean pass: %v", pr)
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
	p2 := newPlumber(t, host)
	m2, err := NewManager(ManagerConfig{Plumber: p2,
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
	if err := p2.checkPlumbing(a); err != nil {
		t.Fatalf("not repaired: %v", err)
	}
	for _, w := range []dataplane.Workload{a, b} {
		if err := plumb(t, host, p2, w); err != nil { // the routes manager's part
			t.Fatal(err)
		}
	}
	wb.Run("ping", "-c1", "-W2", "10.65.0.2")

	// A workload whose namespace disappears is reported (the agent then
	// deletes it), and not retried on every pass.
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
	if pr := m2.WorkloadProblems(); len(pr) != 1 || !errors.Is(pr[b.HostIface], ErrBadNetNS) {
		t.Errorf("problems %v: want %s's namespace gone", pr, b.HostIface)
	}
	if _, gone := m2.gone[b.HostIface]; !gone {
		t.Error("the gone workload is not remembered: it would be retried on every pass")
	}

	// Dropping a workload from the desired state removes it and its
	// problem.
	m2.Set(desiredOf())
	applyBoth(t, m2)
	for _, n := range hostLinks(t, host.Netlink()) {
		if strings.HasPrefix(n, "weft") {
			t.Errorf("%s left behind", n)
		}
	}
	if pr := m2.WorkloadProblems(); len(pr) != 0 {
		t.Errorf("problems after removal: %v", pr)
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
			applyBoth(t, m)
			if err := m.p.checkPlumbing(m.ok[iface]); err != nil {
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

// The manager is the only writer of workload interfaces and gets its
// states only from a complete store replica: a workload interface nobody
// wants (its workload was deleted while the agent was down) goes on the
// first pass, with no grace period; a desired one missing is made.
func TestManagerRemovesStraysAtOnce(t *testing.T) {
	host := nstest.New(t, "h")
	wa, wb := nstest.New(t, "a"), nstest.New(t, "b")
	p := newPlumber(t, host)
	a := workload(t, wa, "a", "10.65.0.2/32")
	b := workload(t, wb, "b", "10.65.0.3/32")
	// b was plumbed by an earlier agent; its workload is gone now.
	if err := plumb(t, host, p, b); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(ManagerConfig{Plumber: p})
	if err != nil {
		t.Fatal(err)
	}
	m.Set(desiredOf(a))
	applyBoth(t, m)
	if err := p.checkPlumbing(a); err != nil {
		t.Fatalf("desired workload not plumbed: %v", err)
	}
	if err := p.checkPlumbing(b); !errors.Is(err, ErrDrift) {
		t.Fatalf("stray not removed on the first pass: %v", err)
	}
}
