package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir is where iproute2 keeps the bind mounts that name network namespaces;
// `ip netns` and `weft workload add --netns` find them there.
const Dir = "/run/netns"

// PathOf is the path of the namespace called name: Dir/name.
func PathOf(name string) string { return filepath.Join(Dir, name) }

// Create creates the named network namespace Dir/name the iproute2 way (a
// bind mount of a thread's new namespace), with loopback up. It fails if the
// name exists. Dir is first made a shared mount, as `ip netns add` does, so
// that namespaces created later also appear in mount namespaces copied from
// this one (hosts' and agents') and deleting one unmounts it everywhere.
func Create(name string) (err error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return fmt.Errorf("create network namespace %q: bad name", name)
	}
	if err := PrepareDir(); err != nil {
		return err
	}
	p := PathOf(name)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("create network namespace %s: %w", name, err)
	}
	f.Close()
	defer func() {
		if err != nil {
			_ = Delete(name)
		}
	}()
	// The thread's namespace is replaced for good: no leave, so the thread
	// is discarded afterwards.
	err = onThread(func() (func() error, error) { return nil, nil }, func() error {
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
	t, err := Open(p)
	if err != nil {
		return err
	}
	defer t.Close()
	h, err := t.Netlink()
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("network namespace %s: loopback up: %w", name, err)
	}
	return nil
}

// Delete removes the named namespace as `ip netns del` does: its name goes
// at once, the namespace itself (and its interfaces) once no process or
// descriptor holds it. A name that does not exist is not an error.
func Delete(name string) error {
	p := PathOf(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// List returns the names under Dir that start with prefix.
func List(prefix string) ([]string, error) {
	entries, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", Dir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// PrepareDir creates Dir and makes it a shared mount (binding it onto itself
// first if it is not a mount point yet), as `ip netns add` does.
func PrepareDir() error {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", Dir, err)
	}
	err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself first.
		if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", Dir, err)
		}
		err = unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", Dir, err)
	}
	return nil
}

// Inode is the nsfs inode that identifies the namespace at path, as it
// appears in /proc/PID/ns/net ("net:[INODE]").
func Inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}
