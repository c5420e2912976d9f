package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"

	"github.com/weftnet/weft/store/pki"
	"github.com/weftnet/weft/store/transport"
)

// Node is one member of the replicated datastore. It implements Store:
// reads and watches are served from the local replica, writes go through
// the raft leader (forwarded when this node is a follower).
type Node struct {
	cfg       Config
	log       *slog.Logger
	name      string
	advertise string

	fsm  *stateMachine
	raft *raft.Raft
	// dialRaft is raft once it is started, for the transport's dials
	// (memberAt): raft's own goroutines dial, possibly before NewRaft has
	// returned and raft is set.
	dialRaft atomic.Pointer[raft.Raft]
	raftNet  *transport.RaftTransport
	logs     *raftLog // raft log and stable store
	snaps    *raft.FileSnapshotStore
	mux      *transport.Mux
	identity atomic.Pointer[pki.Identity]

	// applied records the last applied index on disk, and minRevision is
	// what it held at start: the state a restart must serve (resume.go).
	applied     *appliedIndex
	minRevision uint64

	rpc        *http.Client
	forward    *forwarder
	rpcServer  *http.Server
	joinServer *http.Server
	nonces     *joinNonces

	pilot   *autopilot.Autopilot
	metrics *metrics

	notifyCh chan bool // raft's leadership notifications
	// established is the term in which this node, as leader, has applied
	// its first entry: from then on its commit index covers everything
	// committed before its term (needed for read-index reads).
	established   atomic.Uint64
	leaderMu      sync.Mutex
	leaderChanged chan struct{} // closed and replaced on every leader change
	synced        atomic.Bool   // a consistent read succeeded since start
	commits       *commitPublisher
	nonVoters     nonVoterSince // as leader: since when members are non-voters (heartbeatSpacing)

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	failOnce  sync.Once
	failErr   atomic.Pointer[error]
	failed    chan struct{}
}

var _ Store = (*Node)(nil)

// how Open found the data directory
type startMode int

const (
	modeBootstrap   startMode = iota // new cluster
	modeJoin                         // join an existing one
	modeJoinPending                  // certificate obtained, raft membership still to be requested
	modeResume                       // raft state present
)

func (m startMode) String() string {
	return [...]string{"bootstrap", "join", "join (resumed)", "resume"}[m]
}

// Open starts the node described by cfg (SPEC §3):
//   - no state and no Join: bootstrap a new cluster (CA, node certificate,
//     token file <DataDir>/token);
//   - no state and Join: join through any listed member with cfg.Token;
//   - state present: resume (Join is ignored); a changed Advertise address
//     is pushed to the cluster (the identity is the node name).
//
// Bootstrap returns once the node leads and the cluster secrets are
// committed; a join returns once the leader has added the node to raft.
// ctx bounds that; the node then runs until Close.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := pki.ValidateNodeName(cfg.NodeName); err != nil {
		return nil, fmt.Errorf("store config: node name: %w", err)
	}
	nonces, err := newJoinNonces(nonceTTL)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:           cfg,
		log:           cfg.Logger.With("node", cfg.NodeName),
		name:          cfg.NodeName,
		nonces:        nonces,
		notifyCh:      make(chan bool, 1),
		commits:       newCommitPublisher(),
		leaderChanged: make(chan struct{}),
		failed:        make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.open(ctx); err != nil {
		n.shutdown(false)
		return nil, err
	}
	return n, nil
}

