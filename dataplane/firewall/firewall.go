// Package firewall is the dataplane manager of network policy and outgoing
// NAT: the single writer of the kernel firewall objects weft owns, whatever
// the backend. It holds what is backend-neutral — when to apply, what was
// applied, which workloads are not protected yet, sync state and metrics —
// and hands the kernel work to a [Backend] (dataplane/nft today; an
// iptables backend implements the same interface).
//
// # Fail closed
//
// A backend installs, on its first apply, a base that drops the traffic of
// any interface shaped like a weft workload interface that the policy
// section does not name, and never removes it. The manager reports a
// workload as not in place ([dataplane.WorkloadReporter]) until a pass has
// applied its policy, and it is registered before the links manager, so a
// new workload's veth comes up only after its rules exist, and a workload
// add answers only then.
//
// # Atomic and incremental
//
// Every apply is one kernel transaction: the backend gets the state it
// last applied and the new one, and changes only what differs. A failed
// transaction changes nothing: the last good ruleset stays, the manager
// marks itself for a resync (the backend then reads the kernel instead of
// trusting its cache) and the loop retries with backoff.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/dataplane"
)

// State is what a backend programs: the policy section (nil: no policy,
// only the fail-closed base) and outgoing NAT.
type State struct {
	Policy *dataplane.PolicyState
	NAT    dataplane.NATConfig
}

// Equal compares two states.
func (s *State) Equal(o *State) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Policy.Equal(o.Policy) && s.NAT.Equal(o.NAT)
}

// Stats describe what a backend holds after an apply.
type Stats struct {
	Chains, Rules, Sets, SetMembers int
	// Writes counts the kernel transactions the apply made (0 when the
	// kernel already held the state).
	Writes int
}

// RuleCounter is the packet and byte count of one rule of a policy or
// profile on this node (summed over the backend rules it became).
type RuleCounter struct {
	Policy    dataplane.PolicyRef
	Direction dataplane.Direction
	// Rule is the index in the policy's rule list for the direction.
	Rule           int
	Packets, Bytes uint64
}

// Backend programs one kernel firewall.
type Backend interface {
	// Name labels the backend ("nftables").
	Name() string
	// Apply makes the kernel hold want in one transaction. prev is the
	// state the backend last applied successfully, or nil when it is
	// unknown: then the backend reads the kernel, adopts what matches and
	// repairs what differs (start, periodic resync, after a failure).
	// Objects the backend owns that want does not name are removed.
	Apply(ctx context.Context, want, prev *State) (Stats, error)
	// Counters reads the per-rule counters of the policy and profile
	// rules. Safe to call from any goroutine (it only reads).
	Counters(ctx context.Context) ([]RuleCounter, error)
	// Close releases the backend's handles; the kernel state stays.
	Close() error
}

// Config configures a Manager.
type Config struct {
	Logger *slog.Logger
	// Registerer receives the policy metrics; nil registers none.
	Registerer prometheus.Registerer
	Clock      dataplane.Clock
	// Leftovers removes what the other backend may have left (a node that
	// switched backends, nftables <-> iptables). It runs only after an
	// apply succeeded, so the new backend's fail-closed base and policy
	// are in force before the old ones go: workloads are never
	// unprotected. Until it succeeds once it runs after every successful
	// apply; nil for nothing to remove.
	Leftovers func(context.Context) error
}

// Manager is the firewall manager; see the package comment.
type Manager struct {
	be  Backend
	log *slog.Logger
	clk dataplane.Clock

	leftovers func(context.Context) error

	want      *State
	workloads []string // host interfaces of the desired workloads
	applied   *State   // what the kernel holds; nil until the first apply
	resync    bool
	writes    atomic.Uint64

	mu     sync.Mutex
	status Status

	metrics metrics
}

// Status is the manager's sync state for `weft node status`.
type Status struct {
	Backend string
	// InSync: the last apply succeeded and nothing is pending.
	InSync bool
	// Applied is when the kernel last changed (zero: never).
	Applied time.Time
	// LastError of the last apply, "" when it succeeded.
	LastError string
	Stats
}

