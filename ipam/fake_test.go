package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/weftnet/weft/store"
)

// fakeStore is a map-backed stand-in for the replicated store: commands
// run against a fakeTx whose writes are an overlay, committed only when
// the handler succeeds (all-or-nothing, like the FSM).
type fakeStore struct {
	kinds map[string]map[store.Key]store.Object
	reg   store.Registry
	index uint64
	now   time.Time
}

func newFake(tb testing.TB) *fakeStore {
	return newFakeWith(tb, newBlockCache())
}

// newFakeWith registers the commands with the given block cache (nil for
// none, like a replica that just started).
func newFakeWith(tb testing.TB, cache *blockCache) *fakeStore {
	tb.Helper()
	f := &fakeStore{
		kinds: map[string]map[store.Key]store.Object{},
		// Not a whole second, so that timestamps must round-trip exactly.
		now: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
	}
	register(&f.reg, slog.New(slog.DiscardHandler), cache)
	return f
}

type fakeTx struct {
	f      *fakeStore
	writes map[store.Key]*store.Object // nil value = deleted
	index  uint64
	now    time.Time
}

func (t *fakeTx) Get(k store.Key) (store.Object, bool) {
	if o, ok := t.writes[k]; ok {
		if o == nil {
			return store.Object{}, false
		}
		return *o, true
	}
	o, ok := t.f.kinds[k.Kind][k]
	return o, ok
}

func (t *fakeTx) List(kind, namespace string) []store.Object {
	var out []store.Object
	for k, o := range t.f.kinds[kind] {
		if _, over := t.writes[k]; over {
			continue
		}
		if namespace == "" || k.Namespace == namespace {
			out = append(out, o)
		}
	}
	for k, o := range t.writes {
		if o != nil && k.Kind == kind && (namespace == "" || k.Namespace == namespace) {
			out = append(out, *o)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func (t *fakeTx) Put(k store.Key, value []byte) (store.Object, error) {
	old, had := t.Get(k)
	o := store.Object{Key: k, Value: slices.Clone(value), Revision: t.index, CreateRevision: t.index, Created: t.now,
		UID: fmt.Sprintf("%d-%s", t.index, k)}
	if had {
		o.CreateRevision, o.Created, o.UID = old.CreateRevision, old.Created, old.UID
	}
	var oldp *store.Object
	if had {
		oldp = &old
	}
	for _, v := range t.f.reg.Validators[k.Kind] {
		if err := v(t, oldp, &o); err != nil {
			// As the store does: validator errors name the key.
			return store.Object{}, &store.KeyError{Key: k, Err: err}
		}
	}
	t.writes[k] = &o
	return o, nil
}

func (t *fakeTx) Delete(k store.Key) error {
	old, had := t.Get(k)
	if !had {
		return &store.KeyError{Key: k, Err: store.ErrNotFound}
	}
	for _, v := range t.f.reg.Validators[k.Kind] {
		if err := v(t, &old, nil); err != nil {
			return &store.KeyError{Key: k, Err: err}
		}
	}
	t.writes[k] = nil
	return nil
}

func (t *fakeTx) Now() time.Time { return t.now }
func (t *fakeTx) Index() uint64  { return t.index }

// apply runs fn as one atomic command.
func (f *fakeStore) apply(fn func(tx store.Tx) error) error {
	f.index++
	tx := &fakeTx{f: f, writes: map[store.Key]*store.Object{}, index: f.index, now: f.now}
	if err := fn(tx); err != nil {
		return err
	}
	for k, o := range tx.writes {
		if o == nil {
			delete(f.kinds[k.Kind], k)
			continue
		}
		if f.kinds[k.Kind] == nil {
			f.kinds[k.Kind] = map[store.Key]store.Object{}
		}
		f.kinds[k.Kind][k] = *o
	}
	return nil
}

// command runs a registered command with a JSON payload.
func (f *fakeStore) command(name string, req any) ([]byte, error) {
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	h, ok := f.reg.Commands[name]
	if !ok {
		return nil, fmt.Errorf("no command %s", name)
	}
	var out []byte
	err = f.apply(func(tx store.Tx) error {
		var err error
		out, err = h(tx, payload)
		return err
	})
	return out, err
}

// put writes one object through the validators, as a store Txn would.
func (f *fakeStore) put(k store.Key, v any) error {
	value, ok := v.([]byte)
	if !ok {
		var err error
		if value, err = json.Marshal(v); err != nil {
			return err
		}
	}
	return f.apply(func(tx store.Tx) error {
		_, err := tx.Put(k, value)
		return err
	})
}

func (f *fakeStore) del(k store.Key) error {
	return f.apply(func(tx store.Tx) error { return tx.Delete(k) })
}

// List makes the fake a Reader for Show/Check/Usage.
func (f *fakeStore) List(kind, namespace string) []store.Object {
	tx := &fakeTx{f: f, writes: map[store.Key]*store.Object{}}
	return tx.List(kind, namespace)
}

func (f *fakeStore) get(k store.Key) (store.Object, bool) {
	o, ok := f.kinds[k.Kind][k]
	return o, ok
}

func (f *fakeStore) advance(d time.Duration) { f.now = f.now.Add(d) }

// dump serialises the whole state deterministically.
func (f *fakeStore) dump() []byte {
	var keys []store.Key
	for _, m := range f.kinds {
		for k := range m {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	var b bytes.Buffer
	for _, k := range keys {
		o := f.kinds[k.Kind][k]
		fmt.Fprintf(&b, "%s rev=%d\n%s\n", k, o.Revision, o.Value)
	}
	return b.Bytes()
}

// fakeTx must satisfy store.Tx and fakeStore must satisfy Reader.
var (
	_ store.Tx = (*fakeTx)(nil)
	_ Reader   = (*fakeStore)(nil)
)

// errorIs fails unless err wraps target.
func errorIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}
