package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/weftnet/weft/store/transport"
)

func dirJoin(dir, name string) string { return filepath.Join(dir, name) }

// openWAL opens the raft log and stable store: hashicorp/raft-wal, an
// append-only segmented log with one fsync per appended batch. It commits
// in about half the time of raft-boltdb (whose bbolt commit costs two
// fsyncs), which matters because hashicorp/raft writes the leader's log
// before replicating (docs/benchmarks.md). Its metadata database takes a
// file lock, so a second process on the same data dir fails.
func openWAL(dir string, log *slog.Logger) (*raftLog, error) {
	path := dirJoin(dir, raftWALName)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("create raft log dir: %w", err)
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(path, wal.WithLogger(newHclog(log, "wal")), wal.WithMetaStore(meta))
	if err != nil {
		_ = meta.Close()
		return nil, fmt.Errorf("open raft log %s: %w", path, err)
	}
	return &raftLog{WAL: w, meta: meta}, nil
}

// raftLog is the WAL plus its metadata database, closed here too: v0.4.0's
// WAL.Close left it open, and its file lock blocked the next open in this
// process (a restart in tests, a restore followed by an open). v0.4.1
// closes it; a second Close is a no-op.
type raftLog struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

// Close closes the log, then its metadata database.
func (l *raftLog) Close() error {
	return errors.Join(l.WAL.Close(), l.meta.Close())
}

func slogStd(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// maxAppendEntries is how many entries raft sends (and fsyncs) in one
// batch: concurrent writers share one disk write.
const maxAppendEntries = 256

func (n *Node) raftConfig() *raft.Config {
	t := n.cfg.Tuning
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(n.name)
	c.HeartbeatTimeout = t.HeartbeatTimeout
	c.ElectionTimeout = t.ElectionTimeout
	c.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	c.CommitTimeout = t.CommitTimeout
	c.SnapshotInterval = t.SnapshotInterval
	c.SnapshotThreshold = t.SnapshotThreshold
	c.TrailingLogs = t.TrailingLogs
	c.MaxAppendEntries = maxAppendEntries
	// An unbuffered apply channel: the leader still takes every waiting
	// writer in one batch, and an entry never sits in a buffer that raft
	// abandons on shutdown without answering its future.
	c.BatchApplyCh = false
	// A removed node stays up as a (configuration-less) follower and keeps
	// serving its local state; it may be added back.
	c.ShutdownOnRemove = false
	c.NotifyCh = n.notifyCh
	c.Logger = newHclog(n.log, "raft")
	c.NoLegacyTelemetry = true
	return c
}

// Non-voters are fed more cheaply than voters. raft heartbeats every
// follower every tenth of HeartbeatTimeout (100-200 ms). Voters need that:
// the leader's lease counts their answers, and they detect a dead leader by
// the silence. A non-voter needs messages only to keep knowing the leader,
// and most members of a large cluster are non-voters (47 of a 50-node
// leader's 49 followers), whose heartbeats were most of an idle leader's
// work. So a non-voter's raft waits nonVoterTimeoutFactor times longer for
// the leader (followSuffrage), and the leader sends it a heartbeat only
// after HeartbeatTimeout without any message to it (heartbeatSpacing): a
// third of the time it waits. Replication messages count, so a non-voter
// receiving writes gets no heartbeats at all.
const (
	nonVoterTimeoutFactor = 3
	// suffragePoll: how often a node checks its own suffrage.
	suffragePoll = 250 * time.Millisecond
	// spacingGrace: a member is heartbeated like a voter until it has been a
	// non-voter this long, time for it to have lengthened its timeouts.
	spacingGrace = 8 * suffragePoll
)

// heartbeatSpacing is, for the leader's transport, the least time between a
// heartbeat to a member and the previous message to it.
func (n *Node) heartbeatSpacing(id raft.ServerID) time.Duration {
	if !n.isNonVoter(id) {
		n.nonVoters.forget(id)
		return 0
	}
	if time.Since(n.nonVoters.since(id, time.Now())) < spacingGrace {
		return 0
	}
	return n.cfg.Tuning.HeartbeatTimeout
}

// isNonVoter reports whether the latest raft configuration lists id
// without a vote.
func (n *Node) isNonVoter(id raft.ServerID) bool {
	s, ok := n.suffrageOf(id)
	return ok && s != raft.Voter
}

// suffrageOf is id's suffrage in the latest raft configuration, if it is
// listed.
func (n *Node) suffrageOf(id raft.ServerID) (raft.ServerSuffrage, bool) {
	r := n.dialRaft.Load()
	if r == nil {
		return 0, false
	}
	f := r.GetConfiguration() // a copy of the latest configuration, no round trip
	if f.Error() != nil {
		return 0, false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == id {
			return s.Suffrage, true
		}
	}
	return 0, false
}

// nonVoterSince records since when the leader has seen each member as a
// non-voter, in its current term.
type nonVoterSince struct {
	mu sync.Mutex
	m  map[raft.ServerID]time.Time
}

func (s *nonVoterSince) since(id raft.ServerID, now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[raft.ServerID]time.Time{}
	}
	t, ok := s.m[id]
	if !ok {
		s.m[id] = now
		t = now
	}
	return t
}

