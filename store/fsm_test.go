package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// harness drives an FSM with raft log entries, like raft would.
type harness struct {
	t     *testing.T
	fsm   *stateMachine
	index uint64
	now   time.Time
}

func newHarness(t *testing.T, opts fsmOptions) *harness {
	t.Helper()
	f, err := newFSM(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return &harness{t: t, fsm: f, now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (h *harness) applyEntry(e logEntry) *applyResult {
	h.t.Helper()
	data, err := encodeEntry(e)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.applyRaw(data)
}

func (h *harness) applyRaw(data []byte) *applyResult {
	h.index++
	h.now = h.now.Add(time.Second)
	res := h.fsm.ApplyBatch([]*raft.Log{{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data}})
	return res[0].(*applyResult)
}

func (h *harness) txn(ops ...Op) *applyResult {
	h.t.Helper()
	payload, err := json.Marshal(ops)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.applyEntry(logEntry{Command: commandTxn, Time: h.now.Add(time.Second).UnixNano(), Payload: payload})
}

func (h *harness) mustTxn(ops ...Op) *applyResult {
	h.t.Helper()
	r := h.txn(ops...)
	if r.Err != nil {
		h.t.Fatalf("txn %v: %v", ops, r.Err)
	}
	return r
}

func key(kind, ns, name string) Key { return Key{Kind: kind, Namespace: ns, Name: name} }

func put(k Key, v string) Op {
	return Op{Type: OpPut, Key: k, Value: []byte(v)}
}

func TestTxnOps(t *testing.T) {
	a := key("IPPool", "", "a")
	tests := []struct {
		name    string
		setup   []Op // applied first, must succeed (rev of a = 1 if created)
		op      Op
		wantErr error
	}{
		{"create new", nil, Op{Type: OpCreate, Key: a, Value: []byte("1")}, nil},
		{"create existing", []Op{put(a, "0")}, Op{Type: OpCreate, Key: a}, ErrExists},
		{"update missing", nil, Op{Type: OpUpdate, Key: a}, ErrNotFound},
		{"update any revision", []Op{put(a, "0")}, Op{Type: OpUpdate, Key: a, Value: []byte("1")}, nil},
		{"update matching revision", []Op{put(a, "0")}, Op{Type: OpUpdate, Key: a, Revision: 1}, nil},
		{"update stale revision", []Op{put(a, "0")}, Op{Type: OpUpdate, Key: a, Revision: 7}, ErrConflict},
		{"put new", nil, put(a, "1"), nil},
		{"put over existing", []Op{put(a, "0")}, put(a, "1"), nil},
		{"put with revision on missing", nil, Op{Type: OpPut, Key: a, Revision: 3}, ErrConflict},
		{"put with stale revision", []Op{put(a, "0")}, Op{Type: OpPut, Key: a, Revision: 2}, ErrConflict},
		{"put with matching revision", []Op{put(a, "0")}, Op{Type: OpPut, Key: a, Revision: 1}, nil},
		{"delete missing", nil, Op{Type: OpDelete, Key: a}, ErrNotFound},
		{"delete existing", []Op{put(a, "0")}, Op{Type: OpDelete, Key: a}, nil},
		{"delete stale revision", []Op{put(a, "0")}, Op{Type: OpDelete, Key: a, Revision: 5}, ErrConflict},
		{"empty name", nil, Op{Type: OpPut, Key: key("IPPool", "", "")}, ErrInvalid},
		{"empty kind", nil, Op{Type: OpPut, Key: key("", "", "x")}, ErrInvalid},
		{"NUL in name", nil, Op{Type: OpPut, Key: key("IPPool", "", "a\x00b")}, ErrInvalid},
		{"unknown op", nil, Op{Type: "frobnicate", Key: a}, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fsmOptions{})
			if len(tc.setup) > 0 {
				h.mustTxn(tc.setup...)
			}
			before, _ := h.fsm.Get(a)
			r := h.txn(tc.op)
			if !errors.Is(r.Err, tc.wantErr) || (tc.wantErr == nil) != (r.Err == nil) {
				t.Fatalf("err = %v, want %v", r.Err, tc.wantErr)
			}
			if h.fsm.Revision() != h.index {
				t.Errorf("revision = %d, want %d (every entry advances it)", h.fsm.Revision(), h.index)
			}
			if r.Err != nil {
				var ke *KeyError
				if !errors.As(r.Err, &ke) || ke.Key != tc.op.Key {
					t.Errorf("error %v does not name key %v", r.Err, tc.op.Key)
				}
				after, _ := h.fsm.Get(a)
				if !reflect.DeepEqual(before, after) {
					t.Errorf("failed op changed %v: %+v -> %+v", a, before, after)
				}
				return
			}
			got, ok := h.fsm.Get(a)
			if tc.op.Type == OpDelete {
				if ok {
					t.Fatalf("deleted object still present: %+v", got)
				}
				if r.Objects[0].Revision != 1 {
					t.Errorf("delete result = %+v, want the object as it was", r.Objects[0])
				}
				return
			}
			if !ok || got.Revision != h.index || string(got.Value) != string(tc.op.Value) {
				t.Fatalf("stored %+v ok=%v, want value %q at revision %d", got, ok, tc.op.Value, h.index)
			}
			if !reflect.DeepEqual(r.Objects, []Object{got}) {
				t.Errorf("result objects = %+v, want %+v", r.Objects, got)
			}
		})
	}
}

func TestObjectMetadata(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	k := key("NetworkPolicy", "prod", "allow")
	h.mustTxn(put(k, "v1"))
	first, _ := h.fsm.Get(k)
	if first.CreateRevision != 1 || first.Revision != 1 || first.UID == "" || !first.Created.Equal(h.now) {
		t.Fatalf("created object = %+v (now %v)", first, h.now)
	}
	h.mustTxn(put(key("Other", "", "x"), "x"))
	h.mustTxn(put(k, "v2"))
	second, _ := h.fsm.Get(k)
	if second.UID != first.UID || second.CreateRevision != 1 || !second.Created.Equal(first.Created) || second.Revision != 3 {
		t.Fatalf("updated object = %+v, first %+v", second, first)
	}
	if newUID(1, k) != first.UID || newUID(2, k) == first.UID {
		t.Errorf("UID is not a deterministic function of index and key")
	}
	if len(first.UID) != 36 || first.UID[14] != '8' {
		t.Errorf("UID %q is not a version 8 UUID", first.UID)
	}
}

func TestTxnIsAtomic(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	a, b := key("K", "", "a"), key("K", "", "b")
	h.mustTxn(put(a, "a0"))
	ch, err := h.fsm.Watch(context.Background(), h.fsm.Revision(), WatchFilter{})
	if err != nil {
		t.Fatal(err)
	}
	r := h.txn(put(b, "b1"), put(a, "a1"), Op{Type: OpCreate, Key: a})
	if !errors.Is(r.Err, ErrExists) {
		t.Fatalf("err = %v, want ErrExists", r.Err)
	}
	if _, ok := h.fsm.Get(b); ok {
		t.Error("first op of a failed txn was kept")
	}
	if o, _ := h.fsm.Get(a); string(o.Value) != "a0" {
		t.Errorf("a = %q, want a0", o.Value)
	}
	// The failed txn published nothing: the next event is the next success.
	h.mustTxn(put(b, "b2"))
	ev := <-ch
	if ev.Object.Key != b || string(ev.Object.Value) != "b2" {
		t.Errorf("next event = %+v, want PUT b2", ev)
	}
}

func TestSameKeyTwiceInOneTxn(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	a, b := key("K", "", "a"), key("K", "", "b")
	ch, _ := h.fsm.Watch(context.Background(), 0, WatchFilter{})
	if ev := <-ch; ev.Type != EventSync {
		t.Fatalf("first event %+v, want SYNC", ev)
	}
	r := h.mustTxn(
		Op{Type: OpCreate, Key: a, Value: []byte("1")},
		Op{Type: OpUpdate, Key: a, Value: []byte("2"), Revision: 1},
		Op{Type: OpCreate, Key: b},
		Op{Type: OpDelete, Key: b},
	)
	if len(r.Objects) != 4 {
		t.Fatalf("results = %+v", r.Objects)
	}
	h.mustTxn(put(key("K", "", "c"), "c"))
	// a appears once with its final value; b (created and deleted) not at all.
	got := []Event{<-ch, <-ch}
	if got[0].Object.Key != a || string(got[0].Object.Value) != "2" || got[1].Object.Name != "c" {
		t.Fatalf("events = %+v", got)
	}
	if c := h.fsm.Counts(); c["K"] != 2 {
		t.Errorf("counts = %v, want K:2", c)
	}
}

func TestRegisteredCommands(t *testing.T) {
	pool := func(name string) Key { return key("IPPool", "", name) }
	reg := Registry{
		Commands: map[string]CommandHandler{
			// "add" puts every name of its payload (JSON list) and returns the count.
			"add": func(tx Tx, payload []byte) ([]byte, error) {
				var names []string
				if err := json.Unmarshal(payload, &names); err != nil {
					return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
				}
				for _, n := range names {
					if _, err := tx.Put(pool(n), []byte(tx.Now().Format(time.RFC3339))); err != nil {
						return nil, err
					}
				}
				return []byte(fmt.Sprint(len(tx.List("IPPool", "")))), nil
			},
			// "sloppy" ignores the error of its Put: the validator still aborts it.
			"sloppy": func(tx Tx, payload []byte) ([]byte, error) {
				_, _ = tx.Put(pool("first"), nil)
				_, _ = tx.Put(pool("bad"), nil)
				return nil, nil
			},
			"secret": func(tx Tx, payload []byte) ([]byte, error) {
				_, err := tx.Put(key("_Cluster", "", "x"), nil)
				return nil, err
			},
			"panics": func(tx Tx, payload []byte) ([]byte, error) {
				_, _ = tx.Put(pool("p"), nil)
				panic("boom")
			},
			"delete": func(tx Tx, payload []byte) ([]byte, error) {
				return nil, tx.Delete(pool(string(payload)))
			},
		},
		Validators: map[string][]Validator{
			"IPPool": {func(tx Tx, old, new *Object) error {
				if new != nil && new.Name == "bad" {
					return fmt.Errorf("%w: pool named bad", ErrInvalid)
				}
				if new == nil && old.Name == "keep" {
					return fmt.Errorf("%w: pool keep cannot be deleted", ErrNotAllowed)
				}
				return nil
			}},
		},
	}
	h := newHarness(t, fsmOptions{Registry: reg})
	cmd := func(name, payload string) *applyResult {
		return h.applyEntry(logEntry{Command: name, Time: h.now.Add(time.Second).UnixNano(), Payload: []byte(payload)})
	}

	r := cmd("add", `["a","b"]`)
	if r.Err != nil || string(r.Data) != "2" {
		t.Fatalf("add: %+v", r)
	}
	if o, _ := h.fsm.Get(pool("a")); string(o.Value) != h.now.Format(time.RFC3339) {
		t.Errorf("Tx.Now() = %q, want the entry's time %v", o.Value, h.now)
	}

	for _, tc := range []struct {
		cmd, payload string
		want         error
	}{
		{"add", `["c","bad","d"]`, ErrInvalid},
		{"add", `not json`, ErrInvalid},
		{"sloppy", ``, ErrInvalid},
		{"secret", ``, ErrNotAllowed},
		{"panics", ``, nil},
	} {
		before := h.fsm.Counts()
		r := cmd(tc.cmd, tc.payload)
		if r.Err == nil || (tc.want != nil && !errors.Is(r.Err, tc.want)) {
			t.Errorf("%s %s: err = %v, want %v", tc.cmd, tc.payload, r.Err, tc.want)
		}
		if after := h.fsm.Counts(); !reflect.DeepEqual(before, after) {
			t.Errorf("%s %s changed state: %v -> %v", tc.cmd, tc.payload, before, after)
		}
	}

	// Validators run for plain txns as well, and for deletes.
	if r := h.txn(put(pool("bad"), "")); !errors.Is(r.Err, ErrInvalid) {
		t.Errorf("txn put bad: %v", r.Err)
	}
	cmd("add", `["keep"]`)
	if r := cmd("delete", "keep"); !errors.Is(r.Err, ErrNotAllowed) {
		t.Errorf("delete keep: %v", r.Err)
	}
	if r := cmd("delete", "nope"); !errors.Is(r.Err, ErrNotFound) {
		t.Errorf("delete nope: %v", r.Err)
	}
	if r := cmd("delete", "a"); r.Err != nil {
		t.Errorf("delete a: %v", r.Err)
	}
	objs, rev := h.fsm.List("IPPool", "")
	var names []string
	for _, o := range objs {
		names = append(names, o.Name)
	}
	if !reflect.DeepEqual(names, []string{"b", "keep"}) || rev != h.index {
		t.Errorf("pools = %v at %d, want [b keep] at %d", names, rev, h.index)
	}
}

func TestReservedCommandNames(t *testing.T) {
	for _, name := range []string{commandTxn, commandNoop, ""} {
		_, err := newFSM(fsmOptions{Registry: Registry{Commands: map[string]CommandHandler{
			name: func(Tx, []byte) ([]byte, error) { return nil, nil },
		}}})
		if err == nil {
			t.Errorf("command name %q accepted", name)
		}
	}
}

func TestCorruptEntriesStopTheFSM(t *testing.T) {
	good, _ := encodeEntry(logEntry{Command: commandNoop})
	tests := map[string][]byte{
		"empty":           {},
		"unknown version": append([]byte{9}, good[1:]...),
		"bad json":        append([]byte{entryVersion}, []byte("{not json")...),
		"no command":      append([]byte{entryVersion}, []byte(`{"t":1}`)...),
		"unknown command": mustEncode(t, logEntry{Command: "fromTheFuture"}),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, fsmOptions{})
			h.mustTxn(put(key("K", "", "a"), "a"))
			r := h.applyRaw(data)
			if r.Err == nil || h.fsm.Err() == nil {
				t.Fatalf("corrupt entry applied: %+v", r)
			}
			select {
			case <-h.fsm.Failed():
			default:
				t.Fatal("Failed() not closed")
			}
			// Nothing after the bad entry applies, and no snapshot claims it.
			r = h.txn(put(key("K", "", "b"), "b"))
			if r.Err == nil {
				t.Fatal("entry after a corrupt one applied")
			}
			if _, ok := h.fsm.Get(key("K", "", "b")); ok || h.fsm.Revision() != 1 {
				t.Fatalf("state moved past the corrupt entry (revision %d)", h.fsm.Revision())
			}
			if _, err := h.fsm.Snapshot(); err == nil {
				t.Error("snapshot of a stopped FSM")
			}
			if err := h.fsm.WaitRevision(context.Background(), 10); err == nil {
				t.Error("WaitRevision on a stopped FSM returned nil")
			}
		})
	}
}

