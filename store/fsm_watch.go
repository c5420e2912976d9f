package store

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// hub keeps the recent history of events in a ring and wakes watchers when
// it grows. Publishing never blocks: each watcher pulls from the ring at its
// own pace, and a watcher that falls more than the ring's size behind is
// closed (the consumer resumes from the last revision it saw).
//
// Events get consecutive sequence numbers; the ring holds [head, tail).
type hub struct {
	mu    sync.Mutex
	ring  []Event
	head  uint64
	tail  uint64
	floor uint64 // every event with Revision > floor is in the ring
	epoch uint64 // bumped when the state is replaced by a snapshot
	wake  chan struct{}
	done  bool
}

func newHub(size int) *hub {
	return &hub{ring: make([]Event, size), wake: make(chan struct{})}
}

// publish appends events (all of one entry). Callers hold FSM.mu.
func (h *hub) publish(events []Event) {
	if len(events) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	size := uint64(len(h.ring))
	for _, ev := range events {
		if h.tail-h.head == size {
			if old := h.ring[h.head%size]; old.Revision > h.floor {
				h.floor = old.Revision
			}
			h.ring[h.head%size] = Event{}
			h.head++
		}
		h.ring[h.tail%size] = ev
		h.tail++
	}
	close(h.wake)
	h.wake = make(chan struct{})
}

// reset forgets the history: the state was replaced at revision rev.
func (h *hub) reset(rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.ring)
	h.head = h.tail
	h.floor = rev
	h.epoch++
	close(h.wake)
	h.wake = make(chan struct{})
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		h.done = true
		close(h.wake)
	}
}

// position is a point in the history. Callers hold FSM.mu (read) so that it
// matches the database revision they read with it.
type position struct {
	seq   uint64
	epoch uint64
}

// start returns where a watcher resuming after revision from begins, or
// ok=false when the history no longer reaches back to from.
func (h *hub) start(from uint64) (position, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if from < h.floor {
		return position{}, false
	}
	size := uint64(len(h.ring))
	n := int(h.tail - h.head)
	i := sort.Search(n, func(i int) bool { return h.ring[(h.head+uint64(i))%size].Revision > from })
	return position{seq: h.head + uint64(i), epoch: h.epoch}, true
}

func (h *hub) end() position {
	h.mu.Lock()
	defer h.mu.Unlock()
	return position{seq: h.tail, epoch: h.epoch}
}

// pullResult is what a watcher finds in the ring.
type pullResult int

const (
	pulled    pullResult = iota // events (maybe none: then wait on the channel)
	behind                      // the ring dropped events the watcher has not seen
	restored                    // the state was replaced: RESET needed
	hubClosed                   // the FSM is closing
)

// pull copies events from pos on, appending them to buf: about max, but
// always whole entries (it stops at max only between two revisions). A
// watcher then only ever stops, or is closed for falling behind, at an
// entry boundary, so the revision of the last event its consumer got is
// one it got every event of, and resuming from it loses nothing.
// publish adds an entry's events at once, so the ring always ends on a
// boundary.
func (h *hub) pull(pos *position, buf []Event, max int) ([]Event, <-chan struct{}, pullResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.done:
		return buf, nil, hubClosed
	case pos.epoch != h.epoch:
		return buf, nil, restored
	case pos.seq < h.head:
		return buf, nil, behind
	}
	size := uint64(len(h.ring))
	start := len(buf)
	for ; pos.seq < h.tail; pos.seq++ {
		ev := h.ring[pos.seq%size]
		if n := len(buf) - start; n > 0 && n >= max && ev.Revision != buf[len(buf)-1].Revision {
			break
		}
		buf = append(buf, ev)
	}
	return buf, h.wake, pulled
}

// filter selects the events a watcher wants.
type filter struct {
	kinds     map[string]bool
	namespace string
	name      string
}

func newFilter(f WatchFilter) filter {
	out := filter{namespace: f.Namespace, name: f.Name}
	if len(f.Kinds) > 0 {
		out.kinds = map[string]bool{}
		for _, k := range f.Kinds {
			out.kinds[k] = true
		}
	}
	return out
}

func (f filter) match(k Key) bool {
	if f.kinds == nil {
		if IsReservedKind(k.Kind) {
			return false
		}
	} else if !f.kinds[k.Kind] {
		return false
	}
	return (f.namespace == "" || k.Namespace == f.namespace) && (f.name == "" || k.Name == f.name)
}

