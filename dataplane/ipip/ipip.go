// Package ipip manages the node's IP-in-IP device (calico.md §5.2;
// Calico's tunl0): the single writer of the device named
// [dataplane.DefaultIPIPIface].
//
// The device: type ipip, bound to the node's underlay address (local
// <Source>, any remote), protocol IPIP, TTL inherited, path MTU discovery
// on; MTU = the underlay interface's MTU − 20 unless set; the tunnel
// address as a /32, its only global address; up. The kernel's own
// fallback device tunl0 (which appears when the ipip module loads and
// catches IP-in-IP packets that no other device claims) is left alone:
// weft's device, bound to the node address, receives what other nodes
// send to this node. Routes through the device ("via <peer underlay>
// dev weft.ipip onlink") belong to the routes manager, which runs after
// this one in the update phase and before it in the removal phase. A
// device whose fixed parameters (local or remote address, protocol) drift
// is recreated; MTU and link state are corrected in place; a deleted
// device is recreated as soon as its link event arrives.
//
// # A kernel without IP-in-IP
//
// [Probe] tells, without writing anything, whether this kernel can create
// IP-in-IP devices (the agent asks at start, before the store is in sync,
// and feeds the answer into the calculation, which then asks for no
// device). Should the probe be wrong and the first device creation fail
// with EOPNOTSUPP, the manager stops trying, reports it through
// Config.Unsupported (the agent feeds that into the calculation too) and
// returns an error wrapping [dataplane.ErrUnsupported] while a device is
// still desired.
package ipip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/devaddr"
	"github.com/weftnet/weft/dataplane/internal/kroute"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/resync"
	"github.com/weftnet/weft/dataplane/internal/watch"
	"github.com/weftnet/weft/internal/netns"
)

// Config configures a [Manager].
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace holding the device; "" is the current one.
	NetNS string
	// Name of the device; default [dataplane.DefaultIPIPIface].
	Name string
	// Unsupported, if set, is called once (from the loop's goroutine) when
	// creating the device shows that the kernel has no IP-in-IP. It must
	// not block.
	Unsupported func(reason string)
}

// Manager is the IP-in-IP manager; see the package comment.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	ns     *netns.Target
	nl     *netlink.Handle
	writes atomic.Uint64

	want *dataplane.IPIPDevice
	// unsupported is why the kernel cannot create the device ("" while
	// it is not known to fail).
	unsupported string

	resync resync.Flag
	dev    *netlink.Iptun // nil: no device

	mu     sync.Mutex
	expect *int // the MTU a link event is compared against; nil: no device wanted
}

// New opens the namespace and a netlink handle in it. Nothing is written.
func New(cfg Config) (*Manager, error) {
	if cfg.Name == "" {
		cfg.Name = dataplane.DefaultIPIPIface
	}
	if !dataplane.ValidIfaceName(cfg.Name) {
		return nil, fmt.Errorf("ipip: invalid device name %q", cfg.Name)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	h, err := ns.Netlink()
	if err != nil {
		ns.Close()
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.With("component", "ipip", "device", cfg.Name), ns: ns, nl: h}
	m.resync.Queue()
	return m, nil
}

// Close releases the handles; the device stays.
func (m *Manager) Close() error {
	m.nl.Close()
	return m.ns.Close()
}

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "ipip" }

// KernelWrites implements dataplane.WriteCounter.
func (m *Manager) KernelWrites() uint64 { return m.writes.Load() }

// Set implements dataplane.Manager.
func (m *Manager) Set(d *dataplane.Desired) { m.want = d.IPIP }

// QueueResync implements dataplane.Manager.
func (m *Manager) QueueResync() { m.resync.Queue() }

// Apply implements dataplane.Manager.
func (m *Manager) Apply(_ context.Context, phase dataplane.Phase) error {
	if err := m.resync.Run(m.readKernel); err != nil {
		return err
	}
	if phase == dataplane.PhaseRemove {
		return m.applyRemoval()
	}
	return m.applyUpdate()
}

func (m *Manager) readKernel() error {
	m.dev = nil
	l, err := m.nl.LinkByName(m.cfg.Name)
	if nlutil.IsLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", m.cfg.Name, err)
	}
	dev, ok := l.(*netlink.Iptun)
	if !ok {
		return fmt.Errorf("%s exists and is a %s, not an IP-in-IP device: remove it", m.cfg.Name, l.Type())
	}
	m.dev = dev
	return nil
}

// fixedMatches reports whether the device's creation-time parameters are
// the desired ones.
func (m *Manager) fixedMatches(dev *netlink.Iptun, src netip.Addr) bool {
	remote := kroute.Addr(dev.Remote)
	return kroute.Addr(dev.Local) == src && (!remote.IsValid() || remote.IsUnspecified()) &&
		(dev.Proto == 0 || dev.Proto == unix.IPPROTO_IPIP) && !dev.FlowBased && dev.EncapType == 0
}