// TestMalformedTxnPayloadFailsOnlyItsEntry: an entry whose envelope
// decodes but whose txn payload does not is what its proposer sent, not a
// damaged log: every replica fails that entry alike and goes on.
func TestMalformedTxnPayloadFailsOnlyItsEntry(t *testing.T) {
	for name, payload := range map[string]string{
		"not json":      "[{",
		"not a list":    `{"type":"put"}`,
		"bad value":     `[{"type":"put","key":{"kind":"K","name":"x"},"value":"!!"}]`,
		"wrong op type": `[{"type":"upsert","key":{"kind":"K","name":"x"}}]`,
		"invalid key":   `[{"type":"put","key":{"kind":"","name":"x"}}]`,
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, fsmOptions{})
			h.mustTxn(put(key("K", "", "a"), "a"))
			r := h.applyRaw(mustEncode(t, logEntry{Command: commandTxn, Payload: []byte(payload)}))
			if !errors.Is(r.Err, ErrInvalid) || h.fsm.Err() != nil {
				t.Fatalf("result %+v, fatal %v", r, h.fsm.Err())
			}
			if h.fsm.Revision() != 2 || h.fsm.LastChange() != 1 {
				t.Errorf("revision %d, last change %d: want 2 and 1", h.fsm.Revision(), h.fsm.LastChange())
			}
			h.mustTxn(put(key("K", "", "b"), "b"))
			if objs, _ := h.fsm.List("K", ""); len(objs) != 2 {
				t.Errorf("%d objects, want a and b", len(objs))
			}
		})
	}
}

