package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A restarted node serves the state it had, not an empty replica.
//
// hashicorp/raft (v1.7.3) restores the latest snapshot on start and applies
// log entries only once a leader tells it they are committed; the commit
// index is not persisted (neither raft nor raft-wal v0.4.0 track it). A node
// restarted without quorum would serve its last snapshot (none below 8,192
// writes: an empty store) and revisions would go backwards. So the FSM
// records on disk the last index it applied, before readers can see it
// (raft/applied-index), and Open restores the latest snapshot itself and
// replays the local log up to that index before raft starts: every entry up
// to it is committed (it was applied), hence final and in the local log.
// Raft, which only knows its snapshot, hands those entries over again once
// a leader confirms them; the FSM skips what it already holds.

// appliedFileName is the file, in the raft directory, that holds the last
// applied index.
const appliedFileName = "applied-index"

// applied-index file: magic, index (big endian), CRC-32C of both.
const (
	appliedMagic = "WAI1"
	appliedSize  = len(appliedMagic) + 8 + 4
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// ErrNotInSync is returned by Node.ReadReady while the local replica holds
// less than this node had before it (re)started, or, for a node that never
// held any state, before it has caught up with a leader once: its reads
// would present an incomplete state as the truth.
var ErrNotInSync = errors.New("the local replica is not in sync yet")

// fileWriter is what the applied-index record needs of its file.
type fileWriter interface {
	WriteAt(b []byte, off int64) (int, error)
	Sync() error
	Close() error
}

// appliedIndex keeps the last applied index on disk. Each record is one
// 16-byte pwrite, without fsync: it survives a crash of the process (the
// page cache is the kernel's), and raft has fsynced every entry up to it
// before it was committed. After a power loss it may be older than what
// was served (docs/datastore.md).
type appliedIndex struct {
	log *slog.Logger

	mu     sync.Mutex
	f      fileWriter
	last   uint64 // highest index recorded
	failed bool   // a write failed (logged once)
}

// openAppliedIndex opens (creating it if absent) the record in dir and
// returns the index it holds: 0 when there is none or it is damaged, which
// makes the replica refuse reads until it is in sync rather than guess.
func openAppliedIndex(dir string, log *slog.Logger) (*appliedIndex, uint64, error) {
	path := dirJoin(dir, appliedFileName)
	var recorded uint64
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	default:
		if recorded, err = decodeApplied(b); err != nil {
			log.Warn("ignoring the damaged applied-index record: reads wait until this replica is in sync", "path", path, "error", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", path, err)
	}
	return &appliedIndex{log: log, f: f, last: recorded}, recorded, nil
}

func encodeApplied(index uint64) []byte {
	b := make([]byte, appliedSize)
	copy(b, appliedMagic)
	binary.BigEndian.PutUint64(b[len(appliedMagic):], index)
	binary.BigEndian.PutUint32(b[appliedSize-4:], crc32.Checksum(b[:appliedSize-4], crc32c))
	return b
}

func decodeApplied(b []byte) (uint64, error) {
	if len(b) != appliedSize || string(b[:len(appliedMagic)]) != appliedMagic {
		return 0, fmt.Errorf("not an applied-index record (%d bytes)", len(b))
	}
	if crc32.Checksum(b[:appliedSize-4], crc32c) != binary.BigEndian.Uint32(b[appliedSize-4:]) {
		return 0, errors.New("checksum mismatch")
	}
	return binary.BigEndian.Uint64(b[len(appliedMagic):]), nil
}

// record stores index if it is higher than the last one recorded. A
// failed write is logged once and otherwise ignored: the replica keeps
// working, and a restart then recovers less (and refuses reads until in
// sync if it recovers less than it served).
func (a *appliedIndex) record(index uint64) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if index <= a.last || a.f == nil {
		return
	}
	if _, err := a.f.WriteAt(encodeApplied(index), 0); err != nil {
		if !a.failed {
			a.failed = true
			a.log.Error("cannot record the applied index: a restart will recover less of this replica's state", "error", err)
		}
		return
	}
	a.last = index
}

// reset forgets the record (writes 0).
func (a *appliedIndex) reset() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.f.WriteAt(encodeApplied(0), 0); err != nil {
		return fmt.Errorf("reset the applied-index record: %w", err)
	}
	a.last = 0
	return nil
}

// close syncs the record to disk (an orderly stop) and closes the file.
func (a *appliedIndex) close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Sync()
	err = errors.Join(err, a.f.Close())
	a.f = nil
	if err != nil {
		return fmt.Errorf("applied-index record: %w", err)
	}
	return nil
}

