// Package node is the weft agent's composition root: it builds the
// datastore, the dataplane and the services over them, owns their
// goroutines and lifecycle, and serves the local API socket, metrics and
// health. It holds no logic of its own: each job lives in a package of its
// own (node/workloads, node/cluster, node/resources, node/ipamsvc,
// node/calc with node/calcrun, node/tunnels), and adding a subsystem is
// a constructor plus one line in [Agent.subsystems].
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/ipip"
	"github.com/weftnet/weft/dataplane/linux"
	"github.com/weftnet/weft/dataplane/mtu"
	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/node/bgpsvc"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/calcrun"
	"github.com/weftnet/weft/node/cluster"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/ipamsvc"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/node/policysvc"
	"github.com/weftnet/weft/node/resources"
	"github.com/weftnet/weft/node/tunnels"
	nodewg "github.com/weftnet/weft/node/wireguard"
	"github.com/weftnet/weft/node/workloads"
	"github.com/weftnet/weft/store"
)

// ShutdownTimeout bounds a clean stop (SIGTERM to exit).
const ShutdownTimeout = 4 * time.Second

// Agent is one running weft node.
type Agent struct {
	cfg     *config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	health  *health
	notify  notifier
	started time.Time

	addr4, addr6  netip.Addr
	underlay4     netip.Prefix // addr4 with its connected subnet's length
	underlay6     netip.Prefix // addr6 likewise
	underlayIface string

	api      *http.ServeMux
	apiReady atomic.Bool

	store   *store.Node
	cluster *cluster.Service
	dp      *linux.Dataplane
	box     *dataplane.Mailbox
	runner  *calcrun.Runner
	ipam    *ipamsvc.Service
	tunnel  *tunnels.Controller
	wl      *workloads.Service
	bgp     *bgpsvc.Service
	wgKeys  *nodewg.Keys // nil with WireGuard off
	wg      *nodewg.Controller

	// ipipSupport is whether this node can do IP-in-IP (set at start by
	// the probe, and by the driver should creating the device fail).
	ipipSupport   atomic.Pointer[ipip.Support]
	ipipAvailable prometheus.Gauge

	// bg counts the background goroutines Run waits for before closing
	// the datastore and the dataplane.
	bg sync.WaitGroup
}

// goBackground runs f in a goroutine that Run waits for at stop.
func (a *Agent) goBackground(f func()) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		f()
	}()
}

// New prepares an agent from a validated configuration. Nothing is started
// and nothing on the machine is changed until Run.
func New(cfg *config.Config, log *slog.Logger) *Agent {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := version.Get()
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weft_build_info", Help: "Build information of the running agent (always 1).",
	}, []string{"version", "commit", "goversion"})
	buildInfo.WithLabelValues(info.Version, info.Commit, info.GoVersion).Set(1)
	reg.MustRegister(buildInfo)
	ipipAvailable := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_ipip_available",
		Help: "1 when this node's kernel can create IP-in-IP devices; 0 when it cannot: traffic to other nodes' blocks of ipipMode pools is dropped on this node.",
	})
	reg.MustRegister(ipipAvailable)
	return &Agent{
		cfg:           cfg,
		log:           log,
		reg:           reg,
		health:        newHealth(),
		notify:        notifier{log: log},
		api:           http.NewServeMux(),
		ipipAvailable: ipipAvailable,
	}
}

