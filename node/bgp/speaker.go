// Package bgp is weft's BGP speaker: one embedded gobgp server (no gRPC
// listener, its logs through slog) driven by a whole desired configuration
// ([Speaker.Set], computed by node/calc's bgp resolver) and reporting back
// what it learned ([Speaker.State], fed into the calculation).
//
// # What it adds to gobgp
//
//   - Advertise only what the kernel routes: a path is announced once the
//     route it needs (its block's blackhole, its borrowed address's host
//     route) is in the kernel, as the dataplane's reports say
//     ([Speaker.SetReport]); a path no longer desired is withdrawn at once
//     (the calculation keeps the blackhole until [State] no longer lists
//     it as advertised).
//   - A dead peer loses its routes at once. With graceful restart
//     negotiated, gobgp treats a hold-timer expiry like a closed
//     connection and keeps the peer's routes as stale for the restart
//     time (osrg/gobgp#2174). A closed connection is what a restarting
//     agent causes (its kernel closes the socket: keep the routes); a
//     silent peer is a dead node or a cut cable (drop them). So on a
//     hold-timer expiry the speaker deletes and re-adds the peer, which
//     drops its routes and withdraws them from the other peers, and
//     reports the peer as dead until it is back; likewise when a
//     restarting peer does not return within its restart time, or never
//     came up within it.
//   - Graceful restart as the restarting speaker: an agent restarted on a
//     running machine (its kernel kept forwarding) sets the Restart State
//     and Forwarding State bits, and reports Syncing until every peer is
//     back and sent End-of-RIB (or SyncTimeout ran out): the learned
//     routes in the kernel stay meanwhile.
//   - A prefix limit per session: a peer sending more is shut down for
//     PrefixLimitPause with a clear log line; the other sessions and the
//     kernel's other routes are untouched.
//   - An export policy ([exportPolicy]).
//
// A clean stop (ctx cancelled) leaves the sessions as they are: the
// process exit closes them like a kill, so the peers keep this node's
// routes while it restarts.
package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/node/calc"
)

// Config configures a [Speaker]. Zero values take the defaults.
type Config struct {
	Logger *slog.Logger
	// Registerer receives the speaker's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Restarting says this agent restarted on a machine that kept
	// forwarding (the kernel holds its routes): see the package comment.
	Restarting bool
	// SyncTimeout bounds the wait for the peers after a restart (default
	// 30 s); it is also gobgp's selection deferral time.
	SyncTimeout time.Duration
	// SyncGrace is how long after the last End-of-RIB the speaker still
	// reports Syncing, so that the routes gobgp announced just before it
	// have reached the speaker's table (default 1 s).
	SyncGrace time.Duration
	// PrefixLimitPause is how long a peer that sent more prefixes than its
	// limit stays shut down (default 5 min).
	PrefixLimitPause time.Duration
	// Secret reads a session's password; nil refuses every password.
	Secret func(calc.SecretRef) (string, error)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Speaker owns one gobgp server; see the package comment.
type Speaker struct {
	cfg  Config
	log  *slog.Logger
	lg   *logger
	srv  *server.BgpServer
	kick chan struct{}

	mu         sync.Mutex
	desired    *calc.BGPConfig
	report     *dataplane.Report
	pending    []peerEvent
	learned    map[netip.Prefix]calc.LearnedRoute
	peers      map[netip.Addr]*peerRuntime
	syncing    bool
	advertised []netip.Prefix
	snapshot   *calc.BGPSpeakerState // nil: rebuild
	changed    chan struct{}
	running    bool // gobgp's BGP instance is started

	// Owned by the loop goroutine.
	global  *calc.BGPConfig // the global settings the server runs with
	applied map[netip.Addr]appliedPeer
	paths   map[netip.Prefix]calc.BGPPath
	policy  *exportPolicy
	start   time.Time
	synced  time.Time // when every peer was first seen synced
	// inKernel indexes the routes of the report last looked at.
	indexed  *dataplane.Report
	inKernel map[dataplane.RouteKey]bool
}

// appliedPeer is a session as gobgp runs it.
type appliedPeer struct {
	cfg       calc.BGPPeerConfig
	password  string
	rrCluster netip.Addr
}

// peerRuntime is what the speaker knows of one desired session.
type peerRuntime struct {
	cfg     calc.BGPPeerConfig
	state   api.PeerState_SessionState
	since   time.Time
	lastErr string
	// configErr keeps the session from being set up (its password file).
	configErr string
	// dead: the peer went silent (see the package comment).
	dead bool
	// everUp: the session was established since it was configured.
	everUp bool
	added  time.Time
	flaps  uint64
	// pausedUntil: shut down after exceeding its prefix limit.
	pausedUntil time.Time
}

// New returns a speaker; nothing runs until [Speaker.Run].
func New(cfg Config) *Speaker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 30 * time.Second
	}
	if cfg.SyncGrace <= 0 {
		cfg.SyncGrace = time.Second
	}
	if cfg.PrefixLimitPause <= 0 {
		cfg.PrefixLimitPause = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Secret == nil {
		cfg.Secret = func(calc.SecretRef) (string, error) { return "", errors.New("no secrets directory") }
	}
	s := &Speaker{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "bgp"),
		kick:    make(chan struct{}, 1),
		learned: map[netip.Prefix]calc.LearnedRoute{},
		peers:   map[netip.Addr]*peerRuntime{},
		syncing: cfg.Restarting,
		changed: make(chan struct{}),
		applied: map[netip.Addr]appliedPeer{},
		paths:   map[netip.Prefix]calc.BGPPath{},
	}
	s.lg = newLogger(s.log, s.onLogEvent)
	s.srv = server.NewBgpServer(server.LoggerOption(s.lg))
	return s
}