func (s *nonVoterSince) forget(id raft.ServerID) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

func (s *nonVoterSince) reset() {
	s.mu.Lock()
	s.m = nil
	s.mu.Unlock()
}

// followSuffrage gives this node's raft the timeouts of its suffrage: a
// voter's HeartbeatTimeout and ElectionTimeout, or nonVoterTimeoutFactor
// times them for a non-voter. raft starts with a voter's; a node not (or no
// longer) in the configuration keeps what it has.
func (n *Node) followSuffrage(ctx context.Context) {
	t := n.cfg.Tuning
	voter := true
	tick := time.NewTicker(suffragePoll)
	defer tick.Stop()
	for {
		if s, ok := n.suffrageOf(raft.ServerID(n.name)); ok && (s == raft.Voter) != voter {
			want := s == raft.Voter
			rc := n.raft.ReloadableConfig()
			rc.HeartbeatTimeout, rc.ElectionTimeout = t.HeartbeatTimeout, t.ElectionTimeout
			if !want {
				rc.HeartbeatTimeout *= nonVoterTimeoutFactor
				rc.ElectionTimeout *= nonVoterTimeoutFactor
			}
			if err := n.raft.ReloadConfig(rc); err != nil {
				n.log.Warn("could not set raft's timeouts", "voter", want, "error", err)
			} else {
				voter = want
				n.log.Debug("raft timeouts set", "voter", want, "heartbeatTimeout", rc.HeartbeatTimeout)
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// startRaft starts raft on the node's stores and cluster port; bootstrap
// makes this node the only voter of a new cluster.
func (n *Node) startRaft(bootstrap bool) error {
	trans := transport.NewRaftTransport(n.raftStream(), transport.RaftOptions{
		MaxPool:          4,
		Timeout:          10 * time.Second,
		HeartbeatSpacing: n.heartbeatSpacing,
		Quit:             n.ctx.Done(),
		Logger:           n.log.With("component", "raft-net"),
	})
	n.raftNet = trans
	var logStore raft.LogStore = n.logs
	var stable raft.StableStore = n.logs
	var snaps raft.SnapshotStore = n.snaps
	if n.cfg.disk != nil {
		logStore, stable, snaps = n.cfg.disk.wrapRaft(logStore, stable, snaps)
	}
	logs, err := raft.NewLogCache(1024, logStore)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	conf := n.raftConfig()
	// Open has restored the latest snapshot and replayed the log after it
	// (resume.go); raft would replace that with the snapshot alone.
	conf.NoSnapshotRestoreOnStart = true
	r, err := raft.NewRaft(conf, n.fsm, logs, stable, snaps, trans)
	if err != nil {
		_ = trans.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	n.dialRaft.Store(r)
	n.goBackground("suffrage", n.followSuffrage)
	if !bootstrap {
		return nil
	}
	hasState, err := raft.HasExistingState(n.logs, n.logs, n.snaps)
	if err != nil || hasState {
		return err
	}
	f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter, ID: raft.ServerID(n.name), Address: raft.ServerAddress(n.advertise),
	}}})
	if err := f.Error(); err != nil {
		return fmt.Errorf("bootstrap raft: %w", err)
	}
	return nil
}

// observeLeaders wakes everyone waiting for a leader change and counts
// changes.
func (n *Node) observeLeaders(ctx context.Context) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	for {
		select {
		case o := <-ch:
			lo := o.Data.(raft.LeaderObservation)
			n.log.Info("leader changed", "leader", string(lo.LeaderID), "address", string(lo.LeaderAddr))
			n.metrics.leaderChanges.Inc()
			n.signalLeaderChange()
		case <-ctx.Done():
			return
		}
	}
}