// Run starts the agent and blocks until ctx is cancelled (SIGTERM/SIGINT)
// or a component fails; then it stops everything within ShutdownTimeout.
// The kernel state it programmed stays: workloads keep their traffic while
// the agent restarts, and the next start adopts it.
func (a *Agent) Run(ctx context.Context) (err error) {
	a.started = time.Now()
	lock, err := lockDataDir(a.cfg.Node.DataDir)
	if err != nil {
		return err
	}
	defer lock.release()

	if err := a.resolveAddress(); err != nil {
		return err
	}
	a.log.Info("starting weft agent", "version", version.Version, "commit", version.Commit,
		"node", a.cfg.Node.Name, "address", a.addrString(), "data_dir", a.cfg.Node.DataDir)
	a.warnUnbuilt()
	if err := a.openWireGuardKeys(); err != nil {
		return err
	}

	sock, err := listenSocket(a.cfg.API.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(a.cfg.API.Socket)
	a.baseRoutes()
	apiSrv := startHTTP("api", sock, a.apiHandler(), a.log)

	var metricsSrv *httpServer
	if a.cfg.Metrics.Listen != "" {
		l, err := net.Listen("tcp", a.cfg.Metrics.Listen)
		if err != nil {
			apiSrv.shutdown(context.Background(), 0)
			return fmt.Errorf("metrics.listen %s: %w", a.cfg.Metrics.Listen, err)
		}
		metricsSrv = startHTTP("metrics", l, metricsHandler(a.reg, a.health), a.log)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		apiSrv.shutdown(sctx, 0)
		metricsSrv.shutdown(sctx, 0)
	}()
	a.watchAgentReadiness()

	// The dataplane is built first: it touches nothing until the store is
	// in sync.
	dp, calcCfg, err := a.buildDataplane()
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	a.dp = dp
	defer a.dp.Close()

	a.health.set(localapi.ComponentStatus{Name: "datastore", State: localapi.StateStarting, Live: true, Detail: "opening"})
	a.notify.status("opening the datastore")
	a.store, err = a.openStore(ctx)
	if err != nil {
		if ctx.Err() != nil {
			a.log.Info("stopped while opening the datastore")
			return nil
		}
		return fmt.Errorf("datastore: %w", err)
	}
	defer func() {
		if cerr := a.store.Close(); cerr != nil {
			a.log.Warn("closing the datastore", "err", cerr)
		}
	}()
	if err := a.buildServices(calcCfg); err != nil {
		return err
	}
	a.health.probe("datastore", a.datastoreHealth)
	a.health.probe("dataplane", func() localapi.ComponentStatus { return dataplaneHealth(a.dp, a.runner) })
	if a.cfg.WireGuard.Enabled {
		a.health.probe("wireguard", func() localapi.ComponentStatus { return wireguardHealth(a.dp.WireGuard) })
	}
	a.apiReady.Store(true)

	runCtx, stopRun := context.WithCancel(ctx)
	// Stopping runs in this order (this defer runs before the ones above):
	// no new local API requests; the in-flight ones finish, or are told to
	// stop and undo what they did (a workload add waiting for the
	// dataplane deletes its endpoint and releases its addresses) and answer;
	// then the background work stopped and waited for, then the datastore
	// and the dataplane closed. A CNI call during SIGTERM either completes
	// or is refused whole, never cut off half-way.
	defer func() {
		a.apiReady.Store(false)
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout*3/8)
		apiSrv.shutdown(sctx, ShutdownTimeout*3/8)
		cancel()
		stopRun()
		a.bg.Wait()
	}()
	a.goBackground(func() { a.afterOpen(runCtx) })

	a.notify.ready("running")
	a.log.Info("agent ready", "socket", a.cfg.API.Socket, "metrics", a.cfg.Metrics.Listen)

	a.superviseWatchdog(ctx, a.store.Failed())
	a.notify.stopping()
	a.log.Info("stopping weft agent")
	if err := a.store.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("datastore failed: %w", err)
	}
	return nil
}

// buildServices builds the services over the open store and registers
// their local API calls.
func (a *Agent) buildServices(calcCfg calc.Config) error {
	log := a.log
	a.cluster = cluster.New(a.store, a.self(), log.With("component", "cluster"))
	a.ipam = ipamsvc.New(a.store, ipamsvc.Config{
		Node: a.cfg.Node.Name, Logger: log.With("component", "ipam"), Registerer: a.reg,
		GCInterval: a.cfg.IPAM.GCInterval.Duration, LeakGrace: a.cfg.IPAM.LeakGracePeriod.Duration,
		EmptyGrace: a.cfg.IPAM.EmptyBlockGracePeriod.Duration,
	})
	a.tunnel = tunnels.New(tunnels.Config{Node: a.cfg.Node.Name, NodeLabels: a.cfg.Node.Labels, Logger: log}, a.store, a.cluster)
	a.wg = a.newWireGuardWriter()
	a.box = dataplane.NewMailbox()
	a.bgp = bgpsvc.New(bgpsvc.Config{Node: a.cfg.Node.Name, Logger: log, Registerer: a.reg, BGP: a.cfg.BGP, DataDir: a.cfg.Node.DataDir,
		Local: func(in calc.LocalInput) { a.runner.SetLocal(in) }}, a.store, a.dp.Loop)
	var err error
	a.runner, err = calcrun.New(calcrun.Config{Logger: log, Registerer: a.reg, StateDir: a.cfg.Node.DataDir,
		Outputs: []calcrun.OutputSink{a.bgp}},
		a.store, calc.New(calcCfg), a.box, tunnelSinks{a.tunnel, a.wg})
	if err != nil {
		return err
	}
	// What the node observed before the calculation existed, so that its
	// first state already has it (the links watch keeps them current).
	if s := a.ipipSupport.Load(); s != nil {
		a.runner.SetLocal(calc.LocalInput{Kind: calc.LocalKindIPIP, Value: calc.Support{Available: s.Available, Reason: s.Reason}})
	}
	if links, err := mtu.Links(a.linksConfig(), a.nodeAddrs()...); err == nil {
		a.runner.SetLocal(calc.LocalInput{Kind: calc.LocalKindLinks, Value: links})
	}
	a.wl = workloads.New(workloads.Config{
		Node: a.cfg.Node.Name, NodeLabels: a.cfg.Node.Labels, IfacePrefix: a.cfg.Network.InterfacePrefix, Logger: log,
	}, a.store, a.dp.Plumber, a.dp.Loop)
	resources.New(a.store, map[string]resources.DeleteHook{api.KindIPPool: a.ipam.DeletePool}).
		AddWarner(a.ipipWarnings).Register(a.api)
	a.ipam.Register(a.api)
	a.wl.Register(a.api)
	a.cluster.Register(a.api)
	policysvc.New(policysvc.Config{Node: a.cfg.Node.Name, Settings: calcCfg.Policy, Logger: log}, a.store, a.dp.Firewall).Register(a.api)
	a.bgp.Register(a.api)
	a.health.probe("bgp", a.bgp.Health)
	return nil
}

