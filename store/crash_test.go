package store

import (
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// crashDisk stops a node's disk the way kill -9 does, in process: from the
// moment it freezes, nothing more reaches the disk. Writes already done
// stay (the page cache survives a killed process), an append in progress
// keeps a prefix of its entries (the log cut mid-append), and whatever the
// node tries to write afterwards never lands: the call blocks until the
// node is cut off from the others, then is dropped. Blocking first means no
// answer promising durability leaves the node for a write that was not
// made; dropping afterwards lets raft shut down (it panics when it cannot
// persist its term).
type crashDisk struct {
	mu       sync.Mutex
	rng      *rand.Rand
	armed    bool          // the next append is cut
	frozen   chan struct{} // closed at the freeze
	released chan struct{} // closed when the node is cut off
	cutDesc  string        // what the cut kept, for the test log
}

var errCrashed = errors.New("crashed: the disk is gone")

func newCrashDisk(seed int64) *crashDisk {
	return &crashDisk{rng: rand.New(rand.NewSource(seed)), frozen: make(chan struct{}), released: make(chan struct{})}
}

func (d *crashDisk) isFrozen() bool {
	select {
	case <-d.frozen:
		return true
	default:
		return false
	}
}

// arm makes the next log append the last one, cut at a random entry.
func (d *crashDisk) arm() {
	d.mu.Lock()
	d.armed = true
	d.mu.Unlock()
}

// freeze stops the disk now (if the armed append did not).
func (d *crashDisk) freeze() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.freezeLocked()
}

func (d *crashDisk) freezeLocked() {
	if !d.isFrozen() {
		close(d.frozen)
	}
}

// release lets the calls blocked since the freeze return (dropped).
func (d *crashDisk) release() {
	d.freeze()
	close(d.released)
}

// write runs fn unless the disk is frozen; then it waits for the release
// and drops it. Writes are serialized, so the freeze falls between two.
func (d *crashDisk) write(fn func() error) error {
	d.mu.Lock()
	if !d.isFrozen() {
		defer d.mu.Unlock()
		return fn()
	}
	d.mu.Unlock()
	<-d.released
	return nil
}

func (d *crashDisk) wrapRaft(logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) (raft.LogStore, raft.StableStore, raft.SnapshotStore) {
	return &crashLog{LogStore: logs, d: d}, &crashStable{StableStore: stable, d: d}, &crashSnaps{SnapshotStore: snaps, d: d}
}

func (d *crashDisk) wrapFile(f fileWriter) fileWriter { return &crashFile{fileWriter: f, d: d} }

type crashLog struct {
	raft.LogStore
	d *crashDisk
}

