package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/weftnet/weft/internal/testtier"
)

// TestRestartAloneServesItsState stops a whole three-node cluster in
// order and starts one node alone (no quorum, no leader ever): right after
// Open returns, its reads answer the state it had, at a revision no lower
// than before, and ReadReady is nil. Raft alone would start it empty: it
// applies log entries only once a leader says they are committed, and
// below 8,192 writes there is no snapshot. Once the others are back the
// cluster converges and writes work.
func TestRestartAloneServesItsState(t *testing.T) {
	testRestartAlone(t, 8192, 60)
}

// TestRestartAloneServesItsStateFromSnapshotAndLog is the same with
// snapshots taken (every SnapshotInterval, 1 s in tests, once 40 entries
// were appended): the restart restores the latest one and replays the
// entries after it.
func TestRestartAloneServesItsStateFromSnapshotAndLog(t *testing.T) {
	testtier.Long(t)
	testRestartAlone(t, 40, 300)
}

func testRestartAlone(t *testing.T, threshold uint64, writes int) {
	c := newCluster(t, 3)
	c.tuning.SnapshotThreshold = threshold
	c.tuning.TrailingLogs = 20
	c.start("n1", "n2", "n3")
	for i := 0; i < writes; i++ {
		mustPut(t, c.running()[i%3], Key{Kind: "K", Name: fmt.Sprint(i)}, fmt.Sprint(i))
		if threshold < 8192 && i == writes/2 {
			waitSnapshot(t, c.node("n1"))
		}
	}
	c.waitConverged()
	want, wantRev := dumpNode(c.node("n1"))
	for _, n := range c.running() {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		c.kill(n.name)
	}

	n1 := c.restart("n1")
	if threshold < 8192 {
		if list, _ := n1.snaps.List(); len(list) == 0 || list[0].Index >= wantRev {
			t.Fatalf("snapshots %v: want one older than revision %d, so that the log is replayed after it", list, wantRev)
		}
	}
	checkServes(t, n1, want, wantRev)
	if err := n1.ReadReady(); err != nil {
		t.Errorf("ReadReady after the restart: %v", err)
	}
	if n1.MinRevision() < wantRev || n1.Revision() < n1.MinRevision() {
		t.Errorf("MinRevision %d, Revision %d: want both >= %d", n1.MinRevision(), n1.Revision(), wantRev)
	}
	// Still so a while later: nothing replaces the state while no leader
	// is reachable.
	time.Sleep(5 * c.tuning.ElectionTimeout)
	checkServes(t, n1, want, wantRev)

	c.restart("n2")
	c.restart("n3")
	c.waitConverged()
	mustPut(t, c.leader(), Key{Kind: "K", Name: "after"}, "x")
	c.waitConverged()
	waitFor(t, 10*time.Second, "n1 in sync", func() error {
		if !n1.InSync() {
			return errors.New("not in sync")
		}
		return nil
	})
}

// checkServes checks that n's reads answer want at a revision >= wantRev.
func checkServes(t *testing.T, n *Node, want map[Key]Object, wantRev uint64) {
	t.Helper()
	if rev := n.Revision(); rev < wantRev {
		t.Errorf("%s: revision %d after the restart, %d before: revisions went backwards", n.name, rev, wantRev)
	}
	objs, _ := n.List("K", "")
	if len(objs) != countKind(want, "K") {
		t.Errorf("%s lists %d objects of kind K after the restart, had %d", n.name, len(objs), countKind(want, "K"))
	}
	got, _ := dumpNode(n)
	for k, o := range want {
		if g, ok := got[k]; !ok || g.Revision != o.Revision || string(g.Value) != string(o.Value) {
			t.Errorf("%s: %v is %+v after the restart, was %+v", n.name, k, g, o)
			break
		}
	}
}

func countKind(m map[Key]Object, kind string) int {
	c := 0
	for k := range m {
		if k.Kind == kind {
			c++
		}
	}
	return c
}

