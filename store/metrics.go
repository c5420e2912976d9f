package store

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of one node, registered on Config.Metrics (no global registry).
type metrics struct {
	n *Node

	leaderChanges  prometheus.Counter
	applyDuration  prometheus.Histogram
	commitDuration prometheus.Histogram

	mu               sync.Mutex
	healthy          int
	failureTolerance int

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics(n *Node) *metrics {
	return &metrics{
		n: n,
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_store_leader_changes_total",
			Help: "Leader changes seen by this node.",
		}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_store_fsm_apply_duration_seconds",
			Help:    "Time to apply one committed log entry to the local state.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 4, 10),
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_store_commit_duration_seconds",
			Help:    "Time from proposing a write on this node to its result (forwarding, replication, apply).",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2.5, 12),
		}),
	}
}

func (m *metrics) observeApply(d time.Duration) { m.applyDuration.Observe(d.Seconds()) }

func (m *metrics) setAutopilot(s *autopilot.State) {
	healthy := 0
	for _, srv := range s.Servers {
		if srv.Health.Healthy {
			healthy++
		}
	}
	m.mu.Lock()
	m.healthy, m.failureTolerance = healthy, s.FailureTolerance
	m.mu.Unlock()
}

// descs are the descriptors of the scrape-time metrics.
type descs struct {
	state, voter, term, lastIndex, commitIndex, appliedIndex, queue, objects, inSync, failed, healthy, tolerance *prometheus.Desc
}

func newDescs() descs {
	return descs{
		state: prometheus.NewDesc("weft_store_raft_state",
			"Raft state of this node: 1 for the current one of leader, follower, candidate, shutdown.", []string{"state"}, nil),
		voter:        prometheus.NewDesc("weft_store_raft_voter", "1 if this node is a raft voter.", nil, nil),
		term:         prometheus.NewDesc("weft_store_raft_term", "Current raft term.", nil, nil),
		lastIndex:    prometheus.NewDesc("weft_store_raft_last_index", "Last raft log index on this node.", nil, nil),
		commitIndex:  prometheus.NewDesc("weft_store_raft_commit_index", "Raft commit index known to this node.", nil, nil),
		appliedIndex: prometheus.NewDesc("weft_store_raft_applied_index", "Last raft index applied to the local state (the store revision).", nil, nil),
		queue:        prometheus.NewDesc("weft_store_fsm_apply_queue", "Committed log entries not yet applied to the local state.", nil, nil),
		objects:      prometheus.NewDesc("weft_store_objects", "Objects in the local state, per kind.", []string{"kind"}, nil),
		inSync:       prometheus.NewDesc("weft_store_in_sync", "1 if the local replica has caught up with the leader.", nil, nil),
		failed:       prometheus.NewDesc("weft_store_failed", "1 if the node stopped on a log entry it cannot apply.", nil, nil),
		healthy:      prometheus.NewDesc("weft_store_healthy_members", "Members the leader sees as healthy (leader only).", nil, nil),
		tolerance:    prometheus.NewDesc("weft_store_failure_tolerance", "Voters that can fail without losing quorum (leader only).", nil, nil),
	}
}

// collector reads raft and the FSM at scrape time.
type collector struct {
	m *metrics
	d descs
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ds := c.d
	for _, d := range []*prometheus.Desc{ds.state, ds.voter, ds.term, ds.lastIndex, ds.commitIndex, ds.appliedIndex, ds.queue, ds.objects, ds.inSync, ds.failed, ds.healthy, ds.tolerance} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	n := c.m.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	st := n.raft.State()
	for _, s := range []raft.RaftState{raft.Leader, raft.Follower, raft.Candidate, raft.Shutdown} {
		gauge(c.d.state, b(st == s), stateName(s))
	}
	gauge(c.d.voter, b(n.IsVoter()))
	gauge(c.d.term, float64(n.raft.CurrentTerm()))
	gauge(c.d.lastIndex, float64(n.raft.LastIndex()))
	commit, applied := n.raft.CommitIndex(), n.fsm.Revision()
	gauge(c.d.commitIndex, float64(commit))
	gauge(c.d.appliedIndex, float64(applied))
	queue := 0.0
	if commit > applied {
		queue = float64(commit - applied)
	}
	gauge(c.d.queue, queue)
	for kind, count := range n.fsm.Counts() {
		gauge(c.d.objects, float64(count), kind)
	}
	gauge(c.d.inSync, b(n.InSync()))
	gauge(c.d.failed, b(n.Err() != nil))
	if st == raft.Leader {
		c.m.mu.Lock()
		gauge(c.d.healthy, float64(c.m.healthy))
		gauge(c.d.tolerance, float64(c.m.failureTolerance))
		c.m.mu.Unlock()
	}
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	default:
		return "shutdown"
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	m.reg = reg
	for _, c := range []prometheus.Collector{m.leaderChanges, m.applyDuration, m.commitDuration, collector{m: m, d: newDescs()}} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return errors.Join(errors.New("register store metrics"), err)
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}