// IsMonotonic passes on raft-wal's answer (raft relies on it after a
// snapshot install).
func (l *crashLog) IsMonotonic() bool {
	m, ok := l.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (l *crashLog) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

func (l *crashLog) StoreLogs(logs []*raft.Log) error {
	d := l.d
	d.mu.Lock()
	if d.armed && !d.isFrozen() && len(logs) > 0 {
		keep := 0 // a single entry: lost whole
		if len(logs) > 1 {
			keep = 1 + d.rng.Intn(len(logs)-1) // a prefix, never all
		}
		if keep > 0 {
			if err := l.LogStore.StoreLogs(logs[:keep]); err != nil {
				d.mu.Unlock()
				return err
			}
		}
		d.cutDesc = cutDescription(logs, keep)
		d.freezeLocked()
	}
	d.mu.Unlock()
	return d.write(func() error { return l.LogStore.StoreLogs(logs) })
}

func cutDescription(logs []*raft.Log, keep int) string {
	s := fmt.Sprintf("append of entries %d-%d cut", logs[0].Index, logs[len(logs)-1].Index)
	if keep == 0 {
		return s + " before the first"
	}
	return fmt.Sprintf("%s after %d", s, logs[keep-1].Index)
}

func (l *crashLog) DeleteRange(lo, hi uint64) error {
	return l.d.write(func() error { return l.LogStore.DeleteRange(lo, hi) })
}

type crashStable struct {
	raft.StableStore
	d *crashDisk
}

func (s *crashStable) Set(k, v []byte) error {
	return s.d.write(func() error { return s.StableStore.Set(k, v) })
}

func (s *crashStable) SetUint64(k []byte, v uint64) error {
	return s.d.write(func() error { return s.StableStore.SetUint64(k, v) })
}

type crashSnaps struct {
	raft.SnapshotStore
	d *crashDisk
}

func (s *crashSnaps) Create(v raft.SnapshotVersion, index, term uint64, c raft.Configuration, ci uint64, t raft.Transport) (raft.SnapshotSink, error) {
	var sink raft.SnapshotSink
	err := s.d.write(func() (err error) {
		sink, err = s.SnapshotStore.Create(v, index, term, c, ci, t)
		return err
	})
	if err != nil {
		return nil, err
	}
	if sink == nil {
		return nil, errCrashed
	}
	return &crashSink{SnapshotSink: sink, d: s.d}, nil
}

// crashSink leaves a snapshot cut off by the crash as kill -9 does: a
// temporary directory that the next start ignores.
type crashSink struct {
	raft.SnapshotSink
	d *crashDisk
}

func (s *crashSink) Write(p []byte) (int, error) {
	n := len(p)
	err := s.d.write(func() (err error) { n, err = s.SnapshotSink.Write(p); return err })
	return n, err
}

func (s *crashSink) Close() error {
	done := false
	err := s.d.write(func() error { done = true; return s.SnapshotSink.Close() })
	if !done {
		return errCrashed
	}
	return err
}

func (s *crashSink) Cancel() error {
	return s.d.write(func() error { return s.SnapshotSink.Cancel() })
}

type crashFile struct {
	fileWriter
	d *crashDisk
}

func (f *crashFile) WriteAt(b []byte, off int64) (int, error) {
	n := len(b)
	err := f.d.write(func() (err error) { n, err = f.fileWriter.WriteAt(b, off); return err })
	return n, err
}

func (f *crashFile) Sync() error { return f.d.write(f.fileWriter.Sync) }

// crash stops a node as kill -9 would (see crashDisk): the next log append
// (within 100 ms) is cut at a random entry, nothing more reaches the disk,
// the node is cut off from the others and shut down without any of the
// orderly steps. It returns the node's revision at the freeze: the highest
// any reader could have seen.
func (c *cluster) crash(name string) (rev uint64, what string) {
	c.t.Helper()
	return c.crashWith(name, nil)
}

// crashWith is crash, calling frozen (if set) with the node right after
// the freeze.
func (c *cluster) crashWith(name string, frozen func(*Node)) (rev uint64, what string) {
	c.t.Helper()
	c.mu.Lock()
	n, d := c.nodes[name], c.disks[name]
	delete(c.nodes, name)
	c.mu.Unlock()
	if n == nil {
		return 0, "not running"
	}
	d.arm()
	select {
	case <-d.frozen:
	case <-time.After(100 * time.Millisecond):
		d.freeze()
	}
	// The FSM makes nothing visible before recording it, and the record
	// is frozen too: this is the most any reader saw.
	rev = n.Revision()
	if frozen != nil {
		frozen(n)
	}
	for _, o := range c.names() {
		if o != name {
			c.faults.cut(name, o)
		}
	}
	d.release()
	n.shutdown(false)
	c.faults.healNode(name)
	d.mu.Lock()
	what = d.cutDesc
	d.mu.Unlock()
	if what == "" {
		what = "no append in progress"
	}
	return rev, what
}

// names lists every node the cluster has started, running or not.
func (c *cluster) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.addrs {
		out = append(out, n)
	}
	return out
}

// healNode lifts the cuts between name and every other node.
func (p *partitions) healNode(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.blocked {
		if k[0] == name || k[1] == name {
			delete(p.blocked, k)
		}
	}
}
