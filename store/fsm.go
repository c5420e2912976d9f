package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// fsmOptions configures a stateMachine.
type fsmOptions struct {
	// Registry holds the commands and validators; it must be identical on
	// every node. Names of built-in commands are refused.
	Registry Registry
	Logger   *slog.Logger
	// HistorySize is how many events the watch history keeps for resuming
	// watchers; it is also how far a watcher may fall behind before it is
	// closed. Default 10,000.
	HistorySize int
	// WatchBuffer is the capacity of each watch channel. Default 256.
	WatchBuffer int
	// ObserveApply, if set, is called with the time each entry took to apply.
	ObserveApply func(time.Duration)
	// RecordApplied, if set, is called with the index the state is about
	// to reach (the last entry of a batch, a restored snapshot's revision)
	// before readers can see it: the node keeps it on disk so that a
	// restart recovers at least what was served (resume.go).
	RecordApplied func(index uint64)
}

// stateMachine is the raft FSM: go-memdb tables of Object with revisions,
// the command registry and its validators, snapshots and the watch hub.
// It implements raft.BatchingFSM and knows nothing about the network.
//
// Concurrency: raft calls Apply/ApplyBatch/Snapshot/Restore from one
// goroutine; readers (Get, List, Watch, Backup) run concurrently on memdb's
// immutable read transactions. mu guards the swap of the database on
// restore and makes "database + revision + watch history position" one
// consistent point.
type stateMachine struct {
	log          *slog.Logger
	commands     map[string]CommandHandler
	validators   map[string][]Validator
	observeApply func(time.Duration)
	record       func(index uint64)
	watchBuffer  int

	mu     sync.RWMutex
	db     *memdb.MemDB
	rev    uint64
	revCh  chan struct{} // closed and replaced whenever rev changes
	counts map[string]int

	revision atomic.Uint64 // copy of rev for lock-free reads
	// lastChange is the index of the last entry that changed the state
	// (or the configuration): entries after it up to rev changed nothing.
	lastChange atomic.Uint64
	hub        *hub

	fatalOnce sync.Once
	fatalMu   sync.Mutex
	fatalErr  error
	fatalCh   chan struct{}
}

var _ raft.BatchingFSM = (*stateMachine)(nil)

// newFSM returns an empty state machine.
func newFSM(opts fsmOptions) (*stateMachine, error) {
	for name := range opts.Registry.Commands {
		if name == commandTxn || name == commandNoop || name == "" {
			return nil, fmt.Errorf("state: command name %q is reserved", name)
		}
		if opts.Registry.Commands[name] == nil {
			return nil, fmt.Errorf("state: command %q has a nil handler", name)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.HistorySize <= 0 {
		opts.HistorySize = 10000
	}
	if opts.WatchBuffer <= 0 {
		opts.WatchBuffer = 256
	}
	return &stateMachine{
		log:          log,
		commands:     opts.Registry.Commands,
		validators:   opts.Registry.Validators,
		observeApply: opts.ObserveApply,
		record:       opts.RecordApplied,
		watchBuffer:  opts.WatchBuffer,
		db:           newDB(),
		revCh:        make(chan struct{}),
		counts:       map[string]int{},
		hub:          newHub(opts.HistorySize),
		fatalCh:      make(chan struct{}),
	}, nil
}

// Apply applies one committed entry (raft calls ApplyBatch instead; Apply
// is kept for raft.FSM and tests).
func (f *stateMachine) Apply(l *raft.Log) any {
	f.recordApplied(l.Index)
	return f.applyLog(l)
}

// ApplyBatch applies committed entries in order. Each entry is its own
// memdb transaction, so a failing entry never affects its neighbours.
func (f *stateMachine) ApplyBatch(logs []*raft.Log) []any {
	if len(logs) > 0 {
		f.recordApplied(logs[len(logs)-1].Index)
	}
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.applyLog(l)
	}
	return out
}

// recordApplied hands index to RecordApplied unless the state is there
// already.
func (f *stateMachine) recordApplied(index uint64) {
	if f.record != nil && index > f.Revision() && f.Err() == nil {
		f.record(index)
	}
}

func (f *stateMachine) applyLog(l *raft.Log) *applyResult {
	if err := f.Err(); err != nil {
		// Stopped: never apply past an entry we could not apply.
		return &applyResult{Revision: l.Index, Err: err}
	}
	if l.Index <= f.Revision() {
		// Already in the state: the node replayed its own log up to here
		// before raft started (resume.go), or a snapshot covered it. Raft,
		// which only knows its snapshot, hands committed entries over
		// again; they are the same entries (committed entries are final).
		return &applyResult{Revision: l.Index}
	}
	if f.observeApply != nil {
		start := time.Now()
		defer func() { f.observeApply(time.Since(start)) }()
	}
	if l.Type != raft.LogCommand {
		// Configuration changes reach the FSM only to advance the revision,
		// so that the revision tracks every index a reader may wait for.
		f.commit(nil, l.Index, nil, true)
		return &applyResult{Revision: l.Index}
	}
	e, err := decodeEntry(l.Data)
	if err != nil {
		return f.stop(l.Index, err)
	}
	switch e.Command {
	case commandNoop:
		f.commit(nil, l.Index, nil, false)
		return &applyResult{Revision: l.Index}
	case commandTxn:
		var ops []Op
		if err := json.Unmarshal(e.Payload, &ops); err != nil {
			// The envelope decoded, so the log is intact: the payload is
			// what the proposer sent and the leader let through. Every
			// replica decodes the same bytes the same way, so failing the
			// entry (like any invalid op) keeps them identical, where
			// stopping would let one bad write halt the whole cluster.
			f.log.Warn("refusing a txn entry whose payload is not a list of operations", "index", l.Index, "error", err)
			f.commit(nil, l.Index, nil, false)
			return &applyResult{Revision: l.Index, Err: fmt.Errorf("%w: txn payload is not a list of operations: %v", ErrInvalid, err)}
		}
		return f.run(l.Index, e, false, func(t *tx) ([]byte, []Object, error) {
			objs, err := t.applyOps(ops)
			return nil, objs, err
		})
	}
	h, ok := f.commands[e.Command]
	if !ok {
		if e.Ignorable {
			f.log.Warn("skipping ignorable log entry with an unknown command", "index", l.Index, "command", e.Command)
			f.commit(nil, l.Index, nil, false)
			return &applyResult{Revision: l.Index, Err: fmt.Errorf("%w: unknown command %q (skipped)", ErrInvalid, e.Command)}
		}
		return f.stop(l.Index, fmt.Errorf("unknown command %q (this binary is older than the cluster's log)", e.Command))
	}
	return f.run(l.Index, e, true, func(t *tx) ([]byte, []Object, error) {
		data, err := callHandler(h, t, e.Payload)
		return data, nil, err
	})
}

func callHandler(h CommandHandler, t *tx, payload []byte) (data []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("command handler panicked: %v", r)
		}
	}()
	return h(t, payload)
}

