package demo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps the bind mounts that name network
// namespaces; `ip netns` and `weft workload add --netns` find them there.
const netnsDir = "/run/netns"

func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// prepareNetnsDir makes /run/netns a shared mount, as `ip netns add` does:
// namespaces created later then also appear in mount namespaces copied
// from this one (the agents'), and deleting one unmounts it everywhere.
func prepareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself first.
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", netnsDir, err)
		}
		err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
	}
	return nil
}

// createNetns creates the named network namespace /run/netns/<name> the
// iproute2 way (a bind mount of a thread's namespace), with loopback up.
func createNetns(name string) (err error) {
	p := netnsPath(name)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("create network namespace %s: %w", name, err)
	}
	f.Close()
	defer func() {
		if err != nil {
			_ = os.Remove(p)
		}
	}()
	err = onNewThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", p, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create network namespace %s: %w", name, err)
	}
	return inNetns(name, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	})
}

// deleteNetns removes a named namespace as `ip netns del` does. The
// namespace itself goes once no process is left in it.
func deleteNetns(name string) error {
	p := netnsPath(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// demoNetnsNames lists the namespaces under /run/netns that carry the
// demo's prefix.
func demoNetnsNames() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), NetnsPrefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// inNetns runs fn with a netlink handle that operates inside the named
// namespace; no thread changes namespace for it.
func inNetns(name string, fn func(h *netlink.Handle) error) error {
	ns, err := netns.GetFromPath(netnsPath(name))
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", name, err)
	}
	defer h.Close()
	if err := fn(h); err != nil {
		return fmt.Errorf("in %s: %w", name, err)
	}
	return nil
}

// onThreadIn runs fn on an OS thread that has entered the named namespace,
// so that sockets fn opens (and /proc/sys/net it writes) belong to it.
func onThreadIn(name string, fn func() error) error {
	f, err := os.Open(netnsPath(name))
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer f.Close()
	return onNewThread(func() error {
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", name, err)
		}
		return fn()
	})
}

// onNewThread runs fn on a locked OS thread whose network namespace fn may
// change. The thread goes back to the runtime only once it is back in its
// original namespace; otherwise it stays locked and ends with its goroutine.
func onNewThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// setSysctl writes a /proc/sys value as seen from inside the namespace; key
// is the path below /proc/sys ("net/ipv4/ip_forward").
func setSysctl(ns, key, value string) error {
	return onThreadIn(ns, func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns, err)
		}
		return nil
	})
}
