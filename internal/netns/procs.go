package netns

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcessesIn lists the running processes, other than this one, whose
// network namespace is one of inodes (see [Inode]).
func ProcessesIn(inodes map[uint64]bool) []int {
	if len(inodes) == 0 {
		return nil
	}
	self := os.Getpid()
	var pids []int
	EachPID(func(pid int) {
		if pid == self || !Alive(pid) {
			return
		}
		if ino, ok := ProcessNS(pid, "net"); ok && inodes[ino] {
			pids = append(pids, pid)
		}
	})
	return pids
}

// killWait is how long killed processes get to disappear.
const killWait = 3 * time.Second

// Kill sends sig to every pid and waits up to grace for them to go; any
// left then get SIGKILL and a few more seconds. It reports the ones that
// survived even that.
func Kill(pids []int, sig syscall.Signal, grace time.Duration) error {
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
	if waitGone(pids, killWait) {
		return nil
	}
	var left []string
	for _, pid := range pids {
		if Alive(pid) {
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
			if Alive(pid) {
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
		time.Sleep(10 * time.Millisecond)
	}
}

// Alive reports whether pid is a running process; a zombie has finished.
func Alive(pid int) bool {
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

// EachPID calls fn with the pid of every process.
func EachPID(fn func(pid int)) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			fn(pid)
		}
	}
}

// ProcessNS is the inode of pid's namespace of kind ("net", "mnt"), read
// from /proc/PID/ns/KIND.
func ProcessNS(pid int, kind string) (uint64, bool) {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		return 0, false
	}
	return ParseNSLink(link, kind)
}

// ParseNSLink reads the inode out of a namespace link ("net:[4026532281]").
func ParseNSLink(link, kind string) (uint64, bool) {
	rest, ok := strings.CutPrefix(link, kind+":[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
	return ino, err == nil
}
