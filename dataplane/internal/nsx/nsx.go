// Package nsx names the network namespace a driver acts on and runs code
// inside it.
//
// Netlink and nftables sockets can be opened in another namespace directly
// (a netlink handle made with netlink.NewHandleAt, nftables.WithNetNSFd).
// Writes to /proc/sys/net and ethtool ioctls act on the namespace of the
// calling thread, so [Target.Do] runs them on a locked OS thread switched
// into the target namespace and switched back afterwards.
package nsx

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netlinkTimeout bounds every netlink request so a wedged kernel call
// cannot stall the dataplane forever.
const netlinkTimeout = 10 * time.Second

// ErrNotNetNS is returned for a path that exists but is not a network
// namespace.
var ErrNotNetNS = errors.New("not a network namespace")

// Target is a network namespace: the process's own ("current") or one
// opened from a path.
type Target struct {
	path string
	h    netns.NsHandle
}

// Current is the namespace the process runs in.
func Current() *Target { return &Target{h: netns.None()} }

// Open opens the namespace at path; "" means [Current]. It fails with an
// error wrapping os.ErrNotExist if the path is missing and [ErrNotNetNS] if
// it is not a network namespace.
func Open(path string) (*Target, error) {
	if path == "" {
		return Current(), nil
	}
	h, err := netns.GetFromPath(path)
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
func (t *Target) Handle() netns.NsHandle {
	if t.IsCurrent() {
		return netns.None()
	}
	return t.h
}

// Netlink opens a netlink handle whose sockets live in the namespace.
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

// Do runs fn with the calling OS thread inside the namespace. fn must not
// start goroutines that expect to be in the namespace: they run on other
// threads.
func (t *Target) Do(fn func() error) error {
	if t.IsCurrent() {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get thread network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(t.h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", t.path, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Keep the thread locked: the runtime ends a locked thread when its
		// goroutine exits, so no other goroutine runs in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leave network namespace %s: %w", t.path, err))
	}
	runtime.UnlockOSThread()
	return ferr
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
