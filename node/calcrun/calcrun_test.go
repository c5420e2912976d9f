package calcrun

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/store"
)

type sinks struct {
	states  []dataplane.Desired
	tunnels []calc.TunnelNeeds
}

func (s *sinks) Send(d dataplane.Desired) { s.states = append(s.states, d) }
func (s *sinks) Set(n calc.TunnelNeeds)   { s.tunnels = append(s.tunnels, n) }
func (s *sinks) workloads(i int) int      { return len(s.states[i].Workloads) }
func put(o store.Object) store.Event {
	return store.Event{Type: store.EventPut, Object: o, Revision: o.Revision}
}
func events(evs ...store.Event) <-chan store.Event {
	ch := make(chan store.Event, len(evs))
	for _, e := range evs {
		ch <- e
	}
	close(ch)
	return ch
}

func wepObject(t *testing.T, name, ip string, rev uint64) store.Object {
	t.Helper()
	w := api.WorkloadEndpoint{Spec: api.WorkloadEndpointSpec{Node: "n1", Workload: name, InterfaceName: "weft0123456789" + name[:1], IPNetworks: []string{ip + "/32"}, Endpoint: "eth0"}}
	w.Metadata.Name, w.Metadata.Namespace = "n1-weft-"+name+"-eth0", "default"
	w.Metadata.Annotations = map[string]string{calc.AnnotationNetNS: "/run/netns/" + name}
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return store.Object{Key: store.Key{Kind: api.KindWorkloadEndpoint, Namespace: "default", Name: w.Metadata.Name}, Value: b, Revision: rev, CreateRevision: rev}
}

func newRunner(t *testing.T, dir string) (*Runner, *sinks) {
	t.Helper()
	s := &sinks{}
	r, err := New(Config{StateDir: dir}, nil, calc.New(calc.Config{NodeName: "n1"}), s, s)
	if err != nil {
		t.Fatal(err)
	}
	return r, s
}

// A state is handed to the dataplane only when complete: never between a
// RESET and the SYNC that ends the new listing, wherever the RESET falls
// in a batch of events (a partial state would remove the workloads not yet
// listed).
func TestPublishesOnlyCompleteStates(t *testing.T) {
	r, s := newRunner(t, "")
	a, b := wepObject(t, "a", "10.244.0.5", 3), wepObject(t, "b", "10.244.0.6", 4)
	var rev uint64
	// The initial listing, then a change: one state with a, one with a+b.
	r.consume(events(put(a), store.Event{Type: store.EventSync, Revision: 3}), &rev)
	// A snapshot restore: RESET in the middle of a batch, a partial
	// listing (only a), then the rest and SYNC.
	r.consume(events(put(b), store.Event{Type: store.EventReset}, put(a)), &rev)
	r.consume(events(put(b), store.Event{Type: store.EventSync, Revision: 4}), &rev)
	if len(s.states) != 2 || s.workloads(0) != 1 || s.workloads(1) != 2 {
		t.Fatalf("published %d states: want a state with a, then one with a and b (never the partial listing)", len(s.states))
	}
	if s.states[1].Revision != 4 {
		t.Fatalf("revision %d, want 4", s.states[1].Revision)
	}
	if len(s.tunnels) != 1 {
		t.Fatalf("tunnel needs sent %d times: want once (they did not change)", len(s.tunnels))
	}
}

// After a restart the runner publishes nothing computed from a replica
// older than the state the dataplane last applied: the kernel keeps what
// it has until the replica catches up.
func TestHoldsBackAReplicaOlderThanTheAppliedState(t *testing.T) {
	dir := t.TempDir()
	if err := writeMark(dir, 10); err != nil {
		t.Fatal(err)
	}
	r, s := newRunner(t, dir)
	var rev uint64
	r.consume(events(put(wepObject(t, "a", "10.244.0.5", 5)), store.Event{Type: store.EventSync, Revision: 5}), &rev)
	if len(s.states) != 0 {
		t.Fatalf("published a state from revision 5 while the dataplane had applied 10: %+v", s.states)
	}
	r.consume(events(put(wepObject(t, "b", "10.244.0.6", 11))), &rev)
	if len(s.states) != 1 || s.workloads(0) != 2 {
		t.Fatalf("after catching up: %d states", len(s.states))
	}
}

func TestMarkFile(t *testing.T) {
	dir := t.TempDir()
	if n, err := readMark(dir); n != 0 || err != nil {
		t.Fatalf("no mark: %d, %v", n, err)
	}
	if err := writeMark(dir, 42); err != nil {
		t.Fatal(err)
	}
	if n, err := readMark(dir); n != 42 || err != nil {
		t.Fatalf("mark: %d, %v", n, err)
	}
	if err := os.WriteFile(filepath.Join(dir, markFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := readMark(dir); n != 0 || err != nil {
		t.Fatalf("a torn mark must be ignored: %d, %v", n, err)
	}
	if err := RemoveMark(dir); err != nil {
		t.Fatal(err)
	}
	if err := RemoveMark(dir); err != nil {
		t.Fatalf("removing a missing mark: %v", err)
	}
}

type fakeReports struct {
	cur     *dataplane.Report
	changed chan struct{}
}

func (f *fakeReports) LatestReport() (*dataplane.Report, <-chan struct{}) { return f.cur, f.changed }

// The mark follows the revision of the last state a pass applied without
// error, not revisions that only advanced without a pass.
func TestRecordApplied(t *testing.T) {
	dir := t.TempDir()
	r, _ := newRunner(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	f := &fakeReports{cur: &dataplane.Report{Applied: &dataplane.Desired{}, Revision: 9, PassRevision: 8}, changed: make(chan struct{})}
	go func() { r.RecordApplied(ctx, f); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for n, _ := readMark(dir); n != 8; n, _ = readMark(dir) {
		if time.Now().After(deadline) {
			t.Fatalf("mark %d, want 8", n)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
}

type outputs struct{ got []calc.Output }

func (o *outputs) SetOutput(out calc.Output) { o.got = append(o.got, out) }

// The BGP speaker's report is a local input: its learned routes come out
// as the dataplane's routes, and the speaker's configuration reaches the
// output sinks with every published state.
func TestBGPLocalInputAndOutputs(t *testing.T) {
	s, out := &sinks{}, &outputs{}
	r, err := New(Config{Outputs: []OutputSink{out}}, nil, calc.New(calc.Config{NodeName: "n1", BGP: true}), s, s)
	if err != nil {
		t.Fatal(err)
	}
	r.SetLocal(calc.LocalInput{Kind: calc.LocalKindBGP, Value: &calc.BGPSpeakerState{Learned: []calc.LearnedRoute{{
		Prefix: netip.MustParsePrefix("198.51.100.0/24"), NextHop: netip.MustParseAddr("192.0.2.1")}}}})
	var rev uint64
	r.consume(events(store.Event{Type: store.EventSync, Revision: 1}), &rev)
	if len(out.got) != 1 || out.got[0].BGP == nil {
		t.Fatalf("outputs %+v", out.got)
	}
	if rs := s.states[0].Routes; len(rs) != 1 || rs[0].Class != dataplane.RouteClassBGP || s.states[0].HoldBGPRoutes {
		t.Fatalf("routes %+v (hold %v)", rs, s.states[0].HoldBGPRoutes)
	}
}
