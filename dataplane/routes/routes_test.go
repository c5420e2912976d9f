package routes

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/kroute"
)

// fakeKernel is an in-memory main table with failure injection.
type fakeKernel struct {
	routes   map[string]netlink.Route // by destination
	links    []netlink.Link
	failDst  map[string]error
	replaces []string // every route written, added or replaced
	deletes  []string
	// hops answers RouteGet by address; an address not listed is on the
	// connected subnet of the first link.
	hops map[string]netlink.Route
}

func newFake(links ...string) *fakeKernel {
	k := &fakeKernel{routes: map[string]netlink.Route{}, failDst: map[string]error{}}
	for i, name := range links {
		k.links = append(k.links, &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: i + 2}})
	}
	return k
}

func (k *fakeKernel) RouteListFiltered(_ int, f *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, r := range k.routes {
		if mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != f.Protocol {
			continue
		}
		if mask&netlink.RT_FILTER_TABLE != 0 && f.Table != unix.RT_TABLE_UNSPEC && r.Table != f.Table {
			continue
		}
		if mask&netlink.RT_FILTER_DST != 0 && r.Dst.String() != f.Dst.String() {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// RouteAdd is exclusive: one route per destination, as the kernel keeps
// one per destination and metric.
func (k *fakeKernel) RouteAdd(r *netlink.Route) error {
	dst := r.Dst.String()
	if err := k.failDst[dst]; err != nil {
		return err
	}
	if _, ok := k.routes[dst]; ok {
		return unix.EEXIST
	}
	k.replaces = append(k.replaces, dst)
	k.routes[dst] = *r
	return nil
}

func (k *fakeKernel) RouteReplace(r *netlink.Route) error {
	dst := r.Dst.String()
	if err := k.failDst[dst]; err != nil {
		return err
	}
	k.replaces = append(k.replaces, dst)
	k.routes[dst] = *r
	return nil
}

func (k *fakeKernel) RouteDel(r *netlink.Route) error {
	dst := r.Dst.String()
	if err := k.failDst[dst]; err != nil {
		return err
	}
	if _, ok := k.routes[dst]; !ok {
		return unix.ESRCH
	}
	k.deletes = append(k.deletes, dst)
	delete(k.routes, dst)
	return nil
}

func (k *fakeKernel) LinkList() ([]netlink.Link, error) { return k.links, nil }

func (k *fakeKernel) RouteGet(ip net.IP) ([]netlink.Route, error) {
	if r, ok := k.hops[ip.String()]; ok {
		if r.Type == unix.RTN_UNREACHABLE {
			return nil, unix.ENETUNREACH
		}
		return []netlink.Route{r}, nil
	}
	return []netlink.Route{{Type: unix.RTN_UNICAST, LinkIndex: 2}}, nil
}

func (k *fakeKernel) reset() { k.replaces, k.deletes = nil, nil }

func pass(m *Manager) error {
	ctx := context.Background()
	return errors.Join(m.Apply(ctx, dataplane.PhaseUpdate), m.Apply(ctx, dataplane.PhaseRemove))
}

func TestDiffWritesOnlyDifferences(t *testing.T) {
	k := newFake("eth0", "weft.vxlan")
	// Already in the kernel: one matching weft route (adopted), one stale
	// weft route (removed), one foreign route (never looked at).
	k.routes["10.244.1.0/26"] = *kroute.FromDesired(dataplane.Route{Dst: pfx("10.244.1.0/26"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole}, 0).Netlink()
	k.routes["10.244.7.0/26"] = *kroute.FromDesired(dataplane.Route{Dst: pfx("10.244.7.0/26"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole}, 0).Netlink()
	k.routes["192.0.2.0/24"] = netlink.Route{Dst: kroute.IPNet(pfx("192.0.2.0/24")), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_STATIC, Type: unix.RTN_UNICAST, LinkIndex: 2}

	m := NewWithKernel(Config{}, k)
	want := []dataplane.Route{
		{Dst: pfx("10.244.1.0/26"), Type: dataplane.RouteBlackhole},
		{Dst: pfx("10.244.2.0/26"), Dev: "weft.vxlan", Via: addr("10.244.2.0"), OnLink: true},
	}
	m.Set(&dataplane.Desired{Routes: want})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if strings.Join(k.replaces, ",") != "10.244.2.0/26" || strings.Join(k.deletes, ",") != "10.244.7.0/26" {
		t.Errorf("replaced %v, deleted %v", k.replaces, k.deletes)
	}
	if _, ok := k.routes["192.0.2.0/24"]; !ok {
		t.Error("foreign route removed")
	}
	got := k.routes["10.244.2.0/26"]
	if got.LinkIndex != 3 || got.Flags&int(netlink.FLAG_ONLINK) == 0 || got.Protocol != dataplane.RouteProtocol || got.Gw.String() != "10.244.2.0" {
		t.Errorf("programmed %+v", got)
	}

	k.reset()
	m.QueueResync()
	if err := pass(m); err != nil || len(k.replaces)+len(k.deletes) != 0 {
		t.Errorf("re-apply: err %v, replaced %v, deleted %v", err, k.replaces, k.deletes)
	}
	if m.KernelWrites() != 2 {
		t.Errorf("writes = %d", m.KernelWrites())
	}
}

func TestFailedItemsStayPendingWhileOthersApply(t *testing.T) {
	k := newFake("eth0")
	k.failDst["10.244.2.0/26"] = unix.ENETUNREACH
	m := NewWithKernel(Config{}, k)
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{
		{Dst: pfx("10.244.1.0/26"), Type: dataplane.RouteBlackhole},
		{Dst: pfx("10.244.2.0/26"), Dev: "eth0", Via: addr("192.168.1.2")},
		{Dst: pfx("10.244.3.0/26"), Dev: "missing0", Via: addr("192.168.1.3")},
	}})
	err := pass(m)
	if err == nil || !strings.Contains(err.Error(), "network is unreachable") || !strings.Contains(err.Error(), "device missing0 does not exist") {
		t.Fatalf("error %v", err)
	}
	if strings.Join(k.replaces, ",") != "10.244.1.0/26" {
		t.Errorf("independent route not applied: %v", k.replaces)
	}

	// The kernel recovers and the device appears: only the two pending
	// routes are written.
	k.reset()
	delete(k.failDst, "10.244.2.0/26")
	k.links = append(k.links, &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "missing0", Index: 9}})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if len(k.replaces) != 2 || !strings.Contains(strings.Join(k.replaces, ","), "10.244.2.0/26") {
		t.Errorf("retry wrote %v", k.replaces)
	}
}

// Workload host routes are this manager's like any other: programmed when
// desired, removed when not (the loop removes them before the links
// manager removes the interface), and a failure is reported against the
// workload, so that its add waits for it.
func TestWorkloadHostRoutesAreOwnedHere(t *testing.T) {
	k := newFake("eth0", "weft0123456789a")
	m := NewWithKernel(Config{}, k)
	w := dataplane.Workload{Namespace: "ns", Name: "a", HostIface: "weft0123456789a", NetNS: "/x", IPs: []netip.Prefix{pfx("10.244.1.2/32")}}
	m.Set(&dataplane.Desired{Workloads: []dataplane.Workload{w}, Routes: w.HostRoutes()})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if r, ok := k.routes["10.244.1.2/32"]; !ok || r.LinkIndex != 3 || r.Scope != netlink.SCOPE_LINK {
		t.Fatalf("workload host route %+v", r)
	}
	if p := m.WorkloadProblems(); len(p) != 0 {
		t.Fatalf("problems %v", p)
	}
	k.reset()
	m.Set(&dataplane.Desired{})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if strings.Join(k.deletes, ",") != "10.244.1.2/32" {
		t.Errorf("deleted %v: want the undesired host route", k.deletes)
	}

	// The interface is missing: the route fails, and the workload is told.
	w2 := w
	w2.HostIface = "weftfffffffffff"
	m.Set(&dataplane.Desired{Workloads: []dataplane.Workload{w2}, Routes: w2.HostRoutes()})
	if err := pass(m); err == nil {
		t.Fatal("route through a missing interface applied")
	}
	if p := m.WorkloadProblems(); p[w2.HostIface] == nil || len(p) != 1 {
		t.Fatalf("problems %v: want one for %s", p, w2.HostIface)
	}
}

func TestRecreatedDeviceRewritesRoutes(t *testing.T) {
	k := newFake("weft.vxlan")
	m := NewWithKernel(Config{}, k)
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{{Dst: pfx("10.244.2.0/26"), Dev: "weft.vxlan", Via: addr("10.244.2.0"), OnLink: true}}})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	k.reset()
	k.links = []netlink.Link{&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "weft.vxlan", Index: 42}}}
	delete(k.routes, "10.244.2.0/26") // the kernel dropped it with the old device
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if r := k.routes["10.244.2.0/26"]; r.LinkIndex != 42 {
		t.Errorf("route not rewritten through the new device: %+v", r)
	}
}

