// Package vxlan manages the node's VXLAN device and its static peers
// (calico.md §5.3).
//
// The device: the configured name, the desired VNI and port (the
// configured ones when the desired state leaves them 0), learning off, bound to
// the parent interface and its source address, MTU = parent MTU − 50
// (IPv4 underlay) or − 70 (IPv6) unless set, the node's deterministic MAC,
// the tunnel address as a /32 (/128), and transmit checksum offload off (a
// known cause of 63 s stalls, set through the ethtool ioctl). A device
// whose fixed parameters (VNI, port, parent, source) drift is recreated;
// MTU, MAC and link state are corrected in place. A deleted device is
// recreated as soon as its link event arrives.
//
// Per peer: a permanent neighbour entry (peer tunnel address → peer VTEP
// MAC) and a permanent FDB entry (AF_BRIDGE, NTF_SELF: peer VTEP MAC → peer
// underlay address). They are written in the update phase, so before the
// routes through them, and removed in the removal phase, so after those
// routes. Nothing is flood-learned. Everything on the device is weft's:
// permanent entries no peer wants are removed.
package vxlan

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/devaddr"
	"github.com/weftnet/weft/dataplane/internal/kroute"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/resync"
	"github.com/weftnet/weft/dataplane/internal/sysctl"
	"github.com/weftnet/weft/dataplane/internal/watch"
	"github.com/weftnet/weft/internal/netns"
)

// Defaults (SPEC §2).
const (
	DefaultName = "weft.vxlan"
	DefaultVNI  = 4096
	DefaultPort = 4789
)

// Config is the static part of the device.
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace holding the device; "" is the current one.
	NetNS string
	Name  string // default DefaultName
	// VNI and Port are used when the desired device leaves its own 0.
	VNI  int // default DefaultVNI
	Port int // default DefaultPort
	// TxChecksumOffload keeps the device's transmit checksum offload on.
	// Off (the default) avoids the checksum bugs some kernels and NICs have
	// with VXLAN (calico.md §5.3) but costs throughput: without checksum
	// offload the kernel cannot pass large segments through the tunnel.
	TxChecksumOffload bool
}

// Manager is the VXLAN manager; see the package comment.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	ns     *netns.Target
	nl     *netlink.Handle
	writes atomic.Uint64

	want  *dataplane.VXLANDevice
	peers map[netip.Addr]dataplane.VXLANPeer

	// Cache of the kernel; valid unless resync asks for a re-read.
	resync resync.Flag
	dev    *netlink.Vxlan // nil: no device
	neigh  map[netip.Addr]string
	fdb    map[string]netip.Addr

	// Shared with the Watch goroutine.
	mu     sync.Mutex
	expect *devExpect
}

// devExpect is what a link event is compared against.
type devExpect struct {
	mtu int
	mac string
}

// New opens the namespace and a netlink handle in it.
func New(cfg Config) (*Manager, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.VNI == 0 {
		cfg.VNI = DefaultVNI
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if !dataplane.ValidIfaceName(cfg.Name) {
		return nil, fmt.Errorf("vxlan: invalid device name %q", cfg.Name)
	}
	if cfg.VNI < 1 || cfg.VNI > 1<<24-1 {
		return nil, fmt.Errorf("vxlan: VNI %d out of range 1..16777215", cfg.VNI)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("vxlan: port %d out of range", cfg.Port)
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
	m := &Manager{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "vxlan", "device", cfg.Name),
		ns:    ns,
		nl:    h,
		peers: map[netip.Addr]dataplane.VXLANPeer{},
	}
	m.resync.Queue() // the first pass reads the kernel
	return m, nil
}

// Close releases the handles; the device stays.
func (m *Manager) Close() error {
	m.nl.Close()
	return m.ns.Close()
}

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "vxlan" }

// KernelWrites implements dataplane.WriteCounter.
func (m *Manager) KernelWrites() uint64 { return m.writes.Load() }

// Set implements dataplane.Manager.
func (m *Manager) Set(d *dataplane.Desired) {
	m.want = d.VXLAN
	m.peers = make(map[netip.Addr]dataplane.VXLANPeer, len(d.VXLANPeers))
	for _, p := range d.VXLANPeers {
		m.peers[p.TunnelIP] = p
	}
}

