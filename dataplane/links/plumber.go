// Package links plumbs workloads: a veth pair between the host namespace
// and the workload's network namespace, set up as Calico does it
// (calico.md §5.1).
//
// Host side: named [dataplane.WorkloadIfaceName], MAC ee:ee:ee:ee:ee:ee,
// no address but the workloads' IPv6 gateway (below), proxy ARP (so the
// workload's gateway 169.254.1.1 and every other address resolve to it),
// forwarding on. The /32 (/128) host route per workload address is not
// written here: it belongs to the routes manager (one writer per kernel
// object), which gets it from the desired state.
// Workload side: the configured name (default eth0), each address as a /32
// (/128), a scope-link route to 169.254.1.1 and a default route via it, a
// permanent neighbour entry 169.254.1.1 → ee:ee:ee:ee:ee:ee (so the gateway
// resolves even on a host without a default route, where proxy ARP stays
// silent); for
// IPv6 a default route via the host side's link-local fe80::ecee:eeff:feee:eeee,
// with duplicate address detection off. weft puts that address on the host
// side itself rather than rely on the kernel deriving it from the MAC,
// which depends on the host's addr_gen_mode.
//
// The [Manager] is the only writer: it plumbs the desired workloads from
// the dataplane loop, repairs them and removes the ones no longer desired.
// The [Plumber] is its driver; outside the loop only its read-only checks
// are used ([Plumber.Precheck] before a workload add is recorded,
// [Plumber.Check] for CNI CHECK).
//
// Namespaces: the host side lives in the Plumber's host namespace (the
// current one unless configured otherwise). Per-interface sysctls are
// written to /proc/sys/net from a thread switched into the right namespace
// (host side into the host namespace, IPv6 workload side into the workload
// namespace), because /proc/sys/net always shows the calling thread's
// namespace.
package links

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/kroute"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/sysctl"
	"github.com/weftnet/weft/internal/netns"
)

// The errors the plumber reports, defined in package dataplane so that
// the agent can tell them apart without importing a driver.
var (
	ErrBadNetNS   = dataplane.ErrBadNetNS
	ErrIfaceTaken = dataplane.ErrIfaceTaken
	ErrDrift      = dataplane.ErrDrift
)

// Config configures a [Plumber].
type Config struct {
	Logger *slog.Logger
	// HostNS is the path of the namespace holding the host side; "" is the
	// current namespace (the agent runs in the node's namespace).
	HostNS string
	// Prefix of host-side interface names; default [dataplane.DefaultIfacePrefix].
	// The Plumber touches only interfaces named like [dataplane.WorkloadIfaceName]
	// makes them ([dataplane.IsWorkloadIface]).
	Prefix string
	// RPFilter is the host side's rp_filter; "" copies the host namespace's
	// net.ipv4.conf.default.rp_filter (1, strict, if it cannot be read).
	RPFilter string
}

// Plumber creates, checks and deletes workload plumbing. Its writing
// operations are unexported: only the [Manager], inside the dataplane
// loop, calls them. The read-only checks are safe from any goroutine.
type Plumber struct {
	cfg    Config
	log    *slog.Logger
	host   *netns.Target
	nl     *netlink.Handle
	writes atomic.Uint64
	// mu serialises the kernel reads and writes of one netlink handle.
	mu sync.Mutex
}

// Result describes plumbing that exists.
type Result struct {
	HostIface string
	HostMAC   net.HardwareAddr
	Iface     string
	MAC       net.HardwareAddr
}

// NewPlumber opens the host namespace and a netlink handle in it.
func NewPlumber(cfg Config) (*Plumber, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = dataplane.DefaultIfacePrefix
	}
	if err := dataplane.ValidateIfacePrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	host, err := netns.Open(cfg.HostNS)
	if err != nil {
		return nil, err
	}
	h, err := host.Netlink()
	if err != nil {
		host.Close()
		return nil, err
	}
	if cfg.RPFilter == "" {
		cfg.RPFilter = "1"
		_ = host.Do(func() error {
			if v, err := sysctl.Get("net/ipv4/conf/default/rp_filter"); err == nil {
				cfg.RPFilter = v
			}
			return nil
		})
	}
	return &Plumber{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "links"),
		host: host,
		nl:   h,
	}, nil
}

