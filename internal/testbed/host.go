package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/site"
)

// Host is one machine of the site (a site.Host: a network namespace
// attached to its subnet's bridge, with a private mount namespace whose
// /run/wireguard is its own) and the weft agent running in both.
type Host struct {
	site  *Site
	sh    *site.Host
	name  string
	ns    *Netns
	addr  string // underlay IPv4
	addr6 string // underlay IPv6, "" without Options.IPv6

	dir, dataDir, socket, configPath, logPath string

	mu        sync.Mutex
	agent     *site.Proc
	starts    int
	extraTOML string
	join      []string
	tokenFile string
}

// Name is the host's name, also its weft node name ("h1").
func (h *Host) Name() string { return h.name }

// Netns returns the host's network namespace.
func (h *Host) Netns() *Netns { return h.ns }

// Address is the host's underlay IPv4 address.
func (h *Host) Address() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// Gateway is the router's IPv4 address on the host's subnet, its default
// gateway.
func (h *Host) Gateway() string { return h.site.subnets[h.sh.Subnet()].RouterAddr().String() }

// Subnet is the index of the host's underlay subnet (Options.Subnets).
func (h *Host) Subnet() int { return h.sh.Subnet() }

// Address6 is the host's underlay IPv6 address, "" unless Options.IPv6.
func (h *Host) Address6() string { return h.addr6 }

// ClusterAddress is the host:port other agents join (cluster.advertise).
func (h *Host) ClusterAddress() string {
	return net.JoinHostPort(h.Address(), strconv.Itoa(ClusterPort))
}

// Socket is the agent's local API socket (api.socket).
func (h *Host) Socket() string { return h.socket }

// DataDir is the agent's data_dir.
func (h *Host) DataDir() string { return h.dataDir }

// Dir is the host's private directory (config, logs, data dir, socket).
func (h *Host) Dir() string { return h.dir }

// ConfigPath is where the agent's generated TOML is written at each start.
func (h *Host) ConfigPath() string { return h.configPath }

// LogPath is the file collecting the agent's stdout and stderr over all its
// runs.
func (h *Host) LogPath() string { return h.logPath }

// Logs returns everything the host's agents wrote so far.
func (h *Host) Logs() string {
	b, _ := os.ReadFile(h.logPath)
	return string(b)
}

// Exec runs argv on the host: in its network namespace and in the mount
// namespace its agent uses (so `wg show` sees the agent's /run/wireguard).
// It returns standard output; the error carries standard error.
func (h *Host) Exec(argv ...string) (string, error) { return h.ns.Exec(argv...) }

// ExecContext is Exec with a context.
func (h *Host) ExecContext(ctx context.Context, argv ...string) (string, error) {
	return h.ns.ExecContext(ctx, argv...)
}

// Weft runs the weft CLI on the host against the host's agent socket and
// returns its standard output.
func (h *Host) Weft(args ...string) (string, error) {
	if h.site.bin == "" {
		return "", errors.New("testbed: Weft needs the real weft binary (Options.FakeAgent is set)")
	}
	argv := append([]string{"env", EnvSocket + "=" + h.socket, h.site.bin, "--socket=" + h.socket}, args...)
	return h.ns.Exec(argv...)
}

// EnvSocket is the variable the weft CLI reads its socket path from.
const EnvSocket = "WEFT_SOCKET"

// SetTOML sets a TOML fragment merged over this host's generated
// configuration at its next StartAgent (after Options.ExtraTOML and
// Options.HostTOML). Tables merge key by key; other values replace.
func (h *Host) SetTOML(fragment string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.extraTOML = fragment
}

// SetJoin makes the host's next start join the cluster through peers
// (cluster.join = their cluster addresses) with the token in tokenFile
// (cluster.token_file; "" leaves it unset).
func (h *Host) SetJoin(tokenFile string, peers ...*Host) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.join = h.join[:0]
	for _, p := range peers {
		h.join = append(h.join, p.ClusterAddress())
	}
	h.tokenFile = tokenFile
}