// Set takes the whole desired configuration (nil: no BGP). It never
// blocks; the speaker applies the latest one.
func (s *Speaker) Set(c *calc.BGPConfig) {
	s.mu.Lock()
	if s.desired.Equal(c) {
		s.mu.Unlock()
		return
	}
	s.desired = c
	s.mu.Unlock()
	s.wake()
}

// SetReport takes the dataplane's latest report: what is in the kernel.
func (s *Speaker) SetReport(r *dataplane.Report) {
	s.mu.Lock()
	s.report = r
	s.mu.Unlock()
	s.wake()
}

// State returns what the speaker reports to the calculation and a channel
// closed when that changes.
func (s *Speaker) State() (*calc.BGPSpeakerState, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snapshot == nil {
		st := &calc.BGPSpeakerState{Syncing: s.syncing, Advertised: slices.Clone(s.advertised)}
		st.Learned = make([]calc.LearnedRoute, 0, len(s.learned))
		for _, lr := range s.learned {
			st.Learned = append(st.Learned, lr)
		}
		// In prefix order: the calculation, which orders the routes it
		// makes of them, then finds them in order (cheaper than sorting
		// the routes there, on every computation).
		slices.SortFunc(st.Learned, func(a, b calc.LearnedRoute) int {
			return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
		})
		for a, p := range s.peers {
			if p.dead {
				st.Dead = append(st.Dead, a)
			}
		}
		slices.SortFunc(st.Dead, netip.Addr.Compare)
		s.snapshot = st
	}
	return s.snapshot, s.changed
}

// Changed returns a channel closed when the state changes; unlike State it
// builds nothing (a burst of learned routes must not rebuild the snapshot
// once per change).
func (s *Speaker) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// stateChanged invalidates the snapshot and wakes State's waiters; s.mu
// is held.
func (s *Speaker) stateChanged() {
	s.snapshot = nil
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Speaker) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// onLogEvent takes a peer event from gobgp's log (gobgp's goroutines).
func (s *Speaker) onLogEvent(ev peerEvent) {
	s.mu.Lock()
	s.pending = append(s.pending, ev)
	s.mu.Unlock()
	s.wake()
}