// Close releases the handles.
func (p *Plumber) Close() error {
	p.nl.Close()
	return p.host.Close()
}

// Prefix is the host-side interface prefix.
func (p *Plumber) Prefix() string { return p.cfg.Prefix }

// IfaceName is the host-side interface name of a workload.
func (p *Plumber) IfaceName(namespace, name string) (string, error) {
	return dataplane.WorkloadIfaceName(p.cfg.Prefix, namespace, name)
}

// KernelWrites counts the changes made to the kernel.
func (p *Plumber) KernelWrites() uint64 { return p.writes.Load() }

// Precheck reports, without changing anything, whether w could be
// plumbed: the namespace must exist and be a network namespace other than
// the host's, the host interface name must be free or this workload's
// veth, the workload interface name free in the namespace or this veth's
// peer, and no workload address may already be routed on the host by a
// route weft does not own (an error wrapping [dataplane.ErrForeignRoute]
// names it; weft never overwrites it). A workload add runs it before it
// records the workload, so a bad request changes nothing.
func (p *Plumber) Precheck(w dataplane.Workload) error {
	if err := p.validate(w); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	wl, wnl, err := p.workloadNS(w)
	if err != nil {
		return fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	defer wl.Close()
	defer wnl.Close()
	if _, _, err := p.findPair(w, wl, wnl); err != nil {
		return fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	if err := p.checkHostRoutesFree(w); err != nil {
		return fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	return nil
}

func (p *Plumber) del(hostIface string) error {
	if !dataplane.IsWorkloadIface(p.cfg.Prefix, hostIface) {
		return fmt.Errorf("delete %s: not a workload interface (prefix %q and 11 hex characters): %w", hostIface, p.cfg.Prefix, ErrIfaceTaken)
	}
	link, err := p.nl.LinkByName(hostIface)
	if nlutil.IsLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", hostIface, err)
	}
	if link.Type() != "veth" {
		return fmt.Errorf("delete %s: a %s, not a workload veth: %w", hostIface, link.Type(), ErrIfaceTaken)
	}
	if err := p.nl.LinkDel(link); err != nil && !nlutil.IsLinkNotFound(err) {
		return fmt.Errorf("delete %s: %w", hostIface, err)
	}
	p.writes.Add(1)
	return nil
}

// Check reports, joined and wrapping [ErrDrift], every way w's plumbing
// and host routes differ from what the dataplane makes; nil means it is
// complete. A missing or invalid namespace wraps [ErrBadNetNS]. It only
// reads (CNI CHECK).
func (p *Plumber) Check(_ context.Context, w dataplane.Workload) error {
	if err := p.validate(w); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.check(w, true)
}

func (p *Plumber) validate(w dataplane.Workload) error {
	if err := w.Validate(); err != nil {
		return err
	}
	// Add creates only interfaces Del and the Manager's sweep would
	// remove again: the shape is weft's mark on its interfaces.
	if !dataplane.IsWorkloadIface(p.cfg.Prefix, w.HostIface) {
		return fmt.Errorf("workload %s/%s: host interface %s is not the prefix %q and 11 hex characters", w.Namespace, w.Name, w.HostIface, p.cfg.Prefix)
	}
	return nil
}

// workloadNS opens the workload's namespace, refusing the host's own.
func (p *Plumber) workloadNS(w dataplane.Workload) (*netns.Target, *netlink.Handle, error) {
	wl, err := netns.Open(w.NetNS)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, netns.ErrNotNetNS) {
			return nil, nil, fmt.Errorf("%w: %w", ErrBadNetNS, err)
		}
		return nil, nil, err
	}
	same, err := sameNS(p.host, wl)
	if err != nil {
		wl.Close()
		return nil, nil, err
	}
	if same {
		wl.Close()
		return nil, nil, fmt.Errorf("%w: %s is the host's own network namespace", ErrBadNetNS, w.NetNS)
	}
	h, err := wl.Netlink()
	if err != nil {
		wl.Close()
		return nil, nil, err
	}
	return wl, h, nil
}

