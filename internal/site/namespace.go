package site

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netns"
)

// Namespace is one network namespace of a site: the router, a host or a
// workload. It holds no descriptor on its namespace (each call opens it), so
// deleting the name is enough to make it go.
type Namespace struct {
	site  *Site
	name  string
	label string

	mu     sync.Mutex
	mounts *netns.MountNS // nil: every process gets a fresh mount namespace
}

// Name is the namespace's name under /run/netns.
func (n *Namespace) Name() string { return n.name }

// Label is the short name used in reports ("h1", "router", "h1/web").
func (n *Namespace) Label() string { return n.label }

// Path is the namespace's bind mount, e.g. /run/netns/wtb-k3x9q2-h1: what
// `weft workload add --netns PATH` takes.
func (n *Namespace) Path() string { return netns.PathOf(n.name) }

// Open opens the namespace; close the target after use.
func (n *Namespace) Open() (*netns.Target, error) { return netns.Open(n.Path()) }

// Do runs fn on an OS thread inside the namespace (netns.Target.Do).
func (n *Namespace) Do(fn func() error) error {
	t, err := n.Open()
	if err != nil {
		return err
	}
	defer t.Close()
	return t.Do(fn)
}

// Netlink runs fn with a netlink handle inside the namespace; no thread
// changes namespace for it.
func (n *Namespace) Netlink(fn func(*netlink.Handle) error) error {
	t, err := n.Open()
	if err != nil {
		return err
	}
	defer t.Close()
	h, err := t.Netlink()
	if err != nil {
		return fmt.Errorf("in %s: %w", n.label, err)
	}
	defer h.Close()
	if err := fn(h); err != nil {
		return fmt.Errorf("in %s: %w", n.label, err)
	}
	return nil
}

// SetSysctl writes a value under /proc/sys as seen from the namespace; key
// is the path below /proc/sys, e.g. "net/ipv4/ip_forward" (slashes, because
// interface names may contain dots).
func (n *Namespace) SetSysctl(key, value string) error {
	return n.Do(func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, n.label, err)
		}
		return nil
	})
}

// forward turns on forwarding, off in new namespaces.
func (n *Namespace) forward(v6 bool) error {
	if err := n.SetSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if v6 {
		return n.SetSysctl("net/ipv6/conf/all/forwarding", "1")
	}
	return nil
}

// PrivateMounts gives the namespace a persistent mount namespace of its own
// with the given tmpfs mounts (netns.MountNS): every process started in it
// from then on runs there, as on a machine of its own. Hosts have one with
// a private WireGuardDir; a router daemon wants one for its control socket.
func (n *Namespace) PrivateMounts(mounts ...netns.Tmpfs) error {
	t, err := n.Open()
	if err != nil {
		return err
	}
	defer t.Close()
	m, err := netns.NewMountNS(t, mounts...)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mounts != nil {
		m.Close()
		return fmt.Errorf("%s has private mounts already", n.label)
	}
	n.mounts = m
	return nil
}

func (n *Namespace) closeMounts() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mounts == nil {
		return nil
	}
	err := n.mounts.Close()
	n.mounts = nil
	return err
}

// start starts cmd in the namespace (in its private mounts if it has
// them) through start.
func (n *Namespace) start(cmd *exec.Cmd, start func(netns.Place, *exec.Cmd) error) error {
	n.mu.Lock()
	m := n.mounts
	n.mu.Unlock()
	if m != nil {
		return start(m, cmd)
	}
	t, err := n.Open()
	if err != nil {
		return err
	}
	defer t.Close()
	return start(t, cmd)
}

// Start starts cmd inside the namespace: in its private mount namespace if
// it has one, else in a fresh one whose /sys shows the namespace's devices
// (as `ip netns exec`). The process is not tied to this one's life.
func (n *Namespace) Start(cmd *exec.Cmd) error { return n.start(cmd, netns.Start) }

// Launch is Start for a process that must die with this one, even when it
// is killed (Pdeathsig from the site's netns.Launcher); Site.Close kills it
// at the latest.
func (n *Namespace) Launch(cmd *exec.Cmd) error { return n.start(cmd, n.site.launcher.Start) }

