package vxlan

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

type node struct {
	ns     *nstest.NS
	name   string
	under  netip.Addr
	tunnel netip.Addr
	block  string
}

func (n node) device() *dataplane.VXLANDevice {
	return &dataplane.VXLANDevice{TunnelAddr: n.tunnel, MAC: dataplane.VXLANMAC(n.name), Source: n.under}
}

func (n node) peer() dataplane.VXLANPeer {
	return dataplane.VXLANPeer{Node: n.name, TunnelIP: n.tunnel, VTEPMAC: dataplane.VXLANMAC(n.name), UnderlayIP: n.under}
}

func twoNodes(t *testing.T) (a, b node) {
	t.Helper()
	a = node{ns: nstest.New(t, "a"), name: "node-a", under: netip.MustParseAddr("192.168.60.1"), tunnel: netip.MustParseAddr("10.244.1.0"), block: "10.244.1.0/26"}
	b = node{ns: nstest.New(t, "b"), name: "node-b", under: netip.MustParseAddr("192.168.60.2"), tunnel: netip.MustParseAddr("10.244.2.0"), block: "10.244.2.0/26"}
	nstest.Veth(t, a.ns, "upl", netip.MustParsePrefix("192.168.60.1/24"), b.ns, "upl", netip.MustParsePrefix("192.168.60.2/24"))
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

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

func checkState(t *testing.T, n node, peer node) {
	t.Helper()
	mustContain(t, "link", n.ns.Run("ip", "-d", "link", "show", "weft.vxlan"),
		"mtu 1450", "link/ether "+dataplane.VXLANMAC(n.name).String(), "vxlan id 4096 local "+n.under.String()+" dev upl",
		"dstport 4789", "nolearning", "UP")
	mustContain(t, "addresses", n.ns.Run("ip", "addr", "show", "dev", "weft.vxlan"), "inet "+n.tunnel.String()+"/32")
	mustContain(t, "features", n.ns.Run("ethtool", "-k", "weft.vxlan"), "tx-checksum-ip-generic: off")
	mustContain(t, "neighbours", n.ns.Run("ip", "neigh", "show", "dev", "weft.vxlan"),
		peer.tunnel.String()+" lladdr "+dataplane.VXLANMAC(peer.name).String()+" PERMANENT")
	mustContain(t, "fdb", n.ns.Run("bridge", "fdb", "show", "dev", "weft.vxlan"),
		dataplane.VXLANMAC(peer.name).String()+" dst "+peer.under.String()+" self permanent")
}

func TestVXLANLifecycle(t *testing.T) {
	a, b := twoNodes(t)
	ma, mb := newManager(t, a, Config{}), newManager(t, b, Config{})
	ma.Set(&dataplane.Desired{VXLAN: a.device(), VXLANPeers: []dataplane.VXLANPeer{b.peer()}})
	mb.Set(&dataplane.Desired{VXLAN: b.device(), VXLANPeers: []dataplane.VXLANPeer{a.peer()}})
	apply(t, ma)
	apply(t, mb)
	checkState(t, a, b)
	checkState(t, b, a)

	// Packets cross: route each block via the peer's tunnel address onlink.
	a.ns.Run("ip", "route", "add", b.block, "via", b.tunnel.String(), "dev", "weft.vxlan", "onlink")
	b.ns.Run("ip", "route", "add", a.block, "via", a.tunnel.String(), "dev", "weft.vxlan", "onlink")
	a.ns.Run("ping", "-c1", "-W2", b.tunnel.String())

	// Re-applying, with or without a resync, writes nothing.
	w := ma.KernelWrites()
	apply(t, ma)
	ma.QueueResync()
	apply(t, ma)
	if d := ma.KernelWrites() - w; d != 0 {
		t.Errorf("re-apply made %d writes", d)
	}

	// A restarted agent adopts the device and entries untouched.
	ma2 := newManager(t, a, Config{})
	ma2.Set(&dataplane.Desired{VXLAN: a.device(), VXLANPeers: []dataplane.VXLANPeer{b.peer()}})
	apply(t, ma2)
	if n := ma2.KernelWrites(); n != 0 {
		t.Errorf("adoption made %d writes", n)
	}

	// Drift repaired at resync: an FDB entry, a neighbour, the checksum
	// offload switched back on, a foreign address.
	a.ns.Run("bridge", "fdb", "del", dataplane.VXLANMAC(b.name).String(), "dev", "weft.vxlan", "dst", b.under.String(), "self")
	a.ns.Run("ip", "neigh", "del", b.tunnel.String(), "dev", "weft.vxlan")
	a.ns.Run("ethtool", "-K", "weft.vxlan", "tx", "on")
	a.ns.Run("ip", "addr", "add", "10.9.9.9/32", "dev", "weft.vxlan")
	ma2.QueueResync()
	apply(t, ma2)
	checkState(t, a, b)
	if out := a.ns.Run("ip", "addr", "show", "dev", "weft.vxlan"); strings.Contains(out, "10.9.9.9") {
		t.Errorf("foreign address kept:\n%s", out)
	}
	a.ns.Run("ping", "-c1", "-W2", b.tunnel.String())

	// Removing the peer removes its entries; removing the device removes
	// it, and a foreign VXLAN device survives.
	a.ns.Run("ip", "link", "add", "other.vxlan", "type", "vxlan", "id", "7", "dstport", "4790", "dev", "upl")
	ma2.Set(&dataplane.Desired{VXLAN: a.device()})
	apply(t, ma2)
	if out := a.ns.Run("bridge", "fdb", "show", "dev", "weft.vxlan"); strings.Contains(out, dataplane.VXLANMAC(b.name).String()) {
		t.Errorf("FDB entry of a removed peer kept:\n%s", out)
	}
	if out := a.ns.Run("ip", "neigh", "show", "dev", "weft.vxlan"); strings.Contains(out, b.tunnel.String()) {
		t.Errorf("neighbour of a removed peer kept:\n%s", out)
	}
	ma2.Set(&dataplane.Desired{})
	apply(t, ma2)
	links := a.ns.Run("ip", "-o", "link")
	if strings.Contains(links, "weft.vxlan") || !strings.Contains(links, "other.vxlan") {
		t.Errorf("links after removal:\n%s", links)
	}
}

func TestVXLANRecreatedOnDeleteAndParamDrift(t *testing.T) {
	a, b := twoNodes(t)
	ma := newManager(t, a, Config{})
	desired := &dataplane.Desired{VXLAN: a.device(), VXLANPeers: []dataplane.VXLANPeer{b.peer()}}
	ma.Set(desired)
	apply(t, ma)

	ctx, cancel := context.WithCancel(context.Background())
	kicks := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- ma.Watch(ctx, func() { kicks <- struct{}{} }) }()
	t.Cleanup(func() { cancel(); <-done })

	// Until the subscription is live, an MTU change may go unnoticed:
	// repeat it until a kick arrives, then check the pass repairs it.
	deadline := time.Now().Add(5 * time.Second)
	for waiting := true; waiting; {
		a.ns.Run("ip", "link", "set", "weft.vxlan", "mtu", "1300")
		select {
		case <-kicks:
			waiting = false
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no kick for an MTU change")
			}
		}
	}
	apply(t, ma)
	mustContain(t, "link", a.ns.Run("ip", "link", "show", "weft.vxlan"), "mtu 1450")

	// Deleted: the link event asks for a pass that recreates everything.
	for len(kicks) > 0 {
		<-kicks
	}
	a.ns.Run("ip", "link", "del", "weft.vxlan")
	select {
	case <-kicks:
	case <-time.After(5 * time.Second):
		t.Fatal("no kick after the device was deleted")
	}
	apply(t, ma)
	checkState(t, a, b)

	// A different VNI in the configuration (a new agent): recreated.
	ma.Close()
	ma2 := newManager(t, a, Config{VNI: 5000, Port: 4790})
	ma2.Set(desired)
	apply(t, ma2)
	mustContain(t, "link", a.ns.Run("ip", "-d", "link", "show", "weft.vxlan"), "vxlan id 5000", "dstport 4790")
	mustContain(t, "fdb", a.ns.Run("bridge", "fdb", "show", "dev", "weft.vxlan"), dataplane.VXLANMAC(b.name).String())
}

