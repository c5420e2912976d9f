package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/weftnet/weft/internal/testtier"
)

// testRegistry has one command, "incr" (increments Counter/<name>, its
// payload being the name as a JSON string, and returns the new value), and
// a validator that refuses IPPool "bad".
func testRegistry() Registry {
	return Registry{
		Commands: map[string]CommandHandler{
			"incr": func(tx Tx, payload []byte) ([]byte, error) {
				var name string
				if err := json.Unmarshal(payload, &name); err != nil {
					return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
				}
				k := Key{Kind: "Counter", Name: name}
				v := 0
				if o, ok := tx.Get(k); ok {
					v, _ = strconv.Atoi(string(o.Value))
				}
				v++
				if _, err := tx.Put(k, []byte(strconv.Itoa(v))); err != nil {
					return nil, err
				}
				return []byte(strconv.Itoa(v)), nil
			},
		},
		Validators: map[string][]Validator{
			"IPPool": {func(tx Tx, old, new *Object) error {
				if new != nil && new.Name == "bad" {
					return fmt.Errorf("%w: pool name bad", ErrInvalid)
				}
				return nil
			}},
		},
	}
}

func TestThreeNodesBootstrapJoinReplicate(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	// Every node watches from the start.
	watches := map[string]<-chan Event{}
	for _, n := range c.running() {
		ch, err := n.Watch(ctxTimeout(t, time.Minute), 0, WatchFilter{Kinds: []string{"IPPool"}})
		if err != nil {
			t.Fatal(err)
		}
		if ev := <-ch; ev.Type != EventSync {
			t.Fatalf("%s: first event %+v, want SYNC of an empty listing", n.name, ev)
		}
		watches[n.name] = ch
	}
	// Writes from every node (two of them followers, forwarded).
	for i, n := range c.running() {
		mustPut(t, n, Key{Kind: "IPPool", Name: n.name}, "v")
		rev, err := n.ConsistentRevision(ctxTimeout(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		objs, listRev := n.List("IPPool", "")
		if len(objs) != i+1 || listRev < rev {
			t.Fatalf("%s: %d pools at %d after consistent read at %d", n.name, len(objs), listRev, rev)
		}
	}
	for name, ch := range watches {
		for _, want := range []string{"n1", "n2", "n3"} {
			select {
			case ev := <-ch:
				if ev.Type != EventPut || ev.Object.Name != want {
					t.Fatalf("%s: event %+v, want PUT %s", name, ev, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no event for %s", name, want)
			}
		}
	}
	c.waitConverged()
	// The replicas converged, but an entry committed just now (the
	// leader's no-op after a write) may not be applied yet: InSync is
	// false until it is.
	for _, n := range c.running() {
		waitFor(t, 5*time.Second, n.name+" in sync", func() error {
			if !n.InSync() {
				return fmt.Errorf("revision %d, commit index %d", n.Revision(), n.raft.CommitIndex())
			}
			return nil
		})
	}
}

func TestForwardedWritesKeepTheirErrors(t *testing.T) {
	c := newCluster(t, 3)
	c.registry = testRegistry()
	c.start("n1", "n2", "n3")
	f := c.followers()[0]
	ctx := ctxTimeout(t, 20*time.Second)
	k := Key{Kind: "IPPool", Name: "p"}

	r, err := f.Txn(ctx, []Op{{Type: OpCreate, Key: k, Value: []byte("1")}})
	if err != nil || len(r.Objects) != 1 || r.Objects[0].Revision != r.Revision {
		t.Fatalf("create through a follower: %+v, %v", r, err)
	}
	cases := []struct {
		name string
		ops  []Op
		want error
	}{
		{"exists", []Op{{Type: OpCreate, Key: k}}, ErrExists},
		{"conflict", []Op{{Type: OpUpdate, Key: k, Revision: r.Revision + 100}}, ErrConflict},
		{"not found", []Op{{Type: OpDelete, Key: Key{Kind: "IPPool", Name: "none"}}}, ErrNotFound},
		{"validator", []Op{{Type: OpPut, Key: Key{Kind: "IPPool", Name: "bad"}}}, ErrInvalid},
		{"reserved kind", []Op{{Type: OpPut, Key: Key{Kind: KindCluster, Name: "x"}}}, ErrNotAllowed},
		{"no ops", nil, ErrInvalid},
		{"too large", []Op{{Type: OpPut, Key: k, Value: bytes.Repeat([]byte("x"), MaxRequestSize)}}, ErrTooLarge},
	}
	for _, tc := range cases {
		_, err := f.Txn(ctx, tc.ops)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		var ke *KeyError
		if tc.want != ErrInvalid && tc.want != ErrTooLarge && tc.name != "no ops" && (!errors.As(err, &ke) || ke.Key != tc.ops[0].Key) {
			t.Errorf("%s: %v does not carry the key %v", tc.name, err, tc.ops[0].Key)
		}
	}
	if o, _ := f.Get(k); o.Revision != r.Revision {
		t.Errorf("failed writes changed %v: %+v", k, o)
	}
	for i := 1; i <= 3; i++ {
		out, err := f.Command(ctx, "incr", []byte(`"c"`))
		if err != nil || string(out) != strconv.Itoa(i) {
			t.Fatalf("incr #%d: %q, %v", i, out, err)
		}
	}
	if _, err := f.Command(ctx, "nope", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown command: %v", err)
	}
	if _, err := f.Command(ctx, "incr", bytes.Repeat([]byte("x"), MaxRequestSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("large command: %v", err)
	}
}

// TestMalformedForwardedWritesAreRefused: a member forwarding entries the
// FSM cannot use (its own bug, or a compromised member) gets them refused
// by the leader before they enter the log, and the cluster keeps working.
func TestMalformedForwardedWritesAreRefused(t *testing.T) {
	c := newCluster(t, 3)
	c.registry = testRegistry()
	c.start("n1", "n2", "n3")
	lead := c.leader()
	f := c.followers()[0]
	bad := []proposeRequest{
		{Command: commandTxn, Payload: []byte("not json")},
		{Command: commandTxn, Payload: []byte(`{"type":"put","key":{"kind":"K","name":"a"}}`)},
		{Command: commandTxn, Payload: []byte(`[]`)},
		{Command: commandTxn, Payload: []byte(`[{"type":"upsert","key":{"kind":"K","name":"a"}}]`)},
		{Command: commandTxn, Payload: []byte(`[{"type":"put","key":{"kind":"","name":"a"}}]`)},
		{Command: "incr", Payload: []byte("c")},
		{Command: "nope", Payload: []byte(`"c"`)},
		{Command: commandNoop},
	}
	good := proposeRequest{Command: commandTxn, Payload: []byte(`[{"type":"put","key":{"kind":"K","name":"ok"},"value":"eA=="}]`)}
	var resp proposeBatchResponse
	req := proposeBatchRequest{Entries: append(append([]proposeRequest(nil), bad...), good)}
	if err := f.call(ctxTimeout(t, 10*time.Second), http.MethodPost, lead.advertise, pathPropose, req, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != len(req.Entries) {
		t.Fatalf("%d results for %d entries", len(resp.Results), len(req.Entries))
	}
	for i, e := range bad {
		if r := resp.Results[i]; r.Failed == nil || !errors.Is(r.Failed.err(), ErrInvalid) || r.Revision != 0 {
			t.Errorf("%s %q: %+v, want refused as invalid before the log", e.Command, e.Payload, r)
		}
	}
	if r := resp.Results[len(bad)]; r.Failed != nil || r.Error != nil || r.Revision == 0 {
		t.Errorf("the valid entry beside them: %+v", r)
	}
	for _, n := range c.running() {
		if err := n.Err(); err != nil {
			t.Fatalf("%s stopped: %v", n.name, err)
		}
		mustPut(t, n, Key{Kind: "K", Name: "after-" + n.name}, "x")
	}
	c.waitConverged()
	if o, ok := f.Get(Key{Kind: "K", Name: "ok"}); !ok || string(o.Value) != "x" {
		t.Errorf("the valid entry: %+v %v", o, ok)
	}
	// Through the API, the same payloads are refused on the spot.
	if _, err := f.Command(ctxTimeout(t, 5*time.Second), "incr", []byte("c")); !errors.Is(err, ErrInvalid) {
		t.Errorf("a command with a payload that is not JSON: %v", err)
	}
}

func TestLeaderKilledWritesContinueAndItCatchesUp(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	old := c.leader()
	for i := 0; i < 20; i++ {
		mustPut(t, old, Key{Kind: "K", Name: fmt.Sprint(i)}, "before")
	}
	c.kill(old.name)
	lead := c.leader()
	if lead.name == old.name {
		t.Fatal("killed leader still leads")
	}
	// Writes continue from every survivor; acknowledged writes survive.
	for _, n := range c.running() {
		for i := 0; i < 10; i++ {
			mustPut(t, n, Key{Kind: "K", Name: fmt.Sprintf("%s-%d", n.name, i)}, "after")
		}
	}
	c.restart(old.name)
	c.waitConverged()
	n := c.node(old.name)
	if err := n.WaitInSync(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if objs, _ := n.List("K", ""); len(objs) != 40 {
		t.Fatalf("restarted node has %d objects, want 40", len(objs))
	}
}

func TestPartitionedFollowerServesReadsAndHeals(t *testing.T) {
	testtier.Long(t)
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	lead := c.leader()
	f := c.followers()[0]
	mustPut(t, lead, Key{Kind: "K", Name: "a"}, "1")
	c.waitConverged()
	for _, o := range c.running() {
		if o != f {
			c.faults.cut(f.name, o.name)
		}
	}
	// The minority cannot write (the outcome is never "applied").
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := f.Txn(ctx, []Op{{Type: OpPut, Key: Key{Kind: "K", Name: "minority"}, Value: []byte("x")}})
	cancel()
	if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrIndeterminate) {
		t.Fatalf("write in the minority: %v", err)
	}
	// ... nor read consistently, but it still answers local reads.
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err = f.ConsistentRevision(ctx)
	cancel()
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("consistent read in the minority: %v", err)
	}
	if o, ok := f.Get(Key{Kind: "K", Name: "a"}); !ok || string(o.Value) != "1" {
		t.Fatalf("local read in the minority: %+v %v", o, ok)
	}
	// The majority goes on.
	mustPut(t, c.leader(), Key{Kind: "K", Name: "b"}, "2")
	c.faults.heal()
	c.waitConverged()
	if _, ok := f.Get(Key{Kind: "K", Name: "minority"}); ok {
		t.Fatal("a write refused in the minority appeared after healing")
	}
	if _, ok := f.Get(Key{Kind: "K", Name: "b"}); !ok {
		t.Fatal("the healed node did not catch up")
	}
}

func TestPartitionedLeaderIsReplaced(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	old := c.leader()
	for _, o := range c.running() {
		if o != old {
			c.faults.cut(old.name, o.name)
		}
	}
	waitFor(t, 20*time.Second, "a new leader in the majority", func() error {
		for _, n := range c.running() {
			if n != old && n.raft.State().String() == "Leader" && n.established.Load() == n.raft.CurrentTerm() {
				return nil
			}
		}
		return errors.New("none yet")
	})
	waitFor(t, 20*time.Second, "the old leader to step down", func() error {
		if old.raft.State().String() == "Leader" {
			return errors.New("still leader")
		}
		return nil
	})
	var lead *Node
	for _, n := range c.running() {
		if n != old && n.raft.State().String() == "Leader" {
			lead = n
		}
	}
	mustPut(t, lead, Key{Kind: "K", Name: "majority"}, "x")
	c.faults.heal()
	c.waitConverged()
}

func TestWholeClusterRestartsFromDisk(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	for i := 0; i < 50; i++ {
		mustPut(t, c.running()[i%3], Key{Kind: "K", Name: fmt.Sprint(i)}, fmt.Sprint(i))
	}
	want, _ := dumpNode(c.leader())
	for _, n := range c.running() {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		c.kill(n.name)
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		cfg := c.config(name)
		cfg.Join = []string{"127.0.0.1:1"} // ignored once state exists
		c.open(cfg)
	}
	c.waitVoters(3, "n1", "n2", "n3")
	c.waitConverged()
	got, _ := dumpNode(c.leader())
	for k, o := range want {
		if g, ok := got[k]; !ok || g.Revision != o.Revision || string(g.Value) != string(o.Value) {
			t.Fatalf("%v lost or changed by the restart", k)
		}
	}
	mustPut(t, c.followers()[0], Key{Kind: "K", Name: "after"}, "x")
}

func TestCorruptEntryStopsTheNodes(t *testing.T) {
	testtier.Long(t)
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	lead := c.leader()
	mustPut(t, lead, Key{Kind: "K", Name: "a"}, "1")
	// An entry no binary can decode (as if the log were damaged).
	f := lead.raft.Apply([]byte{0xff, 'x'}, time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	bad := f.Index()
	select {
	case <-lead.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("the leader did not stop on a corrupt entry")
	}
	if !errors.Is(lead.Err(), ErrCorruptLog) || lead.InSync() {
		t.Errorf("leader: Err() = %v, InSync %v", lead.Err(), lead.InSync())
	}
	if _, ok := lead.Get(Key{Kind: "K", Name: "a"}); !ok {
		t.Error("local reads stopped working")
	}
	_, err := lead.Txn(ctxTimeout(t, time.Second), []Op{{Type: OpPut, Key: Key{Kind: "K", Name: "b"}}})
	if !errors.Is(err, ErrCorruptLog) {
		t.Errorf("write on the failed node: %v", err)
	}
	// The followers either stop on the same entry once they learn it is
	// committed, or never get past it: no replica ever skips it.
	failed := 0
	for _, n := range c.running() {
		select {
		case <-n.Failed():
			failed++
		case <-time.After(2 * time.Second):
		}
		if rev := n.Revision(); rev >= bad {
			t.Errorf("%s moved past the corrupt entry %d (at %d)", n.name, bad, rev)
		}
	}
	if failed < 2 {
		t.Errorf("only %d nodes stopped", failed)
	}
}

func TestCloseIsQuick(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	ch, _ := c.leader().Watch(context.Background(), 0, WatchFilter{})
	for _, n := range c.running() {
		start := time.Now()
		if err := n.Close(); err != nil {
			t.Errorf("close %s: %v", n.name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("closing %s took %v", n.name, d)
		}
		c.kill(n.name)
	}
	for range ch { // watches end with the node
	}
}

func TestMetricsAreExposed(t *testing.T) {
	c := newCluster(t, 1)
	reg := prometheus.NewRegistry()
	cfg := c.config("solo")
	cfg.Join = nil
	cfg.Metrics = reg
	n := c.open(cfg)
	mustPut(t, n, Key{Kind: "IPPool", Name: "a"}, "x")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, want := range []string{
		"weft_store_raft_state", "weft_store_raft_term", "weft_store_raft_last_index", "weft_store_raft_commit_index",
		"weft_store_raft_applied_index", "weft_store_leader_changes_total", "weft_store_fsm_apply_duration_seconds",
		"weft_store_commit_duration_seconds", "weft_store_fsm_apply_queue", "weft_store_objects",
	} {
		if !got[want] {
			t.Errorf("metric %s missing", want)
		}
	}
	// A second node on the same registry would collide; closing frees it.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	c.kill("solo")
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Errorf("%d metric families left after Close", len(mfs))
	}
}
