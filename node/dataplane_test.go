package node

import (
	"encoding/json"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/store"
)

func wepObject(t *testing.T, name, ip string) store.Object {
	t.Helper()
	w := api.WorkloadEndpoint{Spec: api.WorkloadEndpointSpec{Node: "n1", Workload: name, InterfaceName: "weft0123456789" + name[:1], IPNetworks: []string{ip + "/32"}, Endpoint: "eth0"}}
	w.Metadata.Name, w.Metadata.Namespace = "n1-weft-"+name+"-eth0", "default"
	w.Metadata.Annotations = map[string]string{calc.AnnotationNetNS: "/run/netns/" + name}
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return store.Object{Key: store.Key{Kind: api.KindWorkloadEndpoint, Namespace: "default", Name: w.Metadata.Name}, Value: b}
}

// A state is handed to the dataplane only when complete: never between a
// RESET and the SYNC that ends the new listing, wherever the RESET falls
// in a batch of events (a partial state would remove the workloads not yet
// listed).
func TestDataplaneFeedPublishesOnlyCompleteStates(t *testing.T) {
	r := &dataplaneRunner{calc: calc.New(calc.Config{NodeName: "n1"})}
	var published []int // workloads in each published state
	publish := func() { published = append(published, len(r.calc.Desired().Workloads)) }
	put := func(o store.Object) store.Event { return store.Event{Type: store.EventPut, Object: o} }
	a, b := wepObject(t, "a", "10.244.0.5"), wepObject(t, "b", "10.244.0.6")

	events := make(chan store.Event, 16)
	var rev uint64
	// The initial listing, then a change: one state with a, one with a+b.
	events <- put(a)
	events <- store.Event{Type: store.EventSync}
	close(events)
	r.consume(events, &rev, publish)
	events = make(chan store.Event, 16)
	events <- put(b)
	// A snapshot restore: RESET in the middle of a batch, a partial
	// listing (only a), then the rest and SYNC.
	events <- store.Event{Type: store.EventReset}
	events <- put(a)
	close(events)
	r.consume(events, &rev, publish)
	events = make(chan store.Event, 16)
	events <- put(b)
	events <- store.Event{Type: store.EventSync}
	close(events)
	r.consume(events, &rev, publish)

	want := []int{1, 2}
	if len(published) != len(want) || published[0] != want[0] || published[1] != want[1] {
		t.Fatalf("published states with %v workloads, want %v (never the partial listing)", published, want)
	}
}
