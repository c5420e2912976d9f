package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// fakeClock fires timers only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clock   *fakeClock
	c       chan time.Time
	at      time.Time
	d       time.Duration
	stopped bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.stopped = true
	return true
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, c: make(chan time.Time, 1), at: c.now.Add(d), d: d}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves time and fires every due timer.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.c <- c.now
			continue
		}
		if !t.stopped {
			kept = append(kept, t)
		}
	}
	c.timers = kept
}

// waitTimer waits until a live timer of duration d exists.
func (c *fakeClock) waitTimer(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		found := slices.ContainsFunc(c.timers, func(ft *fakeTimer) bool { return !ft.stopped && ft.d == d })
		c.mu.Unlock()
		if found {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no %s timer was started", d)
}

// recorder collects what fake managers were asked to do, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
	passes chan struct{}
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

func (r *recorder) waitPass(t *testing.T) {
	t.Helper()
	select {
	case <-r.passes:
	case <-time.After(5 * time.Second):
		t.Fatal("no apply pass")
	}
}

func (r *recorder) noPass(t *testing.T) {
	t.Helper()
	select {
	case <-r.passes:
		t.Fatal("unexpected apply pass")
	case <-time.After(50 * time.Millisecond):
	}
}

type fakeManager struct {
	name  string
	rec   *recorder
	last  bool // signals the end of a pass (the first manager's removal phase runs last)
	fails int  // fail this many update phases
	gate  chan struct{}
	mu    sync.Mutex
	sets  []*Desired
}

func (m *fakeManager) Name() string { return m.name }
func (m *fakeManager) Set(d *Desired) {
	m.mu.Lock()
	m.sets = append(m.sets, d)
	m.mu.Unlock()
	m.rec.add(m.name + ":set")
}
func (m *fakeManager) QueueResync() { m.rec.add(m.name + ":resync") }
func (m *fakeManager) Apply(_ context.Context, p Phase) error {
	m.rec.add(m.name + ":" + p.String())
	if p == PhaseUpdate && m.gate != nil {
		<-m.gate
	}
	if m.last && p == PhaseRemove {
		defer func() { m.rec.passes <- struct{}{} }()
	}
	if p == PhaseUpdate && m.fails > 0 {
		m.fails--
		return errors.New("boom")
	}
	return nil
}

type watchingManager struct {
	fakeManager
	kick chan func()
}

func (m *watchingManager) Watch(ctx context.Context, kick func()) error {
	m.kick <- kick
	<-ctx.Done()
	return nil
}

// metricValue reads one gauge or counter.
func metricValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func seriesCount(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.Metric)
		}
	}
	return 0
}

type harness struct {
	loop   *Loop
	clock  *fakeClock
	box    *Mailbox
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, period time.Duration, ms ...Manager) *harness {
	t.Helper()
	h := &harness{clock: &fakeClock{now: time.Unix(0, 0)}, box: NewMailbox(), reg: prometheus.NewRegistry()}
	var err error
	h.loop, err = NewLoop(LoopConfig{Clock: h.clock, ResyncPeriod: period, Registerer: h.reg, Jitter: func() float64 { return 0.5 }}, ms...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.loop.Run(ctx, h.box.C()) }()
	t.Cleanup(func() {
		h.cancel()
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
			t.Error("loop did not stop")
		}
	})
	return h
}

func managers(rec *recorder, names ...string) []*fakeManager {
	var ms []*fakeManager
	for i, n := range names {
		ms = append(ms, &fakeManager{name: n, rec: rec, last: i == 0})
	}
	return ms
}

func asManagers(fs []*fakeManager) []Manager {
	var ms []Manager
	for _, f := range fs {
		ms = append(ms, f)
	}
	return ms
}

func someDesired(n int) Desired {
	return Desired{Routes: []Route{{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n), 0, 0}), 16), Type: RouteBlackhole}}}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
	}
}

func TestLoopAppliesInDependencyOrder(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	fs := managers(rec, "links", "vxlan", "routes")
	h := newHarness(t, 0, asManagers(fs)...)
	h.box.Send(someDesired(1))
	rec.waitPass(t)
	want := []string{
		"links:set", "vxlan:set", "routes:set",
		"links:update", "vxlan:update", "routes:update",
		"routes:remove", "vxlan:remove", "links:remove",
	}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	// The pass signal comes from inside the last Apply; the loop finishes
	// its bookkeeping just after.
	select {
	case <-h.loop.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("Synced not closed after the first pass")
	}
	eventually(t, func() bool { return metricValue(t, h.loop.metrics.inSync) == 1 })
	if n := seriesCount(t, h.reg, "weft_dataplane_apply_seconds"); n != 3 {
		t.Errorf("%d apply duration series, want one per manager", n)
	}
}