// QueueResync implements dataplane.Manager.
func (m *Manager) QueueResync() { m.resync.Queue() }

// Apply implements dataplane.Manager.
func (m *Manager) Apply(_ context.Context, phase dataplane.Phase) error {
	if err := m.resync.Run(m.readKernel); err != nil {
		return err
	}
	if phase == dataplane.PhaseRemove {
		return m.applyRemovals()
	}
	return m.applyUpdates()
}

// readKernel refreshes the cache: the device, its neighbour and FDB
// entries.
func (m *Manager) readKernel() error {
	m.dev, m.neigh, m.fdb = nil, map[netip.Addr]string{}, map[string]netip.Addr{}
	l, err := m.nl.LinkByName(m.cfg.Name)
	if nlutil.IsLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", m.cfg.Name, err)
	}
	dev, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Errorf("%s exists and is a %s, not a VXLAN device: remove it or configure another name", m.cfg.Name, l.Type())
	}
	m.dev = dev
	idx := dev.Attrs().Index
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := nlutil.Dump(func() ([]netlink.Neigh, error) { return m.nl.NeighList(idx, fam) })
		if err != nil {
			return fmt.Errorf("list neighbours on %s: %w", m.cfg.Name, err)
		}
		for _, n := range ns {
			if n.LinkIndex == idx && n.State&netlink.NUD_PERMANENT != 0 {
				m.neigh[kroute.Addr(n.IP)] = n.HardwareAddr.String()
			}
		}
	}
	fdb, err := nlutil.Dump(func() ([]netlink.Neigh, error) { return m.nl.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list FDB of %s: %w", m.cfg.Name, err)
	}
	for _, n := range fdb {
		if n.LinkIndex == idx && n.IP != nil {
			m.fdb[n.HardwareAddr.String()] = kroute.Addr(n.IP)
		}
	}
	return nil
}

// spec is the device the desired state asks for, with the parent resolved.
type spec struct {
	vni    int
	port   int
	parent netlink.Link
	src    netip.Addr
	mtu    int
	mac    net.HardwareAddr
	tunnel netip.Addr
}

func (m *Manager) resolve(want *dataplane.VXLANDevice) (spec, error) {
	s := spec{src: want.Source, mac: want.MAC, tunnel: want.TunnelAddr, vni: cmp.Or(want.VNI, m.cfg.VNI), port: cmp.Or(want.Port, m.cfg.Port)}
	var err error
	if want.Parent != "" {
		if s.parent, err = m.nl.LinkByName(want.Parent); err != nil {
			return s, fmt.Errorf("parent %s: %w", want.Parent, err)
		}
	} else if s.parent, err = devaddr.LinkHolding(m.nl, want.Source); err != nil {
		return s, err
	}
	s.mtu = want.MTU
	if s.mtu == 0 {
		s.mtu = dataplane.VXLANDeviceMTU(s.parent.Attrs().MTU, want.Source.Is6())
	}
	return s, nil
}

// fixedMatches reports whether the device's creation-time parameters are
// the desired ones.
func (m *Manager) fixedMatches(dev *netlink.Vxlan, s spec) bool {
	return dev.VxlanId == s.vni && dev.Port == s.port && dev.VtepDevIndex == s.parent.Attrs().Index &&
		kroute.Addr(dev.SrcAddr) == s.src && !dev.Learning
}

func (m *Manager) applyUpdates() error {
	if m.want == nil {
		return nil
	}
	s, err := m.resolve(m.want)
	if err != nil {
		return fmt.Errorf("vxlan device %s: %w", m.cfg.Name, err)
	}
	if err := m.ensureDevice(s); err != nil {
		return err
	}
	var errs []error
	if err := m.ensureTxChecksum(); err != nil {
		errs = append(errs, err)
	}
	if err := m.ensureAddr(s.tunnel); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, m.ensurePeers(s.src))
	return errors.Join(errs...)
}

