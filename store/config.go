package store

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Node.
type Config struct {
	// NodeName is this node's identity in the cluster (raft server ID and
	// the name in its certificate). Required.
	NodeName string
	// DataDir holds the raft log, snapshots, the node's key and
	// certificate and the bootstrap token. Required.
	DataDir string
	// Listen is the cluster port (raft, node RPC and join, one TLS port).
	Listen string
	// Advertise is the host:port other members dial to reach this node;
	// not a wildcard address. Empty: the address Listen bound (which must
	// then be a specific address, e.g. "127.0.0.1:0" in tests).
	Advertise string
	// Join lists addresses of existing members. Empty with no state:
	// bootstrap a new cluster. Ignored once the node has state.
	Join []string
	// Token is the join token (needed to join; ignored otherwise).
	Token string
	// Voters is how many raft voters the cluster keeps (1, 3, 5 or 7);
	// further members replicate as non-voters. Only the leader's value
	// matters. Default 3.
	Voters int
	// NonVoter asks that this node never becomes a voter.
	NonVoter bool
	// Registry holds the FSM commands and validators: identical on every
	// node.
	Registry Registry
	Logger   *slog.Logger
	// Metrics receives the store's collectors; nil: not registered.
	Metrics prometheus.Registerer
	// Tuning overrides timeouts and intervals (zero fields: defaults).
	Tuning Tuning

	// faults lets in-process tests cut links between nodes.
	faults faultInjector
	// disk lets in-process tests crash a node (resume.go).
	disk diskFaults
}

// Tuning holds the timing knobs. Production defaults suit a LAN; tests
// shrink them.
type Tuning struct {
	// Raft timing (hashicorp/raft semantics).
	HeartbeatTimeout time.Duration // default 1s
	ElectionTimeout  time.Duration // default 1s
	// LeaderLeaseTimeout: a leader that has not heard from a quorum of
	// voters for this long steps down. Default 1s, the longest raft allows
	// (HeartbeatTimeout): on a small machine a burst of work starves the
	// voters of CPU for half a second at a time; with 500ms the leader lost
	// its lease in 2 of 4 bursts of 100 concurrent adds (50 agents on 2
	// cores beside a CPU hog), with 1s in none of 8 (docs/benchmarks.md).
	// Reads do not rely on the lease (they confirm leadership with a
	// heartbeat round), and a leader cut off from the others steps down
	// about when they can elect a new one; writes need a quorum anyway.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how long the leader, with nothing new to
	// replicate, waits before sending each follower the commit index
	// again (and retrying a follower it failed to reach). Writes do not
	// wait for it (the leader publishes their commit at once,
	// commitPublisher), so it only paces idle traffic: with 10 ms an idle
	// leader sent every follower ~70 messages a second. Default 1s.
	CommitTimeout time.Duration

	// SnapshotInterval, SnapshotThreshold and TrailingLogs control log
	// compaction. Defaults 30s, 8192, 10240.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64

	// Membership (raft-autopilot). A member is healthy when the leader
	// heard from it within LastContactThreshold (default 2s) and it is in
	// step with the log. A non-voter is promoted once healthy for
	// ServerStabilization (default 5s). A voter unhealthy for
	// VoterFailover (default 30s) is demoted when a healthy non-voter can
	// take its place. A member unreachable for DeadServerAfter (default
	// 72h; negative: never) is removed from raft, never below quorum.
	AutopilotInterval    time.Duration // state refresh; default 1s
	ReconcileInterval    time.Duration // promotions/demotions; default 2s
	LastContactThreshold time.Duration
	ServerStabilization  time.Duration
	VoterFailover        time.Duration
	DeadServerAfter      time.Duration

	// RetryInterval paces retries of membership calls (default 1s).
	RetryInterval time.Duration
}

// DefaultTuning returns the production timing.
func DefaultTuning() Tuning {
	return Tuning{
		HeartbeatTimeout:     time.Second,
		ElectionTimeout:      time.Second,
		LeaderLeaseTimeout:   time.Second,
		CommitTimeout:        time.Second,
		SnapshotInterval:     30 * time.Second,
		SnapshotThreshold:    8192,
		TrailingLogs:         10240,
		AutopilotInterval:    time.Second,
		ReconcileInterval:    2 * time.Second,
		LastContactThreshold: 2 * time.Second,
		ServerStabilization:  5 * time.Second,
		VoterFailover:        30 * time.Second,
		DeadServerAfter:      72 * time.Hour,
		RetryInterval:        time.Second,
	}
}

func (t Tuning) withDefaults() Tuning {
	d := DefaultTuning()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&t.HeartbeatTimeout, d.HeartbeatTimeout)
	setDur(&t.ElectionTimeout, d.ElectionTimeout)
	setDur(&t.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	setDur(&t.CommitTimeout, d.CommitTimeout)
	setDur(&t.SnapshotInterval, d.SnapshotInterval)
	setDur(&t.AutopilotInterval, d.AutopilotInterval)
	setDur(&t.ReconcileInterval, d.ReconcileInterval)
	setDur(&t.LastContactThreshold, d.LastContactThreshold)
	setDur(&t.ServerStabilization, d.ServerStabilization)
	setDur(&t.VoterFailover, d.VoterFailover)
	setDur(&t.DeadServerAfter, d.DeadServerAfter)
	setDur(&t.RetryInterval, d.RetryInterval)
	if t.SnapshotThreshold == 0 {
		t.SnapshotThreshold = d.SnapshotThreshold
	}
	if t.TrailingLogs == 0 {
		t.TrailingLogs = d.TrailingLogs
	}
	return t
}

func (c Config) withDefaults() Config {
	if c.Voters == 0 {
		c.Voters = 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Tuning = c.Tuning.withDefaults()
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty"))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("listen address is empty"))
	}
	if c.Advertise == "" {
		// Derived from the bound listener once it is open.
	} else if host, port, err := net.SplitHostPort(c.Advertise); err != nil || port == "0" || host == "" {
		errs = append(errs, fmt.Errorf("advertise address %q must be host:port with a fixed port", c.Advertise))
	} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		errs = append(errs, fmt.Errorf("advertise address %q is a wildcard: give the address others can reach", c.Advertise))
	}
	switch c.Voters {
	case 1, 3, 5, 7:
	default:
		errs = append(errs, fmt.Errorf("voters = %d: must be 1, 3, 5 or 7", c.Voters))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	return nil
}
