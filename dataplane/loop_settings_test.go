package dataplane

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// TestLoopTakesItsResyncPeriodFromTheState: a state's Loop.ResyncPeriod
// replaces the configured period at once (the timer restarts), and a
// state without one returns to the configured period.
func TestLoopTakesItsResyncPeriodFromTheState(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	h := newHarness(t, 60*time.Second, asManagers(managers(rec, "a"))...)
	d := someDesired(1)
	d.Loop.ResyncPeriod = 10 * time.Second
	h.box.Send(d)
	rec.waitPass(t)
	rec.take()
	// Jitter 0.5 → 10 s − 0.5 × 20 % = 9 s.
	h.clock.waitTimer(t, 9*time.Second)
	h.clock.Advance(9 * time.Second)
	rec.waitPass(t)
	if got := rec.take(); !slices.Contains(got, "a:resync") {
		t.Errorf("the 9 s timer did not resync: %v", got)
	}
	d2 := someDesired(2) // no period: back to 60 s
	h.box.Send(d2)
	rec.waitPass(t)
	h.clock.waitTimer(t, 54*time.Second)
}

// TestLoopSetsTheLogLevelFromTheState: Loop.LogLevel sets the level the
// dataplane logs at; a state without one goes back to the default.
func TestLoopSetsTheLogLevelFromTheState(t *testing.T) {
	rec := &recorder{passes: make(chan struct{}, 16)}
	var level slog.LevelVar
	loop, err := NewLoop(LoopConfig{LogLevel: &level, DefaultLogLevel: slog.LevelWarn}, &fakeManager{name: "a", rec: rec, last: true})
	if err != nil {
		t.Fatal(err)
	}
	box := NewMailbox()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx, box.C()) }()
	t.Cleanup(func() { cancel(); <-done })
	d := someDesired(1)
	d.Loop.LogLevel = "debug"
	box.Send(d)
	rec.waitPass(t)
	if level.Level() != slog.LevelDebug {
		t.Errorf("level %s, want debug", level.Level())
	}
	box.Send(someDesired(2))
	rec.waitPass(t)
	if level.Level() != slog.LevelWarn {
		t.Errorf("level %s, want the default warn", level.Level())
	}
}
