package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process is a device process this agent started.
type Process struct {
	Pid     int
	logPath string
	done    chan struct{}
	err     error
}

// Done is closed when the process has exited (while this agent runs).
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process ended, valid after Done.
func (p *Process) Err() error { return p.err }

// LogTail is the end of the process's log, for error messages ("" when
// there is none).
func (p *Process) LogTail() string {
	if p.logPath == "" {
		return ""
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return "; its log (" + p.logPath + ") ends: " + strings.Join(lines, " | ")
}

// ProcessStarter starts the device process as `Command... --interface
// NAME`, detached from the agent: in a session of its own (no signal
// meant for the agent's process group reaches it, and nothing ties its
// life to the agent's), with its output appended to LogPath. The agent
// reaps it while it runs; after the agent is gone, init does.
type ProcessStarter struct {
	// Command is the binary and arguments (the agent's own binary and
	// "wireguard", "device").
	Command []string
	// LogPath receives the process's output; "" discards it.
	LogPath string
	// Env is added to the agent's environment.
	Env    []string
	Logger *slog.Logger
}

// Start implements [Starter].
func (s ProcessStarter) Start(name string) (*Process, error) {
	if len(s.Command) == 0 {
		return nil, errors.New("no device command")
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cmd := exec.Command(s.Command[0], append(s.Command[1:], "--interface", name)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if len(s.Env) > 0 {
		cmd.Env = append(os.Environ(), s.Env...)
	}
	if s.LogPath != "" {
		f, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("device process log: %w", err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Pid: cmd.Process.Pid, logPath: s.LogPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		log.Warn("the WireGuard device process exited", "interface", name, "device_pid", p.Pid, "status", fmt.Sprint(p.err))
	}()
	return p, nil
}

// peerPID is the pid of the process serving the UAPI socket of name (its
// peer credentials).
func peerPID(name string) (int, error) {
	c, err := net.DialTimeout("unix", uapiPath(name), time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return int(cred.Pid), nil
}

// processBinary describes the binary a process runs: its path, and
// whether it was replaced since the process started (an upgrade: the
// device process goes on with the old binary, which is fine; it is
// replaced only when the device is restarted).
func processBinary(pid int) (path string, replaced bool) {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return "", false
	}
	path, replaced = strings.CutSuffix(exe, " (deleted)")
	if !replaced {
		// Same path, other file: compare with what is there now.
		cur, err1 := os.Stat(path)
		old, err2 := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe")
		if err1 == nil && err2 == nil && !os.SameFile(cur, old) {
			replaced = true
		}
	}
	return path, replaced
}