// waitSnapshot waits until n has taken a raft snapshot.
func waitSnapshot(t *testing.T, n *Node) {
	t.Helper()
	waitFor(t, 20*time.Second, n.name+" to take a snapshot", func() error {
		list, err := n.snaps.List()
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return errors.New("no snapshot yet")
		}
		return nil
	})
}

// TestCrashedNodeNeverGoesBack crashes nodes (see crashDisk: as kill -9,
// a log append cut half-way, no orderly step) while writers keep writing
// through every node, and restarts them: right after Open, before hearing
// from anyone, a restarted node is at a revision no lower than any reader
// could see before the crash, holds every object it held then at least as
// new, and ReadReady is nil. Then the whole cluster crashes at once and one
// node starts alone, with the same checks. Healed, every acknowledged write
// is there.
func TestCrashedNodeNeverGoesBack(t *testing.T) {
	testtier.Long(t)
	c := newCluster(t, 3)
	c.tuning.SnapshotThreshold = 200 // some restarts go through a snapshot
	c.tuning.TrailingLogs = 50
	names := []string{"n1", "n2", "n3"}
	c.start(names...)

	var mu sync.Mutex
	acked := map[Key]string{}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 12; w++ { // concurrent writers: appends of several entries
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; ctx.Err() == nil; i++ {
				nodes := c.running()
				if len(nodes) == 0 {
					sleepCtx(ctx, 10*time.Millisecond)
					continue
				}
				k := Key{Kind: "K", Name: fmt.Sprintf("w%d-%d", w, i)}
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := nodes[rng.Intn(len(nodes))].Txn(wctx, []Op{{Type: OpPut, Key: k, Value: []byte("v")}})
				cancel()
				if err == nil {
					mu.Lock()
					acked[k] = "v"
					mu.Unlock()
				}
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	rng := rand.New(rand.NewSource(7))
	for round := 0; round < 6; round++ {
		time.Sleep(300 * time.Millisecond)
		victim := names[rng.Intn(len(names))]
		if round%2 == 1 {
			victim = c.leader().name
		}
		before, beforeRev, what := c.crashAndDump(victim)
		t.Logf("round %d: crashed %s at revision %d (%s)", round, victim, beforeRev, what)
		n := c.restart(victim)
		checkNotBehind(t, n, before, beforeRev)
		c.waitVoters(3, names...)
	}

	// Everything crashes; one node comes back alone.
	dumps := map[string]map[Key]Object{}
	revs := map[string]uint64{}
	for _, name := range names {
		var what string
		dumps[name], revs[name], what = c.crashAndDump(name)
		t.Logf("crashed %s at revision %d (%s)", name, revs[name], what)
	}
	stop()
	wg.Wait()
	n1 := c.restart("n1")
	checkNotBehind(t, n1, dumps["n1"], revs["n1"])
	time.Sleep(5 * c.tuning.ElectionTimeout)
	checkNotBehind(t, n1, dumps["n1"], revs["n1"])

	c.restart("n2")
	c.restart("n3")
	c.waitConverged()
	got, _ := dumpNode(c.leader())
	mu.Lock()
	defer mu.Unlock()
	for k := range acked {
		if _, ok := got[k]; !ok {
			t.Errorf("acknowledged write %v lost", k)
		}
	}
	t.Logf("%d acknowledged writes, all there", len(acked))
}

// crashAndDump crashes name and returns what its replica held at the
// freeze, its revision and how the crash cut the log.
func (c *cluster) crashAndDump(name string) (map[Key]Object, uint64, string) {
	var dumped map[Key]Object
	rev, what := c.crashWith(name, func(n *Node) { dumped, _ = dumpNode(n) })
	return dumped, rev, what
}

// checkNotBehind checks, right after a restart, that n is at revision >=
// rev, holds every object of before at least as new, and is ReadReady.
func checkNotBehind(t *testing.T, n *Node, before map[Key]Object, rev uint64) {
	t.Helper()
	if err := n.ReadReady(); err != nil {
		t.Errorf("%s: ReadReady after the restart: %v", n.name, err)
	}
	if got := n.Revision(); got < rev {
		t.Errorf("%s: revision %d after the restart, %d before the crash: revisions went backwards", n.name, got, rev)
	}
	got, _ := dumpNode(n)
	for k, o := range before {
		if g, ok := got[k]; !ok || g.Revision < o.Revision {
			t.Errorf("%s: %v at revision %d before the crash, %+v after the restart", n.name, k, o.Revision, g)
			return
		}
	}
}

// TestReadsRefusedUntilInSync: a node that cannot recover what it had
// applied (here its log lost its tail: the applied-index record is ahead
// of it) refuses reads with ErrNotInSync while it is alone, rather than
// serving less as the truth; once the others are back it catches up and
// reads are ready (the sync with the leader is retried until it works).
func TestReadsRefusedUntilInSync(t *testing.T) {
	testtier.Long(t)
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	for i := 0; i < 20; i++ {
		mustPut(t, c.leader(), Key{Kind: "K", Name: fmt.Sprint(i)}, "v")
	}
	c.waitConverged()
	for _, n := range c.running() {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		c.kill(n.name)
	}
	n1dir := c.dirs["n1"]
	b, err := os.ReadFile(filepath.Join(raftDir(n1dir), appliedFileName))
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := decodeApplied(b)
	if err != nil || recorded == 0 {
		t.Fatalf("applied-index record %d, %v", recorded, err)
	}
	// Pretend the log lost its last entries: n1 had applied more than
	// it can replay. (The others' logs are intact: they bring it back.)
	ahead := recorded + 30
	if err := os.WriteFile(filepath.Join(raftDir(n1dir), appliedFileName), encodeApplied(ahead), 0o600); err != nil {
		t.Fatal(err)
	}

	n1 := c.restart("n1")
	for i := 0; i < 3; i++ {
		err := n1.ReadReady()
		if !errors.Is(err, ErrNotInSync) {
			t.Fatalf("ReadReady of a node that recovered %d of %d: %v, want ErrNotInSync", n1.Revision(), ahead, err)
		}
		if i == 0 {
			t.Logf("ReadReady: %v", err)
		}
		time.Sleep(3 * c.tuning.ElectionTimeout) // past noLeaderWait: the first sync attempt fails
	}
	if n1.MinRevision() != ahead {
		t.Errorf("MinRevision %d, want %d", n1.MinRevision(), ahead)
	}
	c.restart("n2")
	c.restart("n3")
	waitFor(t, 20*time.Second, "n1 ready for reads and in sync", func() error {
		if err := n1.ReadReady(); err != nil {
			return err
		}
		if !n1.InSync() {
			return errors.New("not in sync")
		}
		return nil
	})
	c.waitConverged()
}

// TestFSMRecordsBeforeShowingAndSkipsWhatItHolds: the applied index is
// recorded before readers can see it, and entries at or below the state's
// revision (raft handing over again what Open replayed) change nothing.
func TestFSMRecordsBeforeShowingAndSkipsWhatItHolds(t *testing.T) {
	var h *harness
	var recorded []uint64
	h = newHarness(t, fsmOptions{RecordApplied: func(index uint64) {
		if rev := h.fsm.Revision(); rev >= index {
			t.Errorf("index %d recorded when the state was already at %d", index, rev)
		}
		recorded = append(recorded, index)
	}})
	h.mustTxn(put(key("K", "", "a"), "1"))
	h.mustTxn(put(key("K", "", "a"), "2"))
	live, _ := h.fsm.Watch(context.Background(), 0, WatchFilter{})
	expectEvents(t, live, "PUT K/a=2@2", "SYNC@2")

	// Entry 2 again, as raft would hand it over after a replay, but with
	// other contents: it must be skipped, not applied.
	data := mustEncode(t, logEntry{Command: commandTxn, Payload: []byte(`[{"type":"put","key":{"kind":"K","name":"a"},"value":"Ig=="}]`)})
	res := h.fsm.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: data}})
	if r := res[0].(*applyResult); r.Err != nil || r.Revision != 2 {
		t.Fatalf("re-applied entry: %+v", r)
	}
	if o, _ := h.fsm.Get(key("K", "", "a")); string(o.Value) != "2" || o.Revision != 2 {
		t.Fatalf("K/a is %q@%d after entry 2 came again", o.Value, o.Revision)
	}
	h.mustTxn(put(key("K", "", "b"), "3"))
	expectEvents(t, live, "PUT K/b=3@3")
	if fmt.Sprint(recorded) != "[1 2 3]" {
		t.Errorf("recorded %v, want [1 2 3]", recorded)
	}
}

