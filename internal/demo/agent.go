package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/site"
	"github.com/weftnet/weft/node/localapi"
)

// agent is an agent process the demo started.
type agent struct {
	host Host
	proc *site.Proc
}

// startAgent starts host's agent, `weft agent --config <host>/weft.toml`,
// inside the host: in its network namespace and its private mount
// namespace (a /run/wireguard of its own). The process is in its own
// session (a Ctrl-C in the terminal is the demo's to handle) and not tied
// to the demo's lifetime, so that --keep can leave it running; its pid is
// recorded for `weft demo down`.
func startAgent(exe string, host Host, in *site.Host) (*agent, error) {
	logf, err := os.OpenFile(host.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, "agent", "--config", host.ConfigPath())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = agentEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := in.Start(cmd); err != nil {
		return nil, fmt.Errorf("start agent of %s: %w", host.Name, err)
	}
	a := &agent{host: host, proc: site.Watch(cmd)}
	pid := strconv.Itoa(cmd.Process.Pid)
	if err := os.WriteFile(pidPath(host.Name), []byte(pid+"\n"), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("record agent pid: %w", err)
	}
	return a, nil
}

// agentEnv is the demo's environment without what would make an agent talk
// to the demo's own supervisor (systemd's notify and socket variables) or
// another agent's socket.
func agentEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WEFT_SOCKET":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// waitReady polls the agent's local API until it reports ready, failing
// early if the process exits.
func (a *agent) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := localapi.NewClient(a.host.Socket())
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		st, err := client.Status(ctx)
		if err == nil && st.Ready {
			return nil
		}
		if err == nil {
			err = notReadyError(st)
		}
		last = err
		select {
		case <-a.proc.Done():
			return fmt.Errorf("agent of %s exited during start-up (%v)", a.host.Name, a.proc.Err())
		case <-ctx.Done():
			if ctxErr := context.Cause(ctx); !errors.Is(ctxErr, context.DeadlineExceeded) {
				return ctxErr
			}
			return fmt.Errorf("agent of %s not ready after %s: %v", a.host.Name, timeout, last)
		case <-tick.C:
		}
	}
}

// notReadyError names the components that are not ready yet.
func notReadyError(st localapi.NodeStatus) error {
	var waiting []string
	for _, c := range st.Components {
		if !c.Ready && c.State != localapi.StateDisabled && c.State != localapi.StateNotBuilt {
			w := c.Name + " " + c.State
			if c.Detail != "" {
				w += ": " + c.Detail
			}
			waiting = append(waiting, w)
		}
	}
	if len(waiting) == 0 {
		return errors.New("not ready")
	}
	return fmt.Errorf("waiting for %s", strings.Join(waiting, "; "))
}

// isDemoAgent reports whether a process command line (NUL-separated, as in
// /proc/PID/cmdline) is the demo agent of host: `… agent --config
// /run/weft-demo/<host>/weft.toml`.
func isDemoAgent(cmdline []byte, host string) bool {
	args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
	return len(args) == 4 && args[1] == "agent" && args[2] == "--config" && args[3] == configPath(host)
}
