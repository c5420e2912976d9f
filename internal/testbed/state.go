package testbed

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/site"
)

const (
	// Prefix starts the name of everything the test bed creates: namespaces
	// (/run/netns/wtb-*), directories (/tmp/wtb-*) and state files.
	Prefix = "wtb-"
	// StateDir holds one JSON file per live site, naming its owner process and
	// what it created, so that Sweep can remove what an interrupted run left.
	StateDir = "/run/weft-testbed"
)

// siteState is what a site records before it creates anything.
type siteState struct {
	ID string `json:"id"`
	// PID and PIDStart identify the owning test process; the start time
	// guards against a reused PID.
	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"`
	Dir      string `json:"dir"`
	// Netns lists namespace names in creation order; removal goes backwards.
	Netns   []string  `json:"netns"`
	Created time.Time `json:"created"`
}

func statePath(id string) string { return filepath.Join(StateDir, Prefix+id+".json") }

// write replaces the state file atomically.
func (st *siteState) write() error {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", StateDir, err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(st.ID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, statePath(st.ID)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

func readState(path string) (*siteState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st siteState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if st.ID == "" || !validID(st.ID) {
		return nil, fmt.Errorf("parse %s: bad site id %q", path, st.ID)
	}
	return &st, nil
}

// ownedBy reports whether the state's owner process is still the one that
// wrote it.
func (st *siteState) ownerAlive() bool {
	start, err := processStart(st.PID)
	return err == nil && start == st.PIDStart
}

// processStart returns the start time (clock ticks since boot) of pid, field
// 22 of /proc/PID/stat.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields restart after
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// processGone reports whether pid no longer runs (absent or a zombie).
func processGone(pid int) bool { return !netns.Alive(pid) }

// Sweep removes what interrupted test runs left behind: every site whose
// state file names an owner process that is gone loses its processes,
// namespaces, directory and state file; stale weft build directories go too.
// Sites of live processes and anything without a state file are never
// touched. It reports what it removed to w (may be nil). Needs root.
func Sweep(w io.Writer) error {
	if w == nil {
		w = io.Discard
	}
	var errs []error
	files, _ := filepath.Glob(filepath.Join(StateDir, Prefix+"*.json"))
	for _, f := range files {
		st, err := readState(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.ownerAlive() {
			continue
		}
		fmt.Fprintf(w, "testbed: sweeping site %s left by pid %d (%s)\n", st.ID, st.PID, strings.Join(st.Netns, " "))
		if err := removeSite(st); err != nil {
			errs = append(errs, err)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), binDirPrefix))
		if err != nil || !processGone(pid) {
			continue
		}
		fmt.Fprintf(w, "testbed: removing stale build dir %s\n", d)
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sweepOwnedBy removes every site of process pid (used when this process is
// interrupted and no t.Cleanup will run).
func sweepOwnedBy(pid int) {
	files, _ := filepath.Glob(filepath.Join(StateDir, Prefix+"*.json"))
	for _, f := range files {
		if st, err := readState(f); err == nil && st.PID == pid {
			_ = removeSite(st)
		}
	}
}

// removeSite kills every process inside the site's namespaces, deletes the
// namespaces (which deletes their links), its directory and its state file.
func removeSite(st *siteState) error {
	var errs []error
	if _, err := site.Remove(st.Netns); err != nil {
		errs = append(errs, err)
	}
	if st.Dir != "" && strings.HasPrefix(filepath.Base(st.Dir), Prefix+st.ID) {
		if err := os.RemoveAll(st.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(statePath(st.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// leftovers lists what of site id still exists: its state file, directory,
// namespace names, processes inside its namespaces (inodes) or naming its
// directory (unless deliberately kept), mounts in any mount namespace, this process's file descriptors
// on its namespaces, and links in the root namespace carrying its id.
func leftovers(id, dir string, inodes map[uint64]bool, keptDir bool) []string {
	var out []string
	prefix := Prefix + id
	if _, err := os.Stat(statePath(id)); err == nil {
		out = append(out, "state file "+statePath(id))
	}
	if dir != "" && !keptDir {
		if _, err := os.Stat(dir); err == nil {
			out = append(out, "directory "+dir)
		}
	}
	if names, err := netns.List(prefix); err == nil {
		for _, name := range names {
			out = append(out, "netns "+netns.PathOf(name))
		}
	}
	self := os.Getpid()
	seenMnt := map[uint64]bool{}
	netns.EachPID(func(pid int) {
		if pid != self && !processGone(pid) {
			if ino, ok := netns.ProcessNS(pid, "net"); ok && inodes[ino] {
				out = append(out, fmt.Sprintf("process %d (%s) in a site namespace", pid, cmdline(pid)))
			} else if dir != "" && strings.Contains(cmdline(pid), dir) {
				out = append(out, fmt.Sprintf("process %d (%s)", pid, cmdline(pid)))
			}
		}
		mnt, ok := netns.ProcessNS(pid, "mnt")
		if !ok || seenMnt[mnt] {
			return
		}
		seenMnt[mnt] = true
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if mountIsSites(line, prefix, inodes) {
				out = append(out, fmt.Sprintf("mount in the mount namespace of pid %d: %s", pid, line))
			}
		}
	})
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, fd := range fds {
			link, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
			if ino, ok := netns.ParseNSLink(link, "net"); ok && inodes[ino] {
				out = append(out, "file descriptor "+fd.Name()+" of this process on "+link)
			}
		}
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, ifc := range ifs {
			if strings.Contains(ifc.Name, id) {
				out = append(out, "link "+ifc.Name+" in the root namespace")
			}
		}
	}
	return out
}

// mountIsSites reports whether a mountinfo line is a mount of the site: a
// netns bind mount by name or by nsfs inode.
func mountIsSites(line, prefix string, inodes map[uint64]bool) bool {
	fields := strings.Fields(line)
	if len(fields) < 5 {
		return false
	}
	root, target := fields[3], fields[4]
	if strings.HasPrefix(filepath.Base(target), prefix) {
		return true
	}
	ino, ok := netns.ParseNSLink(root, "net")
	return ok && inodes[ino]
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}
