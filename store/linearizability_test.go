package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/weftnet/weft/internal/testtier"
)

// A register per key: reads (ConsistentRevision, then a local Get), blind
// writes and compare-and-swap writes (update with the revision last read).
// Every written value is unique, so a value names the revision it was
// written at.
type linInput struct {
	op     string // "read", "put", "cas"
	key    int
	expect string // cas: the value whose revision it expects
	value  string // put, cas: the new value
}

type linOutput struct {
	ok      bool   // cas applied
	value   string // read
	unknown bool   // write with unknown outcome (may or may not have applied)
}

const linInitial = "init"

func linModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[int][]porcupine.Operation{}
			for _, op := range history {
				k := op.Input.(linInput).key
				byKey[k] = append(byKey[k], op)
			}
			var out [][]porcupine.Operation
			for _, ops := range byKey {
				out = append(out, ops)
			}
			return out
		},
		Init: func() any { return linInitial },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(string), input.(linInput), output.(linOutput)
			switch in.op {
			case "read":
				return out.value == s, s
			case "put":
				return true, in.value
			default: // cas
				switch {
				case out.unknown:
					if s == in.expect {
						return true, in.value
					}
					return true, s
				case out.ok:
					return s == in.expect, in.value
				default:
					return s != in.expect, s
				}
			}
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(linInput), output.(linOutput)
			switch in.op {
			case "read":
				return fmt.Sprintf("read(k%d) -> %q", in.key, out.value)
			case "put":
				return fmt.Sprintf("put(k%d, %q) unknown=%v", in.key, in.value, out.unknown)
			default:
				return fmt.Sprintf("cas(k%d, %q -> %q) ok=%v unknown=%v", in.key, in.expect, in.value, out.ok, out.unknown)
			}
		},
	}
}

// linHistory records operations with monotonic timestamps.
type linHistory struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	acked int
}

func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