func sameNS(a, b *netns.Target) (bool, error) {
	ida, err := nsID(a)
	if err != nil {
		return false, err
	}
	idb, err := nsID(b)
	if err != nil {
		return false, err
	}
	return ida == idb, nil
}

func nsID(t *netns.Target) ([2]uint64, error) {
	var st unix.Stat_t
	var err error
	if t.IsCurrent() {
		err = unix.Stat("/proc/self/ns/net", &st)
	} else {
		err = unix.Fstat(t.Fd(), &st)
	}
	if err != nil {
		return [2]uint64{}, fmt.Errorf("stat network namespace: %w", err)
	}
	return [2]uint64{st.Dev, st.Ino}, nil
}

// findPair looks up the host side and its peer. It returns nil links for
// absent ones and ErrIfaceTaken when a name is used by something else.
func (p *Plumber) findPair(w dataplane.Workload, wl *netns.Target, wnl *netlink.Handle) (host, peer netlink.Link, err error) {
	iface := w.IfaceOrDefault()
	host, err = p.nl.LinkByName(w.HostIface)
	if nlutil.IsLinkNotFound(err) {
		host = nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("look up %s: %w", w.HostIface, err)
	}
	named, err := wnl.LinkByName(iface)
	if nlutil.IsLinkNotFound(err) {
		named = nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("look up %s in %s: %w", iface, w.NetNS, err)
	}
	if host == nil {
		if named != nil {
			return nil, nil, fmt.Errorf("interface %s already exists in %s: %w", iface, w.NetNS, ErrIfaceTaken)
		}
		return nil, nil, nil
	}
	if host.Type() != "veth" {
		return nil, nil, fmt.Errorf("host interface %s exists and is a %s: %w", w.HostIface, host.Type(), ErrIfaceTaken)
	}
	// The peer of our veth must be the interface named iface in the
	// workload's namespace: same index on both sides, and the host sees
	// the peer in that namespace.
	nsid, err := p.nl.GetNetNsIdByFd(wl.Fd())
	owned := err == nil && nsid >= 0 && host.Attrs().NetNsID == nsid &&
		named != nil && named.Type() == "veth" && named.Attrs().Index == host.Attrs().ParentIndex &&
		named.Attrs().ParentIndex == host.Attrs().Index
	if !owned {
		return nil, nil, fmt.Errorf("host interface %s exists and is not the veth of %s in %s: %w", w.HostIface, iface, w.NetNS, ErrIfaceTaken)
	}
	return host, named, nil
}