// TestStaleAppliedRecordIsIgnored: an applied-index record without any
// raft state (a raft directory emptied by hand) belongs to a history that
// is gone: the node starts from nothing, and its record then follows the
// new history instead of holding it to an index it never applied.
func TestStaleAppliedRecordIsIgnored(t *testing.T) {
	c := newCluster(t, 1)
	cfg := c.config("n1")
	if err := os.MkdirAll(raftDir(cfg.DataDir), 0o700); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(raftDir(cfg.DataDir), appliedFileName)
	if err := os.WriteFile(record, encodeApplied(500), 0o600); err != nil {
		t.Fatal(err)
	}
	n := c.bootstrap("n1")
	if n.MinRevision() != 0 {
		t.Errorf("MinRevision %d with a record of another history, want 0", n.MinRevision())
	}
	for i := 0; i < 5; i++ {
		mustPut(t, n, Key{Kind: "K", Name: fmt.Sprint(i)}, "v")
	}
	rev := n.Revision()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	c.kill("n1")
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeApplied(b); err != nil || got != rev {
		t.Fatalf("record %d (%v) after writes up to %d", got, err, rev)
	}
	if n := c.restart("n1"); n.MinRevision() != rev || n.Revision() < rev || n.ReadReady() != nil {
		t.Errorf("restarted: MinRevision %d, Revision %d, ReadReady %v; want %d", n.MinRevision(), n.Revision(), n.ReadReady(), rev)
	}
}

