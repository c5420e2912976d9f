package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"
)

// next receives one event or fails after a deadline.
func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return Event{}
}

func expectClosed(t *testing.T, ch <-chan Event, maxEvents int) int {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for n := 0; ; n++ {
		select {
		case _, ok := <-ch:
			if !ok {
				return n
			}
			if n > maxEvents {
				t.Fatalf("more than %d events and still open", maxEvents)
			}
		case <-deadline:
			t.Fatal("watch not closed within 5s")
		}
	}
}

func summary(ev Event) string {
	if ev.Type == EventSync || ev.Type == EventReset {
		return fmt.Sprintf("%s@%d", ev.Type, ev.Revision)
	}
	return fmt.Sprintf("%s %s=%s@%d", ev.Type, ev.Object.Key, ev.Object.Value, ev.Revision)
}

func expectEvents(t *testing.T, ch <-chan Event, want ...string) {
	t.Helper()
	for i, w := range want {
		if got := summary(next(t, ch)); got != w {
			t.Fatalf("event %d = %q, want %q", i, got, w)
		}
	}
}

func TestWatchListingThenChanges(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	h.mustTxn(put(key("IPPool", "", "b"), "1"), put(key("IPPool", "", "a"), "2"))            // rev 1
	h.mustTxn(put(key("NetworkPolicy", "x", "p"), "3"), put(key("_Cluster", "", "ca"), "k")) // rev 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	all, _ := h.fsm.Watch(ctx, 0, WatchFilter{})
	pools, _ := h.fsm.Watch(ctx, 0, WatchFilter{Kinds: []string{"IPPool"}})
	secret, _ := h.fsm.Watch(ctx, 0, WatchFilter{Kinds: []string{"_Cluster"}})
	named, _ := h.fsm.Watch(ctx, 0, WatchFilter{Namespace: "x", Name: "p"})

	expectEvents(t, all, "PUT IPPool/a=2@2", "PUT IPPool/b=1@2", "PUT NetworkPolicy/x/p=3@2", "SYNC@2")
	expectEvents(t, pools, "PUT IPPool/a=2@2", "PUT IPPool/b=1@2", "SYNC@2")
	expectEvents(t, secret, "PUT _Cluster/ca=k@2", "SYNC@2")
	expectEvents(t, named, "PUT NetworkPolicy/x/p=3@2", "SYNC@2")

	h.mustTxn(Op{Type: OpDelete, Key: key("IPPool", "", "a")}) // rev 3
	h.mustTxn(put(key("NetworkPolicy", "x", "p"), "4"))        // rev 4
	expectEvents(t, all, "DELETE IPPool/a=2@3", "PUT NetworkPolicy/x/p=4@4")
	expectEvents(t, pools, "DELETE IPPool/a=2@3")
	expectEvents(t, named, "PUT NetworkPolicy/x/p=4@4")
}

func TestWatchResume(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	for i := 1; i <= 5; i++ {
		h.mustTxn(put(key("K", "", "k"), fmt.Sprint(i)))
	}
	ch, _ := h.fsm.Watch(context.Background(), 3, WatchFilter{})
	expectEvents(t, ch, "PUT K/k=4@4", "PUT K/k=5@5")
	h.mustTxn(put(key("K", "", "k"), "6"))
	expectEvents(t, ch, "PUT K/k=6@6")

	// A revision ahead of this replica waits for it.
	ahead, _ := h.fsm.Watch(context.Background(), 7, WatchFilter{})
	h.mustTxn(put(key("K", "", "k"), "7"))
	h.mustTxn(put(key("K", "", "k"), "8"))
	expectEvents(t, ahead, "PUT K/k=8@8")
}

func TestWatchResetAfterTrimmedHistory(t *testing.T) {
	h := newHarness(t, fsmOptions{HistorySize: 4})
	for i := 1; i <= 10; i++ {
		h.mustTxn(put(key("K", "", fmt.Sprint(i%2)), fmt.Sprint(i)))
	}
	// Revisions 7..10 are kept: resuming from 6 works, from 5 does not.
	ok, _ := h.fsm.Watch(context.Background(), 6, WatchFilter{})
	expectEvents(t, ok, "PUT K/1=7@7", "PUT K/0=8@8", "PUT K/1=9@9", "PUT K/0=10@10")
	old, _ := h.fsm.Watch(context.Background(), 5, WatchFilter{})
	expectEvents(t, old, "RESET@10", "PUT K/0=10@10", "PUT K/1=9@10", "SYNC@10")
	h.mustTxn(put(key("K", "", "2"), "11"))
	expectEvents(t, old, "PUT K/2=11@11")
}

func TestWatchResetAfterRestore(t *testing.T) {
	src := newHarness(t, fsmOptions{})
	src.mustTxn(put(key("K", "", "from-snapshot"), "s"))
	for i := 0; i < 20; i++ {
		src.mustTxn(put(key("K", "", "n"), fmt.Sprint(i)))
	}
	data := snapshotBytes(t, src.fsm) // revision 21

	h := newHarness(t, fsmOptions{})
	h.mustTxn(put(key("K", "", "local"), "l"))
	live, _ := h.fsm.Watch(context.Background(), 0, WatchFilter{})
	expectEvents(t, live, "PUT K/local=l@1", "SYNC@1")
	if err := h.fsm.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, live, "RESET@21", "PUT K/from-snapshot=s@21", "PUT K/n=19@21", "SYNC@21")
	h.index = 21
	h.mustTxn(put(key("K", "", "after"), "a"))
	expectEvents(t, live, "PUT K/after=a@22")

	// Resuming from before the restore gets RESET too.
	resumed, _ := h.fsm.Watch(context.Background(), 1, WatchFilter{})
	expectEvents(t, resumed, "RESET@22")
}