// ensure makes w's plumbing complete; it reports whether it changed
// anything.
func (p *Plumber) ensure(_ context.Context, w dataplane.Workload) (res Result, changed bool, err error) {
	wl, wnl, err := p.workloadNS(w)
	if err != nil {
		return Result{}, false, fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	defer wl.Close()
	defer wnl.Close()

	host, peer, err := p.findPair(w, wl, wnl)
	if err != nil {
		return Result{}, false, fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	before := p.writes.Load()
	created := false
	if host == nil {
		if host, peer, err = p.create(w, wl, wnl); err != nil {
			return Result{}, true, fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
		}
		created = true
	}
	err = p.configure(w, wl, wnl, host, peer)
	if err != nil && created {
		if derr := p.nl.LinkDel(host); derr != nil && !nlutil.IsLinkNotFound(derr) {
			err = errors.Join(err, fmt.Errorf("roll back %s: %w", w.HostIface, derr))
		}
	}
	if err != nil {
		return Result{}, true, fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	if host, err = p.nl.LinkByIndex(host.Attrs().Index); err != nil {
		return Result{}, true, fmt.Errorf("workload %s/%s: re-read %s: %w", w.Namespace, w.Name, w.HostIface, err)
	}
	if peer, err = wnl.LinkByIndex(peer.Attrs().Index); err != nil {
		return Result{}, true, fmt.Errorf("workload %s/%s: re-read %s: %w", w.Namespace, w.Name, w.IfaceOrDefault(), err)
	}
	return Result{
		HostIface: w.HostIface,
		HostMAC:   host.Attrs().HardwareAddr,
		Iface:     peer.Attrs().Name,
		MAC:       peer.Attrs().HardwareAddr,
	}, p.writes.Load() != before, nil
}

// create makes the veth pair with the peer created directly in the
// workload's namespace under its final name (IFLA_NET_NS_FD on the peer):
// no temporary name, no window in which the peer sits in the host
// namespace, and a name clash in the workload namespace fails the whole
// creation atomically.
func (p *Plumber) create(w dataplane.Workload, wl *netns.Target, wnl *netlink.Handle) (host, peer netlink.Link, err error) {
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:         w.HostIface,
			MTU:          w.MTU,
			HardwareAddr: dataplane.HostSideMAC,
		},
		PeerName:         w.IfaceOrDefault(),
		PeerHardwareAddr: w.MAC,
		PeerNamespace:    netlink.NsFd(wl.Fd()),
	}
	if err := p.nl.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, nil, fmt.Errorf("create veth %s/%s: %w: %w", w.HostIface, w.IfaceOrDefault(), ErrIfaceTaken, err)
		}
		return nil, nil, fmt.Errorf("create veth %s: %w", w.HostIface, err)
	}
	p.writes.Add(1)
	host, err = p.nl.LinkByName(w.HostIface)
	if err == nil {
		peer, err = wnl.LinkByName(w.IfaceOrDefault())
	}
	if err != nil {
		if derr := p.nl.LinkDel(veth); derr != nil && !nlutil.IsLinkNotFound(derr) {
			err = errors.Join(err, derr)
		}
		return nil, nil, fmt.Errorf("look up new veth %s: %w", w.HostIface, err)
	}
	return host, peer, nil
}

// configure brings both ends to the desired state, writing only what
// differs.
func (p *Plumber) configure(w dataplane.Workload, wl *netns.Target, wnl *netlink.Handle, host, peer netlink.Link) error {
	has4, has6 := families(w.IPs)
	if err := p.configureHost(w, host, has6); err != nil {
		return err
	}
	return p.configureWorkload(w, wl, wnl, peer, has4, has6)
}