type metrics struct {
	apply      prometheus.Histogram
	failures   prometheus.Counter
	inSync     prometheus.Gauge
	rules      prometheus.Gauge
	chains     prometheus.Gauge
	sets       prometheus.Gauge
	setMembers prometheus.Gauge
}

// New returns a manager over a backend and registers its metrics.
func New(cfg Config, be Backend) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = dataplane.RealClock{}
	}
	m := &Manager{be: be, log: cfg.Logger.With("component", "firewall", "backend", be.Name()), clk: cfg.Clock, resync: true,
		leftovers: cfg.Leftovers}
	m.status.Backend = be.Name()
	labels := prometheus.Labels{"backend": be.Name()}
	m.metrics = metrics{
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_policy_apply_seconds", ConstLabels: labels,
			Help:    "Time to program a change of policy or NAT into the kernel (one transaction; Felix's iptables_chain_update_seconds).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		failures:   prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_policy_apply_failures_total", ConstLabels: labels, Help: "Policy applies that failed and keep the last good ruleset (retried)."}),
		inSync:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_policy_in_sync", ConstLabels: labels, Help: "1 when the kernel holds the desired policy and NAT."}),
		rules:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_policy_rules", ConstLabels: labels, Help: "Rules programmed in weft's firewall."}),
		chains:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_policy_chains", ConstLabels: labels, Help: "Chains programmed in weft's firewall."}),
		sets:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_policy_sets", ConstLabels: labels, Help: "Sets programmed in weft's firewall."}),
		setMembers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_policy_set_members", ConstLabels: labels, Help: "Set elements programmed in weft's firewall."}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{m.metrics.apply, m.metrics.failures, m.metrics.inSync, m.metrics.rules,
			m.metrics.chains, m.metrics.sets, m.metrics.setMembers, &counterCollector{m: m}} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register firewall metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return m.be.Name() }

// KernelWrites implements dataplane.WriteCounter (transactions).
func (m *Manager) KernelWrites() uint64 { return m.writes.Load() }

// Set implements dataplane.Manager.
func (m *Manager) Set(d *dataplane.Desired) {
	m.want = &State{Policy: d.Policy, NAT: d.NAT}
	m.workloads = m.workloads[:0]
	for _, w := range d.Workloads {
		m.workloads = append(m.workloads, w.HostIface)
	}
}

// QueueResync implements dataplane.Manager.
func (m *Manager) QueueResync() { m.resync = true }

// Apply implements dataplane.Manager. Everything happens in the update
// phase, in one transaction: the manager runs before the links manager,
// so a workload's policy exists before its veth; a removed workload's
// dispatch goes in the same transaction as every other change (its traffic,
// if any is left, is then dropped by the fail-closed base).
func (m *Manager) Apply(ctx context.Context, phase dataplane.Phase) error {
	if phase != dataplane.PhaseUpdate || m.want == nil {
		return nil
	}
	if !m.resync && m.applied != nil && m.applied.Equal(m.want) {
		m.removeLeftovers(ctx)
		return nil
	}
	prev := m.applied
	if m.resync {
		prev = nil
	}
	start := m.clk.Now()
	stats, err := m.be.Apply(ctx, m.want, prev)
	took := m.clk.Now().Sub(start)
	if err != nil {
		// The transaction changed nothing; read the kernel next time in
		// case it is what made the transaction fail.
		m.resync = true
		m.metrics.failures.Inc()
		m.metrics.inSync.Set(0)
		m.mu.Lock()
		m.status.InSync = false
		m.status.LastError = err.Error()
		m.mu.Unlock()
		return err
	}
	m.resync = false
	m.applied = m.want
	m.writes.Add(uint64(stats.Writes))
	m.metrics.inSync.Set(1)
	m.metrics.rules.Set(float64(stats.Rules))
	m.metrics.chains.Set(float64(stats.Chains))
	m.metrics.sets.Set(float64(stats.Sets))
	m.metrics.setMembers.Set(float64(stats.SetMembers))
	m.mu.Lock()
	if stats.Writes > 0 {
		m.metrics.apply.Observe(took.Seconds())
		m.status.Applied = m.clk.Now()
	}
	m.status.InSync, m.status.LastError, m.status.Stats = true, "", stats
	m.mu.Unlock()
	m.removeLeftovers(ctx)
	return nil
}

