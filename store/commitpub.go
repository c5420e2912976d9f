package store

import (
	"context"
	"sync"
	"time"
)

// commitPublisher makes the followers learn at once that the leader's
// writes are committed. hashicorp/raft tells a follower the commit index
// only in its next replication message; when nothing follows an entry, that
// message waits for CommitTimeout, which is long (1 s) so that an idle
// leader does not message every follower 70 times a second. Until then the
// followers (their watchers, and a write forwarded by a follower, which
// waits to read itself) would not see the write.
//
// Any entry appended after an entry committed carries its commit out with
// it. So after each write the leader notes its last log index; unless an
// entry beyond it is appended meanwhile (under load, the next writes), the
// publisher appends a tiny no-op entry. A no-op's own commit may stay
// unpublished until CommitTimeout: it changes nothing (reads use the last
// index that changed something, stateMachine.LastChange).
type commitPublisher struct {
	mu      sync.Mutex
	pending bool
	after   uint64 // an entry with a higher index publishes every commit asked for
	wake    chan struct{}
}

func newCommitPublisher() *commitPublisher {
	return &commitPublisher{wake: make(chan struct{}, 1)}
}

// request asks that the followers learn of every commit so far; lastIndex
// is the leader's last log index now (after those commits).
func (p *commitPublisher) request(lastIndex uint64) {
	p.mu.Lock()
	p.after = max(p.after, lastIndex)
	p.pending = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take returns the index an entry must exceed, if a publication is pending.
func (p *commitPublisher) take() (after uint64, pending bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	after, pending = p.after, p.pending
	p.pending = false
	return after, pending
}

// noopEnqueueTimeout bounds the wait for raft to take a publishing no-op;
// raft is then busy with other entries, which publish the commit anyway.
const noopEnqueueTimeout = 50 * time.Millisecond

// publishCommits runs while this node leads: it appends a no-op whenever a
// requested publication is not already done by a later entry.
func (n *Node) publishCommits(ctx context.Context) {
	for {
		select {
		case <-n.commits.wake:
		case <-ctx.Done():
			return
		}
		after, pending := n.commits.take()
		if !pending || n.raft.LastIndex() > after {
			continue
		}
		data, err := encodeEntry(newEntry(commandNoop, nil, false, time.Now()))
		if err != nil {
			continue
		}
		// Only the enqueueing is waited for; the entry commits on its own.
		n.raft.Apply(data, noopEnqueueTimeout)
	}
}