func (h *linHistory) add(client int, in linInput, call int64, out linOutput, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if out.unknown {
		ret = math.MaxInt64 // may take effect at any time after the call
	} else if in.op != "read" {
		h.acked++
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

func linKey(k int) Key { return Key{Kind: "Lin", Name: fmt.Sprintf("k%d", k)} }

// linClient runs operations against one node until ctx ends, moving to
// another node when its node goes away.
func linClient(ctx context.Context, c *cluster, h *linHistory, id, keys int, seq *int) {
	rng := rand.New(rand.NewSource(int64(id)))
	for ctx.Err() == nil {
		nodes := c.running()
		if len(nodes) == 0 { // every node crashed at once: they come back
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		n := nodes[rng.Intn(len(nodes))]
		k := rng.Intn(keys)
		*seq++
		value := fmt.Sprintf("c%d-%d", id, *seq)
		opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		switch p := rng.Intn(10); {
		case p < 4:
			linRead(opCtx, h, id, n, k)
		case p < 6:
			call := h.now()
			_, err := n.Txn(opCtx, []Op{{Type: OpPut, Key: linKey(k), Value: []byte(value)}})
			if out, keep := linWriteOutcome(err); keep {
				h.add(id, linInput{op: "put", key: k, value: value}, call, out, h.now())
			}
		default:
			// Learn the current revision (not part of the history: the CAS
			// names the value it expects).
			if _, err := n.ConsistentRevision(opCtx); err != nil {
				cancel()
				continue
			}
			cur, ok := n.Get(linKey(k))
			if !ok {
				cancel()
				continue
			}
			call := h.now()
			_, err := n.Txn(opCtx, []Op{{Type: OpUpdate, Key: linKey(k), Value: []byte(value), Revision: cur.Revision}})
			if out, keep := linWriteOutcome(err); keep {
				h.add(id, linInput{op: "cas", key: k, expect: string(cur.Value), value: value}, call, out, h.now())
			}
		}
		cancel()
	}
}

func linRead(ctx context.Context, h *linHistory, id int, n *Node, k int) bool {
	call := h.now()
	if _, err := n.ConsistentRevision(ctx); err != nil {
		return false // a failed read observed nothing
	}
	o, _ := n.Get(linKey(k))
	h.add(id, linInput{op: "read", key: k}, call, linOutput{value: string(o.Value)}, h.now())
	return true
}

// linWriteOutcome classifies a write's error: keep=false for writes that
// certainly did not happen (the store promises ErrNoLeader means never
// applied; the checker holds it to that only indirectly).
func linWriteOutcome(err error) (linOutput, bool) {
	switch {
	case err == nil:
		return linOutput{ok: true}, true
	case errors.Is(err, ErrConflict):
		return linOutput{ok: false}, true
	case errors.Is(err, ErrNoLeader):
		return linOutput{}, false
	default:
		return linOutput{unknown: true}, true
	}
}

// nemesis kills, restarts and partitions nodes, one fault at a time. Its
// kills are orderly shutdowns minus the leadership transfer (crashNemesis
// has the abrupt ones).
func nemesis(ctx context.Context, t *testing.T, c *cluster, names []string) {
	rng := rand.New(rand.NewSource(42))
	pause := func(d time.Duration) bool { return sleepCtx(ctx, d) }
	for step := 0; ctx.Err() == nil; step++ {
		victim := pickVictim(c, rng, names)
		switch step % 3 {
		case 0:
			t.Logf("nemesis: kill %s", victim)
			c.kill(victim)
			pause(700 * time.Millisecond)
			c.restart(victim)
		case 1:
			isolate(ctx, t, c, names, victim)
		case 2:
			a, b := names[rng.Intn(len(names))], names[rng.Intn(len(names))]
			if a != b {
				t.Logf("nemesis: cut %s-%s", a, b)
				c.faults.cut(a, b)
				pause(700 * time.Millisecond)
				c.faults.heal()
			}
		}
		pause(300 * time.Millisecond)
	}
}

// crashNemesis stops nodes abruptly (cluster.crash: as kill -9, the log
// cut mid-append, no orderly step), the leader half the time, every fourth
// step the whole cluster at once, and isolates nodes in between; crashed
// nodes restart from what their disk kept.
func crashNemesis(ctx context.Context, t *testing.T, c *cluster, names []string) {
	rng := rand.New(rand.NewSource(43))
	pause := func(d time.Duration) bool { return sleepCtx(ctx, d) }
	for step := 0; ctx.Err() == nil; step++ {
		victim := pickVictim(c, rng, names)
		switch step % 4 {
		case 0, 2:
			rev, what := c.crash(victim)
			t.Logf("nemesis: crash %s at revision %d (%s)", victim, rev, what)
			pause(500 * time.Millisecond)
			c.restart(victim)
		case 1:
			isolate(ctx, t, c, names, victim)
		case 3:
			for _, name := range names {
				rev, what := c.crash(name)
				t.Logf("nemesis: crash %s (all) at revision %d (%s)", name, rev, what)
			}
			pause(300 * time.Millisecond)
			for _, name := range names {
				c.restart(name)
			}
		}
		pause(300 * time.Millisecond)
	}
}

// pickVictim picks a node, the leader half the time.
func pickVictim(c *cluster, rng *rand.Rand, names []string) string {
	lead := c.leaderOrNil()
	victim := names[rng.Intn(len(names))]
	if lead != nil && rng.Intn(2) == 0 {
		victim = lead.name
	}
	return victim
}

// isolate cuts victim from every other node for 700 ms.
func isolate(ctx context.Context, t *testing.T, c *cluster, names []string, victim string) {
	t.Logf("nemesis: isolate %s", victim)
	for _, o := range names {
		if o != victim {
			c.faults.cut(victim, o)
		}
	}
	sleepCtx(ctx, 700*time.Millisecond)
	c.faults.heal()
}

// leaderOrNil is the current established leader, if any (no waiting).
func (c *cluster) leaderOrNil() *Node {
	for _, n := range c.running() {
		if n.raft.State().String() == "Leader" && n.established.Load() == n.raft.CurrentTerm() {
			return n
		}
	}
	return nil
}

// TestLinearizableUnderFaults checks with porcupine that reads, writes and
// compare-and-swaps stay linearizable while nodes are killed (orderly),
// restarted, isolated and cut from each other.
func TestLinearizableUnderFaults(t *testing.T) {
	testtier.Long(t)
	testLinearizable(t, nemesis)
}

// TestLinearizableUnderCrashes is the same check while nodes, alone or all
// at once, stop abruptly with their log cut mid-append (crashNemesis).
func TestLinearizableUnderCrashes(t *testing.T) {
	testtier.Long(t)
	testLinearizable(t, crashNemesis)
}

// linCheckTimeout bounds porcupine. A check of these histories takes well
// under a second; if it ever runs out of time, its verdict is Unknown, which
// fails the test: an unchecked history proves nothing.
const linCheckTimeout = 2 * time.Minute

func testLinearizable(t *testing.T, faults func(context.Context, *testing.T, *cluster, []string)) {
	duration, nodes, clients := 15*time.Second, 3, 6
	if *soak {
		duration, nodes, clients = 5*time.Minute, 5, 10
	}
	if testing.Short() {
		duration = 5 * time.Second
	}
	c := newCluster(t, nodes)
	var names []string
	for i := 1; i <= nodes; i++ {
		names = append(names, fmt.Sprintf("n%d", i))
	}
	c.start(names...)
	const keys = 3
	for k := 0; k < keys; k++ {
		if _, err := c.leader().Txn(ctxTimeout(t, 10*time.Second), []Op{{Type: OpCreate, Key: linKey(k), Value: []byte(linInitial)}}); err != nil {
			t.Fatal(err)
		}
	}

	h := &linHistory{start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			seq := 0
			linClient(ctx, c, h, id, keys, &seq)
		}(i)
	}
	nemesisDone := make(chan struct{})
	go func() {
		defer close(nemesisDone)
		faults(ctx, t, c, names)
	}()
	wg.Wait()
	<-nemesisDone

	// Everyone back: every acknowledged write must still be visible to
	// final reads, which the checker sees last.
	c.faults.heal()
	for _, name := range names {
		c.mu.Lock()
		_, up := c.nodes[name]
		c.mu.Unlock()
		if !up {
			c.restart(name)
		}
	}
	c.waitConverged()
	for k := 0; k < keys; k++ {
		for _, n := range c.running() {
			if !linRead(ctxTimeout(t, 10*time.Second), h, clients, n, k) {
				t.Fatalf("final read of k%d on %s failed", k, n.name)
			}
		}
	}

	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel(), h.ops, linCheckTimeout)
	t.Logf("%d operations (%d acknowledged writes), check: %s in %s", len(h.ops), h.acked, res, time.Since(start).Round(time.Millisecond))
	if res == porcupine.Unknown {
		t.Fatalf("porcupine could not decide within %s whether the history is linearizable: unchecked, the run proves nothing", linCheckTimeout)
	}
	if h.acked < 50 {
		t.Errorf("only %d acknowledged writes: the test did not exercise much", h.acked)
	}
	if res == porcupine.Illegal {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("weft-linearizability-%d.html", time.Now().UnixNano()))
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(linModel(), info, f)
			f.Close()
			t.Logf("visualization: %s", path)
		}
		t.Fatal("the history is not linearizable")
	}
}