// run executes fn in a fresh write transaction and commits it unless fn or a
// validator failed.
func (f *stateMachine) run(index uint64, e logEntry, restricted bool, fn func(*tx) ([]byte, []Object, error)) *applyResult {
	f.mu.RLock()
	db := f.db
	f.mu.RUnlock()
	txn := db.Txn(true)
	t := newTx(txn, index, time.Unix(0, e.Time).UTC(), f.validators, restricted)
	data, objs, err := fn(t)
	if err == nil {
		err = t.failed
	}
	if err != nil {
		txn.Abort()
		f.commit(nil, index, nil, false)
		return &applyResult{Revision: index, Err: err}
	}
	f.commit(txn, index, t.changes(), true)
	return &applyResult{Revision: index, Objects: objs, Data: data}
}

// commit makes a transaction (nil: none) visible at index and publishes its
// changes to watchers. changed is false for entries that changed nothing
// (no-ops, failed commands).
func (f *stateMachine) commit(txn *memdb.Txn, index uint64, changes []change, changed bool) {
	var events []Event
	for _, c := range changes {
		switch {
		case c.after != nil:
			events = append(events, Event{Type: EventPut, Revision: index, Object: *c.after})
		case c.before != nil:
			o := *c.before
			o.Revision = index
			events = append(events, Event{Type: EventDelete, Revision: index, Object: o})
		}
	}
	f.mu.Lock()
	if txn != nil {
		txn.Commit()
	}
	for _, c := range changes {
		switch {
		case c.before == nil && c.after != nil:
			f.counts[c.key.Kind]++
		case c.before != nil && c.after == nil:
			if f.counts[c.key.Kind]--; f.counts[c.key.Kind] <= 0 {
				delete(f.counts, c.key.Kind)
			}
		}
	}
	if index > f.rev {
		f.rev = index
		f.revision.Store(index)
	}
	if changed {
		f.lastChange.Store(index)
	}
	f.hub.publish(events)
	close(f.revCh)
	f.revCh = make(chan struct{})
	f.mu.Unlock()
}

// stop records a fatal error: the FSM refuses every later entry, so the
// replica never moves past a log entry it could not apply.
func (f *stateMachine) stop(index uint64, err error) *applyResult {
	err = fmt.Errorf("datastore stopped at raft index %d: %w", index, err)
	f.fatalOnce.Do(func() {
		f.fatalMu.Lock()
		f.fatalErr = err
		f.fatalMu.Unlock()
		close(f.fatalCh)
		f.log.Error("the replicated log cannot be applied; this node refuses to continue", "index", index, "error", err)
	})
	return &applyResult{Revision: index, Err: err}
}

