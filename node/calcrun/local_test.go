package calcrun

import (
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/store"
)

type chanSink struct{ states chan dataplane.Desired }

func (s chanSink) Send(d dataplane.Desired) { s.states <- d }
func (s chanSink) Set(calc.TunnelNeeds)     {}

// Local inputs reach the calculation: one given before the watch starts is
// in the first state; one given later, with no store change at all, makes
// the runner publish a new state; before the listing is complete nothing
// is published, whatever arrives locally.
func TestLocalInputsArePublished(t *testing.T) {
	s := chanSink{states: make(chan dataplane.Desired, 16)}
	r, err := New(Config{}, nil, calc.New(calc.Config{NodeName: "n1", UnderlayMTU: 1500}), s, s)
	if err != nil {
		t.Fatal(err)
	}
	links := func(mtu int) calc.LocalInput {
		return calc.LocalInput{Kind: calc.LocalKindLinks, Value: []dataplane.Link{{Name: "eth0", MTU: mtu, Up: true, HoldsNodeAddr: true}}}
	}
	r.SetLocal(links(9000))
	r.SetLocal(calc.LocalInput{Kind: "Node", Value: 1}) // refused and logged, nothing else
	ev := make(chan store.Event, 4)
	var rev uint64
	done := make(chan struct{})
	go func() { r.consume(ev, &rev); close(done) }()
	t.Cleanup(func() { close(ev); <-done })

	r.SetLocal(links(1400))
	select {
	case d := <-s.states:
		t.Fatalf("published %+v before the store listing was complete", d)
	case <-time.After(50 * time.Millisecond):
	}
	ev <- put(wepObject(t, "a", "10.244.0.5", 3))
	ev <- store.Event{Type: store.EventSync, Revision: 3}
	mtuOf := func() int {
		t.Helper()
		select {
		case d := <-s.states:
			if len(d.Workloads) != 1 {
				t.Fatalf("state %+v", d)
			}
			return d.Workloads[0].MTU
		case <-time.After(5 * time.Second):
			t.Fatal("no state published")
		}
		return 0
	}
	if m := mtuOf(); m != 1400 {
		t.Errorf("first state: workload MTU %d, want 1400 from the local links", m)
	}
	r.SetLocal(links(9000))
	for m := mtuOf(); m != 9000; m = mtuOf() {
		// Earlier batches may publish the older value first.
	}
}
