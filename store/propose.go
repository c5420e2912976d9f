package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// MaxRequestSize bounds one write (the encoded ops or command payload).
const MaxRequestSize = 1 << 20

// errNotLeader means the request reached a node that is not (or no longer,
// or not yet fully) the leader and was not applied: safe to retry.
var errNotLeader = errors.New("not the leader")

// defaultWriteTimeout bounds a write whose context has no deadline.
const defaultWriteTimeout = 30 * time.Second

// Txn commits ops atomically through the leader. Kinds private to the store
// are refused with ErrNotAllowed.
func (n *Node) Txn(ctx context.Context, ops []Op) (TxnResult, error) {
	if err := checkOps(ops, false); err != nil {
		return TxnResult{}, err
	}
	return n.txn(ctx, ops)
}

// checkOps runs the checks every transaction must pass before it is
// proposed: at least one op, valid keys, known op types, and, unless
// internal (the store's own writes, which members forward to the leader),
// no reserved kinds.
func checkOps(ops []Op, internal bool) error {
	if len(ops) == 0 {
		return fmt.Errorf("txn: %w: no operations", ErrInvalid)
	}
	for _, op := range ops {
		if err := ValidateKey(op.Key); err != nil {
			return &KeyError{Key: op.Key, Err: err}
		}
		if !internal && IsReservedKind(op.Key.Kind) {
			return &KeyError{Key: op.Key, Err: fmt.Errorf("%w: kind %q is private to the store", ErrNotAllowed, op.Key.Kind)}
		}
		switch op.Type {
		case OpCreate, OpUpdate, OpPut, OpDelete:
		default:
			return &KeyError{Key: op.Key, Err: fmt.Errorf("%w: unknown op type %q", ErrInvalid, op.Type)}
		}
	}
	return nil
}

// checkSize refuses a write over MaxRequestSize.
func checkSize(payload []byte) error {
	if len(payload) > MaxRequestSize {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(payload), MaxRequestSize)
	}
	return nil
}

// checkCommandPayload checks what the leader can of a registered command's
// payload before it enters the log: it is empty or JSON.
func checkCommandPayload(name string, payload []byte) error {
	if len(payload) > 0 && !json.Valid(payload) {
		return fmt.Errorf("%w: command %q: the payload is not JSON", ErrInvalid, name)
	}
	return nil
}

// txn proposes ops without the reserved-kind check (store-internal writes).
func (n *Node) txn(ctx context.Context, ops []Op) (TxnResult, error) {
	payload, err := json.Marshal(ops)
	if err != nil {
		return TxnResult{}, fmt.Errorf("encode txn: %w", err)
	}
	res, err := n.propose(ctx, commandTxn, payload)
	if err != nil {
		return TxnResult{}, err
	}
	if res.Err != nil {
		return TxnResult{}, res.Err
	}
	return TxnResult{Revision: res.Revision, Objects: res.Objects}, nil
}

// Command runs a registered command through the leader and returns its
// result. The payload must be empty or JSON (ErrInvalid otherwise).
func (n *Node) Command(ctx context.Context, name string, payload []byte) ([]byte, error) {
	if _, ok := n.cfg.Registry.Commands[name]; !ok {
		return nil, fmt.Errorf("%w: unknown command %q", ErrInvalid, name)
	}
	if err := checkSize(payload); err != nil {
		return nil, err
	}
	if err := checkCommandPayload(name, payload); err != nil {
		return nil, err
	}
	res, err := n.propose(ctx, name, payload)
	if err != nil {
		return nil, err
	}
	return res.Data, res.Err
}