func mustEncode(t *testing.T, e logEntry) []byte {
	t.Helper()
	b, err := encodeEntry(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIgnorableUnknownCommandIsSkipped(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	r := h.applyEntry(logEntry{Command: "fromTheFuture", Ignorable: true})
	if !errors.Is(r.Err, ErrInvalid) || h.fsm.Err() != nil {
		t.Fatalf("result %+v, fatal %v", r, h.fsm.Err())
	}
	h.mustTxn(put(key("K", "", "a"), "a"))
	if h.fsm.Revision() != 2 {
		t.Errorf("revision = %d", h.fsm.Revision())
	}
}

func TestConfigurationEntriesAdvanceRevision(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	res := h.fsm.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogConfiguration},
		{Index: 2, Type: raft.LogCommand, Data: mustEncode(t, logEntry{Command: commandNoop})},
	})
	if len(res) != 2 || h.fsm.Revision() != 2 {
		t.Fatalf("revision %d after %d results", h.fsm.Revision(), len(res))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.fsm.WaitRevision(ctx, 2); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.fsm.WaitRevision(ctx, 3) }()
	h.index = 2
	h.mustTxn(put(key("K", "", "a"), "a"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func snapshotBytes(t *testing.T, f *stateMachine) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v (closed %v)", err, sink.closed)
	}
	return sink.Bytes()
}

