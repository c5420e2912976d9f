package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestCommitsArePublishedWithoutCommitTimeout: raft tells followers about a
// commit only with its next message, which an idle leader sends after
// CommitTimeout (long in production, to keep an idle leader cheap; here an
// hour). Every write forwarded by a follower must nevertheless be readable
// there at once (it waits to read itself), and every replica must reach
// the last write without waiting for CommitTimeout — also when concurrent
// writes and the leader's publishing no-ops interleave.
func TestCommitsArePublishedWithoutCommitTimeout(t *testing.T) {
	c := newCluster(t, 3)
	c.tuning.CommitTimeout = time.Hour
	c.start("n1", "n2", "n3")
	followers := c.followers()
	// Rounds of concurrent writes: the end of every round is a moment
	// where nothing follows the last writes.
	const rounds, perFollower = 40, 4
	for r := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, len(followers)*perFollower)
		for _, f := range followers {
			for w := range perFollower {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- writeAndRead(f, Key{Kind: "Thing", Name: fmt.Sprintf("%s-%d-%d", f.name, r, w)})
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", r, err)
			}
		}
	}
	last := c.leader().fsm.LastChange()
	waitFor(t, 2*time.Second, "every replica at the last write", func() error {
		for _, n := range c.running() {
			if rev := n.fsm.Revision(); rev < last {
				return fmt.Errorf("%s at revision %d, the last write is %d", n.name, rev, last)
			}
		}
		return nil
	})
}

// writeAndRead writes k through n and checks that n then reads it. A write
// whose outcome is unknown (the leader changed under the test's load) is
// written again: it is idempotent.
func writeAndRead(n *Node, k Key) error {
	for attempt := 0; ; attempt++ {
		// Well under CommitTimeout, well over a round trip.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := n.Txn(ctx, []Op{{Type: OpPut, Key: k, Value: []byte(`"v"`)}})
		cancel()
		if err != nil && attempt < 3 && (errors.Is(err, ErrIndeterminate) || errors.Is(err, ErrNoLeader)) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %v on %s: %w", k, n.name, err)
		}
		if _, ok := n.Get(k); !ok {
			return fmt.Errorf("%s does not see its own write %v", n.name, k)
		}
		return nil
	}
}

// waitRaftTimeouts waits until n's raft runs with the heartbeat timeout of
// a voter (the configured one) or of a non-voter (nonVoterTimeoutFactor
// times it).
func waitRaftTimeouts(t *testing.T, n *Node, voter bool) {
	t.Helper()
	want := n.cfg.Tuning.HeartbeatTimeout
	if !voter {
		want *= nonVoterTimeoutFactor
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("%s's raft heartbeat timeout at %s", n.name, want), func() error {
		if got := n.raft.ReloadableConfig().HeartbeatTimeout; got != want {
			return fmt.Errorf("%s", got)
		}
		return nil
	})
}