// Config returns the TOML the next StartAgent will write.
func (h *Host) Config() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	doc, err := h.configLocked()
	if err != nil {
		return "", err
	}
	b, err := encodeTOML(doc)
	return string(b), err
}

func (h *Host) configLocked() (tomlDoc, error) {
	doc := baseConfig(h)
	layers := []struct{ what, src string }{{"Options.ExtraTOML", h.site.opts.ExtraTOML}}
	if h.site.opts.HostTOML != nil {
		layers = append(layers, struct{ what, src string }{"Options.HostTOML(" + h.name + ")", h.site.opts.HostTOML(h)})
	}
	layers = append(layers, struct{ what, src string }{h.name + ".SetTOML", h.extraTOML})
	for _, l := range layers {
		frag, err := parseTOML(l.what, l.src)
		if err != nil {
			return nil, err
		}
		mergeTOML(doc, frag)
	}
	if len(h.join) > 0 || h.tokenFile != "" {
		cluster, _ := doc["cluster"].(map[string]any)
		if len(h.join) > 0 {
			cluster["join"] = append([]string(nil), h.join...)
		}
		if h.tokenFile != "" {
			cluster["token_file"] = h.tokenFile
		}
	}
	return doc, nil
}

// Running reports whether the host's agent process is alive.
func (h *Host) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.agent != nil && !h.agent.Exited()
}

// PID is the agent's process id, 0 when it is not running.
func (h *Host) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.agent == nil || h.agent.Exited() {
		return 0
	}
	return h.agent.Pid()
}

// StartAgent writes the host's configuration and starts its agent in the
// host's network and mount namespaces. It does not wait for readiness.
func (h *Host) StartAgent() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.agent != nil && !h.agent.Exited() {
		return fmt.Errorf("testbed: agent on %s already running (pid %d)", h.name, h.agent.Pid())
	}
	doc, err := h.configLocked()
	if err != nil {
		return fmt.Errorf("testbed: config of %s: %w", h.name, err)
	}
	b, err := encodeTOML(doc)
	if err != nil {
		return fmt.Errorf("testbed: encode config of %s: %w", h.name, err)
	}
	if err := os.WriteFile(h.configPath, b, 0o600); err != nil {
		return fmt.Errorf("testbed: write config of %s: %w", h.name, err)
	}
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testbed: log of %s: %w", h.name, err)
	}
	defer logf.Close()
	h.starts++
	fmt.Fprintf(logf, "=== testbed: %s start #%d of %s at %s\n", h.name, h.starts, h.site.agentName(), time.Now().Format(time.RFC3339Nano))

	path, args, env := h.site.agentCommand(h.configPath)
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Launched: it dies with the test process however that ends (Pdeathsig).
	if err := h.sh.Launch(cmd); err != nil {
		return fmt.Errorf("testbed: start agent on %s: %w", h.name, err)
	}
	h.agent = site.Watch(cmd)
	return nil
}

// StopAgent sends SIGTERM and waits. It fails when the agent is not running,
// when it takes longer than Options.StopTimeout (5 s; it is then killed), or
// when it exits with an error status or by a signal.
func (h *Host) StopAgent() error {
	h.mu.Lock()
	p := h.agent
	h.mu.Unlock()
	if p == nil || p.Exited() {
		return fmt.Errorf("testbed: agent on %s is not running", h.name)
	}
	limit := h.site.opts.StopTimeout
	start := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("testbed: SIGTERM agent on %s: %w", h.name, err)
	}
	select {
	case <-p.Done():
	case <-time.After(limit):
		_ = p.Cmd.Process.Kill()
		<-p.Done()
		return fmt.Errorf("testbed: agent on %s did not stop within %s of SIGTERM; killed", h.name, limit)
	}
	took := time.Since(start)
	if p.Err() != nil {
		return fmt.Errorf("testbed: agent on %s stopped in %s but %s", h.name, took.Round(time.Millisecond), p.ExitDescription())
	}
	return nil
}