func families(ips []netip.Prefix) (has4, has6 bool) {
	for _, ip := range ips {
		if ip.Addr().Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	return has4, has6
}

func (p *Plumber) hostSysctls(iface string, has6 bool) [][2]string {
	s := [][2]string{
		{sysctl.IfaceKey("ipv4", iface, "proxy_arp"), "1"},
		{"net/ipv4/neigh/" + iface + "/proxy_delay", "0"},
		{sysctl.IfaceKey("ipv4", iface, "forwarding"), "1"},
		{sysctl.IfaceKey("ipv4", iface, "route_localnet"), "1"},
		{sysctl.IfaceKey("ipv4", iface, "rp_filter"), p.cfg.RPFilter},
	}
	if has6 {
		s = append(s,
			[2]string{sysctl.IfaceKey("ipv6", iface, "accept_dad"), "0"},
			[2]string{sysctl.IfaceKey("ipv6", iface, "proxy_ndp"), "1"},
			[2]string{sysctl.IfaceKey("ipv6", iface, "forwarding"), "1"},
			[2]string{sysctl.IfaceKey("ipv6", iface, "accept_ra"), "0"},
		)
	}
	return s
}

func (p *Plumber) ensureSysctls(t *netns.Target, kvs [][2]string) error {
	return t.Do(func() error {
		var errs []error
		for _, kv := range kvs {
			wrote, err := sysctl.Ensure(kv[0], kv[1])
			if err != nil {
				errs = append(errs, err)
			}
			if wrote {
				p.writes.Add(1)
			}
		}
		return errors.Join(errs...)
	})
}

func (p *Plumber) configureHost(w dataplane.Workload, host netlink.Link, has6 bool) error {
	attrs := host.Attrs()
	if w.MTU != 0 && attrs.MTU != w.MTU {
		if err := p.nl.LinkSetMTU(host, w.MTU); err != nil {
			return fmt.Errorf("set MTU of %s: %w", w.HostIface, err)
		}
		p.writes.Add(1)
	}
	// Calico retries the MAC: on some systems udev rewrites the MAC of a
	// new veth right after creation.
	for try := 0; !slices.Equal(attrs.HardwareAddr, dataplane.HostSideMAC); try++ {
		if try == 5 {
			return fmt.Errorf("%s keeps MAC %s instead of %s", w.HostIface, attrs.HardwareAddr, dataplane.HostSideMAC)
		}
		if err := p.nl.LinkSetHardwareAddr(host, dataplane.HostSideMAC); err != nil {
			return fmt.Errorf("set MAC of %s: %w", w.HostIface, err)
		}
		p.writes.Add(1)
		l, err := p.nl.LinkByIndex(attrs.Index)
		if err != nil {
			return fmt.Errorf("re-read %s: %w", w.HostIface, err)
		}
		attrs = l.Attrs()
	}
	// Sysctls before the link comes up: the kernel makes its own IPv6
	// link-local address at up, and it must skip duplicate address
	// detection to be usable at once (the gateway address weft adds below
	// skips it by itself).
	if err := p.ensureSysctls(p.host, p.hostSysctls(w.HostIface, has6)); err != nil {
		return fmt.Errorf("host side %s: %w", w.HostIface, err)
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := p.nl.LinkSetUp(host); err != nil {
			return fmt.Errorf("set %s up: %w", w.HostIface, err)
		}
		p.writes.Add(1)
	}
	if has6 {
		return p.ensureGatewayAddr6(w, host)
	}
	return nil
}

// gatewayAddr6 is the workloads' IPv6 gateway on the host side. The kernel
// derives this very link-local address from [dataplane.HostSideMAC] only
// when the interface makes EUI-64 addresses (addr_gen_mode 0); a host set
// to stable-privacy, random or no link-local addresses (or software that
// rewrites addr_gen_mode) would leave the workloads without a gateway. So
// weft adds it itself, without duplicate address detection: every host-side
// interface holds it, each on its own link.
func gatewayAddr6() *netlink.Addr {
	return &netlink.Addr{IPNet: kroute.IPNet(netip.PrefixFrom(dataplane.WorkloadGatewayV6, 64)), Flags: unix.IFA_F_NODAD}
}

func hasGatewayAddr6(h *netlink.Handle, link netlink.Link) (bool, error) {
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return false, err
	}
	want := netip.PrefixFrom(dataplane.WorkloadGatewayV6, 64)
	for _, a := range addrs {
		if pfx, ok := addrPrefix(a); ok && pfx == want {
			return true, nil
		}
	}
	return false, nil
}

// ensureGatewayAddr6 runs after the link is up: the kernel removes IPv6
// addresses from an interface set down, and the Manager's link watch
// repairs that through Check.
func (p *Plumber) ensureGatewayAddr6(w dataplane.Workload, host netlink.Link) error {
	ok, err := hasGatewayAddr6(p.nl, host)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", w.HostIface, err)
	}
	if ok {
		return nil
	}
	err = p.nl.AddrAdd(host, gatewayAddr6())
	if errors.Is(err, unix.EEXIST) {
		return nil // the kernel derived it meanwhile
	}
	if err != nil {
		return fmt.Errorf("add IPv6 gateway address %s to %s: %w", dataplane.WorkloadGatewayV6, w.HostIface, err)
	}
	p.writes.Add(1)
	return nil
}

