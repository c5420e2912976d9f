package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/node/localapi"
)

// AgentCommand is the hidden subcommand (under `weft demo`) through which
// the demo starts an agent inside a host: the binary re-executes itself
// with it, enters the host's namespaces (ExecAgent) and becomes the agent.
const AgentCommand = "internal-agent"

// wireguardRunDir is where wgctrl and wireguard-go keep their UAPI sockets;
// each agent gets a private tmpfs there.
const wireguardRunDir = "/run/wireguard"

// agent is an agent process the demo started.
type agent struct {
	host Host
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // its exit status, valid after done
}

// startAgent starts host's agent: exe re-executed as `weft demo
// internal-agent <host>`, which enters the host's namespaces and execs
// `weft agent --config <host>/weft.toml`. The process is in its own session
// (a Ctrl-C in the terminal is the demo's to handle) and not tied to the
// demo's lifetime, so that --keep can leave it running; its pid is
// recorded for `weft demo down`.
func startAgent(exe string, host Host) (*agent, error) {
	logf, err := os.OpenFile(host.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, "demo", AgentCommand, host.Name)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = agentEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent of %s: %w", host.Name, err)
	}
	a := &agent{host: host, cmd: cmd, done: make(chan struct{})}
	go func() {
		a.err = cmd.Wait()
		close(a.done)
	}()
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
		case <-a.done:
			return fmt.Errorf("agent of %s exited during start-up (%v)", a.host.Name, a.err)
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

// ExecAgent is the trampoline behind `weft demo internal-agent HOST`: on
// one locked thread it gives itself a private mount namespace (a slave of
// the machine's, so namespaces created later under /run/netns still show),
// enters the host's network namespace, mounts a sysfs for it (as `ip netns
// exec` does) and a private tmpfs on /run/wireguard (so agents never share
// WireGuard sockets), then replaces itself with `weft agent --config
// <host's config>`. Namespaces are per thread in Linux and execve keeps the
// calling thread's, which is what makes this work from Go. It returns only
// on failure.
func ExecAgent(host string) error {
	if !isHostName(host) {
		return fmt.Errorf("unknown demo host %q", host)
	}
	netnsFile, err := os.Open(netnsPath(hostNetns(host)))
	if err != nil {
		return fmt.Errorf("open the host's network namespace: %w", err)
	}
	defer netnsFile.Close()
	// Never unlocked: this thread either execs or the process exits.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare the mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make mounts slaves: %w", err)
	}
	if err := unix.Setns(int(netnsFile.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter the host's network namespace: %w", err)
	}
	// A sysfs shows the network devices of the namespace that mounts it.
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount /sys: %w", err)
	}
	if err := unix.Mount(hostNetns(host), "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	if err := unix.Mount("weft-demo-wireguard", wireguardRunDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=4m"); err != nil {
		return fmt.Errorf("mount a private %s: %w", wireguardRunDir, err)
	}
	argv := []string{os.Args[0], "agent", "--config", configPath(host)}
	if err := unix.Exec("/proc/self/exe", argv, os.Environ()); err != nil {
		return fmt.Errorf("exec the agent: %w", err)
	}
	return nil
}

// ensureWireguardDir creates /run/wireguard, the mount point of the agents'
// private tmpfs, if the machine has none. Teardown leaves it: it is
// WireGuard's standard (empty) runtime directory, and removing a directory
// that is a mount point in another mount namespace would unmount it there.
func ensureWireguardDir() error {
	if err := os.MkdirAll(wireguardRunDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", wireguardRunDir, err)
	}
	return nil
}

// isDemoAgent reports whether a process command line (NUL-separated, as in
// /proc/PID/cmdline) is the demo agent of host: `… agent --config
// /run/weft-demo/<host>/weft.toml`, or its trampoline before the exec.
func isDemoAgent(cmdline []byte, host string) bool {
	args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
	if len(args) == 4 && args[1] == "agent" && args[2] == "--config" && args[3] == configPath(host) {
		return true
	}
	return len(args) == 4 && args[1] == "demo" && args[2] == AgentCommand && args[3] == host
}