// defaultExecTimeout bounds Output without a deadline, so that a wedged
// command fails its caller instead of hanging it.
const defaultExecTimeout = 60 * time.Second

// Output runs argv inside the namespace (Start) with stdin, and returns its
// standard output. On failure the error names the namespace and the command
// and carries its standard error (or the end of its output). Without a
// deadline in ctx it times out after a minute.
func (n *Namespace) Output(ctx context.Context, stdin string, argv ...string) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("exec: empty command")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultExecTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := n.Start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(LastLines(stdout.String(), 5))
		}
		if msg != "" {
			return stdout.String(), fmt.Errorf("in %s: %s: %w: %s", n.label, strings.Join(argv, " "), err, msg)
		}
		return stdout.String(), fmt.Errorf("in %s: %s: %w", n.label, strings.Join(argv, " "), err)
	}
	return stdout.String(), nil
}

// LastLines returns at most n trailing lines of s.
func LastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Host is a machine of the site: a namespace attached to a subnet's bridge,
// with a private mount namespace.
type Host struct {
	*Namespace
	subnet     int
	bridgePort string

	amu         sync.Mutex
	addr, addr6 netip.Addr
}

// Name is the host's name ("h1"); Namespace.Name is its namespace's.
func (h *Host) Name() string { return h.label }

// NetnsName is the host's namespace name under /run/netns.
func (h *Host) NetnsName() string { return h.name }

// Address is the host's underlay IPv4 address.
func (h *Host) Address() netip.Addr {
	h.amu.Lock()
	defer h.amu.Unlock()
	return h.addr
}

// Address6 is the host's underlay IPv6 address (invalid without one).
func (h *Host) Address6() netip.Addr { return h.addr6 }

// Subnet is the index of the host's subnet.
func (h *Host) Subnet() int { return h.subnet }

// BridgePort is the other end of the host's uplink, on its subnet's bridge
// in the router namespace.
func (h *Host) BridgePort() string { return h.bridgePort }

// SetUplink sets the bridge side of the host's uplink up or down: down, the
// host is cut off from the site, its own interface still configured, as
// when a cable is pulled.
func (h *Host) SetUplink(up bool) error {
	return h.site.router.Netlink(func(nl *netlink.Handle) error {
		l, err := nl.LinkByName(h.bridgePort)
		if err != nil {
			return err
		}
		if up {
			return nl.LinkSetUp(l)
		}
		return nl.LinkSetDown(l)
	})
}

// SetAddress replaces the host's IPv4 address (and its default route via
// the router), as when a machine gets a new DHCP lease. The address must be
// a host address of the host's subnet that neither the router nor another
// host uses.
func (h *Host) SetAddress(a netip.Addr) error {
	sn := h.site.spec.Subnets[h.subnet]
	if !a.Is4() || !sn.V4.Contains(a) || a == sn.V4.Addr() || a == sn.RouterAddr() || a == lastAddr(sn.V4) {
		return fmt.Errorf("%s is not a free host address of %s", a, sn.V4)
	}
	for _, o := range h.site.hosts {
		if o != h && o.Address() == a {
			return fmt.Errorf("%s: %s uses it", a, o.label)
		}
	}
	h.amu.Lock()
	defer h.amu.Unlock()
	err := h.Netlink(func(nl *netlink.Handle) error {
		up, err := nl.LinkByName(Uplink)
		if err != nil {
			return err
		}
		if err := nl.AddrDel(up, &netlink.Addr{IPNet: IPNet(netip.PrefixFrom(h.addr, sn.V4.Bits()))}); err != nil {
			return fmt.Errorf("remove %s: %w", h.addr, err)
		}
		if err := addAddr(nl, up, netip.PrefixFrom(a, sn.V4.Bits())); err != nil {
			return err
		}
		return defaultRoute(nl, up, sn.RouterAddr(), true)
	})
	if err != nil {
		return fmt.Errorf("move %s from %s to %s: %w", h.label, h.addr, a, err)
	}
	h.addr = a
	return nil
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(b)
}