func (p *Plumber) configureWorkload(w dataplane.Workload, wl *netns.Target, wnl *netlink.Handle, peer netlink.Link, has4, has6 bool) error {
	iface := w.IfaceOrDefault()
	attrs := peer.Attrs()
	if w.MTU != 0 && attrs.MTU != w.MTU {
		if err := wnl.LinkSetMTU(peer, w.MTU); err != nil {
			return fmt.Errorf("set MTU of %s in %s: %w", iface, w.NetNS, err)
		}
		p.writes.Add(1)
	}
	if w.MAC != nil && !slices.Equal(attrs.HardwareAddr, w.MAC) {
		if err := wnl.LinkSetHardwareAddr(peer, w.MAC); err != nil {
			return fmt.Errorf("set MAC of %s in %s: %w", iface, w.NetNS, err)
		}
		p.writes.Add(1)
	}
	if has6 {
		if err := p.ensureSysctls(wl, [][2]string{{sysctl.IfaceKey("ipv6", iface, "accept_dad"), "0"}}); err != nil {
			return fmt.Errorf("workload side %s: %w", iface, err)
		}
	}
	if err := p.ensureAddrs(w, wnl, peer); err != nil {
		return err
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := wnl.LinkSetUp(peer); err != nil {
			return fmt.Errorf("set %s up in %s: %w", iface, w.NetNS, err)
		}
		p.writes.Add(1)
	}
	if has4 {
		if err := p.ensureGatewayNeigh(w, wnl, peer.Attrs().Index); err != nil {
			return err
		}
	}
	return p.ensureWorkloadRoutes(w, wnl, peer.Attrs().Index, has4, has6)
}

// gatewayNeigh is the permanent neighbour entry for 169.254.1.1 inside the
// workload. Calico relies on proxy ARP alone, which answers only when the
// host has a route to 169.254.1.1 through another interface (in practice a
// default route); with this entry workloads reach their gateway on hosts
// without one too. Proxy ARP stays on for anything else the workload asks.
func gatewayNeigh(linkIndex int) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    linkIndex,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           dataplane.WorkloadGatewayV4.AsSlice(),
		HardwareAddr: dataplane.HostSideMAC,
	}
}

func hasGatewayNeigh(wnl *netlink.Handle, linkIndex int) (bool, error) {
	ns, err := nlutil.Dump(func() ([]netlink.Neigh, error) { return wnl.NeighList(linkIndex, netlink.FAMILY_V4) })
	if err != nil {
		return false, err
	}
	want := gatewayNeigh(linkIndex)
	for _, n := range ns {
		if kroute.Addr(n.IP) == dataplane.WorkloadGatewayV4 {
			return n.State == want.State && slices.Equal(n.HardwareAddr, want.HardwareAddr), nil
		}
	}
	return false, nil
}

func (p *Plumber) ensureGatewayNeigh(w dataplane.Workload, wnl *netlink.Handle, linkIndex int) error {
	ok, err := hasGatewayNeigh(wnl, linkIndex)
	if err != nil {
		return fmt.Errorf("list neighbours in %s: %w", w.NetNS, err)
	}
	if ok {
		return nil
	}
	if err := wnl.NeighSet(gatewayNeigh(linkIndex)); err != nil {
		return fmt.Errorf("gateway neighbour in %s: %w", w.NetNS, err)
	}
	p.writes.Add(1)
	return nil
}

// ensureAddrs puts each address on the workload interface as a /32
// (/128) and removes other global addresses.
func (p *Plumber) ensureAddrs(w dataplane.Workload, wnl *netlink.Handle, peer netlink.Link) error {
	have, err := wnl.AddrList(peer, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses in %s: %w", w.NetNS, err)
	}
	want := map[netip.Prefix]bool{}
	for _, ip := range w.IPs {
		want[ip] = true
	}
	for _, a := range have {
		pfx, ok := addrPrefix(a)
		if !ok || pfx.Addr().IsLinkLocalUnicast() {
			continue
		}
		if want[pfx] {
			delete(want, pfx)
			continue
		}
		if err := wnl.AddrDel(peer, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %s in %s: %w", pfx, w.NetNS, err)
		}
		p.writes.Add(1)
	}
	for _, ip := range w.IPs {
		if !want[ip] {
			continue
		}
		a := &netlink.Addr{IPNet: kroute.IPNet(ip)}
		if ip.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := wnl.AddrAdd(peer, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s in %s: %w", ip, w.NetNS, err)
		}
		p.writes.Add(1)
	}
	return nil
}