func TestLoopWritesNothingBeforeTheFirstState(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	fs := managers(rec, "a")
	w := &watchingManager{fakeManager: fakeManager{name: "w", rec: rec}, kick: make(chan func(), 1)}
	h := newHarness(t, 10*time.Second, fs[0], w)
	kick := <-w.kick
	kick()
	h.loop.Resync()
	h.clock.waitTimer(t, 9*time.Second) // 10 s jittered by 0.5 × 20 %
	h.clock.Advance(time.Minute)
	rec.noPass(t)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("managers touched before the first state: %v", got)
	}
	h.box.Send(someDesired(1))
	rec.waitPass(t)
}

func TestLoopCoalescesUpdates(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	fs := managers(rec, "a")
	fs[0].gate = make(chan struct{})
	h := newHarness(t, 0, fs[0])
	h.box.Send(someDesired(1))
	// The first pass is blocked inside Apply; three states arrive.
	for seen := []string{}; !slices.Contains(seen, "a:update"); seen = append(seen, rec.take()...) {
		time.Sleep(time.Millisecond)
	}
	for i := 2; i <= 4; i++ {
		h.box.Send(someDesired(i))
	}
	fs[0].gate <- struct{}{}
	rec.waitPass(t)
	fs[0].gate <- struct{}{}
	rec.waitPass(t)
	fs[0].mu.Lock()
	defer fs[0].mu.Unlock()
	if len(fs[0].sets) != 2 {
		t.Fatalf("%d states handed over, want the first and the latest", len(fs[0].sets))
	}
	if want := someDesired(4); !fs[0].sets[1].Equal(&want) {
		t.Errorf("second state is %v, want the latest", fs[0].sets[1].Routes)
	}
}

func TestLoopSkipsAnEqualState(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	h := newHarness(t, 0, asManagers(managers(rec, "a"))...)
	h.box.Send(someDesired(1))
	rec.waitPass(t)
	d := someDesired(1)
	d.Routes = append([]Route(nil), d.Routes...)
	h.box.Send(d)
	rec.noPass(t)
}

// reportingManager reports a problem for one workload interface.
type reportingManager struct {
	fakeManager
	problems map[string]error
}

func (m *reportingManager) WorkloadProblems() map[string]error { return m.problems }

// Every pass publishes a report of the applied state with the managers'
// workload problems; an equal state with a newer revision only advances
// the reported revision (what a writer waiting for its write watches),
// without a pass.
func TestLoopReports(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	rm := &reportingManager{fakeManager: fakeManager{name: "a", rec: rec, last: true},
		problems: map[string]error{"weft0123456789a": ErrBadNetNS}}
	h := newHarness(t, 0, rm)
	if r, _ := h.loop.LatestReport(); r.Applied != nil || r.Seq != 0 {
		t.Fatalf("report before any pass: %+v", r)
	}
	d := someDesired(1)
	d.Revision = 7
	h.box.Send(d)
	rec.waitPass(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := WaitReport(ctx, h.loop, func(r *Report) (bool, error) { return r.Revision == 7, nil })
	if err != nil {
		t.Fatal(err)
	}
	if r.PassRevision != 7 || !errors.Is(r.Problems["weft0123456789a"], ErrBadNetNS) || !r.Applied.Equal(&d) {
		t.Fatalf("report %+v", r)
	}
	d2 := someDesired(1)
	d2.Revision = 9
	h.box.Send(d2)
	rec.noPass(t)
	r, err = WaitReport(ctx, h.loop, func(r *Report) (bool, error) { return r.Revision == 9, nil })
	if err != nil {
		t.Fatal(err)
	}
	if r.PassRevision != 7 || r.Applied.Revision != 9 {
		t.Fatalf("after an equal state: revision %d, pass revision %d, applied %d", r.Revision, r.PassRevision, r.Applied.Revision)
	}
	// A done function's error ends the wait with it.
	if _, err := WaitReport(ctx, h.loop, func(*Report) (bool, error) { return false, ErrDrift }); !errors.Is(err, ErrDrift) {
		t.Fatalf("WaitReport error %v", err)
	}
}

func TestLoopRetriesWithBackoffWhileOthersApply(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	fs := managers(rec, "a", "b", "c")
	fs[1].fails = 3
	h := newHarness(t, 0, asManagers(fs)...)
	h.box.Send(someDesired(1))
	rec.waitPass(t)
	if got := rec.take(); !slices.Contains(got, "c:update") || !slices.Contains(got, "a:remove") {
		t.Errorf("independent managers skipped after a failure: %v", got)
	}
	eventually(t, func() bool { return h.loop.LastError() != nil })
	if err := h.loop.LastError(); !strings.Contains(err.Error(), "b (update): boom") {
		t.Errorf("last error %v", err)
	}
	eventually(t, func() bool { return metricValue(t, h.loop.metrics.inSync) == 0 })
	for _, backoff := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		h.clock.waitTimer(t, backoff)
		h.clock.Advance(backoff)
		rec.waitPass(t)
	}
	eventually(t, func() bool { return h.loop.LastError() == nil })
	if v := metricValue(t, h.loop.metrics.failures.WithLabelValues("b")); v != 3 {
		t.Errorf("failures{b} = %v", v)
	}
	h.clock.Advance(time.Hour / 60) // no retry pending any more
	rec.noPass(t)
}

