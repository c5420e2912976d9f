// Package storetest runs a real one-node datastore on loopback for the
// tests of the services built on the store (workloads, cluster commands,
// the resource API): raft, the FSM and the watch hub as in production,
// with tight timeouts so that it is the leader within a fraction of a
// second. It needs no root.
package storetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/weftnet/weft/store"
)

// Single opens a one-node store in a temporary directory with the given
// registry (nil: none) and closes it when the test ends.
func Single(t testing.TB, reg func(*store.Registry)) *store.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := store.Registry{Commands: map[string]store.CommandHandler{}, Validators: map[string][]store.Validator{}}
	if reg != nil {
		reg(&r)
	}
	log := slog.New(slog.DiscardHandler)
	st, err := store.Open(ctx, store.Config{
		NodeName: "unit",
		DataDir:  t.TempDir(),
		Listen:   "127.0.0.1:0",
		Voters:   1,
		Registry: r,
		Logger:   log,
		Tuning: store.Tuning{
			HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
			LeaderLeaseTimeout: 50 * time.Millisecond,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.WaitInSync(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}