// subsystem is one long-running part of the agent, started once the store
// is in sync and stopped when the agent stops.
type subsystem struct {
	name string
	run  func(ctx context.Context)
}

// subsystems are the agent's long-running parts.
func (a *Agent) subsystems() []subsystem {
	return []subsystem{
		{"dataplane", func(ctx context.Context) {
			if err := a.dp.Run(ctx, a.box.C()); err != nil && ctx.Err() == nil {
				a.log.Error("dataplane loop stopped", "err", err)
			}
		}},
		{"calc", a.runner.Run},
		{"applied-revision", func(ctx context.Context) { a.runner.RecordApplied(ctx, a.dp.Loop) }},
		{"tunnels", a.tunnel.Run},
		{"wireguard", a.wg.Run},
		{"underlay-links", a.watchLinks},
		{"ipam-housekeeping", a.ipam.Run},
		{"workload-cleanup", a.wl.Run},
		{"bgp", a.bgp.Run},
	}
}

// afterOpen does what needs the datastore in sync: starting the
// subsystems, seeding a new cluster and registering this node. It waits
// for the replica to catch up, but not forever: a node that restarts
// without quorum works from its local replica (the best knowledge there
// is; never older than what its dataplane applied, see node/calcrun)
// rather than leaving its workloads unserved.
func (a *Agent) afterOpen(ctx context.Context) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := a.store.WaitInSync(wctx); err != nil && ctx.Err() == nil {
		a.log.Warn("datastore not in sync after 30s; starting from the local replica", "err", err)
	}
	cancel()
	for _, s := range a.subsystems() {
		a.goBackground(func() { s.run(ctx) })
	}
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := cluster.Seed(cctx, a.store, a.cfg)
		if err == nil {
			err = a.cluster.RegisterNode(cctx, cluster.Tunnel{})
		}
		cancel()
		if err == nil {
			return
		}
		a.log.Warn("registering this node in the datastore failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// superviseWatchdog pings systemd's watchdog while the agent is live, until
// ctx ends. A component that stops being live stops the pings, so systemd
// restarts a wedged agent.
func (a *Agent) superviseWatchdog(ctx context.Context, failed <-chan struct{}) {
	interval := watchdogInterval()
	if interval <= 0 {
		select {
		case <-ctx.Done():
		case <-failed:
		}
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-failed:
			return
		case <-t.C:
			if _, live, _ := a.health.report(); live {
				a.notify.watchdog()
			} else {
				a.log.Warn("not pinging the systemd watchdog: a component is not live")
			}
		}
	}
}

// watchAgentReadiness makes the agent component ready only while the local
// API serves the datastore: /readyz never answers 200 before the store is
// open or after the agent began to stop.
func (a *Agent) watchAgentReadiness() {
	a.health.probe("agent", func() localapi.ComponentStatus {
		if a.apiReady.Load() {
			return localapi.ComponentStatus{Name: "agent", State: localapi.StateRunning, Live: true, Ready: true}
		}
		return localapi.ComponentStatus{Name: "agent", State: localapi.StateStarting, Live: true, Detail: "the local API does not serve the datastore yet (or any more)"}
	})
}

