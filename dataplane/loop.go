package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxResyncPeriod bounds the periodic full resync (the contract:
// drift is repaired within at most 90 s).
const MaxResyncPeriod = 90 * time.Second

// LoopConfig configures a [Loop]. Zero values take the defaults.
type LoopConfig struct {
	Logger *slog.Logger
	// Registerer receives the loop's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Clock      Clock
	// ResyncPeriod is the period of the full resync, default and at most
	// [MaxResyncPeriod]. Each wait is jittered down by up to 20 % so nodes
	// started together do not resync together.
	ResyncPeriod time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failed
	// pass (defaults 100 ms and 10 s).
	RetryMin, RetryMax time.Duration
	// Jitter returns a number in [0,1); default math/rand/v2.Float64.
	Jitter func() float64
	// LogLevel, when set, is the level of the dataplane's logger (see
	// [LevelHandler]): the loop sets it from each new state's
	// Loop.LogLevel, and back to DefaultLogLevel when a state has none.
	LogLevel        *slog.LevelVar
	DefaultLogLevel slog.Level
}

// Loop applies desired states to the managers; see the package comment.
type Loop struct {
	cfg      LoopConfig
	log      *slog.Logger
	managers []Manager
	metrics  loopMetrics

	kick          chan struct{}
	requestResync atomic.Bool // someone called Resync
	synced        chan struct{}
	reports       *reports

	mu      sync.Mutex
	lastErr error

	// period is the resync period in force: the desired state's
	// Loop.ResyncPeriod, or the configured one. Loop goroutine only.
	period time.Duration
}

type loopMetrics struct {
	applySeconds  *prometheus.HistogramVec
	failures      *prometheus.CounterVec
	resyncs       *prometheus.CounterVec
	inSync        prometheus.Gauge
	watchRestarts *prometheus.CounterVec
}

// NewLoop builds a loop over managers, given in dependency order for the
// update phase (see [PhaseUpdate]).
func NewLoop(cfg LoopConfig, managers ...Manager) (*Loop, error) {
	if cfg.ResyncPeriod == 0 {
		cfg.ResyncPeriod = MaxResyncPeriod
	}
	if cfg.ResyncPeriod < 0 || cfg.ResyncPeriod > MaxResyncPeriod {
		return nil, fmt.Errorf("resync period %s: want 0 < period <= %s", cfg.ResyncPeriod, MaxResyncPeriod)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(10*time.Second, cfg.RetryMin)
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	names := map[string]bool{}
	for _, m := range managers {
		if names[m.Name()] {
			return nil, fmt.Errorf("two managers named %q", m.Name())
		}
		names[m.Name()] = true
	}
	l := &Loop{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "dataplane"),
		managers: managers,
		kick:     make(chan struct{}, 1),
		synced:   make(chan struct{}),
		reports:  newReports(),
		period:   cfg.ResyncPeriod,
	}
	if err := l.registerMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Loop) registerMetrics(reg prometheus.Registerer) error {
	l.metrics = loopMetrics{
		applySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_dataplane_apply_seconds",
			Help:    "Time one manager took to apply a pass (both phases).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"manager"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_dataplane_apply_failures_total",
			Help: "Apply passes in which a manager reported an error.",
		}, []string{"manager"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_dataplane_resyncs_total",
			Help: "Full resyncs of the dataplane by reason (start, periodic, request).",
		}, []string{"reason"}),
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_dataplane_in_sync",
			Help: "1 when the last apply pass succeeded, 0 while items are pending retry.",
		}),
		watchRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_dataplane_watch_restarts_total",
			Help: "Kernel event subscriptions that failed and were restarted (each forces that manager to resync).",
		}, []string{"manager"}),
	}
	if reg == nil {
		return nil
	}
	cs := []prometheus.Collector{l.metrics.applySeconds, l.metrics.failures, l.metrics.resyncs, l.metrics.inSync, l.metrics.watchRestarts}
	for _, m := range l.managers {
		if wc, ok := m.(WriteCounter); ok {
			cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "weft_dataplane_kernel_writes_total",
				Help:        "Kernel changes made by a manager.",
				ConstLabels: prometheus.Labels{"manager": m.Name()},
			}, func() float64 { return float64(wc.KernelWrites()) }))
		}
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register dataplane metrics: %w", err)
		}
	}
	return nil
}