func (m *Manager) ensureDevice(s spec) error {
	if m.dev != nil && !m.fixedMatches(m.dev, s) {
		m.log.Info("recreating the VXLAN device: its fixed parameters changed",
			"vni", m.dev.VxlanId, "port", m.dev.Port, "parent_index", m.dev.VtepDevIndex, "src", m.dev.SrcAddr,
			"new_vni", s.vni, "new_port", s.port)
		if err := m.nl.LinkDel(m.dev); err != nil && !nlutil.IsLinkNotFound(err) {
			return fmt.Errorf("delete %s: %w", m.cfg.Name, err)
		}
		m.writes.Add(1)
		m.dev, m.neigh, m.fdb = nil, map[netip.Addr]string{}, map[string]netip.Addr{}
	}
	if m.dev == nil {
		if err := m.create(s); err != nil {
			return err
		}
	}
	attrs := m.dev.Attrs()
	m.setExpect(s)
	if attrs.MTU != s.mtu {
		if err := m.nl.LinkSetMTU(m.dev, s.mtu); err != nil {
			return fmt.Errorf("set MTU of %s: %w", m.cfg.Name, err)
		}
		m.writes.Add(1)
		attrs.MTU = s.mtu
	}
	if !slices.Equal(attrs.HardwareAddr, s.mac) {
		if err := m.nl.LinkSetHardwareAddr(m.dev, s.mac); err != nil {
			return fmt.Errorf("set MAC of %s: %w", m.cfg.Name, err)
		}
		m.writes.Add(1)
		attrs.HardwareAddr = slices.Clone(s.mac)
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := m.nl.LinkSetUp(m.dev); err != nil {
			return fmt.Errorf("set %s up: %w", m.cfg.Name, err)
		}
		m.writes.Add(1)
		attrs.Flags |= net.FlagUp
	}
	return nil
}

func (m *Manager) create(s spec) error {
	dev := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:         m.cfg.Name,
			MTU:          s.mtu,
			HardwareAddr: s.mac,
		},
		VxlanId:      s.vni,
		VtepDevIndex: s.parent.Attrs().Index,
		SrcAddr:      s.src.AsSlice(),
		Port:         s.port,
		Learning:     false,
	}
	if err := m.nl.LinkAdd(dev); err != nil {
		return fmt.Errorf("create %s: %w", m.cfg.Name, err)
	}
	m.writes.Add(1)
	// No IPv6 link-local address or router solicitations over the
	// overlay: the device carries only routed traffic to known peers.
	if err := m.ns.Do(func() error {
		_, err := sysctl.Ensure(sysctl.IfaceKey("ipv6", m.cfg.Name, "addr_gen_mode"), "1")
		return err
	}); err != nil {
		m.log.Debug("cannot switch off IPv6 address generation", "err", err)
	}
	l, err := m.nl.LinkByName(m.cfg.Name)
	if err != nil {
		return fmt.Errorf("look up new %s: %w", m.cfg.Name, err)
	}
	dv, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Errorf("new %s is a %s", m.cfg.Name, l.Type())
	}
	m.dev = dv
	m.neigh, m.fdb = map[netip.Addr]string{}, map[string]netip.Addr{}
	return nil
}

func (m *Manager) setExpect(s spec) {
	m.mu.Lock()
	m.expect = &devExpect{mtu: s.mtu, mac: s.mac.String()}
	m.mu.Unlock()
}

// ensureTxChecksum reads the feature and sets it as configured.
func (m *Manager) ensureTxChecksum() error {
	want := m.cfg.TxChecksumOffload
	return m.ns.Do(func() error {
		on, err := txChecksum(m.cfg.Name)
		if err != nil || on == want {
			return err
		}
		if err := setTxChecksum(m.cfg.Name, want); err != nil {
			return err
		}
		m.writes.Add(1)
		return nil
	})
}

// ensureAddr makes the tunnel address the device's only global address.
func (m *Manager) ensureAddr(tunnel netip.Addr) error {
	var want netip.Prefix
	if tunnel.IsValid() {
		want = netip.PrefixFrom(tunnel, tunnel.BitLen())
	}
	n, err := devaddr.EnsureOnly(m.nl, m.dev, want)
	m.writes.Add(uint64(n))
	return err
}