// removeLeftovers runs Config.Leftovers once the kernel holds this
// backend's ruleset, until it succeeds once.
func (m *Manager) removeLeftovers(ctx context.Context) {
	if m.leftovers == nil || m.applied == nil {
		return
	}
	if err := m.leftovers(ctx); err != nil {
		m.log.Warn("removing what the other firewall backend left; retrying at the next pass", "err", err)
		return
	}
	m.log.Info("the other firewall backend's leftovers are removed (if there were any)")
	m.leftovers = nil
}

// ErrNoPolicy: a workload's policy is not in the kernel yet (its traffic
// is dropped until it is).
var ErrNoPolicy = errors.New("policy not in place")

// WorkloadProblems implements dataplane.WorkloadReporter: the workloads
// whose policy the kernel does not hold as desired.
func (m *Manager) WorkloadProblems() map[string]error {
	out := map[string]error{}
	inSync := m.applied.Equal(m.want)
	for _, iface := range m.workloads {
		var want *dataplane.EndpointPolicy
		if m.want != nil && m.want.Policy != nil {
			want, _ = m.want.Policy.Workloads.Get(iface)
		}
		if want == nil {
			out[iface] = fmt.Errorf("%w: the calculation gave no policy for %s", ErrNoPolicy, iface)
			continue
		}
		var have *dataplane.EndpointPolicy
		if m.applied != nil && m.applied.Policy != nil {
			have, _ = m.applied.Policy.Workloads.Get(iface)
		}
		if !inSync && !want.Equal(have) {
			out[iface] = fmt.Errorf("%w: %s", ErrNoPolicy, m.lastError())
		}
	}
	return out
}

func (m *Manager) lastError() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.status.LastError == "" {
		return "not applied yet"
	}
	return "last apply failed: " + m.status.LastError
}

// Status returns the sync state (safe from any goroutine).
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Counters reads the per-rule counters (safe from any goroutine).
func (m *Manager) Counters(ctx context.Context) ([]RuleCounter, error) {
	return m.be.Counters(ctx)
}

// counterCollector exports the per-rule counters, read from the kernel at
// each scrape.
type counterCollector struct{ m *Manager }

var (
	rulePacketsDesc = prometheus.NewDesc("weft_policy_rule_packets_total",
		"Packets that matched a policy or profile rule on this node (reset when the policy's chain is rewritten).",
		[]string{"kind", "namespace", "name", "direction", "rule"}, nil)
	ruleBytesDesc = prometheus.NewDesc("weft_policy_rule_bytes_total",
		"Bytes that matched a policy or profile rule on this node (reset when the policy's chain is rewritten).",
		[]string{"kind", "namespace", "name", "direction", "rule"}, nil)
)

func (c *counterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rulePacketsDesc
	ch <- ruleBytesDesc
}

func (c *counterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rcs, err := c.m.be.Counters(ctx)
	if err != nil {
		c.m.log.Debug("reading rule counters", "err", err)
		return
	}
	for _, rc := range rcs {
		lv := []string{rc.Policy.Kind, rc.Policy.Namespace, rc.Policy.Name, rc.Direction.String(), fmt.Sprint(rc.Rule)}
		ch <- prometheus.MustNewConstMetric(rulePacketsDesc, prometheus.CounterValue, float64(rc.Packets), lv...)
		ch <- prometheus.MustNewConstMetric(ruleBytesDesc, prometheus.CounterValue, float64(rc.Bytes), lv...)
	}
}

// Close releases the backend.
func (m *Manager) Close() error { return m.be.Close() }