// Resync asks for a full resync and apply as soon as possible. Safe from
// any goroutine.
func (l *Loop) Resync() {
	l.requestResync.Store(true)
	l.wake()
}

func (l *Loop) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Synced is closed when the first apply pass has finished (successfully or
// not): the dataplane has adopted the kernel state and programmed the first
// desired state.
func (l *Loop) Synced() <-chan struct{} { return l.synced }

// LatestReport implements [Reports]: the report of the last pass.
func (l *Loop) LatestReport() (*Report, <-chan struct{}) { return l.reports.latest() }

// LastError is the error of the last apply pass, nil if it succeeded.
func (l *Loop) LastError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

// Run applies desired states from updates until ctx ends. Nothing is
// written to the kernel before the first state arrives: send it only once
// the store is in sync. Updates that arrive while a pass runs are coalesced
// to the latest; a closed updates channel keeps the last state applied.
// States are not validated here: the calculation validates them once, at
// its boundary, and hands over only valid ones. After every pass (and when
// only the revision of an equal state advanced) a [Report] is published.
func (l *Loop) Run(ctx context.Context, updates <-chan Desired) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, m := range l.managers {
		if w, ok := m.(Watcher); ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.runWatcher(ctx, m.Name(), w)
			}()
		}
	}

	var (
		current    *Desired
		needsApply bool
		firstPass  = true
		backoff    time.Duration
		retry      Timer
		resync     = l.cfg.Clock.NewTimer(l.nextResync())
	)
	defer func() {
		resync.Stop()
		if retry != nil {
			retry.Stop()
		}
	}()
	retryC := func() <-chan time.Time {
		if retry == nil {
			return nil
		}
		return retry.C()
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			// Coalesce: only the newest pending state matters.
			for drained := false; !drained; {
				select {
				case next, ok := <-updates:
					if !ok {
						updates, drained = nil, true
						continue
					}
					d = next
				default:
					drained = true
				}
			}
			if current != nil && current.Equal(&d) {
				if d.Revision > current.Revision {
					// Nothing to apply, but whoever waits for this
					// revision learns that the dataplane has it.
					current.Revision = d.Revision
					l.republish(current)
				}
				continue
			}
			current = &d
			if l.applySettings(current.Loop) {
				resync.Stop()
				resync = l.cfg.Clock.NewTimer(l.nextResync())
			}
			for _, m := range l.managers {
				m.Set(current)
			}
			needsApply = true
		case <-l.kick:
			needsApply = true
		case <-resync.C():
			resync = l.cfg.Clock.NewTimer(l.nextResync())
			if current != nil {
				l.queueResync("periodic")
				needsApply = true
			}
		case <-retryC():
			retry = nil
			needsApply = true
		}

		if current == nil || !needsApply {
			continue
		}
		if l.requestResync.Swap(false) {
			l.queueResync("request")
		}
		if firstPass {
			// Managers resync on their first Apply anyway; count it.
			l.metrics.resyncs.WithLabelValues("start").Inc()
		}
		start := l.cfg.Clock.Now()
		err := l.applyPass(ctx)
		l.log.Debug("dataplane pass applied", "took", l.cfg.Clock.Now().Sub(start), "err", err)
		l.publishPass(current, err)
		needsApply = false
		l.mu.Lock()
		l.lastErr = err
		l.mu.Unlock()
		if firstPass {
			firstPass = false
			close(l.synced)
		}
		if retry != nil {
			retry.Stop()
			retry = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, l.cfg.RetryMin), l.cfg.RetryMax)
			l.log.Warn("dataplane apply failed; retrying", "err", err, "retry_in", backoff)
			retry = l.cfg.Clock.NewTimer(backoff)
			l.metrics.inSync.Set(0)
		} else {
			backoff = 0
			l.metrics.inSync.Set(1)
		}
	}
}

// publishPass publishes the report of a pass that applied d.
func (l *Loop) publishPass(d *Desired, err error) {
	problems := map[string]error{}
	for _, m := range l.managers {
		wr, ok := m.(WorkloadReporter)
		if !ok {
			continue
		}
		for iface, perr := range wr.WorkloadProblems() {
			problems[iface] = errors.Join(problems[iface], perr)
		}
	}
	// The report must not share the state the loop goes on using: the
	// revision of current may advance (republish).
	applied := *d
	l.reports.publish(Report{Revision: d.Revision, PassRevision: d.Revision, Applied: &applied, Problems: problems, Err: err})
}