// dump is the whole visible state of an FSM.
func dump(f *stateMachine) (map[Key]Object, uint64) {
	txn, rev := f.readTxn()
	out := map[Key]Object{}
	iterate(txn, "", func(o Object) bool { out[o.Key] = o; return true })
	return out, rev
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	for i := 0; i < 300; i++ {
		ns := fmt.Sprintf("ns%d", i%3)
		h.mustTxn(put(key("WorkloadEndpoint", ns, fmt.Sprintf("w%03d", i)), fmt.Sprintf(`{"i":%d}`, i)))
	}
	h.mustTxn(put(key("_Cluster", "", "ca"), "secret"), put(key("IPPool", "", "p"), "\x00\xffbinary"))
	h.mustTxn(Op{Type: OpDelete, Key: key("WorkloadEndpoint", "ns0", "w000")})
	data := snapshotBytes(t, h.fsm)

	g := newHarness(t, fsmOptions{})
	g.mustTxn(put(key("Stale", "", "x"), "gone after restore"))
	if err := g.fsm.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	want, wantRev := dump(h.fsm)
	got, gotRev := dump(g.fsm)
	if !reflect.DeepEqual(want, got) || wantRev != gotRev || g.fsm.Revision() != wantRev {
		t.Fatalf("restored state differs: %d objects at %d, want %d at %d", len(got), gotRev, len(want), wantRev)
	}
	if !reflect.DeepEqual(h.fsm.Counts(), g.fsm.Counts()) {
		t.Errorf("counts %v, want %v", g.fsm.Counts(), h.fsm.Counts())
	}
	// Backup writes the same format.
	var buf bytes.Buffer
	rev, err := h.fsm.Backup(&buf)
	if err != nil || rev != wantRev || !bytes.Equal(buf.Bytes(), data) {
		t.Errorf("backup differs from the raft snapshot (rev %d, err %v)", rev, err)
	}
	// The restored FSM keeps applying.
	g.index = gotRev
	g.mustTxn(put(key("IPPool", "", "q"), "q"))
	if g.fsm.Revision() != gotRev+1 {
		t.Errorf("revision after restore+apply = %d", g.fsm.Revision())
	}
}

