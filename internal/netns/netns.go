// Package netns is weft's one toolkit for Linux network namespaces: open one
// by path ([Open]), create and delete named ones under /run/netns
// ([Create], [Delete]), run a function inside one ([Target.Do]), talk
// netlink inside one ([Target.Netlink]), start a process inside one
// ([Start], [MountNS], [Launcher]) and find the processes inside some
// ([ProcessesIn]).
//
// Netlink and nftables sockets can be opened in another namespace directly
// (a netlink handle made with netlink.NewHandleAt, nftables.WithNetNSFd).
// Writes to /proc/sys/net, ethtool ioctls and ordinary sockets act on the
// namespace of the calling thread, so [Target.Do] runs them on an OS thread
// switched into the target namespace. A thread that cannot be switched back
// is never reused: it ends with the goroutine that [Target.Do] started for
// it.
package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netlinkTimeout bounds every netlink request so a wedged kernel call
// cannot stall the dataplane forever.
const netlinkTimeout = 10 * time.Second

// ErrNotNetNS is returned for a path that exists but is not a network
// namespace.
var ErrNotNetNS = errors.New("not a network namespace")

// Target is a network namespace: the process's own ("current") or one
// opened from a path. An open Target keeps its namespace alive: Close it.
type Target struct {
	path string
	h    vnetns.NsHandle
}

// Current is the namespace the process runs in.
func Current() *Target { return &Target{h: vnetns.None()} }

// Open opens the namespace at path; "" means [Current]. It fails with an
// error wrapping os.ErrNotExist if the path is missing and [ErrNotNetNS] if
// it is not a network namespace.
func Open(path string) (*Target, error) {
	if path == "" {
		return Current(), nil
	}
	h, err := vnetns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	if err := checkNetNS(int(h)); err != nil {
		h.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Target{path: path, h: h}, nil
}

func checkNetNS(fd int) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return ErrNotNetNS
	}
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("NS_GET_NSTYPE: %w", err)
	}
	if typ != unix.CLONE_NEWNET {
		return ErrNotNetNS
	}
	return nil
}

// IsCurrent reports whether this is the process's own namespace.
func (t *Target) IsCurrent() bool { return t.path == "" }

// Path is the namespace's path, "" for the current one.
func (t *Target) Path() string { return t.path }

// Fd is the namespace file descriptor, -1 for the current one.
func (t *Target) Fd() int {
	if t.IsCurrent() {
		return -1
	}
	return int(t.h)
}

// Handle is the namespace handle, netns.None() for the current one.
func (t *Target) Handle() vnetns.NsHandle {
	if t.IsCurrent() {
		return vnetns.None()
	}
	return t.h
}

// Netlink opens a netlink handle whose sockets live in the namespace. Close
// it: an open handle keeps the namespace alive.
func (t *Target) Netlink() (*netlink.Handle, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if t.IsCurrent() {
		h, err = netlink.NewHandle()
	} else {
		h, err = netlink.NewHandleAt(t.h)
	}
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	return h, nil
}

// OpenNetlink opens the namespace at path ("" = the current one) and a
// netlink handle in it; close releases both.
func OpenNetlink(path string) (t *Target, h *netlink.Handle, close func(), err error) {
	t, err = Open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	h, err = t.Netlink()
	if err != nil {
		t.Close()
		return nil, nil, nil, err
	}
	return t, h, func() { h.Close(); t.Close() }, nil
}

// Do runs fn on an OS thread inside the namespace and returns its error;
// for the current namespace it just calls fn. Sockets fn opens belong to the
// namespace for their whole life, whichever thread uses them later.
//
// fn runs on a goroutine of its own, locked to its thread: it must not call
// t.FailNow or runtime.Goexit, and goroutines it starts run on other threads,
// outside the namespace. If the thread cannot be switched back, the error
// says so and the thread is discarded (it ends with that goroutine), so no
// other code ever runs in the wrong namespace. A panic in fn is re-raised in
// the caller once the thread is safe.
func (t *Target) Do(fn func() error) error {
	if t.IsCurrent() {
		return fn()
	}
	return onThread(func() (func() error, error) {
		orig, err := vnetns.Get()
		if err != nil {
			return nil, fmt.Errorf("get thread network namespace: %w", err)
		}
		if err := vnetns.Set(t.h); err != nil {
			orig.Close()
			return nil, fmt.Errorf("enter network namespace %s: %w", t.path, err)
		}
		return func() error {
			defer orig.Close()
			if err := vnetns.Set(orig); err != nil {
				return fmt.Errorf("leave network namespace %s (the thread is discarded): %w", t.path, err)
			}
			return nil
		}, nil
	}, fn)
}

// onThread runs fn on a fresh goroutine locked to its OS thread, after
// enter has switched the thread somewhere. enter returns how to switch
// back; the thread returns to the runtime only when that succeeds (a failed
// enter must leave the thread as it was). A nil leave means the thread
// cannot be restored and is discarded.
func onThread(enter func() (leave func() error, err error), fn func() error) error {
	type result struct {
		err      error
		panicked any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		leave, err := enter()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		var res result
		func() {
			defer func() {
				if p := recover(); p != nil {
					res.panicked = p
				}
			}()
			res.err = fn()
		}()
		if leave == nil {
			// Still locked: the runtime ends the thread with this goroutine.
			done <- res
			return
		}
		if err := leave(); err != nil {
			res.err = errors.Join(res.err, err)
			done <- res
			return
		}
		runtime.UnlockOSThread()
		done <- res
	}()
	res := <-done
	if res.panicked != nil {
		panic(res.panicked)
	}
	return res.err
}

// Close releases the namespace handle.
func (t *Target) Close() error {
	if t.IsCurrent() {
		return nil
	}
	return t.h.Close()
}

// Exists reports whether path exists and is a network namespace, without
// keeping it open.
func Exists(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer f.Close()
	if err := checkNetNS(int(f.Fd())); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