// resume rebuilds the state this node had before it stopped, before raft
// starts: the latest snapshot, then the local log up to the recorded
// applied index. A node without raft state has nothing to resume.
func (n *Node) resume() error {
	dir := raftDir(n.cfg.DataDir)
	a, recorded, err := openAppliedIndex(dir, n.log)
	if err != nil {
		return err
	}
	if n.cfg.disk != nil {
		a.f = n.cfg.disk.wrapFile(a.f)
	}
	n.applied = a
	n.minRevision = recorded
	start := time.Now()
	snapIndex, err := n.restoreLatestSnapshot()
	if err != nil {
		return err
	}
	if last, err := n.logs.LastIndex(); err == nil && last == 0 && snapIndex == 0 && recorded > 0 {
		// No raft state: the record belongs to a history that is gone (a
		// raft directory emptied by hand). Never replay against it.
		n.log.Warn("ignoring an applied-index record left without raft state", "recorded", recorded)
		if err := a.reset(); err != nil {
			return err
		}
		recorded, n.minRevision = 0, 0
	}
	replayed, err := n.replayLog(recorded)
	if err != nil {
		return err
	}
	rev := n.fsm.Revision()
	if rev < snapIndex {
		// Raft continues after the latest snapshot: a state short of it
		// would miss entries forever.
		return fmt.Errorf("the latest raft snapshot (index %d) could not be restored and the log does not reach it (state at %d)", snapIndex, rev)
	}
	if rev == 0 && recorded == 0 {
		return nil
	}
	attrs := []any{"revision", rev, "snapshot", snapIndex, "replayed", replayed, "took", time.Since(start).Round(time.Millisecond)}
	if rev < recorded {
		n.log.Warn("could not recover everything this replica had applied: reads wait until it is in sync",
			append(attrs, "applied before", recorded)...)
		return nil
	}
	n.log.Info("recovered this replica's state from its disk", attrs...)
	return nil
}

// restoreLatestSnapshot restores the newest snapshot that can be read
// (raft is told not to: Config.NoSnapshotRestoreOnStart) and returns the
// index of the newest one, which raft takes as applied.
func (n *Node) restoreLatestSnapshot() (uint64, error) {
	list, err := n.snaps.List()
	if err != nil {
		return 0, fmt.Errorf("list raft snapshots: %w", err)
	}
	for _, meta := range list {
		_, rc, err := n.snaps.Open(meta.ID)
		if err == nil {
			err = n.fsm.Restore(rc) // closes rc
		}
		if err == nil {
			return list[0].Index, nil
		}
		n.log.Warn("cannot restore a raft snapshot; trying an older one", "snapshot", meta.ID, "error", err)
	}
	if len(list) > 0 {
		return 0, fmt.Errorf("none of the %d raft snapshots in %s can be restored", len(list), raftDir(n.cfg.DataDir))
	}
	return 0, nil
}

// replayBatch is how many entries a replay applies at a time.
const replayBatch = 256

// replayLog applies the local log entries after the restored state up to
// index upTo (committed: they were applied before) and returns how many
// entries it read. A gap or an unreadable entry ends the replay early: the
// replica then waits for the leader (ReadReady says so).
func (n *Node) replayLog(upTo uint64) (int, error) {
	from := n.fsm.Revision() + 1
	last, err := n.logs.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("raft log: %w", err)
	}
	upTo = min(upTo, last)
	if from > upTo {
		return 0, nil
	}
	first, err := n.logs.FirstIndex()
	if err != nil {
		return 0, fmt.Errorf("raft log: %w", err)
	}
	if first == 0 || first > from {
		n.log.Warn("the raft log does not reach back to the restored state; not replaying it", "state", from-1, "first log index", first)
		return 0, nil
	}
	batch := make([]*raft.Log, 0, replayBatch)
	flush := func() {
		if len(batch) > 0 {
			n.fsm.ApplyBatch(batch)
			batch = batch[:0]
		}
	}
	read := 0
	for i := from; i <= upTo && n.fsm.Err() == nil; i++ {
		l := new(raft.Log)
		if err := n.logs.GetLog(i, l); err != nil {
			n.log.Warn("cannot read a raft log entry; replay ends before it", "index", i, "error", err)
			break
		}
		read++
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration { // what raft hands to the FSM
			batch = append(batch, l)
		}
		if len(batch) == replayBatch {
			flush()
		}
	}
	flush()
	return read, nil
}

// ReadReady returns nil when reads from the local replica answer at least
// the state this node had served before it (re)started, or it has caught
// up with a leader since; otherwise an error wrapping ErrNotInSync, which
// readers should pass on instead of answering with a replica that may be
// incomplete (an empty list presented as the truth).
func (n *Node) ReadReady() error {
	if n.synced.Load() {
		return nil
	}
	rev, floor := n.fsm.Revision(), n.minRevision
	switch {
	case floor > 0 && rev >= floor:
		return nil
	case floor > 0:
		return fmt.Errorf("%w: this node restarted and has recovered its state up to revision %d of %d; it is waiting for the leader", ErrNotInSync, rev, floor)
	default:
		return fmt.Errorf("%w: this node has not caught up with the cluster's leader since it started", ErrNotInSync)
	}
}

// MinRevision is the revision this replica had applied before this start,
// as recorded on its disk (0 for a node that had none). Once ReadReady
// returns nil, Revision() is at least this: a restart never shows less than
// what was shown before it, also after kill -9.
func (n *Node) MinRevision() uint64 { return n.minRevision }

// diskFaults lets in-process tests stop a node as a crash would (nothing
// more reaches its disk, an append cut half-way): it wraps the stores raft
// writes to and the applied-index file.
type diskFaults interface {
	wrapRaft(logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) (raft.LogStore, raft.StableStore, raft.SnapshotStore)
	wrapFile(f fileWriter) fileWriter
}