func (m *Manager) neighEntry(ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    m.dev.Attrs().Index,
		Family:       kroute.Family(ip),
		State:        netlink.NUD_PERMANENT,
		IP:           ip.AsSlice(),
		HardwareAddr: mac,
	}
}

func (m *Manager) fdbEntry(mac net.HardwareAddr, underlay netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    m.dev.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		State:        netlink.NUD_PERMANENT,
		IP:           underlay.AsSlice(),
		HardwareAddr: mac,
	}
}

// ensurePeers writes the missing or changed neighbour and FDB entries.
func (m *Manager) ensurePeers(src netip.Addr) error {
	var errs []error
	for _, p := range m.peers {
		if p.UnderlayIP.Is4() != src.Is4() {
			errs = append(errs, fmt.Errorf("vxlan peer %s: underlay %s is not of the source address's family", p.Node, p.UnderlayIP))
			continue
		}
		mac := p.VTEPMAC.String()
		if m.fdb[mac] != p.UnderlayIP {
			if err := m.nl.NeighSet(m.fdbEntry(p.VTEPMAC, p.UnderlayIP)); err != nil {
				delete(m.fdb, mac)
				errs = append(errs, fmt.Errorf("vxlan peer %s: FDB %s → %s: %w", p.Node, mac, p.UnderlayIP, err))
				continue
			}
			m.writes.Add(1)
			m.fdb[mac] = p.UnderlayIP
		}
		if cur, ok := m.neigh[p.TunnelIP]; !ok || cur != mac {
			if err := m.nl.NeighSet(m.neighEntry(p.TunnelIP, p.VTEPMAC)); err != nil {
				delete(m.neigh, p.TunnelIP)
				errs = append(errs, fmt.Errorf("vxlan peer %s: neighbour %s → %s: %w", p.Node, p.TunnelIP, mac, err))
				continue
			}
			m.writes.Add(1)
			m.neigh[p.TunnelIP] = mac
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) applyRemovals() error {
	if m.dev == nil {
		return nil
	}
	if m.want == nil {
		if err := m.nl.LinkDel(m.dev); err != nil && !nlutil.IsLinkNotFound(err) {
			return fmt.Errorf("delete %s: %w", m.cfg.Name, err)
		}
		m.writes.Add(1)
		m.dev, m.neigh, m.fdb = nil, map[netip.Addr]string{}, map[string]netip.Addr{}
		m.mu.Lock()
		m.expect = nil
		m.mu.Unlock()
		return nil
	}
	wantMAC := map[string]bool{}
	for _, p := range m.peers {
		wantMAC[p.VTEPMAC.String()] = true
	}
	var errs []error
	for ip, mac := range m.neigh {
		if p, ok := m.peers[ip]; ok && p.VTEPMAC.String() == mac {
			continue
		}
		hw, _ := net.ParseMAC(mac)
		if err := m.nl.NeighDel(m.neighEntry(ip, hw)); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove neighbour %s: %w", ip, err))
			continue
		}
		m.writes.Add(1)
		delete(m.neigh, ip)
	}
	for mac, underlay := range m.fdb {
		if wantMAC[mac] {
			continue
		}
		hw, _ := net.ParseMAC(mac)
		if err := m.nl.NeighDel(m.fdbEntry(hw, underlay)); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove FDB entry %s: %w", mac, err))
			continue
		}
		m.writes.Add(1)
		delete(m.fdb, mac)
	}
	return errors.Join(errs...)
}

// Watch implements dataplane.Watcher: the device deleted, set down, or its
// MTU or MAC changed behind weft's back triggers a resync and repair.
func (m *Manager) Watch(ctx context.Context, kick func()) error {
	err := watch.Links(ctx, m.ns.Handle(), func(u netlink.LinkUpdate) {
		a := u.Link.Attrs()
		if a.Name != m.cfg.Name {
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.expect == nil {
			return // not wanted (or not made yet): nothing to repair
		}
		drift := u.Header.Type == unix.RTM_DELLINK || a.Flags&net.FlagUp == 0 ||
			a.MTU != m.expect.mtu || a.HardwareAddr.String() != m.expect.mac
		if drift {
			m.resync.Event()
			kick()
		}
	})
	if err != nil {
		m.resync.Event()
	}
	return err
}
