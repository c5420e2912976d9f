package workloads

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/calcrun"
	"github.com/weftnet/weft/node/cluster"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/storetest"
)

// fakeDriver stands in for the kernel drivers inside the real dataplane
// loop: it records each desired state and reports the problems a test
// sets per host interface.
type fakeDriver struct {
	mu       sync.Mutex
	problems map[string]error
	applied  []string // host interfaces of the last state
}

func (f *fakeDriver) Name() string { return "fake" }
func (f *fakeDriver) Set(d *dataplane.Desired) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = nil
	for _, w := range d.Workloads {
		f.applied = append(f.applied, w.HostIface)
	}
}
func (f *fakeDriver) QueueResync()                                 {}
func (f *fakeDriver) Apply(context.Context, dataplane.Phase) error { return nil }
func (f *fakeDriver) WorkloadProblems() map[string]error {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Like the real drivers: problems only of workloads in the state
	// (once removed, a workload has no problem left).
	out := map[string]error{}
	for _, iface := range f.applied {
		if err := f.problems[iface]; err != nil {
			out[iface] = err
		}
	}
	return out
}
func (f *fakeDriver) setProblem(iface string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.problems == nil {
		f.problems = map[string]error{}
	}
	f.problems[iface] = err
}

// fakePlumbing is the dataplane's read-only checks.
type fakePlumbing struct{ precheck error }

func (p *fakePlumbing) Precheck(dataplane.Workload) error               { return p.precheck }
func (p *fakePlumbing) Check(context.Context, dataplane.Workload) error { return nil }

// flakyStore makes the first command of a name applied but reported as
// of unknown outcome, as when the leader changes as it answers.
type flakyStore struct {
	store.Store
	failOnce atomic.Value // command name
}

func (s *flakyStore) Command(ctx context.Context, name string, payload []byte) ([]byte, error) {
	out, err := s.Store.Command(ctx, name, payload)
	if f, _ := s.failOnce.Load().(string); f == name && err == nil {
		s.failOnce.Store("")
		return nil, store.ErrIndeterminate
	}
	return out, err
}

type env struct {
	t     *testing.T
	st    *store.Node
	svc   *Service
	drv   *fakeDriver
	plumb *fakePlumbing
	flaky *flakyStore
	loop  *dataplane.Loop
	ctx   context.Context
}

