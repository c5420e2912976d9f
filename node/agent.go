// Package node is the weft agent: it composes the datastore, IPAM, the
// dataplane and the BGP speaker, owns their goroutines, and serves the local
// API socket, metrics and health.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
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

	addr4, addr6 netip.Addr
	api          *http.ServeMux
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
	return &Agent{
		cfg:    cfg,
		log:    log,
		reg:    reg,
		health: newHealth(),
		notify: notifier{log: log},
		api:    http.NewServeMux(),
	}
}

// Run starts the agent and blocks until ctx is cancelled (SIGTERM/SIGINT)
// or a component fails; then it stops everything within ShutdownTimeout.
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
		"node", a.cfg.Node.Name, "address", a.addr4String(), "data_dir", a.cfg.Node.DataDir)
	a.warnUnbuilt()

	sock, err := listenSocket(a.cfg.API.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(a.cfg.API.Socket)
	a.routes()
	apiSrv := startHTTP("api", sock, a.api, a.log)

	var metricsSrv *httpServer
	if a.cfg.Metrics.Listen != "" {
		l, err := net.Listen("tcp", a.cfg.Metrics.Listen)
		if err != nil {
			apiSrv.shutdown(context.Background())
			return fmt.Errorf("metrics.listen %s: %w", a.cfg.Metrics.Listen, err)
		}
		metricsSrv = startHTTP("metrics", l, metricsHandler(a.reg, a.health), a.log)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		apiSrv.shutdown(sctx)
		metricsSrv.shutdown(sctx)
	}()

	a.health.set(localapi.ComponentStatus{Name: "agent", State: localapi.StateRunning, Live: true, Ready: true})
	a.notify.ready("running")
	a.log.Info("agent ready", "socket", a.cfg.API.Socket, "metrics", a.cfg.Metrics.Listen)

	a.superviseWatchdog(ctx)
	a.notify.stopping()
	a.log.Info("stopping weft agent")
	return nil
}

// superviseWatchdog pings systemd's watchdog while the agent is live, until
// ctx ends. A component that stops being live stops the pings, so systemd
// restarts a wedged agent.
func (a *Agent) superviseWatchdog(ctx context.Context) {
	interval := watchdogInterval()
	if interval <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
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

// resolveAddress fills the node's underlay address from the config or by
// autodetection.
func (a *Agent) resolveAddress() error {
	v4, v6 := a.cfg.Node.Addresses()
	if v4.IsValid() || v6.IsValid() {
		a.addr4, a.addr6 = v4, v6
		return nil
	}
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
	return nil
}

func (a *Agent) addr4String() string {
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
	out = append(out, unbuiltSubsystem{"datastore", "this node runs without the replicated datastore; cluster.* settings are ignored"})
	if len(c.Network.Pools) > 0 {
		out = append(out, unbuiltSubsystem{"ipam", "network.pool entries are not allocated from"})
	}
	out = append(out, unbuiltSubsystem{"workloads", "no workload routing or VXLAN is programmed"})
	if c.BGP.Enabled {
		out = append(out, unbuiltSubsystem{"bgp", "bgp.enabled is set but no BGP speaker runs"})
	}
	if c.WireGuard.Enabled {
		out = append(out, unbuiltSubsystem{"wireguard", "wireguard.enabled is set but no WireGuard device is created"})
	}
	out = append(out, unbuiltSubsystem{"policy", fmt.Sprintf("dataplane.backend %q is set but no policy is enforced", c.Dataplane.Backend)})
	return out
}

// routes registers the local API.
func (a *Agent) routes() {
	a.api.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, a.status())
	})
	a.api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteError(w, localapi.Errorf(localapi.CodeNotFound, "no such API call: %s %s", r.Method, r.URL.Path))
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
	return st
}