// Kill9 kills the agent with SIGKILL (a crash) and waits for it to be gone.
func (h *Host) Kill9() error {
	h.mu.Lock()
	p := h.agent
	h.mu.Unlock()
	if p == nil || p.Exited() {
		return fmt.Errorf("testbed: agent on %s is not running", h.name)
	}
	if err := p.Cmd.Process.Kill(); err != nil {
		return fmt.Errorf("testbed: kill agent on %s: %w", h.name, err)
	}
	<-p.Done()
	return nil
}

// Restart stops the agent (as StopAgent) and starts it again with the
// current configuration. It does not wait for readiness.
func (h *Host) Restart() error {
	if err := h.StopAgent(); err != nil {
		return err
	}
	return h.StartAgent()
}

// WaitReady polls the agent's /readyz over the underlay from inside the
// host's namespace until it answers 200 (or, with metrics disabled, until
// `weft node status -o json` reports ready). It fails at once when the agent
// exits, with the end of its log. Without a deadline in ctx it waits up to
// Options.ReadyTimeout.
func (h *Host) WaitReady(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.site.opts.ReadyTimeout)
		defer cancel()
	}
	h.mu.Lock()
	p := h.agent
	doc, err := h.configLocked()
	h.mu.Unlock()
	if p == nil {
		return fmt.Errorf("testbed: agent on %s was never started", h.name)
	}
	if err != nil {
		return err
	}
	probe := h.readyProbe(doc)
	var last error
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if p.Exited() {
			return fmt.Errorf("testbed: agent on %s %s before it was ready; log ends:\n%s",
				h.name, p.ExitDescription(), site.LastLines(h.Logs(), 20))
		}
		if last = probe(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testbed: agent on %s not ready: %v (last check: %v)", h.name, ctx.Err(), last)
		case <-p.Done():
		case <-tick.C:
		}
	}
}

// readyProbe picks how readiness is observed from the effective config.
func (h *Host) readyProbe(doc tomlDoc) func(context.Context) error {
	listen, ok := lookupString(doc, "metrics", "listen")
	if ok && listen == "" {
		return h.socketReady
	}
	addr := h.Address()
	if !ok {
		listen = net.JoinHostPort(addr, strconv.Itoa(MetricsPort))
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return func(context.Context) error { return fmt.Errorf("metrics.listen %q: %w", listen, err) }
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = addr
	}
	url := "http://" + net.JoinHostPort(host, port) + "/readyz"
	client := h.ns.HTTPClient(time.Second)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

func (h *Host) socketReady(ctx context.Context) error {
	st, err := h.NodeStatus(ctx)
	if err != nil {
		return err
	}
	if !st.Ready {
		return errors.New("weft node status: not ready")
	}
	return nil
}

// CutLink sets the host's veth on the bridge down: the host is partitioned
// from the site (its own interface stays configured, as when a cable is
// pulled).
func (h *Host) CutLink() error { return h.sh.SetUplink(false) }

// HealLink sets the host's veth on the bridge up again.
func (h *Host) HealLink() error { return h.sh.SetUplink(true) }

// hasWireGuardTmpfs reports whether mountinfo shows the host's private
// /run/wireguard tmpfs.
func hasWireGuardTmpfs(mountinfo string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		// mountinfo: ID PARENT MAJ:MIN ROOT TARGET OPTS ... - FSTYPE SOURCE SUPEROPTS
		if len(f) >= 10 && f[4] == site.WireGuardDir && f[len(f)-3] == "tmpfs" && f[len(f)-2] == site.WireGuardTmpfs {
			return true
		}
	}
	return false
}

// NodeStatus is the part of `weft node status -o json` the test bed reads.
type NodeStatus struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// NodeStatus runs `weft node status -o json` on the host and decodes it.
func (h *Host) NodeStatus(ctx context.Context) (*NodeStatus, error) {
	if h.site.bin == "" {
		return nil, errors.New("testbed: NodeStatus needs the real weft binary (Options.FakeAgent is set)")
	}
	out, err := h.ns.ExecContext(ctx, "env", EnvSocket+"="+h.socket, h.site.bin, "--socket="+h.socket, "node", "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var st NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("weft node status -o json on %s: %w: %q", h.name, err, site.LastLines(out, 5))
	}
	return &st, nil
}