// BenchmarkResume measures what a restart adds before raft starts: the
// state rebuilt from the local log (8,000 entries of 100-byte puts, no
// snapshot below the threshold), as Open does ("replay"), against what raft
// does on every start anyway: open the log and read every entry after the
// snapshot, looking for configuration changes ("scan").
func BenchmarkResume(b *testing.B) {
	const entries = 8000
	cfg := Config{NodeName: "n1", DataDir: b.TempDir(), Listen: "127.0.0.1:0", Voters: 1, Tuning: testTuning()}
	n, err := Open(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 100)
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < entries; i += 64 {
				if _, err := n.Txn(context.Background(), []Op{{Type: OpPut, Key: Key{Kind: "K", Name: fmt.Sprint(i)}, Value: value}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := n.Revision()
	if err := n.Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("scan", func(b *testing.B) {
		for range b.N {
			r := &Node{cfg: cfg.withDefaults(), log: slog.New(slog.DiscardHandler)}
			if err := r.openStores(); err != nil {
				b.Fatal(err)
			}
			last, _ := r.logs.LastIndex()
			for i := uint64(1); i <= last; i++ {
				var l raft.Log
				if err := r.logs.GetLog(i, &l); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			_ = r.logs.Close()
			b.StartTimer()
		}
	})
	b.Run("replay", func(b *testing.B) { benchReplay(b, cfg, want) })
}

func benchReplay(b *testing.B, cfg Config, want uint64) {
	var err error
	for range b.N {
		r := &Node{cfg: cfg.withDefaults(), log: slog.New(slog.DiscardHandler)}
		if r.fsm, err = newFSM(fsmOptions{RecordApplied: func(i uint64) { r.applied.record(i) }}); err != nil {
			b.Fatal(err)
		}
		if err := r.openStores(); err != nil {
			b.Fatal(err)
		}
		if err := r.resume(); err != nil {
			b.Fatal(err)
		}
		if r.fsm.Revision() < want {
			b.Fatalf("resumed at %d, want %d", r.fsm.Revision(), want)
		}
		b.StopTimer()
		_ = r.logs.Close()
		_ = r.applied.close()
		r.fsm.Close()
		b.StartTimer()
	}
}