// Err returns the fatal error that stopped the FSM, or nil.
func (f *stateMachine) Err() error {
	f.fatalMu.Lock()
	defer f.fatalMu.Unlock()
	return f.fatalErr
}

// Failed is closed when the FSM stops on a fatal error (see Err).
func (f *stateMachine) Failed() <-chan struct{} { return f.fatalCh }

// Revision is the raft index of the last applied entry.
func (f *stateMachine) Revision() uint64 { return f.revision.Load() }

// LastChange is the index of the last applied entry that changed anything;
// a replica that has applied it holds the same state as this one.
func (f *stateMachine) LastChange() uint64 { return f.lastChange.Load() }

// WaitRevision waits until the FSM has applied rev.
func (f *stateMachine) WaitRevision(ctx context.Context, rev uint64) error {
	for {
		f.mu.RLock()
		cur, ch := f.rev, f.revCh
		f.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-f.fatalCh:
			return f.Err()
		case <-ctx.Done():
			return fmt.Errorf("waiting for revision %d (at %d): %w", rev, cur, ctx.Err())
		}
	}
}

// readTxn returns a read transaction and the revision it reflects.
func (f *stateMachine) readTxn() (*memdb.Txn, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.Txn(false), f.rev
}

// Get reads one object.
func (f *stateMachine) Get(k Key) (Object, bool) {
	txn, _ := f.readTxn()
	raw, err := txn.First(tableObjects, indexID, recordID(k))
	if err != nil || raw == nil {
		return Object{}, false
	}
	return cloneObject(raw.(*record).Object), true
}

// List returns the objects of a kind (one namespace if set), sorted by
// namespace then name, and the revision the listing reflects.
func (f *stateMachine) List(kind, namespace string) ([]Object, uint64) {
	txn, rev := f.readTxn()
	return listTxn(txn, kind, namespace), rev
}

// Counts returns the number of objects per kind.
func (f *stateMachine) Counts() map[string]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]int, len(f.counts))
	for k, v := range f.counts {
		out[k] = v
	}
	return out
}

// Close ends every watch (their channels close). The FSM still serves reads.
func (f *stateMachine) Close() { f.hub.close() }

// Snapshot captures the current state for raft (cheap: an immutable memdb
// read transaction; Persist streams it).
func (f *stateMachine) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.Err(); err != nil {
		return nil, err
	}
	txn, rev := f.readTxn()
	return &fsmSnapshot{txn: txn, rev: rev}, nil
}

// Backup writes a consistent snapshot of the current state to w, in the
// format Restore reads, and returns its revision.
func (f *stateMachine) Backup(w io.Writer) (uint64, error) {
	txn, rev := f.readTxn()
	return rev, writeSnapshot(w, txn, rev)
}

// Restore replaces the whole state with a snapshot, atomically: readers see
// either the old state or the new one. Every watcher gets RESET, a listing
// and SYNC.
func (f *stateMachine) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	db := newDB()
	txn := db.Txn(true)
	counts := map[string]int{}
	rev, err := decodeSnapshot(rc, func(o Object) error {
		if err := ValidateKey(o.Key); err != nil {
			return fmt.Errorf("object %s: %w", o.Key, err)
		}
		counts[o.Kind]++
		return txn.Insert(tableObjects, &record{ID: recordID(o.Key), Object: o})
	})
	if err != nil {
		txn.Abort()
		return fmt.Errorf("restore snapshot: %w", err)
	}
	txn.Commit()
	if f.record != nil {
		f.record(rev)
	}
	f.mu.Lock()
	f.db = db
	f.rev = rev
	f.revision.Store(rev)
	f.lastChange.Store(rev)
	f.counts = counts
	f.hub.reset(rev)
	close(f.revCh)
	f.revCh = make(chan struct{})
	f.mu.Unlock()
	f.log.Info("datastore state restored from a snapshot", "revision", rev, "objects", sumCounts(counts))
	return nil
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

type fsmSnapshot struct {
	txn *memdb.Txn
	rev uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.txn, s.rev); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

func isKeyError(err error) bool {
	var ke *KeyError
	return errors.As(err, &ke)
}

// sortedKinds returns the kinds of a filter, deduplicated and sorted.
func sortedKinds(kinds []string) []string {
	out := append([]string(nil), kinds...)
	sort.Strings(out)
	j := 0
	for i, k := range out {
		if i == 0 || k != out[j-1] {
			out[j] = k
			j++
		}
	}
	return out[:j]
}