// propose gets an entry applied by the leader: locally when this node leads,
// otherwise forwarded. It retries while there is no leader, or the request
// reached a node that was not the leader, until ctx ends; it never retries
// a request that may have been applied.
func (n *Node) propose(ctx context.Context, cmd string, payload []byte) (*applyResult, error) {
	if err := checkSize(payload); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultWriteTimeout)
		defer cancel()
	}
	start := time.Now()
	var res *applyResult
	err := n.onLeader(ctx, "write", false,
		func(ctx context.Context) (err error) {
			res, err = n.applyAsLeader(ctx, cmd, payload)
			return err
		},
		func(ctx context.Context, addr string) (err error) {
			res, err = n.forward.propose(ctx, addr, cmd, payload)
			return err
		})
	if err == nil {
		n.metrics.commitDuration.Observe(time.Since(start).Seconds())
		// Read your writes: a forwarded write is answered by the leader
		// before this replica has applied it; wait, so that a local read
		// right after it (`weft apply` then `weft get` on one node) sees
		// it. The write is committed whatever happens here.
		_ = n.fsm.WaitRevision(ctx, res.Revision)
	}
	return res, err
}

// applyAsLeader appends an entry to the log and waits for the FSM's result.
func (n *Node) applyAsLeader(ctx context.Context, cmd string, payload []byte) (*applyResult, error) {
	if n.raft.State() != raft.Leader {
		return nil, errNotLeader
	}
	data, err := encodeEntry(newEntry(cmd, payload, false, time.Now()))
	if err != nil {
		return nil, err
	}
	timeout := defaultWriteTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, fmt.Errorf("%w: %v", ErrNoLeader, ctx.Err())
		}
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// Refused before it entered the log.
			return nil, errNotLeader
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, fmt.Errorf("%w: raft is overloaded: %v", ErrNoLeader, err)
		default:
			// ErrLeadershipLost, ErrRaftShutdown: it may still commit.
			return nil, fmt.Errorf("%w: %v", ErrIndeterminate, err)
		}
	}
	res, ok := f.Response().(*applyResult)
	if !ok {
		return nil, fmt.Errorf("raft returned %T, want *applyResult", f.Response())
	}
	n.publishCommit()
	return res, nil
}

// publishCommit makes the followers learn at once that the leader's
// writes so far are committed (commitPublisher).
func (n *Node) publishCommit() {
	if servers, err := n.raftServers(); err != nil || len(servers) < 2 {
		return // nobody to tell
	}
	n.commits.request(n.raft.LastIndex())
}

// onLeader runs local when this node leads and remote against the leader
// otherwise, retrying on errNotLeader, when there is no leader, and, for
// idempotent calls or requests that never left this node, on transport
// errors — until ctx ends.
func (n *Node) onLeader(ctx context.Context, what string, idempotent bool,
	local func(context.Context) error, remote func(ctx context.Context, addr string) error,
) error {
	backoff := 5 * time.Millisecond
	var last error
	var leaderless time.Time // since when no leader is known
	for {
		changed := n.leaderChange()
		addr, id := n.raft.LeaderWithID()
		var err error
		switch {
		case n.Err() != nil:
			return fmt.Errorf("%s: %w", what, n.Err())
		case id == "":
			if leaderless.IsZero() {
				leaderless = time.Now()
			}
			// A node cut off from the quorum says so after a few
			// election timeouts instead of holding every caller until
			// its deadline; an ordinary election is much shorter.
			if wait := n.noLeaderWait(); time.Since(leaderless) > wait {
				return fmt.Errorf("%s: %w (none for %s)", what, ErrNoLeader, wait)
			}
			err = fmt.Errorf("%w: no leader known", errNotLeader)
		case string(id) == n.name:
			leaderless = time.Time{}
			err = local(ctx)
		default:
			leaderless = time.Time{}
			err = n.callLeader(ctx, changed, string(addr), remote)
		}
		if err == nil {
			return nil
		}
		retry := errors.Is(err, errNotLeader) || notSent(err) || (idempotent && !isFinal(err))
		if !retry {
			return err
		}
		last = err
		if ctx.Err() != nil {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		case <-n.ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w: the node is closing", what, ErrNoLeader)
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
	return fmt.Errorf("%s: %w (%v; last attempt: %v)", what, ErrNoLeader, ctx.Err(), last)
}

// noLeaderWait is how long onLeader waits for a leader to appear before
// failing with ErrNoLeader.
func (n *Node) noLeaderWait() time.Duration {
	return 5 * n.cfg.Tuning.ElectionTimeout
}

// callLeader runs remote against the leader at addr, abandoning it when
// this node sees the leadership change (the leader died or this node was
// cut off): a request that was never sent is retried by onLeader, one that
// was sent fails at once as indeterminate instead of waiting for the
// caller's deadline on a dead connection.
func (n *Node) callLeader(ctx context.Context, changed <-chan struct{}, addr string, remote func(context.Context, string) error) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-changed:
			cancel()
		case <-done:
		}
	}()
	err := remote(rctx, addr)
	if err != nil && rctx.Err() != nil && ctx.Err() == nil {
		// Cut short by the leader change, not by the caller.
		if errors.Is(err, ErrIndeterminate) {
			return fmt.Errorf("%w (the leader at %s was lost while it answered)", err, addr)
		}
		return fmt.Errorf("%w: the leader at %s was lost", errNotLeader, addr)
	}
	return err
}