func TestSlowWatcherIsClosedWithoutBlockingApply(t *testing.T) {
	h := newHarness(t, fsmOptions{HistorySize: 50, WatchBuffer: 4})
	slow, _ := h.fsm.Watch(context.Background(), 0, WatchFilter{})
	fast, _ := h.fsm.Watch(context.Background(), 0, WatchFilter{})
	seen := make(chan int, 1000)
	go func() {
		n := 0
		for ev := range fast {
			if ev.Type == EventPut {
				n++
				seen <- n
			}
		}
	}()
	start := time.Now()
	for i := 1; i <= 500; i++ {
		h.mustTxn(put(key("K", "", fmt.Sprint(i)), "v"))
		if i%20 == 0 {
			// Let the fast consumer catch up, so only the slow one lags.
			for n := 0; n < i; {
				select {
				case n = <-seen:
				case <-time.After(5 * time.Second):
					t.Fatal("fast watcher stalled")
				}
			}
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("applies took %v: a slow watcher blocked them", d)
	}
	n := expectClosed(t, slow, 4+256+1)
	if n >= 500 {
		t.Fatalf("slow watcher got all %d events: never closed", n)
	}
}

func TestWatchEndsWithContextAndClose(t *testing.T) {
	h := newHarness(t, fsmOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	ch, _ := h.fsm.Watch(ctx, 0, WatchFilter{})
	expectEvents(t, ch, "SYNC@0")
	cancel()
	expectClosed(t, ch, 0)

	ch2, _ := h.fsm.Watch(context.Background(), 0, WatchFilter{})
	expectEvents(t, ch2, "SYNC@0")
	h.fsm.Close()
	expectClosed(t, ch2, 0)

	if _, err := h.fsm.Watch(context.Background(), 0, WatchFilter{Kinds: []string{""}}); err == nil {
		t.Error("empty kind accepted")
	}
}

// bigTxn puts n objects named <prefix>-<i> in one entry.
func bigTxn(h *harness, prefix string, n int) {
	h.t.Helper()
	ops := make([]Op, n)
	for i := range ops {
		ops[i] = put(key("K", "", fmt.Sprintf("%s-%03d", prefix, i)), "v")
	}
	h.mustTxn(ops...)
}

// TestWatchDeliversWholeEntries: an entry with more events than a watcher
// takes from the history at a time still reaches it whole.
func TestWatchDeliversWholeEntries(t *testing.T) {
	h := newHarness(t, fsmOptions{HistorySize: 2000})
	ch, _ := h.fsm.Watch(context.Background(), 0, WatchFilter{})
	expectEvents(t, ch, "SYNC@0")
	bigTxn(h, "a", 300) // rev 1
	bigTxn(h, "b", 300) // rev 2
	h.mustTxn(put(key("K", "", "c"), "v"))
	got := map[uint64]int{}
	for got[3] == 0 {
		got[next(t, ch).Revision]++
	}
	if got[1] != 300 || got[2] != 300 || got[3] != 1 {
		t.Fatalf("events per revision %v, want 300, 300 and 1", got)
	}
}

// TestLaggingWatcherIsClosedBetweenEntries: a watcher closed for falling
// behind has delivered every event of the last revision it delivered, so
// resuming from that revision (as consumers do) loses nothing.
func TestLaggingWatcherIsClosedBetweenEntries(t *testing.T) {
	const entries, perEntry = 5, 300
	h := newHarness(t, fsmOptions{HistorySize: 700, WatchBuffer: 4})
	ch, _ := h.fsm.Watch(context.Background(), 0, WatchFilter{})
	for i := 0; i < entries; i++ { // nobody reads meanwhile
		bigTxn(h, fmt.Sprint(i), perEntry)
	}
	seen := map[string]bool{}
	var last uint64
	count := map[uint64]int{}
	deadline := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case ev, ok := <-ch:
			if !ok {
				open = false
				break
			}
			if ev.Type == EventPut {
				count[ev.Revision]++
				seen[ev.Object.Name] = true
				last = ev.Revision
			}
		case <-deadline:
			t.Fatal("the lagging watcher was not closed")
		}
	}
	if last == 0 || last == entries {
		t.Fatalf("the watcher delivered up to revision %d: it never lagged", last)
	}
	for rev, n := range count {
		if n != perEntry {
			t.Errorf("revision %d: %d of its %d events delivered before the close", rev, n, perEntry)
		}
	}
	// Resume the way consumers do: from the last revision seen. Either
	// the rest follows, or (history trimmed) RESET and a full listing.
	resumed, _ := h.fsm.Watch(context.Background(), last, WatchFilter{})
	first := next(t, resumed)
	if first.Type == EventReset {
		listed := 0
		for ev := next(t, resumed); ev.Type != EventSync; ev = next(t, resumed) {
			listed++
		}
		if listed != entries*perEntry {
			t.Fatalf("listing after RESET: %d objects, want %d", listed, entries*perEntry)
		}
		return
	}
	seen[first.Object.Name] = true
	for len(seen) < entries*perEntry {
		seen[next(t, resumed).Object.Name] = true
	}
}
