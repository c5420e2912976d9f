// Package calcrun runs the calculation: it watches the store, feeds the
// changes to the calc dispatcher, and hands each new desired state to the
// dataplane loop (through a mailbox that keeps only the latest) and each
// new tunnel need to the tunnel controller.
//
// # Local inputs
//
// What the node observes of itself (its links, its kernel's IP-in-IP
// support; later the routes its BGP speaker learns) reaches the
// calculation through [Runner.SetLocal], from any goroutine: the runner
// applies it on its own goroutine, in order with the store's changes, and
// publishes the new state (once the store listing is complete).
//
// # Never less than what was applied
//
// The runner records, in the data directory, the store revision of the
// last state the dataplane applied (from the loop's reports). After a
// restart it publishes nothing computed from a replica older than that:
// a node restarted without quorum, whose replica is less complete than
// what its kernel holds, keeps forwarding with its kernel state instead of
// tearing down what the replica does not know yet (SPEC §5).
package calcrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/store"
)

// Sink takes the desired dataplane states (the loop's mailbox).
type Sink interface{ Send(dataplane.Desired) }

// TunnelSink takes tunnel needs (the tunnel controller).
type TunnelSink interface{ Set(calc.TunnelNeeds) }

// Config configures a runner.
type Config struct {
	Logger *slog.Logger
	// Registerer receives the runner's metrics; nil registers none.
	Registerer prometheus.Registerer
	// StateDir holds the applied-revision mark; "" keeps none.
	StateDir string
}

// Runner is the calculation's goroutine.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	st      store.Store
	disp    *calc.Dispatcher
	sink    Sink
	tunnels TunnelSink

	synced       atomic.Bool
	lastProblems atomic.Value // []string

	// Local inputs waiting for the runner's goroutine: the latest value
	// of each key, and a kick.
	localMu      sync.Mutex
	localPending map[store.Key]calc.LocalInput
	localKick    chan struct{}

	floor     uint64 // the applied-revision mark found at start
	waiting   bool   // a state was held back because of floor
	last      calc.Output
	published bool

	problems prometheus.Gauge
	held     prometheus.Gauge
}

// New returns a runner.
func New(cfg Config, st store.Store, disp *calc.Dispatcher, sink Sink, tunnels TunnelSink) (*Runner, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{
		cfg: cfg, log: cfg.Logger.With("component", "calc"), st: st, disp: disp, sink: sink, tunnels: tunnels,
		localPending: map[store.Key]calc.LocalInput{}, localKick: make(chan struct{}, 1),
		problems: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_calc_problems",
			Help: "Objects or items the calculation had to leave out of this node's desired state (see the agent's log and `weft node status`).",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_calc_held_back",
			Help: "1 while the local replica is older than the state the dataplane last applied, so the kernel state is kept as it is.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.problems, r.held} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register calc metrics: %w", err)
			}
		}
	}
	floor, err := readMark(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	r.floor = floor
	r.lastProblems.Store([]string(nil))
	return r, nil
}

// Synced reports whether the runner has seen a complete listing of the
// store (and so may publish).
func (r *Runner) Synced() bool { return r.synced.Load() }

// Problems are the problems of the last computation.
func (r *Runner) Problems() []string { return slices.Clone(r.lastProblems.Load().([]string)) }

// SetLocal hands the calculation a local input (calc.LocalInput). It never
// blocks and may be called from any goroutine, also before Run; of several
// values of one input not yet taken only the latest counts.
func (r *Runner) SetLocal(in calc.LocalInput) {
	r.localMu.Lock()
	r.localPending[in.Key()] = in
	r.localMu.Unlock()
	select {
	case r.localKick <- struct{}{}:
	default:
	}
}

// takeLocal applies the pending local inputs; it reports whether there
// were any.
func (r *Runner) takeLocal() bool {
	r.localMu.Lock()
	pending := r.localPending
	r.localPending = map[store.Key]calc.LocalInput{}
	r.localMu.Unlock()
	for _, k := range slices.SortedFunc(maps.Keys(pending), func(a, b store.Key) int { return strings.Compare(a.String(), b.String()) }) {
		if err := r.disp.OnLocal(pending[k]); err != nil {
			r.log.Error("local input refused", "err", err)
		}
	}
	return len(pending) > 0
}