func TestLoopPeriodicResyncIsJittered(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	h := newHarness(t, 60*time.Second, asManagers(managers(rec, "a", "b"))...)
	h.box.Send(someDesired(1))
	rec.waitPass(t)
	rec.take()
	// Jitter 0.5 → 60 s − 0.5 × 20 % = 54 s.
	h.clock.waitTimer(t, 54*time.Second)
	h.clock.Advance(53 * time.Second)
	rec.noPass(t)
	h.clock.Advance(time.Second)
	rec.waitPass(t)
	got := rec.take()
	if !slices.Equal(got[:2], []string{"a:resync", "b:resync"}) {
		t.Errorf("periodic pass did not resync first: %v", got)
	}
	if v := metricValue(t, h.loop.metrics.resyncs.WithLabelValues("periodic")); v != 1 {
		t.Errorf("resyncs{periodic} = %v", v)
	}
	h.loop.Resync()
	rec.waitPass(t)
	if got := rec.take(); !slices.Contains(got, "a:resync") {
		t.Errorf("requested resync did not resync: %v", got)
	}
}

func TestLoopWatcherKickRunsAPass(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	w := &watchingManager{fakeManager: fakeManager{name: "w", rec: rec, last: true}, kick: make(chan func(), 1)}
	h := newHarness(t, 0, w)
	kick := <-w.kick
	h.box.Send(someDesired(1))
	rec.waitPass(t)
	rec.take()
	kick()
	rec.waitPass(t)
	if got := rec.take(); slices.Contains(got, "w:resync") || !slices.Contains(got, "w:update") {
		t.Errorf("a kick should run a pass without a full resync: %v", got)
	}
}

func TestNewLoopValidates(t *testing.T) {
	rec := &recorder{}
	if _, err := NewLoop(LoopConfig{ResyncPeriod: 91 * time.Second}); err == nil {
		t.Error("accepted a resync period above 90 s")
	}
	fs := managers(rec, "a", "a")
	if _, err := NewLoop(LoopConfig{}, fs[0], fs[1]); err == nil {
		t.Error("accepted two managers with one name")
	}
}

func TestMailboxKeepsTheLatest(t *testing.T) {
	box := NewMailbox()
	for i := range 5 {
		box.Send(someDesired(i))
	}
	got := <-box.C()
	want := someDesired(4)
	if !got.Equal(&want) {
		t.Errorf("got %v", got.Routes)
	}
	select {
	case d := <-box.C():
		t.Errorf("a second state was pending: %v", d.Routes)
	default:
	}
}

func ExampleMailbox() {
	box := NewMailbox()
	box.Send(Desired{})
	box.Send(Desired{Routes: []Route{{Dst: netip.MustParsePrefix("10.244.1.0/26"), Type: RouteBlackhole}}})
	d := <-box.C()
	fmt.Println(len(d.Routes), "route; earlier state dropped")
	// Output: 1 route; earlier state dropped
}