func TestDeleteOfAnAlreadyMissingRouteSucceeds(t *testing.T) {
	k := newFake("eth0")
	m := NewWithKernel(Config{}, k)
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{{Dst: pfx("10.9.0.0/16"), Type: dataplane.RouteBlackhole}}})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	delete(k.routes, "10.9.0.0/16")
	m.Set(&dataplane.Desired{})
	if err := pass(m); err != nil {
		t.Fatalf("ESRCH not treated as done: %v", err)
	}
}

func TestRouteWithoutDeviceAcceptsTheKernelsChoice(t *testing.T) {
	k := newFake("eth0")
	m := NewWithKernel(Config{}, k)
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{{Dst: pfx("10.244.2.0/26"), Via: addr("192.168.1.2")}}})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	// The kernel resolved the device; after a resync the route still
	// matches and is not rewritten.
	r := k.routes["10.244.2.0/26"]
	r.LinkIndex = 2
	k.routes["10.244.2.0/26"] = r
	k.reset()
	m.QueueResync()
	if err := pass(m); err != nil || len(k.replaces) != 0 {
		t.Errorf("rewritten: %v, %v", k.replaces, err)
	}
}

// A pass looks only at the routes that changed since the last one, yet
// every change gets there: a changed route, a route gone, a route listed
// twice (the last counts), a next hop now resolved elsewhere.
func TestPassesFollowEveryChange(t *testing.T) {
	k := newFake("eth0", "eth1")
	m := NewWithKernel(Config{}, k)
	via := netip.MustParseAddr("192.168.7.254")
	learned := func(dst string) dataplane.Route {
		return dataplane.Route{Dst: pfx(dst), Class: dataplane.RouteClassBGP, Via: via, Recursive: true}
	}
	block := dataplane.Route{Dst: pfx("10.244.1.0/26"), Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole}
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{learned("100.64.0.1/32"), learned("100.64.0.2/32"), block}})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	k.reset()
	if err := pass(m); err != nil || len(k.replaces)+len(k.deletes) != 0 {
		t.Fatalf("an unchanged state wrote %v, deleted %v (err %v)", k.replaces, k.deletes, err)
	}
	// 100.64.0.2 goes; the block is listed twice, the second one counts.
	unicast := dataplane.Route{Dst: block.Dst, Class: dataplane.RouteClassBlock, Dev: "eth1"}
	m.Set(&dataplane.Desired{Routes: []dataplane.Route{learned("100.64.0.1/32"), block, unicast}})
	k.reset()
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k.replaces, []string{"10.244.1.0/26"}) || !slices.Equal(k.deletes, []string{"100.64.0.2/32"}) {
		t.Fatalf("wrote %v, deleted %v; want the block rewritten and 100.64.0.2 deleted", k.replaces, k.deletes)
	}
	if got := k.routes["10.244.1.0/26"]; got.LinkIndex != 3 {
		t.Fatalf("block route %v, want the unicast one through eth1", got)
	}
	// The next hop now resolves through eth1: the learned route follows.
	k.hops = map[string]netlink.Route{via.String(): {Type: unix.RTN_UNICAST, LinkIndex: 3}}
	k.reset()
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if got := k.routes["100.64.0.1/32"]; got.LinkIndex != 3 || !slices.Equal(k.replaces, []string{"100.64.0.1/32"}) {
		t.Fatalf("learned route %v after its next hop moved (wrote %v)", got, k.replaces)
	}
}

// BenchmarkPassWithLearnedRoutes: a pass (Set and both phases) over 10,000
// learned routes already in the (fake) kernel, one of them changed: what
// every pass costs while a router's table is programmed.
func BenchmarkPassWithLearnedRoutes(b *testing.B) {
	k := newFake("eth0")
	m := NewWithKernel(Config{}, k)
	d := &dataplane.Desired{}
	for i := range 10000 {
		d.Routes = append(d.Routes, dataplane.Route{
			Dst:   netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i>>16), byte(i >> 8), byte(i)}), 32),
			Class: dataplane.RouteClassBGP, Via: netip.MustParseAddr("192.168.7.254"), Recursive: true,
		})
	}
	m.Set(d)
	if err := pass(m); err != nil {
		b.Fatal(err)
	}
	vias := []netip.Addr{netip.MustParseAddr("192.168.7.253"), netip.MustParseAddr("192.168.7.254")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d.Routes[0].Via = vias[i%2]
		m.Set(d)
		if err := pass(m); err != nil {
			b.Fatal(err)
		}
	}
}