func (n *Node) signalLeaderChange() {
	n.leaderMu.Lock()
	close(n.leaderChanged)
	n.leaderChanged = make(chan struct{})
	n.leaderMu.Unlock()
}

// leaderChange returns a channel closed at the next leader change.
func (n *Node) leaderChange() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderChanged
}

// leadershipLoop runs the leader's duties while this node leads: establish
// the term with a first entry, then autopilot and housekeeping.
func (n *Node) leadershipLoop(ctx context.Context) {
	var current *leaderTerm
	defer func() { current.end() }()
	for {
		select {
		case isLeader := <-n.notifyCh:
			current.end()
			current = nil
			if !isLeader {
				n.established.Store(0)
				continue
			}
			current = n.startTerm(ctx)
		case <-ctx.Done():
			return
		}
	}
}

// leaderTerm is one stretch of leadership: lead runs until end.
type leaderTerm struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (n *Node) startTerm(ctx context.Context) *leaderTerm {
	lctx, cancel := context.WithCancel(ctx)
	t := &leaderTerm{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		n.lead(lctx)
	}()
	return t
}

func (t *leaderTerm) end() {
	if t != nil {
		t.cancel()
		<-t.done
	}
}

// lead runs while this node is the leader (until ctx ends).
func (n *Node) lead(ctx context.Context) {
	term := n.raft.CurrentTerm()
	n.log.Info("this node is the leader", "term", term)
	// Raft's own no-op entry does not reach the FSM; a first entry of our
	// own that does makes every index a reader may wait for visible to it,
	// and marks the point where our commit index covers all earlier terms.
	for {
		err := n.applyEntry(commandNoop, nil)
		if err == nil {
			break
		}
		if n.raft.State() != raft.Leader || !sleepCtx(ctx, 10*time.Millisecond) {
			return
		}
	}
	n.established.Store(term)
	n.signalLeaderChange() // wakes readers waiting for an established leader
	n.nonVoters.reset()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.publishCommits(ctx)
	}()
	n.pilot.Start(ctx)
	defer func() { <-n.pilot.Stop() }()

	if err := n.finishBootstrap(ctx); err != nil && ctx.Err() == nil {
		n.log.Error("could not store the cluster secrets", "error", err)
	}
	n.fixOwnAddress()
	<-ctx.Done()
}

// applyEntry applies a store-internal entry as leader (no forwarding).
func (n *Node) applyEntry(cmd string, payload []byte) error {
	data, err := encodeEntry(newEntry(cmd, payload, false, time.Now()))
	if err != nil {
		return err
	}
	f := n.raft.Apply(data, 5*time.Second)
	if err := f.Error(); err != nil {
		return err
	}
	if res, ok := f.Response().(*applyResult); ok && res.Err != nil {
		return res.Err
	}
	return nil
}

// fixOwnAddress updates the leader's own raft address if it changed since
// it was last recorded (the node restarted with a new address and won an
// election before anyone could update it).
func (n *Node) fixOwnAddress() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.name && string(s.Address) != n.advertise {
			n.log.Info("updating this node's raft address", "from", string(s.Address), "to", n.advertise)
			if err := n.raft.AddVoter(s.ID, raft.ServerAddress(n.advertise), 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("could not update this node's raft address", "error", err)
			}
		}
	}
}

// await waits for a raft future, giving up when ctx ends or the node
// closes. Raft does not answer every future it is given (a verification
// has been seen to stay unanswered after its node was shut down while
// leadership changed): the goroutine left waiting then lingers, but the
// caller does not.
func (n *Node) await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.ctx.Done():
		return raft.ErrRaftShutdown
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