// Run watches the store and publishes until ctx ends. It resumes after a
// watch ends (a slow consumer is cut off by the store) from the last
// revision it saw.
func (r *Runner) Run(ctx context.Context) {
	var rev uint64
	for ctx.Err() == nil {
		events, err := r.st.Watch(ctx, rev, store.WatchFilter{Kinds: r.disp.Kinds()})
		if err != nil {
			r.log.Warn("watch failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		r.consume(events, &rev)
	}
}

// consume feeds a watch's events and the local inputs to the calculation
// until the channel closes, publishing after each batch of changes, but
// only a complete state: after a RESET the listing that follows is partial
// until its SYNC, and a partial state would tear down the workloads not
// yet listed.
func (r *Runner) consume(events <-chan store.Event, rev *uint64) {
	r.takeLocal()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			r.apply(ev, rev)
			// Coalesce: take everything already queued before computing.
			r.drain(events, rev)
			r.takeLocal()
		case <-r.localKick:
			if !r.takeLocal() {
				continue
			}
		}
		if r.synced.Load() {
			r.publish(*rev)
		}
	}
}

func (r *Runner) apply(ev store.Event, rev *uint64) {
	*rev = ev.Revision
	switch ev.Type {
	case store.EventReset:
		r.disp.Reset()
		r.synced.Store(false)
	case store.EventSync:
		r.synced.Store(true)
	case store.EventPut, store.EventDelete:
		r.disp.OnEvent(ev)
	}
}

func (r *Runner) drain(events <-chan store.Event, rev *uint64) {
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			r.apply(ev, rev)
		default:
			return
		}
	}
}

// publish computes the output at rev and hands on what changed.
func (r *Runner) publish(rev uint64) {
	if rev < r.floor {
		if !r.waiting {
			r.waiting = true
			r.held.Set(1)
			r.log.Warn("the local replica is older than the state the dataplane last applied; keeping the kernel state until it catches up",
				"replica_revision", rev, "applied_revision", r.floor)
		}
		return
	}
	if r.waiting {
		r.waiting = false
		r.held.Set(0)
		r.log.Info("the local replica has caught up with the applied state", "revision", rev)
	}
	out, err := r.disp.Compute(rev)
	if err != nil {
		r.log.Error("keeping the last desired state", "err", err)
		return
	}
	if !slices.Equal(out.Problems, r.last.Problems) {
		for _, p := range out.Problems {
			if !slices.Contains(r.last.Problems, p) {
				r.log.Warn("left out of the desired state", "problem", p)
			}
		}
		r.problems.Set(float64(len(out.Problems)))
	}
	r.lastProblems.Store(slices.Clone(out.Problems))
	if !r.published || out.Tunnels != r.last.Tunnels {
		r.tunnels.Set(out.Tunnels)
	}
	// Sent even when equal to the last state: the loop then only advances
	// the revision it reports, which is what a writer waiting for its
	// write watches.
	r.sink.Send(out.Desired)
	r.last, r.published = out, true
}

// markFile is the applied-revision mark in the state directory.
const markFile = "dataplane-applied-revision"

// RecordApplied keeps the applied-revision mark up to date from the loop's
// reports until ctx ends: the revision of the last state a pass applied
// completely. It writes the file (replaced atomically) only when that
// grows, which is when the kernel state changed; no fsync is needed: after
// a power loss the kernel state is gone too.
func (r *Runner) RecordApplied(ctx context.Context, reports dataplane.Reports) {
	if r.cfg.StateDir == "" {
		return
	}
	written := r.floor
	for {
		rep, changed := reports.LatestReport()
		if rep.Applied != nil && rep.Err == nil && rep.PassRevision > written {
			if err := writeMark(r.cfg.StateDir, rep.PassRevision); err != nil {
				r.log.Warn("recording the applied revision", "err", err)
			} else {
				written = rep.PassRevision
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func readMark(dir string) (uint64, error) {
	if dir == "" {
		return 0, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, markFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the applied-revision mark: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		// A torn or foreign file: ignore it rather than refuse to start.
		return 0, nil
	}
	return n, nil
}

func writeMark(dir string, rev uint64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(dir, markFile+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(rev, 10)+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, markFile))
}

// RemoveMark deletes the applied-revision mark (a restore from a backup
// starts a new history).
func RemoveMark(dir string) error {
	err := os.Remove(filepath.Join(dir, markFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