func TestDamagedSnapshotsAreRefused(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	for i := 0; i < 10; i++ {
		h.mustTxn(put(key("K", "", fmt.Sprint(i)), "value"))
	}
	data := snapshotBytes(t, h.fsm)
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0x20
	cases := map[string][]byte{
		"empty":     nil,
		"not ours":  []byte("SQLite format 3\x00"),
		"truncated": data[:len(data)-40],
		"no sum":    data[:len(data)-32],
		"flipped":   flipped,
		"trailing":  append(append([]byte(nil), data...), 'x'),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			g := newHarness(t, fsmOptions{})
			g.mustTxn(put(key("Keep", "", "me"), "v"))
			err := g.fsm.Restore(io.NopCloser(bytes.NewReader(b)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("err = %v, want ErrBadSnapshot", err)
			}
			if _, ok := g.fsm.Get(key("Keep", "", "me")); !ok || g.fsm.Revision() != 1 {
				t.Error("a refused snapshot changed the state")
			}
		})
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := logEntry{Command: "ipam.assign", Time: 12345, Ignorable: true, Payload: []byte{0, 1, 2, 255}}
	got, err := decodeEntry(mustEncode(t, e))
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := encodeEntry(logEntry{}); err == nil {
		t.Error("entry without command encoded")
	}
}

func TestLastChangeSkipsEntriesThatChangeNothing(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	h.mustTxn(put(key("K", "", "a"), "1"))            // 1: change
	h.applyEntry(logEntry{Command: commandNoop})      // 2: no-op
	h.txn(Op{Type: OpCreate, Key: key("K", "", "a")}) // 3: fails
	if got := h.fsm.LastChange(); got != 1 || h.fsm.Revision() != 3 {
		t.Fatalf("last change %d at revision %d, want 1 at 3", got, h.fsm.Revision())
	}
	h.fsm.ApplyBatch([]*raft.Log{{Index: 4, Type: raft.LogConfiguration}})
	if got := h.fsm.LastChange(); got != 4 {
		t.Fatalf("last change %d after a configuration entry, want 4", got)
	}
}