// resolveAddress fills the node's underlay address from the config or by
// autodetection.
func (a *Agent) resolveAddress() error {
	v4, v6 := a.cfg.Node.Addresses()
	if v4.IsValid() || v6.IsValid() {
		a.addr4, a.addr6 = v4, v6
	} else {
		addr, err := autodetectAddress()
		if err != nil {
			return err
		}
		if addr.Is4() {
			a.addr4 = addr
		} else {
			a.addr6 = addr
		}
		a.log.Info("autodetected node address", "address", addr)
	}
	iface, prefix, err := underlayInfo(a.addr4)
	if err != nil {
		return fmt.Errorf("finding the interface of %s: %w", a.addr4, err)
	}
	a.underlayIface, a.underlay4 = iface, prefix
	if a.addr6.IsValid() {
		_, prefix6, err := underlayInfo(a.addr6)
		if err != nil {
			return fmt.Errorf("finding the interface of %s: %w", a.addr6, err)
		}
		a.underlay6 = prefix6
	}
	return nil
}

func (a *Agent) addrString() string {
	var parts []string
	for _, x := range []netip.Addr{a.addr4, a.addr6} {
		if x.IsValid() {
			parts = append(parts, x.String())
		}
	}
	return strings.Join(parts, ",")
}

// warnUnbuilt says, in one line each, which requested subsystems this build
// does not run yet: never pretend a subsystem is running.
func (a *Agent) warnUnbuilt() {
	for _, u := range a.unbuilt() {
		a.log.Warn(u.name+" is not built yet: "+u.why, "component", u.name)
		a.health.set(localapi.ComponentStatus{Name: u.name, State: localapi.StateNotBuilt, Live: true, Ready: true, Detail: u.why})
	}
}

type unbuiltSubsystem struct{ name, why string }

func (a *Agent) unbuilt() []unbuiltSubsystem {
	var out []unbuiltSubsystem
	c := a.cfg
	if c.Dataplane.Backend == "ebpf" {
		out = append(out, unbuiltSubsystem{"policy-backend", fmt.Sprintf("dataplane.backend %q is set but only nftables and iptables are built: policy is enforced with nftables", c.Dataplane.Backend)})
	}
	return out
}

// baseRoutes registers the local API calls that work before the
// datastore is open.
func (a *Agent) baseRoutes() {
	a.api.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, a.status())
	})
	// Go's profiler, on the root-only socket (never on metrics.listen):
	// `curl --unix-socket /run/weft/weft.sock http://weft/debug/pprof/profile`.
	a.api.HandleFunc("GET /debug/pprof/", pprof.Index)
	a.api.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	a.api.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	a.api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteError(w, localapi.Errorf(localapi.CodeNotFound, "no such API call: %s %s", r.Method, r.URL.Path))
	})
}

// apiHandler answers "starting" for calls that need the datastore until
// it is open.
func (a *Agent) apiHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.apiReady.Load() && r.URL.Path != "/v1/status" && !strings.HasPrefix(r.URL.Path, "/debug/") {
			localapi.WriteError(w, localapi.Errorf(localapi.CodeUnavailable, "the agent is starting or stopping: the datastore is not open (joining, waiting for the cluster, or shutting down)"))
			return
		}
		a.api.ServeHTTP(w, r)
	})
}

func (a *Agent) status() localapi.NodeStatus {
	cs, live, ready := a.health.report()
	info := version.Get()
	st := localapi.NodeStatus{
		Name: a.cfg.Node.Name, Version: info.Version, Commit: info.Commit,
		DataDir: a.cfg.Node.DataDir, PID: os.Getpid(), Started: a.started,
		Ready: live && ready, Live: live, Components: cs,
	}
	if a.addr4.IsValid() {
		st.Address = a.addr4.String()
	}
	if a.addr6.IsValid() {
		st.AddressV6 = a.addr6.String()
	}
	// a.store is set before apiReady (atomic), so reading it after
	// apiReady is safe.
	if a.dp != nil && a.dp.Firewall != nil {
		st.Policy = policyStatus(a.dp.Firewall.Status())
		if rep, _ := a.dp.Loop.LatestReport(); st.Policy.InSync && rep.Err == nil {
			st.Policy.AppliedRevision = rep.Revision
		}
	}
	if a.apiReady.Load() {
		st.Problems = a.runner.Problems()
		st.BGP = a.bgp.Status(context.Background())
		st.Datastore = &localapi.DatastoreStatus{Revision: a.store.Revision(), InSync: a.store.InSync()}
		st.Datastore.Leader, _ = a.store.Leader()
		st.WireGuard = wireguardStatus(a.dp.WireGuard)
		switch {
		case st.Datastore.Leader == a.cfg.Node.Name:
			st.Datastore.Role = "leader"
		case a.store.IsVoter():
			st.Datastore.Role = "voter"
		default:
			st.Datastore.Role = "nonvoter"
		}
	}
	return st
}