func (m *Manager) applyUpdate() error {
	if m.want == nil {
		return nil
	}
	if m.unsupported != "" {
		return fmt.Errorf("ipip device %s: %w: %s", m.cfg.Name, dataplane.ErrUnsupported, m.unsupported)
	}
	mtu := m.want.MTU
	if mtu == 0 {
		parent, err := devaddr.LinkHolding(m.nl, m.want.Source)
		if err != nil {
			return fmt.Errorf("ipip device %s: %w", m.cfg.Name, err)
		}
		mtu = dataplane.IPIPDeviceMTU(parent.Attrs().MTU)
	}
	if m.dev != nil && !m.fixedMatches(m.dev, m.want.Source) {
		m.log.Info("recreating the IP-in-IP device: its fixed parameters changed",
			"local", m.dev.Local, "remote", m.dev.Remote, "proto", m.dev.Proto, "new_local", m.want.Source)
		if err := m.nl.LinkDel(m.dev); err != nil && !nlutil.IsLinkNotFound(err) {
			return fmt.Errorf("delete %s: %w", m.cfg.Name, err)
		}
		m.writes.Add(1)
		m.dev = nil
	}
	if m.dev == nil {
		if err := m.create(mtu); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.expect = &mtu
	m.mu.Unlock()
	attrs := m.dev.Attrs()
	if attrs.MTU != mtu {
		if err := m.nl.LinkSetMTU(m.dev, mtu); err != nil {
			return fmt.Errorf("set MTU of %s: %w", m.cfg.Name, err)
		}
		m.writes.Add(1)
		attrs.MTU = mtu
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := m.nl.LinkSetUp(m.dev); err != nil {
			return fmt.Errorf("set %s up: %w", m.cfg.Name, err)
		}
		m.writes.Add(1)
		attrs.Flags |= net.FlagUp
	}
	n, err := devaddr.EnsureOnly(m.nl, m.dev, netip.PrefixFrom(m.want.TunnelAddr, 32))
	m.writes.Add(uint64(n))
	return err
}

func (m *Manager) create(mtu int) error {
	dev := &netlink.Iptun{
		LinkAttrs: netlink.LinkAttrs{Name: m.cfg.Name, MTU: mtu},
		Local:     m.want.Source.AsSlice(),
		PMtuDisc:  1,
		Proto:     unix.IPPROTO_IPIP,
	}
	if err := m.nl.LinkAdd(dev); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			m.unsupported = "the kernel cannot create IP-in-IP devices (no ipip module): " + err.Error()
			m.log.Error("IP-in-IP is not available on this node: pools with ipipMode are not routed here", "err", err)
			if m.cfg.Unsupported != nil {
				m.cfg.Unsupported(m.unsupported)
			}
			return fmt.Errorf("create %s: %w: %s", m.cfg.Name, dataplane.ErrUnsupported, m.unsupported)
		}
		return fmt.Errorf("create %s: %w", m.cfg.Name, err)
	}
	m.writes.Add(1)
	l, err := m.nl.LinkByName(m.cfg.Name)
	if err != nil {
		return fmt.Errorf("look up new %s: %w", m.cfg.Name, err)
	}
	dv, ok := l.(*netlink.Iptun)
	if !ok {
		return fmt.Errorf("new %s is a %s", m.cfg.Name, l.Type())
	}
	m.dev = dv
	return nil
}

func (m *Manager) applyRemoval() error {
	if m.dev == nil || m.want != nil {
		return nil
	}
	if err := m.nl.LinkDel(m.dev); err != nil && !nlutil.IsLinkNotFound(err) {
		return fmt.Errorf("delete %s: %w", m.cfg.Name, err)
	}
	m.writes.Add(1)
	m.dev = nil
	m.mu.Lock()
	m.expect = nil
	m.mu.Unlock()
	return nil
}

// Watch implements dataplane.Watcher: the device deleted, set down, or its
// MTU changed behind weft's back makes the next pass re-read and repair.
func (m *Manager) Watch(ctx context.Context, kick func()) error {
	err := watch.Links(ctx, m.ns.Handle(), func(u netlink.LinkUpdate) {
		a := u.Link.Attrs()
		if a.Name != m.cfg.Name {
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.expect == nil {
			return
		}
		if u.Header.Type == unix.RTM_DELLINK || a.Flags&net.FlagUp == 0 || a.MTU != *m.expect {
			m.resync.Event()
			kick()
		}
	})
	if err != nil {
		m.resync.Event()
	}
	return err
}