func (n *Node) open(ctx context.Context) error {
	if err := os.MkdirAll(raftDir(n.cfg.DataDir), 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	var err error
	n.metrics = newMetrics(n)
	n.fsm, err = newFSM(fsmOptions{
		Registry:     n.cfg.Registry,
		Logger:       n.log.With("component", "fsm"),
		ObserveApply: n.metrics.observeApply,
		// n.applied is set by resume, before raft or a replay applies
		// anything.
		RecordApplied: func(index uint64) { n.applied.record(index) },
	})
	if err != nil {
		return err
	}
	if err := n.openStores(); err != nil {
		return err
	}
	if err := n.resume(); err != nil {
		return err
	}
	hasState, err := raft.HasExistingState(n.logs, n.logs, n.snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	seed, hasSeed, err := readSeed(n.cfg.DataDir)
	if err != nil {
		return err
	}
	id, err := pki.LoadIdentity(pki.Dir(n.cfg.DataDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	mode := modeJoin
	switch {
	case hasState:
		mode = modeResume
		if id == nil {
			return fmt.Errorf("data dir %s has raft state but no node identity in %s", n.cfg.DataDir, pki.Dir(n.cfg.DataDir))
		}
	case hasSeed:
		mode = modeBootstrap // an interrupted bootstrap: same CA, start over
	case id != nil:
		mode = modeJoinPending
	case len(n.cfg.Join) == 0:
		mode = modeBootstrap
	}
	if id != nil && id.Name() != n.name {
		return fmt.Errorf("data dir %s belongs to node %q, not %q (a node's name cannot change)", n.cfg.DataDir, id.Name(), n.name)
	}
	n.log.Info("opening datastore", "mode", mode.String(), "dataDir", n.cfg.DataDir)

	var joined *joinResult
	switch mode {
	case modeBootstrap:
		if !hasSeed {
			if seed, err = n.createSecrets(); err != nil {
				return err
			}
		}
		if id, err = n.issueOwnIdentity(seed); err != nil {
			return err
		}
	case modeJoin:
		if joined, err = n.requestCertificate(ctx); err != nil {
			return err
		}
		id = joined.identity
	}
	n.identity.Store(id)

	if err := n.startNetwork(); err != nil {
		return err
	}
	if err := n.startRaft(mode == modeBootstrap); err != nil {
		return err
	}
	n.pilot = newPilot(n)
	n.serveNetwork()
	if err := n.metrics.register(n.cfg.Metrics); err != nil {
		return err
	}
	n.startBackground()

	switch mode {
	case modeBootstrap:
		return n.waitBootstrapped(ctx)
	case modeJoin, modeJoinPending:
		var hints []string
		if joined != nil {
			hints = joined.addresses
		}
		return n.ensureMembership(ctx, append(hints, n.cfg.Join...))
	default:
		n.goBackground("membership", func(ctx context.Context) {
			err := n.ensureMembership(ctx, n.cfg.Join)
			switch {
			case err == nil || ctx.Err() != nil:
			case errors.Is(err, ErrConflict):
				// The cluster sends another member's traffic to this
				// address and this node's own nowhere: it cannot work
				// until the operator gives it another address.
				n.fail(fmt.Errorf("raft membership: %w", err))
			default:
				n.log.Error("could not confirm this node's raft membership", "error", err)
			}
		})
		return nil
	}
}

func (n *Node) openStores() error {
	dir := raftDir(n.cfg.DataDir)
	var err error
	n.logs, err = openWAL(dir, n.log)
	if err != nil {
		return err
	}
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(dir, 2, newHclog(n.log, "snapshots"))
	if err != nil {
		return fmt.Errorf("open raft snapshots: %w", err)
	}
	return nil
}

// startNetwork opens the cluster port and prepares the RPC and join servers.
func (n *Node) startNetwork() error {
	var err error
	n.mux, err = transport.Listen(n.cfg.Listen, pki.ServerConfigFunc(n.identity.Load), n.log.With("component", "transport"))
	if err != nil {
		return err
	}
	n.advertise = n.cfg.Advertise
	if n.advertise == "" {
		addr, ok := n.mux.Addr().(*net.TCPAddr)
		if !ok || addr.IP.IsUnspecified() {
			return fmt.Errorf("no advertise address, and the listen address %s is a wildcard", n.mux.Addr())
		}
		n.advertise = addr.String()
	}
	n.rpc = n.newRPCClient()
	n.forward = newForwarder(n)
	n.rpcServer = &http.Server{Handler: n.rpcHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute, ErrorLog: slogStd(n.log)}
	n.joinServer = &http.Server{Handler: n.joinHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, ErrorLog: slogStd(n.log)}
	return nil
}

// serveNetwork answers RPC and join requests (once raft is up: the handlers
// use it; until then connections wait in the mux's backlog).
func (n *Node) serveNetwork() {
	rpcLn, joinLn := n.mux.RPC(), n.mux.Join()
	n.wg.Add(2)
	go func() { defer n.wg.Done(); _ = n.rpcServer.Serve(rpcLn) }()
	go func() { defer n.wg.Done(); _ = n.joinServer.Serve(joinLn) }()
}

// goBackground runs fn until Close.
func (n *Node) goBackground(name string, fn func(ctx context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn(n.ctx)
	}()
}

func (n *Node) startBackground() {
	n.goBackground("leadership", n.leadershipLoop)
	n.goBackground("observer", n.observeLeaders)
	n.goBackground("fatal", func(ctx context.Context) {
		select {
		case <-n.fsm.Failed():
			n.fail(n.fsm.Err())
		case <-ctx.Done():
		}
	})
	n.goBackground("sync", func(ctx context.Context) {
		// Until it succeeds: a node that starts without quorum must still
		// become in sync (InSync, ReadReady) once a leader is back.
		for warned := false; ; {
			err := n.WaitInSync(ctx)
			if err == nil || ctx.Err() != nil {
				return
			}
			if !warned {
				n.log.Warn("initial sync with the leader failed; retrying", "error", err)
				warned = true
			}
			if !sleepCtx(ctx, n.cfg.Tuning.RetryInterval) {
				return
			}
		}
	})
}

// fail stops the node after a fatal error (a log entry it cannot apply):
// raft is shut down so this replica never diverges; reads keep working.
func (n *Node) fail(err error) {
	n.failOnce.Do(func() {
		n.failErr.Store(&err)
		n.log.Error("datastore failed; this node stops replicating", "error", err)
		go func() { _ = n.raft.Shutdown().Error() }()
		close(n.failed)
	})
}

// Err returns the fatal error that stopped the node, or nil.
func (n *Node) Err() error {
	if p := n.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Failed is closed when the node stops on a fatal error (see Err): the
// agent should exit non-zero.
func (n *Node) Failed() <-chan struct{} { return n.failed }

// Name is this node's name.
func (n *Node) Name() string { return n.name }

// Advertise is the address other members reach this node at.
func (n *Node) Advertise() string { return n.advertise }

// Close stops the node cleanly and quickly: a leader first hands its
// leadership to another voter (bounded by the election timeout), then raft,
// the listeners and the stores are closed. Watches end.
func (n *Node) Close() error {
	n.shutdown(true)
	return n.closeErr
}

func (n *Node) shutdown(graceful bool) {
	n.closeOnce.Do(func() {
		if graceful && n.raft != nil && n.raft.State() == raft.Leader && n.hasOtherVoters() {
			f := n.raft.LeadershipTransfer()
			done := make(chan struct{})
			go func() { _ = f.Error(); close(done) }()
			select {
			case <-done:
			case <-time.After(n.cfg.Tuning.ElectionTimeout):
			}
		}
		n.cancel()
		if n.pilot != nil {
			<-n.pilot.Stop()
		}
		var errs []error
		if n.rpcServer != nil {
			_ = n.rpcServer.Close()
			_ = n.joinServer.Close()
		}
		if n.raft != nil {
			if err := n.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
			}
		}
		if n.mux != nil {
			_ = n.mux.Close()
		}
		if n.rpc != nil {
			n.rpc.CloseIdleConnections()
		}
		n.wg.Wait()
		if n.logs != nil {
			if err := n.logs.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close raft log: %w", err))
			}
		}
		if err := n.applied.close(); err != nil {
			errs = append(errs, err)
		}
		if n.fsm != nil {
			n.fsm.Close()
		}
		if n.metrics != nil {
			n.metrics.unregister()
		}
		n.closeErr = errors.Join(errs...)
	})
}

func (n *Node) hasOtherVoters() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.name {
			return true
		}
	}
	return false
}

// Reads: always from the local replica.

// Get reads one object from the local replica.
func (n *Node) Get(k Key) (Object, bool) { return n.fsm.Get(k) }

// List reads a kind (and namespace) from the local replica.
func (n *Node) List(kind, namespace string) ([]Object, uint64) { return n.fsm.List(kind, namespace) }

// Revision is the last raft index applied on this replica.
func (n *Node) Revision() uint64 { return n.fsm.Revision() }

// Watch streams events from the local replica (see stateMachine.Watch for the semantics).
func (n *Node) Watch(ctx context.Context, fromRevision uint64, f WatchFilter) (<-chan Event, error) {
	return n.fsm.Watch(ctx, fromRevision, f)
}

// InSync reports whether this replica has caught up: a consistent read has
// succeeded since start and the replica has applied everything it knows to
// be committed. A node cut off from the leader keeps its last answer (it
// cannot know better) and serves its local state.
func (n *Node) InSync() bool {
	return n.synced.Load() && n.Err() == nil && n.fsm.Revision() >= n.raft.CommitIndex()
}

// WaitInSync waits until the replica has applied everything the leader had
// committed when it was called (a consistent read through the leader).
func (n *Node) WaitInSync(ctx context.Context) error {
	if _, err := n.ConsistentRevision(ctx); err != nil {
		return err
	}
	n.synced.Store(true)
	return nil
}

// IsVoter reports whether this node is a raft voter.
func (n *Node) IsVoter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.name {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}

// Leader returns the name and address of the current leader as this node
// knows it; empty when there is none.
func (n *Node) Leader() (name, address string) {
	addr, id := n.raft.LeaderWithID()
	return string(id), string(addr)
}

// TokenString returns the cluster's join token. Only voters answer
// (ErrNotAllowed otherwise): the token admits new members.
func (n *Node) TokenString() (string, error) {
	if !n.IsVoter() {
		return "", fmt.Errorf("%w: the join token is only shown on voters", ErrNotAllowed)
	}
	sec, ok, err := n.clusterSecrets()
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: this node has not received the cluster secrets yet", ErrNoLeader)
	}
	tok, _, err := sec.token()
	if err != nil {
		return "", err
	}
	return tok.String(), nil
}

func (n *Node) clusterSecrets() (clusterSecrets, bool, error) {
	var s clusterSecrets
	o, ok := n.fsm.Get(clusterSecretsKey())
	if !ok {
		return s, false, nil
	}
	if err := jsonUnmarshal(o.Value, &s); err != nil {
		return s, false, fmt.Errorf("cluster secrets: %w", err)
	}
	return s, true, nil
}