// republish publishes the last report again with d's newer revision.
func (l *Loop) republish(d *Desired) {
	last, _ := l.reports.latest()
	if last.Applied == nil {
		return // no pass yet: the first pass reports it
	}
	next := *last
	applied := *last.Applied
	applied.Revision = d.Revision
	next.Applied, next.Revision = &applied, d.Revision
	l.reports.publish(next)
}

func (l *Loop) queueResync(reason string) {
	l.metrics.resyncs.WithLabelValues(reason).Inc()
	for _, m := range l.managers {
		m.QueueResync()
	}
}

// nextResync is the jittered wait before the next periodic resync, in
// [0.8, 1.0] × the period.
func (l *Loop) nextResync() time.Duration {
	return l.period - time.Duration(0.2*l.cfg.Jitter()*float64(l.period))
}

// applySettings takes the loop settings of a new state: the log level at
// once, and the resync period, reporting whether it changed (the caller
// restarts the resync timer). States are valid (validated by the
// calculation), so the level parses.
func (l *Loop) applySettings(s LoopSettings) (periodChanged bool) {
	// The changes are logged while the lower of the old and new levels is
	// in force, at Info or that level: the lines get out either way.
	noteLevel, final := slog.LevelInfo, slog.Level(0)
	levelChanged := false
	if l.cfg.LogLevel != nil {
		final = l.cfg.DefaultLogLevel
		if lv, err := s.Level(); err == nil && lv != nil {
			final = *lv
		}
		old := l.cfg.LogLevel.Level()
		levelChanged = old != final
		l.cfg.LogLevel.Set(min(old, final))
		noteLevel = max(min(old, final), slog.LevelInfo)
	}
	ctx := context.Background()
	if levelChanged {
		l.log.Log(ctx, noteLevel, "dataplane log level", "level", final)
	}
	period := l.cfg.ResyncPeriod
	if s.ResyncPeriod > 0 && s.ResyncPeriod <= MaxResyncPeriod {
		period = s.ResyncPeriod
	}
	if period != l.period {
		l.log.Log(ctx, noteLevel, "dataplane resync period", "period", period)
		l.period = period
		periodChanged = true
	}
	if l.cfg.LogLevel != nil {
		l.cfg.LogLevel.Set(final)
	}
	return periodChanged
}

// applyPass runs the update phase in order and the removal phase in
// reverse order, continuing past failures.
func (l *Loop) applyPass(ctx context.Context) error {
	var errs []error
	spent := make([]time.Duration, len(l.managers))
	failed := make([]bool, len(l.managers))
	run := func(i int, phase Phase) {
		m := l.managers[i]
		start := l.cfg.Clock.Now()
		err := m.Apply(ctx, phase)
		spent[i] += l.cfg.Clock.Now().Sub(start)
		if err != nil {
			failed[i] = true
			errs = append(errs, fmt.Errorf("%s (%s): %w", m.Name(), phase, err))
		}
	}
	for i := range l.managers {
		run(i, PhaseUpdate)
	}
	for i := len(l.managers) - 1; i >= 0; i-- {
		run(i, PhaseRemove)
	}
	for i, m := range l.managers {
		l.metrics.applySeconds.WithLabelValues(m.Name()).Observe(spent[i].Seconds())
		if failed[i] {
			l.metrics.failures.WithLabelValues(m.Name()).Inc()
		}
	}
	return errors.Join(errs...)
}

// runWatcher keeps one manager's watch running, restarting it after a
// failure (a missed event is covered by the resync the restart asks for).
func (l *Loop) runWatcher(ctx context.Context, name string, w Watcher) {
	backoff := l.cfg.RetryMin
	// The manager records what its events require (it has to: only it
	// knows); the kick just gets a pass run soon.
	kick := l.wake
	for {
		started := l.cfg.Clock.Now()
		err := w.Watch(ctx, kick)
		if ctx.Err() != nil {
			return
		}
		if l.cfg.Clock.Now().Sub(started) > l.cfg.RetryMax {
			backoff = l.cfg.RetryMin
		}
		l.log.Warn("dataplane watch stopped; restarting", "manager", name, "err", err, "retry_in", backoff)
		l.metrics.watchRestarts.WithLabelValues(name).Inc()
		kick()
		t := l.cfg.Clock.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		backoff = min(2*backoff, l.cfg.RetryMax)
	}
}
