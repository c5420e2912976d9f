package linux

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// Two "nodes" (namespaces) and an outside host on a bridge; each node has
// one workload namespace.
//
//	wl-a ── node-a (192.168.90.1) ─┐
//	                               br0 ── ext (192.168.90.100)
//	wl-b ── node-b (192.168.90.2) ─┘
type testNode struct {
	name   string
	ns     *nstest.NS
	under  netip.Addr
	tunnel netip.Addr
	block  netip.Prefix
	wl     *nstest.NS
	w      dataplane.Workload

	dp     *Dataplane
	box    *dataplane.Mailbox
	cancel context.CancelFunc
	done   chan error
}

const (
	pool    = "10.244.0.0/16"
	extAddr = "192.168.90.100"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func topology(t *testing.T) (a, b *testNode, ext *nstest.NS) {
	t.Helper()
	world := nstest.New(t, "x")
	world.Run("ip", "link", "add", "br0", "type", "bridge")
	world.Run("ip", "link", "set", "br0", "up")
	attach := func(ns *nstest.NS, port, addr string) {
		nstest.Veth(t, ns, "upl", netip.MustParsePrefix(addr+"/24"), world, port, netip.Prefix{})
		world.Run("ip", "link", "set", port, "master", "br0")
	}
	ext = nstest.New(t, "e")
	attach(ext, "p-ext", extAddr)

	mk := func(name, under, tunnel, block, wlIP string) *testNode {
		n := &testNode{
			name: name, ns: nstest.New(t, name[len(name)-1:]), under: netip.MustParseAddr(under),
			tunnel: netip.MustParseAddr(tunnel), block: netip.MustParsePrefix(block), wl: nstest.New(t, "w"),
		}
		attach(n.ns, "p-"+name[len(name)-1:], under)
		iface, err := dataplane.WorkloadIfaceName("weft", "default", "wl-"+name)
		if err != nil {
			t.Fatal(err)
		}
		n.w = dataplane.Workload{Namespace: "default", Name: "wl-" + name, HostIface: iface, NetNS: n.wl.Path,
			IPs: []netip.Prefix{netip.MustParsePrefix(wlIP + "/32")}, MTU: 1450}
		return n
	}
	a = mk("node-a", "192.168.90.1", "10.244.1.0", "10.244.1.0/26", "10.244.1.2")
	b = mk("node-b", "192.168.90.2", "10.244.2.0", "10.244.2.0/26", "10.244.2.2")
	return a, b, ext
}

func (n *testNode) start(t *testing.T) {
	t.Helper()
	dp, err := New(Config{
		Logger:     slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", n.name),
		Registerer: prometheus.NewRegistry(),
		NetNS:      n.ns.Path,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.dp, n.box = dp, dataplane.NewMailbox()
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	go func() { n.done <- dp.Run(ctx, n.box.C()) }()
	t.Cleanup(n.stop)
}

// stop ends the agent's loop; the kernel state stays, as after kill -9.
func (n *testNode) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	<-n.done
	n.dp.Close()
	n.cancel = nil
}

func (n *testNode) desired(peer *testNode, vxlan bool) dataplane.Desired {
	d := dataplane.Desired{
		Workloads: []dataplane.Workload{n.w},
		Routes:    append(n.w.HostRoutes(), dataplane.Route{Dst: n.block, Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole}),
		NAT: dataplane.NATConfig{
			MasqPools: []netip.Prefix{netip.MustParsePrefix(pool)}, AllPools: []netip.Prefix{netip.MustParsePrefix(pool)},
			ExcludeDests: []netip.Prefix{netip.PrefixFrom(n.under, 32), netip.PrefixFrom(peer.under, 32)},
		},
	}
	if vxlan {
		d.VXLAN = &dataplane.VXLANDevice{TunnelAddr: n.tunnel, MAC: dataplane.VXLANMAC(n.name), Source: n.under}
		d.VXLANPeers = []dataplane.VXLANPeer{{Node: peer.name, TunnelIP: peer.tunnel, VTEPMAC: dataplane.VXLANMAC(peer.name), UnderlayIP: peer.under}}
		d.Routes = append(d.Routes, dataplane.Route{Dst: peer.block, Class: dataplane.RouteClassBlock, Type: dataplane.RouteUnicast, Dev: "weft.vxlan", Via: peer.tunnel, OnLink: true})
	} else {
		// Native: the calculation knows the peer's address, not our
		// interface; the kernel picks the device.
		d.Routes = append(d.Routes, dataplane.Route{Dst: peer.block, Class: dataplane.RouteClassBlock, Type: dataplane.RouteUnicast, Via: peer.under})
	}
	return d
}

// eventually retries f until it succeeds or the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ping(from *nstest.NS, to string) error {
	out, err := from.Try("ping", "-c1", "-W1", to)
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s", to, err, out)
	}
	return nil
}

