package demo

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/site"
)

// stopGrace is how long agents get to stop after SIGTERM before they are
// killed.
const stopGrace = 5 * time.Second

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
	if err := netns.Kill(pids, syscall.SIGTERM, stopGrace); err != nil {
		errs = append(errs, err)
	}

	names, err := netns.List(NetnsPrefix)
	if err != nil {
		errs = append(errs, err)
	}
	removed, err := site.Remove(names)
	if err != nil {
		errs = append(errs, err)
	}
	r.Stragglers, r.Namespaces = removed.Killed, removed.Deleted

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
		if err != nil || found[pid] || !netns.Alive(pid) {
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
	if err != nil || pid <= 0 || !netns.Alive(pid) {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !isDemoAgent(cmdline, host) {
		return 0, false
	}
	return pid, true
}

// leftovers says whether anything of a demo is still there.
func leftovers() (bool, error) {
	if _, err := os.Stat(StateDir); err == nil {
		return true, nil
	}
	names, err := netns.List(NetnsPrefix)
	return len(names) > 0, err
}