func addrPrefix(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip := kroute.Addr(a.IP)
	if !ip.IsValid() {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip, ones), true
}

// workloadRoutes are the routes inside the workload namespace.
func workloadRoutes(linkIndex int, has4, has6 bool) []kroute.Route {
	var rs []kroute.Route
	if has4 {
		gw := dataplane.WorkloadGatewayV4
		rs = append(rs,
			kroute.Route{Table: unix.RT_TABLE_MAIN, Dst: netip.PrefixFrom(gw, 32), Type: unix.RTN_UNICAST, LinkIndex: linkIndex, Scope: netlink.SCOPE_LINK},
			kroute.Route{Table: unix.RT_TABLE_MAIN, Dst: netip.MustParsePrefix("0.0.0.0/0"), Type: unix.RTN_UNICAST, LinkIndex: linkIndex, Gw: gw},
		)
	}
	if has6 {
		rs = append(rs, kroute.Route{Table: unix.RT_TABLE_MAIN, Dst: netip.MustParsePrefix("::/0"), Type: unix.RTN_UNICAST, LinkIndex: linkIndex, Gw: dataplane.WorkloadGatewayV6})
	}
	return rs
}

func (p *Plumber) ensureWorkloadRoutes(w dataplane.Workload, wnl *netlink.Handle, linkIndex int, has4, has6 bool) error {
	have, err := listRoutes(wnl, &netlink.Route{LinkIndex: linkIndex, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes in %s: %w", w.NetNS, err)
	}
	for _, r := range workloadRoutes(linkIndex, has4, has6) {
		if cur, ok := have[r.Dst]; ok && cur == r {
			continue
		}
		nr := r.Netlink()
		nr.Protocol = unix.RTPROT_STATIC
		if err := wnl.RouteReplace(nr); err != nil {
			return fmt.Errorf("route %s in %s: %w", r.Dst, w.NetNS, err)
		}
		p.writes.Add(1)
	}
	return nil
}

// checkHostRoutesFree refuses a workload whose address the host already
// routes by a route weft does not own (at the metric weft's host route
// would take): weft would have to overwrite it. A weft route there (an
// earlier workload's) is weft's to replace.
func (p *Plumber) checkHostRoutesFree(w dataplane.Workload) error {
	all, err := nlutil.Dump(func() ([]netlink.Route, error) {
		return p.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list host routes: %w", err)
	}
	var errs []error
	for _, r := range w.HostRoutes() {
		if err := kroute.Conflict(r.Dst, kroute.Holding(all, r.Dst), p.linkName); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// linkName names a host interface for messages ("" if unknown).
func (p *Plumber) linkName(index int) string {
	l, err := p.nl.LinkByIndex(index)
	if err != nil {
		return ""
	}
	return l.Attrs().Name
}

// listRoutes dumps routes matching filter, keyed by destination.
func listRoutes(h *netlink.Handle, filter *netlink.Route, mask uint64) (map[netip.Prefix]kroute.Route, error) {
	nrs, err := nlutil.Dump(func() ([]netlink.Route, error) { return h.RouteListFiltered(netlink.FAMILY_ALL, filter, mask) })
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Prefix]kroute.Route, len(nrs))
	for _, nr := range nrs {
		if r, ok := kroute.FromNetlink(nr); ok {
			out[r.Dst] = r
		}
	}
	return out, nil
}

// check lists every difference between w's plumbing (and, with
// hostRoutes, its host routes, which the routes manager owns) and what the
// dataplane makes.
func (p *Plumber) check(w dataplane.Workload, hostRoutes bool) error {
	wl, wnl, err := p.workloadNS(w)
	if err != nil {
		return fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	defer wl.Close()
	defer wnl.Close()
	host, peer, err := p.findPair(w, wl, wnl)
	if err != nil {
		return fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	if host == nil {
		return fmt.Errorf("workload %s/%s: %w: no interface %s", w.Namespace, w.Name, ErrDrift, w.HostIface)
	}
	var probs []string
	diff := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	has4, has6 := families(w.IPs)

	ha := host.Attrs()
	if ha.Flags&net.FlagUp == 0 {
		diff("%s is down", w.HostIface)
	}
	if !slices.Equal(ha.HardwareAddr, dataplane.HostSideMAC) {
		diff("%s has MAC %s", w.HostIface, ha.HardwareAddr)
	}
	if w.MTU != 0 && ha.MTU != w.MTU {
		diff("%s has MTU %d", w.HostIface, ha.MTU)
	}
	if has6 {
		if ok, err := hasGatewayAddr6(p.nl, host); err != nil || !ok {
			diff("IPv6 gateway address %s missing on %s", dataplane.WorkloadGatewayV6, w.HostIface)
		}
	}
	_ = p.host.Do(func() error {
		for _, kv := range p.hostSysctls(w.HostIface, has6) {
			if v, err := sysctl.Get(kv[0]); err != nil || v != kv[1] {
				diff("sysctl %s is %q, want %q", kv[0], v, kv[1])
			}
		}
		return nil
	})

	pa := peer.Attrs()
	iface := w.IfaceOrDefault()
	if pa.Flags&net.FlagUp == 0 {
		diff("%s is down in the workload", iface)
	}
	if w.MTU != 0 && pa.MTU != w.MTU {
		diff("%s has MTU %d in the workload", iface, pa.MTU)
	}
	if w.MAC != nil && !slices.Equal(pa.HardwareAddr, w.MAC) {
		diff("%s has MAC %s in the workload", iface, pa.HardwareAddr)
	}
	addrs, err := wnl.AddrList(peer, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("workload %s/%s: list addresses: %w", w.Namespace, w.Name, err)
	}
	got := map[netip.Prefix]bool{}
	for _, a := range addrs {
		if pfx, ok := addrPrefix(a); ok && !pfx.Addr().IsLinkLocalUnicast() {
			got[pfx] = true
		}
	}
	for _, ip := range w.IPs {
		if !got[ip] {
			diff("address %s missing in the workload", ip)
		}
		delete(got, ip)
	}
	for pfx := range got {
		diff("unexpected address %s in the workload", pfx)
	}
	wroutes, err := listRoutes(wnl, &netlink.Route{LinkIndex: pa.Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("workload %s/%s: list routes: %w", w.Namespace, w.Name, err)
	}
	for _, r := range workloadRoutes(pa.Index, has4, has6) {
		if cur, ok := wroutes[r.Dst]; !ok || cur != r {
			diff("route %s missing in the workload", r.Dst)
		}
	}
	if has4 {
		if ok, err := hasGatewayNeigh(wnl, pa.Index); err != nil || !ok {
			diff("gateway neighbour %s missing in the workload", dataplane.WorkloadGatewayV4)
		}
	}
	if hostRoutes {
		hroutes, err := listRoutes(p.nl, &netlink.Route{LinkIndex: ha.Index, Table: unix.RT_TABLE_MAIN, Protocol: dataplane.RouteProtocol},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return fmt.Errorf("workload %s/%s: list host routes: %w", w.Namespace, w.Name, err)
		}
		for _, r := range w.HostRoutes() {
			if cur, ok := hroutes[r.Dst]; !ok || cur != kroute.FromDesired(r, ha.Index) {
				diff("host route %s dev %s missing", r.Dst, w.HostIface)
			}
		}
	}
	if len(probs) > 0 {
		slices.Sort(probs)
		return fmt.Errorf("workload %s/%s: %w: %s", w.Namespace, w.Name, ErrDrift, strings.Join(probs, "; "))
	}
	return nil
}
