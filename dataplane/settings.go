package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// LoopSettings are the desired settings of the apply loop itself
// (FelixConfiguration routeRefreshInterval and logSeverityScreen): part of
// [Desired] like everything the dataplane needs, so they take effect live.
type LoopSettings struct {
	// ResyncPeriod is the period of the full resync; 0 means the loop's
	// configured period. At most [MaxResyncPeriod].
	ResyncPeriod time.Duration
	// LogLevel is the dataplane's log level ("debug", "info", "warn",
	// "error"); "" means the agent's.
	LogLevel string
}

// Validate checks the settings.
func (s LoopSettings) Validate() error {
	var errs []error
	if s.ResyncPeriod < 0 || s.ResyncPeriod > MaxResyncPeriod {
		errs = append(errs, fmt.Errorf("resync period %s: want 0 < period <= %s", s.ResyncPeriod, MaxResyncPeriod))
	}
	if _, err := s.Level(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("loop settings: %w", err)
	}
	return nil
}

// Level parses LogLevel; nil when it is "".
func (s LoopSettings) Level() (*slog.Level, error) {
	if s.LogLevel == "" {
		return nil, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", s.LogLevel, err)
	}
	return &l, nil
}

// LevelHandler wraps h so that records are let through by level's current
// value rather than h's own level: the dataplane's log level can then be
// raised or lowered while the agent runs, also below the agent's level.
// h's Handle must not filter by level itself (slog's text and JSON handlers
// do not: their Logger asks Enabled first).
func LevelHandler(h slog.Handler, level slog.Leveler) slog.Handler {
	return &levelHandler{inner: h, level: level}
}

type levelHandler struct {
	inner slog.Handler
	level slog.Leveler
}

func (h *levelHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *levelHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.inner.Handle(ctx, r)
}

func (h *levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &levelHandler{inner: h.inner.WithAttrs(as), level: h.level}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{inner: h.inner.WithGroup(name), level: h.level}
}