// isFinal reports errors that an idempotent call should not retry: every
// store sentinel (ErrConflict, ErrInvalid, ErrNotAllowed...) is an answer,
// whether the leader sent it over the wire or this node, leading, produced
// it itself; only the failures to get an answer (no leader, not the leader)
// are worth another attempt.
func isFinal(err error) bool {
	return ErrorCode(err) != CodeInternal && !errors.Is(err, ErrNoLeader) && !errors.Is(err, errNotLeader)
}

// ConsistentRevision waits until the local replica has applied everything
// the leader had committed when it was called, and returns the local
// revision: a Get or List after it is linearizable.
//
// It uses raft's read index: the leader (once it has committed an entry in
// its term) reads its commit index, confirms it still leads with a
// heartbeat round (VerifyLeader), and this replica waits to apply up to
// that index. No log write is needed.
func (n *Node) ConsistentRevision(ctx context.Context) (uint64, error) {
	var index uint64
	err := n.onLeader(ctx, "consistent read", true,
		func(ctx context.Context) (err error) {
			index, err = n.readIndex(ctx)
			return err
		},
		func(ctx context.Context, addr string) (err error) {
			index, err = n.remoteReadIndex(ctx, addr)
			return err
		})
	if err != nil {
		return 0, err
	}
	if err := n.fsm.WaitRevision(ctx, index); err != nil {
		return 0, fmt.Errorf("consistent read: %w", err)
	}
	return n.fsm.Revision(), nil
}

// readIndex runs on the leader.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	for {
		if n.raft.State() != raft.Leader {
			return 0, errNotLeader
		}
		changed := n.leaderChange()
		if n.established.Load() == n.raft.CurrentTerm() {
			break
		}
		select { // our first entry of the term is not applied yet
		case <-changed:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: leadership not yet established", errNotLeader)
		}
	}
	index := n.raft.CommitIndex()
	// A heartbeat round answers in one round trip; raft has been seen to
	// leave a verification unanswered while nodes were killed, so it is
	// bounded and retried like a lost leadership.
	vctx, cancel := context.WithTimeout(ctx, 2*n.cfg.Tuning.HeartbeatTimeout)
	defer cancel()
	if err := n.await(vctx, n.raft.VerifyLeader()); err != nil {
		return 0, fmt.Errorf("%w: %v", errNotLeader, err)
	}
	// Readers need the state as of index, not index itself: once the
	// leader has applied it, the last entry that changed anything (applied,
	// hence committed) is enough. The difference is trailing no-ops
	// (commitPublisher), whose commit a follower may only learn after
	// CommitTimeout.
	if err := n.fsm.WaitRevision(ctx, index); err != nil {
		return 0, err
	}
	return n.fsm.LastChange(), nil
}