// listen accepts TCP connections in ns and reports each peer's address.
func listen(t *testing.T, ns *nstest.NS, addr string) <-chan netip.Addr {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	seen := make(chan netip.Addr, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
			c.Close()
			select {
			case seen <- ap.Addr():
			default:
			}
		}
	}()
	return seen
}

// sourceSeen connects from ns to addr and returns the source address the
// listener saw.
func sourceSeen(ns *nstest.NS, addr string, seen <-chan netip.Addr) (netip.Addr, error) {
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return netip.Addr{}, err
	}
	select {
	case a := <-seen:
		return a, nil
	case <-time.After(2 * time.Second):
		return netip.Addr{}, fmt.Errorf("listener saw no connection")
	}
}

func expectSource(t *testing.T, what string, from *nstest.NS, addr string, seen <-chan netip.Addr, want netip.Addr) {
	t.Helper()
	eventually(t, what, func() error {
		got, err := sourceSeen(from, addr, seen)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("listener saw %s, want %s", got, want)
		}
		return nil
	})
}

func TestTwoNodesVXLANNativeNATRestart(t *testing.T) {
	a, b, ext := topology(t)
	a.start(t)
	b.start(t)
	a.box.Send(a.desired(b, true))
	b.box.Send(b.desired(a, true))
	for _, n := range []*testNode{a, b} {
		select {
		case <-n.dp.Loop.Synced():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: first apply never finished", n.name)
		}
	}

	// Over VXLAN, workload to workload, source preserved.
	eventually(t, "ping over VXLAN", func() error { return ping(a.wl, "10.244.2.2") })
	atB := listen(t, b.wl, "10.244.2.2:9000")
	expectSource(t, "workload to workload keeps its address", a.wl, "10.244.2.2:9000", atB, netip.MustParseAddr("10.244.1.2"))
	if out := b.ns.Run("ip", "-s", "link", "show", "weft.vxlan"); !strings.Contains(out, "weft.vxlan") {
		t.Fatalf("no VXLAN device on %s", b.name)
	}

	// NAT outgoing: to an address outside the pools the workload appears
	// as its node.
	atExt := listen(t, ext, extAddr+":9000")
	expectSource(t, "NAT outgoing", a.wl, extAddr+":9000", atExt, a.under)
	expectSource(t, "NAT outgoing from b", b.wl, extAddr+":9000", atExt, b.under)

	// A deleted VXLAN device is repaired by the link event, without waiting
	// for the periodic resync.
	a.ns.Run("ip", "link", "del", "weft.vxlan")
	eventually(t, "ping after the VXLAN device was deleted", func() error { return ping(a.wl, "10.244.2.2") })
	eventually(t, "ping back", func() error { return ping(b.wl, "10.244.1.2") })

	// A deleted workload veth likewise.
	a.ns.Run("ip", "link", "del", a.w.HostIface)
	eventually(t, "ping after the workload veth was deleted", func() error { return ping(b.wl, "10.244.1.2") })

	// Restart: a new agent adopts everything without a single write.
	a.stop()
	a.start(t)
	a.box.Send(a.desired(b, true))
	<-a.dp.Loop.Synced()
	if err := a.dp.Loop.LastError(); err != nil {
		t.Fatalf("first pass after restart: %v", err)
	}
	if n := a.dp.KernelWrites(); n != 0 {
		t.Errorf("restart made %d kernel writes", n)
	}
	if err := ping(a.wl, "10.244.2.2"); err != nil {
		t.Error(err)
	}

	// Native routing: via the peer's underlay address; the VXLAN device
	// goes away, routes are replaced in place.
	a.box.Send(a.desired(b, false))
	b.box.Send(b.desired(a, false))
	eventually(t, "VXLAN device removed", func() error {
		if _, err := a.ns.Try("ip", "link", "show", "weft.vxlan"); err == nil {
			return fmt.Errorf("still there (last error: %v)", a.dp.Loop.LastError())
		}
		return nil
	})
	eventually(t, "native route", func() error {
		if out := a.ns.Run("ip", "route", "show", "10.244.2.0/26"); !strings.Contains(out, "via 192.168.90.2 dev upl proto 87") {
			return fmt.Errorf("route: %q", out)
		}
		return nil
	})
	eventually(t, "ping natively", func() error { return ping(a.wl, "10.244.2.2") })
	expectSource(t, "natively, workload to workload keeps its address", a.wl, "10.244.2.2:9000", atB, netip.MustParseAddr("10.244.1.2"))
	expectSource(t, "NAT outgoing, native mode", a.wl, extAddr+":9000", atExt, a.under)

	// Taking everything away leaves nothing of weft's behind.
	a.box.Send(dataplane.Desired{})
	eventually(t, "all removed", func() error {
		if out := a.ns.Run("ip", "route", "show", "proto", "87"); out != "" {
			return fmt.Errorf("routes left: %s", out)
		}
		if out := a.ns.Run("ip", "-o", "link"); strings.Contains(out, "weft") {
			return fmt.Errorf("links left: %s", out)
		}
		return nil
	})
}
