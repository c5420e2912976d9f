package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// A Place is where a process is started: a *Target, or a *MountNS (a
// network namespace seen through a persistent mount namespace of its own).
//
// Go cannot switch a process into a namespace between fork and exec, but
// namespaces belong to threads and a child starts in the namespaces of the
// thread that forked it: [Start] switches a locked thread into the place and
// starts the process from it.
type Place interface {
	// enter switches the calling thread, locked and with its own fs_struct
	// (unshare CLONE_FS), into the place. The thread is never given back to
	// the runtime afterwards.
	enter() error
}

// enter gives the thread a mount namespace of its own (a slave of the
// process's, so namespaces created later under Dir still appear) whose
// /sys shows t's devices, and enters t: what `ip netns exec` gives a
// command. The current namespace needs nothing.
func (t *Target) enter() error {
	if t.IsCurrent() {
		return nil
	}
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare the mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make mounts slaves: %w", err)
	}
	if err := unix.Setns(t.Fd(), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", t.path, err)
	}
	return remountSys(t.path)
}

// remountSys mounts a sysfs on /sys: a sysfs shows the network devices of
// the namespace of the thread that mounts it.
func remountSys(source string) error {
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount /sys: %w", err)
	}
	if err := unix.Mount(source, "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	return nil
}

// Tmpfs is a private, empty, small tmpfs mounted in a [MountNS].
type Tmpfs struct {
	// Dir is the mount point; it is created (0700) if missing, in the
	// filesystem the process sees.
	Dir string
	// Source names the mount in /proc/PID/mountinfo, so it can be told apart.
	Source string
}

// MountNS is a private mount namespace tied to a network namespace: what a
// machine of its own would see. It is a slave copy of the process's mounts
// (namespaces created later under Dir still appear in it), its /sys shows
// the network namespace's devices, and its [Tmpfs] mounts are its own
// (WireGuard's /run/wireguard: wgctrl hard-codes that directory, so two
// agents on one machine need one each). It lives as long as it is open or a
// process runs in it; nothing of it is visible outside.
type MountNS struct {
	mnt     *os.File
	netPath string
}