// Run runs the speaker until ctx ends.
func (s *Speaker) Run(ctx context.Context) error {
	go s.srv.Serve()
	s.start = s.cfg.Now()
	if err := s.register(); err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true},
		}},
	}, s.onWatchEvent)
	if err != nil {
		return fmt.Errorf("watch gobgp: %w", err)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		s.step(ctx)
		select {
		case <-ctx.Done():
			// The sessions are left to the process exit (see the package
			// comment); nothing is withdrawn.
			return nil
		case <-s.kick:
		case <-tick.C:
		}
	}
}

// onWatchEvent takes gobgp's best-path and peer events (its goroutine).
func (s *Speaker) onWatchEvent(r *api.WatchEventResponse) {
	switch ev := r.Event.(type) {
	case *api.WatchEventResponse_Table:
		s.mu.Lock()
		changed := false
		for _, p := range ev.Table.Paths {
			lr, ok := learnedFrom(p)
			if !lr.Prefix.IsValid() {
				continue
			}
			if p.IsWithdraw || !ok || !lr.NextHop.IsValid() {
				if _, had := s.learned[lr.Prefix]; had {
					delete(s.learned, lr.Prefix)
					changed = true
				}
				continue
			}
			if s.learned[lr.Prefix] != lr {
				s.learned[lr.Prefix] = lr
				changed = true
			}
		}
		if changed {
			s.stateChanged()
		}
		s.mu.Unlock()
	case *api.WatchEventResponse_Peer:
		pe := ev.Peer
		if pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil {
			return
		}
		a, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
		if err != nil {
			return
		}
		s.mu.Lock()
		if p := s.peers[a.Unmap()]; p != nil {
			st := pe.Peer.State.SessionState
			if p.state == api.PeerState_ESTABLISHED && st != api.PeerState_ESTABLISHED {
				p.flaps++
			}
			if (p.state == api.PeerState_OPENSENT || p.state == api.PeerState_OPENCONFIRM) &&
				(st == api.PeerState_IDLE || st == api.PeerState_ACTIVE) && p.lastErr == "" {
				// gobgp says nothing more about a peer that closes or
				// answers nonsense before the session is up.
				p.lastErr = "the connection ended in " + sessionState(p.state)
			}
			if st != p.state {
				p.state, p.since = st, s.cfg.Now()
			}
			if st == api.PeerState_ESTABLISHED {
				p.everUp, p.lastErr = true, ""
				if p.dead {
					p.dead = false
					s.stateChanged()
				}
			}
		}
		s.mu.Unlock()
		s.wake()
	}
}

// step brings gobgp to the desired configuration and handles what gobgp
// reported. It runs on the loop goroutine only and never calls gobgp with
// s.mu held.
func (s *Speaker) step(ctx context.Context) {
	s.mu.Lock()
	desired, report := s.desired, s.report
	events := s.pending
	s.pending = nil
	s.mu.Unlock()

	if desired == nil {
		s.stopBGP(ctx)
		return
	}
	if !sameGlobal(s.global, desired) {
		s.stopBGP(ctx)
		if err := s.startBGP(ctx, desired); err != nil {
			s.log.Error("starting the BGP speaker failed; retrying", "err", err)
			return
		}
	}
	s.lg.setSeverity(desired.LogLevel)
	s.reconcilePolicy(ctx, desired)
	s.reconcilePeers(ctx, desired)
	for _, ev := range events {
		s.handle(ctx, ev)
	}
	s.expire(ctx)
	s.reconcilePaths(ctx, desired, report)
	s.checkSync(ctx)
}

// sameGlobal reports whether the server's global settings g are c's.
func sameGlobal(g, c *calc.BGPConfig) bool {
	return g != nil && g.AS == c.AS && g.RouterID == c.RouterID && g.ListenPort == c.ListenPort &&
		slices.Equal(g.ListenAddrs, c.ListenAddrs)
}