const testPool = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.70.0.0/16, blockSize: 26}
`

// newEnv runs the real store, calculation and dataplane loop, with a fake
// driver in place of the kernel; run=false leaves the dataplane stopped.
func newEnv(t *testing.T, run bool) *env {
	t.Helper()
	st := storetest.Single(t, func(r *store.Registry) {
		cluster.Register(r)
		Register(r)
		ipam.Register(r, slog.New(slog.DiscardHandler))
	})
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, st: st, drv: &fakeDriver{}, plumb: &fakePlumbing{}, ctx: ctx}
	rs, err := api.Decode([]byte(testPool))
	if err != nil {
		t.Fatal(err)
	}
	api.Default(rs[0])
	v, _ := api.StoreValue(rs[0])
	if _, err := st.Txn(ctx, []store.Op{{Type: store.OpCreate, Key: store.Key{Kind: api.KindIPPool, Name: "p1"}, Value: v}}); err != nil {
		t.Fatal(err)
	}
	loop, err := dataplane.NewLoop(dataplane.LoopConfig{}, e.drv)
	if err != nil {
		t.Fatal(err)
	}
	box := dataplane.NewMailbox()
	runner, err := calcrun.New(calcrun.Config{}, st, calc.New(calc.Config{NodeName: "unit", UnderlayMTU: 1500}), box, nopTunnels{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	if run {
		wg.Add(2)
		go func() { defer wg.Done(); _ = loop.Run(ctx, box.C()) }()
		go func() { defer wg.Done(); runner.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	e.flaky, e.loop = &flakyStore{Store: st}, loop
	e.svc = New(Config{Node: "unit", ApplyTimeout: 3 * time.Second, RetryTimeout: 3 * time.Second}, e.flaky, e.plumb, loop)
	return e
}

type nopTunnels struct{}

func (nopTunnels) Set(calc.TunnelNeeds) {}

func (e *env) netns(name string) string {
	e.t.Helper()
	p := filepath.Join(e.t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) add(name string) (localapi.Workload, error) {
	return e.svc.Add(e.ctx, localapi.WorkloadAddRequest{Name: name, NetNS: e.netns(name), Labels: map[string]string{"app": "x"}})
}

// handles lists the IPAM handles held.
func (e *env) handles() []string {
	objs, _ := e.st.List(ipam.KindHandle, "")
	var out []string
	for _, o := range objs {
		out = append(out, o.Name)
	}
	return out
}

func (e *env) endpoints() int {
	objs, _ := e.st.List(api.KindWorkloadEndpoint, "")
	return len(objs)
}

func TestAddWaitsForTheDataplaneAndIsIdempotent(t *testing.T) {
	e := newEnv(t, true)
	w, err := e.add("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(w.IPs) != 1 || !strings.HasPrefix(w.IPs[0], "10.70.") || w.MTU != 1500 || w.MAC == "" {
		t.Fatalf("workload %+v: want an address of the pool and the MTU the dataplane applied (the underlay's: no pool uses VXLAN)", w)
	}
	rep, _ := e.svc.dp.LatestReport()
	if _, ok := rep.Workload(w.HostIface); !ok {
		t.Fatal("add returned before the dataplane applied the workload")
	}
	// The MAC was chosen before the endpoint was written, and the
	// dataplane got exactly it.
	applied, _ := rep.Workload(w.HostIface)
	if applied.MAC.String() != w.MAC || applied.MAC[0]&1 != 0 || applied.MAC[0]&2 == 0 {
		t.Fatalf("MAC %s applied as %s: want the same, unicast and locally administered", w.MAC, applied.MAC)
	}
	again, err := e.svc.Add(e.ctx, localapi.WorkloadAddRequest{Name: "a", NetNS: w.NetNS})
	if err != nil || again.IPs[0] != w.IPs[0] || again.MAC != w.MAC {
		t.Fatalf("idempotent add: %+v, %v", again, err)
	}
	if _, err := e.svc.Add(e.ctx, localapi.WorkloadAddRequest{Name: "a", NetNS: e.netns("other")}); err == nil {
		t.Fatal("the same name with another namespace was accepted")
	}
}

func TestPermanentDataplaneProblemUndoesTheAdd(t *testing.T) {
	e := newEnv(t, true)
	iface, _ := dataplane.WorkloadIfaceName(dataplane.DefaultIfacePrefix, "default", "a")
	e.drv.setProblem(iface, dataplane.ErrForeignRoute)
	_, err := e.add("a")
	var le *localapi.Error
	if !errors.As(err, &le) || le.Code != localapi.CodeConflict {
		t.Fatalf("add: %v, want a conflict", err)
	}
	if n := e.endpoints(); n != 0 {
		t.Fatalf("%d endpoints left after a failed add", n)
	}
	if h := e.handles(); len(h) != 0 {
		t.Fatalf("addresses left allocated: %v", h)
	}
}

func TestPrecheckFailureChangesNothing(t *testing.T) {
	e := newEnv(t, true)
	e.plumb.precheck = dataplane.ErrIfaceTaken
	if _, err := e.add("a"); err == nil {
		t.Fatal("add succeeded")
	}
	if n, h := e.endpoints(), e.handles(); n != 0 || len(h) != 0 {
		t.Fatalf("left %d endpoints, handles %v", n, h)
	}
}

// Without a dataplane applying it, an add gives up after its timeout and
// leaves nothing behind.
func TestAddTimesOutWithoutADataplane(t *testing.T) {
	e := newEnv(t, false)
	_, err := e.add("a")
	var le *localapi.Error
	if !errors.As(err, &le) || le.Code != localapi.CodeUnavailable || !strings.Contains(le.Message, "did not apply") {
		t.Fatalf("add: %v", err)
	}
	if n, h := e.endpoints(), e.handles(); n != 0 || len(h) != 0 {
		t.Fatalf("left %d endpoints, handles %v", n, h)
	}
}

// An IPAM assign or an endpoint write whose outcome is unknown is retried
// with the same handle (the same addresses come back): no allocation is
// left behind, and the add succeeds.
func TestUnknownOutcomesAreRetried(t *testing.T) {
	for _, cmd := range []string{ipam.CmdAssign, cmdPutWorkload} {
		t.Run(cmd, func(t *testing.T) {
			e := newEnv(t, true)
			e.flaky.failOnce.Store(cmd)
			w, err := e.add("a")
			if err != nil {
				t.Fatal(err)
			}
			if h := e.handles(); len(h) != 1 || h[0] != HandleFor("default", w.Endpoint) {
				t.Fatalf("handles %v", h)
			}
			u, err := ipam.Usage(ipam.StoreReader(e.st))
			if err != nil || u.Pools[0].InUse != 1 {
				t.Fatalf("usage %+v, %v: want 1 address in use", u, err)
			}
		})
	}
}

func TestDeleteWaitsAndReleases(t *testing.T) {
	e := newEnv(t, true)
	w, err := e.add("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Delete(e.ctx, localapi.WorkloadRef{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	rep, _ := e.svc.dp.LatestReport()
	if _, ok := rep.Workload(w.HostIface); ok {
		t.Fatal("delete returned while the dataplane still had the workload")
	}
	if n, h := e.endpoints(), e.handles(); n != 0 || len(h) != 0 {
		t.Fatalf("left %d endpoints, handles %v", n, h)
	}
	if _, err := e.svc.Delete(e.ctx, localapi.WorkloadRef{Name: "a"}); err == nil {
		t.Fatal("second delete succeeded")
	}
}

// A workload whose namespace is gone is reported by the dataplane; the
// service removes it (the dataplane never writes to the store).
func TestVanishedNamespaceIsCleanedUp(t *testing.T) {
	e := newEnv(t, true)
	go e.svc.Run(e.ctx)
	w, err := e.add("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.add("b"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(w.NetNS); err != nil {
		t.Fatal(err)
	}
	e.drv.setProblem(w.HostIface, dataplane.ErrBadNetNS)
	e.loop.Resync() // what the links manager's watch does when a namespace goes
	deadline := time.Now().Add(5 * time.Second)
	for e.endpoints() != 1 || len(e.handles()) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d endpoints, handles %v: the vanished workload was not removed", e.endpoints(), e.handles())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h := e.handles(); h[0] != HandleFor("default", "unit-weft-b-eth0") {
		t.Fatalf("handles %v: want only b's", h)
	}
}

// Two endpoints never hold one address, whatever IPAM says: the check is
// inside the raft apply.
func TestPutWorkloadRefusesAnAddressAnotherHolds(t *testing.T) {
	e := newEnv(t, true)
	w, err := e.add("a")
	if err != nil {
		t.Fatal(err)
	}
	other := &api.WorkloadEndpoint{}
	other.Metadata.Namespace = "ns2"
	other.Metadata.Annotations = map[string]string{calc.AnnotationNetNS: "/x"}
	other.Spec = api.WorkloadEndpointSpec{Orchestrator: api.OrchestratorWeft, Workload: "b", Node: "n2", Endpoint: "eth0",
		InterfaceName: "weft0000000000b", IPNetworks: w.IPs}
	api.Default(other)
	_, err = e.svc.putEndpoint(e.ctx, other)
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "held by workload default/a") {
		t.Fatalf("put of a second holder: %v", err)
	}
	// The same name on another node is refused too.
	dup := *other
	dup.Metadata.Namespace = "default"
	dup.Spec.Workload = "a"
	dup.Spec.IPNetworks = []string{"10.71.0.1/32"}
	dup.Metadata.Name = ""
	api.Default(&dup)
	if _, err := e.svc.putEndpoint(e.ctx, &dup); !errors.Is(err, store.ErrExists) {
		t.Fatalf("put of a second workload named a: %v", err)
	}
}

func TestValidateRefusesBadRequestsBeforeAnythingChanges(t *testing.T) {
	e := newEnv(t, true)
	for _, req := range []localapi.WorkloadAddRequest{
		{Name: "Bad_Name", NetNS: e.netns("x")},
		{Name: "a", NetNS: ""},
		{Name: "a", NetNS: "/no/such/netns"},
		{Name: "a", NetNS: t.TempDir()},
		{Name: "a", NetNS: e.netns("y"), Interface: "this-name-is-too-long"},
		{Name: "a", NetNS: e.netns("z"), IPs: []string{"10.70.0.1", "10.70.0.2"}},
		{Name: "a", NetNS: e.netns("w"), Pools: []string{"missing"}},
		{Name: "a", NetNS: e.netns("v"), Labels: map[string]string{"bad key!": "x"}},
	} {
		if _, err := e.svc.Add(e.ctx, req); err == nil {
			t.Errorf("accepted %+v", req)
		}
	}
	if n, h := e.endpoints(), e.handles(); n != 0 || len(h) != 0 {
		t.Fatalf("left %d endpoints, handles %v", n, h)
	}
}

// A workload has one interface: adding it again with another interface
// name is refused, not turned into a second veth.
func TestOneInterfacePerWorkload(t *testing.T) {
	e := newEnv(t, true)
	w, err := e.add("a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Add(e.ctx, localapi.WorkloadAddRequest{Name: "a", NetNS: w.NetNS, Interface: "eth1"})
	var le *localapi.Error
	if !errors.As(err, &le) || le.Code != localapi.CodeExists || !strings.Contains(le.Message, "one interface per workload") {
		t.Fatalf("add with a second interface: %v", err)
	}
	if n := e.endpoints(); n != 1 {
		t.Fatalf("%d endpoints", n)
	}
}