// NewMountNS creates a mount namespace for the network namespace net (not
// the current one) with the given tmpfs mounts.
func NewMountNS(net *Target, mounts ...Tmpfs) (*MountNS, error) {
	if net.IsCurrent() {
		return nil, errors.New("mount namespace: needs a network namespace opened by path")
	}
	var mnt *os.File
	err := onThread(discardThread, func() error {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("make mounts slaves: %w", err)
		}
		if err := unix.Setns(net.Fd(), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		if err := remountSys(net.path); err != nil {
			return err
		}
		for _, m := range mounts {
			if err := os.MkdirAll(m.Dir, 0o700); err != nil {
				return err
			}
			if err := unix.Mount(m.Source, m.Dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=4m"); err != nil {
				return fmt.Errorf("mount a private %s: %w", m.Dir, err)
			}
		}
		f, err := os.Open("/proc/thread-self/ns/mnt")
		mnt = f
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mount namespace for %s: %w", net.path, err)
	}
	return &MountNS{mnt: mnt, netPath: net.path}, nil
}

// NetPath is the path of the mount namespace's network namespace.
func (m *MountNS) NetPath() string { return m.netPath }

// Close releases the mount namespace; it goes once no process runs in it.
func (m *MountNS) Close() error { return m.mnt.Close() }

func (m *MountNS) enter() error {
	net, err := os.Open(m.netPath)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer net.Close()
	// Entering a mount namespace also moves the thread's root and working
	// directory to the namespace's root.
	if err := unix.Setns(int(m.mnt.Fd()), unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter the mount namespace of %s: %w", m.netPath, err)
	}
	if err := unix.Setns(int(net.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", m.netPath, err)
	}
	return nil
}

// discardThread is an onThread enter for a thread whose namespaces fn
// changes for good: the thread ends with its goroutine.
func discardThread() (func() error, error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare the thread's filesystem attributes: %w", err)
	}
	return nil, nil
}

// Start starts cmd in place p. Without cmd.Dir the child starts in this
// process's working directory, as exec.Cmd does. The thread that forks the
// child ends right after, so cmd must not ask for Pdeathsig: use a
// [Launcher] for that.
func Start(p Place, cmd *exec.Cmd) error {
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Pdeathsig != 0 {
		return errors.New("netns: Pdeathsig needs a Launcher: the thread that starts the process ends right after")
	}
	if err := defaultDir(cmd); err != nil {
		return err
	}
	return onThread(discardThread, func() error {
		if err := p.enter(); err != nil {
			return err
		}
		return cmd.Start()
	})
}

// Run starts cmd in place p, as Start, and waits for it.
func Run(p Place, cmd *exec.Cmd) error {
	if err := Start(p, cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

func defaultDir(cmd *exec.Cmd) error {
	if cmd.Dir != "" {
		return nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	cmd.Dir = wd
	return nil
}

// Launcher starts processes from one OS thread that lives until Close, with
// Pdeathsig=SIGKILL: they die with the process that started them, even when
// it is killed outright. Linux sends that signal when the *thread* that
// forked the child ends, and Go ends threads (those a goroutine leaves
// locked), so a child forked from an arbitrary thread could be killed at a
// random moment (golang/go#27505); forking from a thread that lives exactly
// as long as the Launcher avoids that. Closing it kills whatever it started
// that is still running.
type Launcher struct {
	reqs chan launch
}

type launch struct {
	p    Place
	cmd  *exec.Cmd
	errc chan error
}

// NewLauncher starts the launcher's thread.
func NewLauncher() *Launcher {
	l := &Launcher{reqs: make(chan launch)}
	go l.serve()
	return l
}

func (l *Launcher) serve() {
	// Never unlocked: the thread ends with this goroutine, at Close.
	runtime.LockOSThread()
	home, err := l.home()
	var broken error
	if err != nil {
		broken = fmt.Errorf("netns: launcher thread: %w", err)
	}
	for r := range l.reqs {
		if broken != nil {
			r.errc <- broken
			continue
		}
		// Every start begins from the process's own namespaces.
		if err := home(); err != nil {
			broken = fmt.Errorf("netns: launcher thread cannot return to its namespaces: %w", err)
			r.errc <- broken
			continue
		}
		err := r.p.enter()
		if err == nil {
			err = r.cmd.Start()
		}
		r.errc <- err
	}
}

// home prepares the thread and returns how to put it back into the
// process's mount and network namespaces.
func (l *Launcher) home() (func() error, error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare the thread's filesystem attributes: %w", err)
	}
	mnt, err := os.Open("/proc/self/ns/mnt")
	if err != nil {
		return nil, err
	}
	net, err := os.Open("/proc/self/ns/net")
	if err != nil {
		mnt.Close()
		return nil, err
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	return func() error {
		if err := unix.Setns(int(mnt.Fd()), unix.CLONE_NEWNS); err != nil {
			return err
		}
		if err := unix.Setns(int(net.Fd()), unix.CLONE_NEWNET); err != nil {
			return err
		}
		return unix.Chdir(wd)
	}, nil
}

// Start starts cmd in place p from the launcher's thread, with
// Pdeathsig=SIGKILL. Without cmd.Dir the child starts in this process's
// working directory.
func (l *Launcher) Start(p Place, cmd *exec.Cmd) (err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := defaultDir(cmd); err != nil {
		return err
	}
	errc := make(chan error, 1)
	defer func() {
		if recover() != nil {
			err = errors.New("netns: launcher is closed")
		}
	}()
	l.reqs <- launch{p: p, cmd: cmd, errc: errc}
	return <-errc
}

// Close ends the launcher's thread, which kills whatever it started that
// still runs. Start fails afterwards.
func (l *Launcher) Close() { close(l.reqs) }
