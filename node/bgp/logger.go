package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// peerEvent is something gobgp said about one peer in its log that the
// speaker acts on: gobgp exposes no other signal for these.
type peerEvent struct {
	peer netip.Addr
	kind peerEventKind
	// text is the log line, for the peer's INFO column.
	text string
}

type peerEventKind int

const (
	// evHoldTimerExpired: the peer went silent. With graceful restart
	// negotiated, gobgp would keep its routes as stale for the restart
	// time (it treats a hold-timer expiry like a closed connection,
	// osrg/gobgp#2174); the speaker drops them instead.
	evHoldTimerExpired peerEventKind = iota + 1
	// evRestartTimerExpired: a restarting peer did not come back in time.
	evRestartTimerExpired
	// evPrefixLimit: the peer sent more prefixes than its limit.
	evPrefixLimit
	// evProblem: any other warning about the peer (its last error).
	evProblem
)

// logger adapts gobgp's logger to slog and turns the log lines the speaker
// acts on into peerEvents. Its methods are called from gobgp's goroutines,
// some holding gobgp's locks: they must never call back into the server,
// only hand the event on.
type logger struct {
	log   *slog.Logger
	level atomic.Uint32 // gobgplog.LogLevel
	event func(peerEvent)
}

func newLogger(log *slog.Logger, event func(peerEvent)) *logger {
	l := &logger{log: log, event: event}
	l.level.Store(uint32(gobgplog.InfoLevel))
	return l
}

func (l *logger) Panic(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logger) Fatal(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logger) Error(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logger) Warn(msg string, f gobgplog.Fields)  { l.emit(slog.LevelWarn, msg, f) }
func (l *logger) Info(msg string, f gobgplog.Fields)  { l.emit(slog.LevelInfo, msg, f) }
func (l *logger) Debug(msg string, f gobgplog.Fields) { l.emit(slog.LevelDebug, msg, f) }

func (l *logger) SetLevel(level gobgplog.LogLevel) { l.level.Store(uint32(level)) }
func (l *logger) GetLevel() gobgplog.LogLevel      { return gobgplog.LogLevel(l.level.Load()) }

// setSeverity applies BGPConfiguration logSeverityScreen.
func (l *logger) setSeverity(s string) {
	lv := gobgplog.InfoLevel
	switch s {
	case "trace":
		lv = gobgplog.TraceLevel
	case "debug":
		lv = gobgplog.DebugLevel
	case "warning":
		lv = gobgplog.WarnLevel
	case "error", "fatal":
		lv = gobgplog.ErrorLevel
	}
	l.SetLevel(lv)
}

func (l *logger) emit(level slog.Level, msg string, f gobgplog.Fields) {
	if level >= slog.LevelWarn {
		l.watch(msg, f)
	}
	if gobgpLevel(level) > l.GetLevel() || !l.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, 2*len(f))
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == gobgplog.FieldFacility {
			continue
		}
		attrs = append(attrs, k, fmt.Sprint(f[k]))
	}
	l.log.Log(context.Background(), level, "gobgp: "+msg, attrs...)
}

func gobgpLevel(l slog.Level) gobgplog.LogLevel {
	switch {
	case l >= slog.LevelError:
		return gobgplog.ErrorLevel
	case l >= slog.LevelWarn:
		return gobgplog.WarnLevel
	case l >= slog.LevelInfo:
		return gobgplog.InfoLevel
	}
	return gobgplog.DebugLevel
}

// watch recognises the warnings the speaker acts on. The messages are
// gobgp v3's (pkg/server/fsm.go, peer.go); speaker_test.go pins them.
func (l *logger) watch(msg string, f gobgplog.Fields) {
	key, _ := f["Key"].(string)
	peer, err := netip.ParseAddr(key)
	if err != nil || l.event == nil {
		return
	}
	ev := peerEvent{peer: peer.Unmap(), kind: evProblem, text: msg}
	switch msg {
	case "hold timer expired":
		ev.kind = evHoldTimerExpired
	case "graceful restart timer expired":
		ev.kind = evRestartTimerExpired
	case "prefix limit reached":
		if _, early := f["Pct"]; early {
			return // the warning threshold, not the limit
		}
		ev.kind = evPrefixLimit
	case "received notification", "sent notification":
		ev.text = fmt.Sprintf("%s (code %v, subcode %v)", msg, f["Code"], f["Subcode"])
		if r, ok := f["Communicated-Reason"].(string); ok && r != "" {
			ev.text += ": " + r
		}
	}
	l.event(ev)
}
