package demo

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How long agents get to stop after SIGTERM before they are killed, and
// how long killed processes get to disappear.
const (
	stopGrace = 5 * time.Second
	killGrace = 3 * time.Second
)

// Removed says what a teardown removed.
type Removed struct {
	Agents     int  // agent processes stopped
	Stragglers int  // other processes killed because they were inside a demo namespace
	Namespaces int  // network namespaces deleted
	StateDir   bool // whether StateDir existed and was removed
}

// Empty reports whether there was nothing to remove.
func (r Removed) Empty() bool {
	return r.Agents == 0 && r.Stragglers == 0 && r.Namespaces == 0 && !r.StateDir
}

func (r Removed) String() string {
	if r.Empty() {
		return "nothing to remove"
	}
	parts := []string{plural(r.Agents, "agent") + " stopped"}
	if r.Stragglers > 0 {
		parts = append(parts, plural(r.Stragglers, "other process")+" killed")
	}
	parts = append(parts, plural(r.Namespaces, "network namespace")+" deleted")
	if r.StateDir {
		parts = append(parts, StateDir+" removed")
	}
	return strings.Join(parts, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "s") {
		return fmt.Sprintf("%d %ses", n, what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// teardown removes everything a demo (this one or an earlier one) left:
// its agents (recorded in StateDir/<host>/agent.pid or found by command
// line; either way verified by command line, so a recycled pid is never
// signalled), any other process still inside a demo namespace, every
// /run/netns/weft-demo-* namespace, and StateDir. It carries on past
// errors and reports them all.
func teardown() (Removed, error) {
	var (
		r    Removed
		errs []error
	)
	pids, err := demoAgents()
	if err != nil {
		errs = append(errs, err)
	}
	r.Agents = len(pids)
	if err := stopProcesses(pids, syscall.SIGTERM, stopGrace); err != nil {
		errs = append(errs, err)
	}

	names, err := demoNetnsNames()
	if err != nil {
		errs = append(errs, err)
	}
	stragglers, err := processesInNetns(names)
	if err != nil {
		errs = append(errs, err)
	}
	r.Stragglers = len(stragglers)
	if err := stopProcesses(stragglers, syscall.SIGKILL, killGrace); err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if err := deleteNetns(name); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Namespaces++
	}

	if _, err := os.Stat(StateDir); err == nil {
		if err := os.RemoveAll(StateDir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", StateDir, err))
		} else {
			r.StateDir = true
		}
	}
	return r, oneError(errs)
}

// oneError folds errors into one, on one line (the CLI reports one line).
func oneError(errs []error) error {
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New(strings.Join(msgs, "; "))
}

// demoAgents finds the demo's agents: the pids recorded in the hosts'
// agent.pid files, and any process whose command line is a demo agent or
// its trampoline (one started just before the demo was killed has no pid
// file yet).
func demoAgents() ([]int, error) {
	found := map[int]bool{}
	for _, host := range hostNames {
		if pid, ok := recordedAgent(host); ok {
			found[pid] = true
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || found[pid] || !alive(pid) {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		for _, host := range hostNames {
			if isDemoAgent(cmdline, host) {
				found[pid] = true
			}
		}
	}
	pids := make([]int, 0, len(found))
	for pid := range found {
		pids = append(pids, pid)
	}
	return pids, nil
}

// recordedAgent returns the pid recorded for host's agent if that process
// is alive and is that agent.
func recordedAgent(host string) (int, bool) {
	b, err := os.ReadFile(pidPath(host))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !alive(pid) {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !isDemoAgent(cmdline, host) {
		return 0, false
	}
	return pid, true
}

// stopProcesses sends sig to every pid and waits up to grace for them to
// go; whatever is left then is killed.
func stopProcesses(pids []int, sig syscall.Signal, grace time.Duration) error {
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	if waitGone(pids, grace) {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if waitGone(pids, killGrace) {
		return nil
	}
	var left []string
	for _, pid := range pids {
		if alive(pid) {
			left = append(left, strconv.Itoa(pid))
		}
	}
	return fmt.Errorf("processes %s survived SIGKILL", strings.Join(left, ", "))
}

// waitGone polls until none of pids is alive, for at most d.
func waitGone(pids []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		anyAlive := false
		for _, pid := range pids {
			if alive(pid) {
				anyAlive = true
				break
			}
		}
		if !anyAlive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid is a running process; a zombie has finished.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// processesInNetns lists the processes (other than this one) whose network
// namespace is one of the named ones.
func processesInNetns(names []string) ([]int, error) {
	inodes := map[uint64]bool{}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Stat(netnsPath(name), &st); err == nil {
			inodes[st.Ino] = true
		}
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if inodes[st.Ino] && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// leftovers says whether anything of a demo is still there.
func leftovers() (bool, error) {
	if _, err := os.Stat(StateDir); err == nil {
		return true, nil
	}
	names, err := demoNetnsNames()
	return len(names) > 0, err
}