// With TxChecksumOffload the feature is kept on (and turned back on when
// someone switches it off); without it, it is switched off.
func TestVXLANTxChecksumOffloadSetting(t *testing.T) {
	a, _ := twoNodes(t)
	m := newManager(t, a, Config{TxChecksumOffload: true})
	m.Set(&dataplane.Desired{VXLAN: a.device()})
	apply(t, m)
	mustContain(t, "features", a.ns.Run("ethtool", "-k", "weft.vxlan"), "tx-checksum-ip-generic: on")
	a.ns.Run("ethtool", "-K", "weft.vxlan", "tx", "off")
	m.QueueResync()
	apply(t, m)
	mustContain(t, "features", a.ns.Run("ethtool", "-k", "weft.vxlan"), "tx-checksum-ip-generic: on")

	off := newManager(t, a, Config{})
	off.Set(&dataplane.Desired{VXLAN: a.device()})
	apply(t, off)
	mustContain(t, "features", a.ns.Run("ethtool", "-k", "weft.vxlan"), "tx-checksum-ip-generic: off")
}

// TestVXLANDesiredVNIAndPort: the VNI and port of the desired state (the
// FelixConfiguration's vxlanVNI and vxlanPort) override the configured
// ones; changing them on a running manager recreates the device with its
// address, neighbours and FDB entries, and packets cross again; going back
// to 0 returns to the configured values.
func TestVXLANDesiredVNIAndPort(t *testing.T) {
	a, b := twoNodes(t)
	ma, mb := newManager(t, a, Config{}), newManager(t, b, Config{})
	both := func(vni, port int) {
		t.Helper()
		da, db := a.device(), b.device()
		da.VNI, da.Port, db.VNI, db.Port = vni, port, vni, port
		ma.Set(&dataplane.Desired{VXLAN: da, VXLANPeers: []dataplane.VXLANPeer{b.peer()}})
		mb.Set(&dataplane.Desired{VXLAN: db, VXLANPeers: []dataplane.VXLANPeer{a.peer()}})
		apply(t, ma)
		apply(t, mb)
	}
	both(0, 0)
	checkState(t, a, b)
	a.ns.Run("ip", "route", "add", b.tunnel.String()+"/32", "dev", "weft.vxlan")
	b.ns.Run("ip", "route", "add", a.tunnel.String()+"/32", "dev", "weft.vxlan")
	a.ns.Run("ping", "-c1", "-W2", b.tunnel.String())

	both(4097, 4790)
	for _, n := range []node{a, b} {
		mustContain(t, "link", n.ns.Run("ip", "-d", "link", "show", "weft.vxlan"), "vxlan id 4097 ", "dstport 4790", "nolearning", "UP")
		mustContain(t, "addresses", n.ns.Run("ip", "addr", "show", "dev", "weft.vxlan"), "inet "+n.tunnel.String()+"/32")
	}
	mustContain(t, "fdb", a.ns.Run("bridge", "fdb", "show", "dev", "weft.vxlan"), dataplane.VXLANMAC(b.name).String()+" dst "+b.under.String())
	// The route went with the old device; the route manager puts it back
	// in the agent (the link event makes it re-read).
	a.ns.Run("ip", "route", "replace", b.tunnel.String()+"/32", "dev", "weft.vxlan")
	b.ns.Run("ip", "route", "replace", a.tunnel.String()+"/32", "dev", "weft.vxlan")
	a.ns.Run("ping", "-c1", "-W2", b.tunnel.String())
	w := ma.KernelWrites()
	apply(t, ma)
	if d := ma.KernelWrites() - w; d != 0 {
		t.Errorf("re-apply with the same VNI and port made %d writes", d)
	}

	both(0, 0)
	checkState(t, a, b)
}