// Watch streams events after fromRevision (0: a listing of the current
// state first, then SYNC). A fromRevision older than the kept history gets
// RESET, a listing and SYNC; so does every watcher when the state is
// replaced by a snapshot. A clean resume (fromRevision still in the
// history) gets the missed events, then live ones, without SYNC.
//
// Listing events carry the listing's revision in Event.Revision (the
// object's own revision is in Object.Revision). Consumers resume from the
// revision of the last SYNC or change they processed; a watch closed before
// its SYNC must start again from 0.
//
// The channel closes when ctx ends, when the consumer falls more than the
// history size behind, or when the FSM closes.
func (f *stateMachine) Watch(ctx context.Context, fromRevision uint64, wf WatchFilter) (<-chan Event, error) {
	for _, k := range wf.Kinds {
		if k == "" {
			return nil, fmt.Errorf("watch: %w: empty kind in filter", ErrInvalid)
		}
	}
	w := &watcher{fsm: f, filter: newFilter(wf), kinds: sortedKinds(wf.Kinds), out: make(chan Event, f.watchBuffer)}
	var snap *listing
	f.mu.RLock()
	if fromRevision == 0 {
		snap = f.listingLocked()
	} else if pos, ok := f.hub.start(fromRevision); ok {
		w.pos, w.last = pos, fromRevision
	} else {
		snap = f.listingLocked()
		snap.reset = true
	}
	f.mu.RUnlock()
	go w.run(ctx, snap)
	return w.out, nil
}

// listing is a consistent point to list from: the database at rev and the
// history position right after it.
type listing struct {
	txn   *memdb.Txn
	rev   uint64
	pos   position
	reset bool
}

func (f *stateMachine) listingLocked() *listing {
	return &listing{txn: f.db.Txn(false), rev: f.rev, pos: f.hub.end()}
}

func (f *stateMachine) newListing() *listing {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.listingLocked()
}

// watchBatch is about how many events a watcher takes from the ring at a
// time (more when an entry has more).
const watchBatch = 256

type watcher struct {
	fsm    *stateMachine
	filter filter
	kinds  []string
	out    chan Event
	pos    position
	last   uint64 // events at or below this revision were delivered (or listed)
}

func (w *watcher) run(ctx context.Context, snap *listing) {
	defer close(w.out)
	if snap != nil && !w.list(ctx, snap) {
		return
	}
	buf := make([]Event, 0, watchBatch)
	for {
		var (
			wake <-chan struct{}
			res  pullResult
		)
		buf, wake, res = w.fsm.hub.pull(&w.pos, buf[:0], watchBatch)
		switch res {
		case hubClosed:
			return
		case behind:
			w.fsm.log.Warn("closing a watch that fell too far behind", "revision", w.last)
			return
		case restored:
			l := w.fsm.newListing()
			l.reset = true
			if !w.list(ctx, l) {
				return
			}
			continue
		}
		for _, ev := range buf {
			if ev.Revision <= w.last || !w.filter.match(ev.Object.Key) {
				continue
			}
			ev.Object = cloneObject(ev.Object)
			if !w.send(ctx, ev) {
				return
			}
		}
		if len(buf) > 0 {
			w.last = max(w.last, buf[len(buf)-1].Revision)
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

func (w *watcher) send(ctx context.Context, ev Event) bool {
	select {
	case w.out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// list sends (RESET,) the matching objects of the listing, then SYNC.
func (w *watcher) list(ctx context.Context, l *listing) bool {
	if l.reset && !w.send(ctx, Event{Type: EventReset, Revision: l.rev}) {
		return false
	}
	emit := func(o Object) bool {
		if !w.filter.match(o.Key) {
			return true
		}
		return w.send(ctx, Event{Type: EventPut, Revision: l.rev, Object: cloneObject(o)})
	}
	if w.kinds != nil {
		for _, kind := range w.kinds {
			if !iterate(l.txn, listPrefix(kind, w.filter.namespace), emit) {
				return false
			}
		}
	} else if !iterate(l.txn, "", emit) {
		return false
	}
	if !w.send(ctx, Event{Type: EventSync, Revision: l.rev}) {
		return false
	}
	w.pos, w.last = l.pos, l.rev
	return true
}

func iterate(txn *memdb.Txn, prefix string, fn func(Object) bool) bool {
	it, err := txn.Get(tableObjects, indexID+"_prefix", prefix)
	if err != nil {
		return true
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if !fn(raw.(*record).Object) {
			return false
		}
	}
	return true
}
