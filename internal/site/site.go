// Package site builds a network of machines on one Linux machine out of
// network namespaces: the one site builder behind `weft demo`
// (internal/demo: the site plus narration) and the end-to-end test bed
// (internal/testbed: the site plus the testing lifecycle).
//
// # Layout
//
//   - a router namespace (Spec.Router, default "router") holding one bridge
//     per underlay subnet ("br0", "br1", …) with the router's address, the
//     first of the subnet (and of its IPv6 prefix), forwarding on: with two
//     subnets it routes between them, like a core switch between two racks;
//   - hosts: a network namespace each, whose eth0 is a veth to its subnet's
//     bridge ("v-<host>" on the bridge side), with its address, loopback up,
//     forwarding on and a default route via the router; and a private mount
//     namespace (netns.MountNS) with a tmpfs of its own on /run/wireguard,
//     in which every process of the host runs: two agents never share
//     WireGuard UAPI sockets, and nothing mounted there shows outside;
//   - workloads (Site.AddWorkload): namespaces with loopback up, for the
//     agent to plumb.
//
// Every namespace is Spec.Prefix + a name: Prefix+Router, Prefix+host,
// Prefix+host+"-"+workload. Nothing is created in the machine's own network
// namespace.
//
// # Extending it
//
// A daemon beside the hosts (BIRD or FRR as the site's router) runs in the
// router namespace: give it private directories with Namespace.PrivateMounts
// and start it with Namespace.Launch or Namespace.Start. Two subnets joined
// by the router are Spec.Subnets with two entries and HostSpec.Subnet.
package site

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netns"
)

// Names and places every site uses.
const (
	// DefaultRouter names the router namespace (after the prefix).
	DefaultRouter = "router"
	// Uplink is every host's underlay interface.
	Uplink = "eth0"
	// WireGuardDir is where wgctrl and wireguard-go keep their UAPI sockets;
	// every host gets a private tmpfs there, named WireGuardTmpfs.
	WireGuardDir   = "/run/wireguard"
	WireGuardTmpfs = "weft-wg"
)

// Spec plans a site.
type Spec struct {
	// Prefix starts the name of every network namespace of the site.
	Prefix string
	// Router names the router namespace after the prefix (DefaultRouter).
	Router string
	// Subnets are the underlay's subnets; at least one.
	Subnets []Subnet
	// Hosts are attached to the subnets.
	Hosts []HostSpec
	// Record, when set, is called with the name of every namespace before
	// it is created, so that an interrupted run can be swept (the test bed's
	// state file); an error stops the build.
	Record func(name string) error
}

// Subnet is one underlay subnet: a bridge in the router namespace.
type Subnet struct {
	V4 netip.Prefix // masked IPv4 prefix; the router takes its first address
	V6 netip.Prefix // optional masked IPv6 prefix, the same
}

// RouterAddr is the router's IPv4 address on the subnet, hosts' gateway.
func (s Subnet) RouterAddr() netip.Addr { return NthAddr(s.V4, 1) }

// RouterAddr6 is the router's IPv6 address on the subnet (invalid without V6).
func (s Subnet) RouterAddr6() netip.Addr {
	if !s.V6.IsValid() {
		return netip.Addr{}
	}
	return NthAddr(s.V6, 1)
}

// HostSpec plans one host.
type HostSpec struct {
	Name   string
	Subnet int        // index into Spec.Subnets
	Addr   netip.Addr // IPv4 address in the subnet
	Addr6  netip.Addr // optional IPv6 address in the subnet's V6
}

// NthAddr is the n-th address of p (n=0 is the network address).
func NthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// Site is a built site.
type Site struct {
	spec     Spec
	router   *Namespace
	hosts    []*Host
	launcher *netns.Launcher

	mu        sync.Mutex
	created   []string // namespace names in creation order
	inodes    map[uint64]bool
	workloads []*Namespace
	closed    bool // no more namespaces

	finished sync.Once
	closeErr error
}

// Namespaces lists the names of the namespaces Build creates, in order.
func (sp Spec) Namespaces() []string {
	names := []string{sp.Prefix + sp.routerName()}
	for _, h := range sp.Hosts {
		names = append(names, sp.Prefix+h.Name)
	}
	return names
}

func (sp Spec) routerName() string {
	if sp.Router == "" {
		return DefaultRouter
	}
	return sp.Router
}

func (sp Spec) validate() error {
	if len(sp.Subnets) == 0 {
		return errors.New("site: no subnet")
	}
	for i, sn := range sp.Subnets {
		if !sn.V4.IsValid() || !sn.V4.Addr().Is4() || sn.V4.Masked() != sn.V4 || sn.V4.Bits() > 30 {
			return fmt.Errorf("site: subnet %d: %s is not a masked IPv4 prefix of /30 or larger", i, sn.V4)
		}
		if sn.V6.IsValid() && (!sn.V6.Addr().Is6() || sn.V6.Masked() != sn.V6) {
			return fmt.Errorf("site: subnet %d: %s is not a masked IPv6 prefix", i, sn.V6)
		}
	}
	seen := map[string]bool{sp.routerName(): true}
	for _, h := range sp.Hosts {
		if h.Name == "" || seen[h.Name] {
			return fmt.Errorf("site: empty or duplicate host name %q", h.Name)
		}
		seen[h.Name] = true
		if h.Subnet < 0 || h.Subnet >= len(sp.Subnets) {
			return fmt.Errorf("site: host %s: no subnet %d", h.Name, h.Subnet)
		}
		sn := sp.Subnets[h.Subnet]
		if !sn.V4.Contains(h.Addr) || h.Addr == sn.RouterAddr() {
			return fmt.Errorf("site: host %s: %s is not a host address of %s", h.Name, h.Addr, sn.V4)
		}
		if h.Addr6.IsValid() && !sn.V6.Contains(h.Addr6) {
			return fmt.Errorf("site: host %s: %s is not in %s", h.Name, h.Addr6, sn.V6)
		}
	}
	return nil
}

// Build creates the site. On error it returns the partly built site (when
// anything was created) for the caller to Close.
func Build(spec Spec) (*Site, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	s := &Site{spec: spec, inodes: map[uint64]bool{}, launcher: netns.NewLauncher()}
	s.router = &Namespace{site: s, name: spec.Prefix + spec.routerName(), label: spec.routerName()}
	for _, hs := range spec.Hosts {
		s.hosts = append(s.hosts, &Host{
			Namespace:  &Namespace{site: s, name: spec.Prefix + hs.Name, label: hs.Name},
			addr:       hs.Addr,
			addr6:      hs.Addr6,
			subnet:     hs.Subnet,
			bridgePort: "v-" + hs.Name,
		})
	}
	if err := s.build(); err != nil {
		return s, err
	}
	return s, nil
}

func (s *Site) build() error {
	v6 := false
	for _, sn := range s.spec.Subnets {
		v6 = v6 || sn.V6.IsValid()
	}
	for _, n := range append([]*Namespace{s.router}, s.hostNamespaces()...) {
		if err := s.create(n); err != nil {
			return err
		}
	}
	// Without duplicate address detection the underlay's link-local
	// addresses are usable at once, and so is neighbour discovery: otherwise
	// the first IPv6 packets wait about 2 s. Only the router's interfaces and
	// the hosts' uplinks: interfaces weft creates in a host keep the
	// kernel's defaults, as on a real machine.
	if v6 {
		for _, key := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"} {
			if err := s.router.SetSysctl(key, "0"); err != nil {
				return err
			}
		}
	}
	err := s.router.Netlink(func(nl *netlink.Handle) error {
		for i, sn := range s.spec.Subnets {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName(i)}}
			if err := nl.LinkAdd(br); err != nil {
				return fmt.Errorf("add bridge %s: %w", br.Name, err)
			}
			if err := addAddr(nl, br, netip.PrefixFrom(sn.RouterAddr(), sn.V4.Bits())); err != nil {
				return err
			}
			if sn.V6.IsValid() {
				if err := addAddr(nl, br, netip.PrefixFrom(sn.RouterAddr6(), sn.V6.Bits())); err != nil {
					return err
				}
			}
			if err := nl.LinkSetUp(br); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.router.forward(v6); err != nil {
		return err
	}
	for _, h := range s.hosts {
		if err := s.plug(h); err != nil {
			return fmt.Errorf("host %s: %w", h.label, err)
		}
	}
	return nil
}

func (s *Site) hostNamespaces() []*Namespace {
	var out []*Namespace
	for _, h := range s.hosts {
		out = append(out, h.Namespace)
	}
	return out
}

// BridgeName is the bridge of subnet i in the router namespace.
func BridgeName(subnet int) string { return fmt.Sprintf("br%d", subnet) }

// create records and creates one namespace.
func (s *Site) create(n *Namespace) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("site: closed")
	}
	if s.spec.Record != nil {
		if err := s.spec.Record(n.name); err != nil {
			return err
		}
	}
	if err := netns.Create(n.name); err != nil {
		return err
	}
	ino, err := netns.Inode(n.Path())
	s.mu.Lock()
	s.created = append(s.created, n.name)
	if err == nil {
		s.inodes[ino] = true
	}
	s.mu.Unlock()
	return err
}

// plug connects a host to its subnet's bridge, configures its side and
// gives it its private mount namespace.
func (s *Site) plug(h *Host) error {
	sn := s.spec.Subnets[h.subnet]
	target, err := h.Open()
	if err != nil {
		return err
	}
	defer target.Close()
	err = s.router.Netlink(func(nl *netlink.Handle) error {
		br, err := nl.LinkByName(BridgeName(h.subnet))
		if err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: h.bridgePort, MasterIndex: br.Attrs().Index},
			PeerName:      Uplink,
			PeerNamespace: netlink.NsFd(target.Fd()),
		}
		if err := nl.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", h.bridgePort, err)
		}
		return nl.LinkSetUp(veth)
	})
	if err != nil {
		return err
	}
	if h.addr6.IsValid() {
		if err := h.SetSysctl("net/ipv6/conf/"+Uplink+"/accept_dad", "0"); err != nil {
			return err
		}
	}
	err = h.Netlink(func(nl *netlink.Handle) error {
		up, err := nl.LinkByName(Uplink)
		if err != nil {
			return err
		}
		if err := addAddr(nl, up, netip.PrefixFrom(h.addr, sn.V4.Bits())); err != nil {
			return err
		}
		if h.addr6.IsValid() {
			if err := addAddr(nl, up, netip.PrefixFrom(h.addr6, sn.V6.Bits())); err != nil {
				return err
			}
		}
		if err := nl.LinkSetUp(up); err != nil {
			return err
		}
		if err := defaultRoute(nl, up, sn.RouterAddr(), false); err != nil {
			return err
		}
		if h.addr6.IsValid() {
			return defaultRoute(nl, up, sn.RouterAddr6(), false)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := h.forward(h.addr6.IsValid()); err != nil {
		return err
	}
	return h.PrivateMounts(netns.Tmpfs{Dir: WireGuardDir, Source: WireGuardTmpfs})
}

// addAddr adds an address; IPv6 ones skip duplicate address detection, so
// they are usable at once.
func addAddr(nl *netlink.Handle, l netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: IPNet(p)}
	if p.Addr().Is6() {
		a.Flags = syscall.IFA_F_NODAD
	}
	if err := nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, l.Attrs().Name, err)
	}
	return nil
}

// defaultRoute adds (or with replace, replaces) the default route via gw
// out of l.
func defaultRoute(nl *netlink.Handle, l netlink.Link, gw netip.Addr, replace bool) error {
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if gw.Is6() {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: IPNet(dst), Gw: gw.AsSlice()}
	add := nl.RouteAdd
	if replace {
		add = nl.RouteReplace
	}
	if err := add(r); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

// IPNet converts a prefix for netlink.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Router is the router namespace.
func (s *Site) Router() *Namespace { return s.router }

// Subnets are the underlay's subnets.
func (s *Site) Subnets() []Subnet { return slices.Clone(s.spec.Subnets) }

// Hosts returns the hosts in order.
func (s *Site) Hosts() []*Host { return slices.Clone(s.hosts) }

// Host returns the host called name, or nil.
func (s *Site) Host(name string) *Host {
	for _, h := range s.hosts {
		if h.label == name {
			return h
		}
	}
	return nil
}

// WorkloadName is the namespace name of workload name on host h.
func (s *Site) WorkloadName(h *Host, name string) string {
	return s.spec.Prefix + h.label + "-" + name
}

// AddWorkload creates the namespace of workload name on host h (loopback
// up, nothing else): Prefix+host+"-"+name, labelled "host/name".
func (s *Site) AddWorkload(h *Host, name string) (*Namespace, error) {
	w := &Namespace{site: s, name: s.WorkloadName(h, name), label: h.label + "/" + name}
	s.mu.Lock()
	for _, o := range s.workloads {
		if o.name == w.name {
			s.mu.Unlock()
			return nil, fmt.Errorf("site: workload %s already exists", w.label)
		}
	}
	s.workloads = append(s.workloads, w)
	s.mu.Unlock()
	if err := s.create(w); err != nil {
		return nil, fmt.Errorf("site: add workload %s: %w", w.label, err)
	}
	return w, nil
}

// Created lists the names of every namespace created so far, in order.
func (s *Site) Created() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.created)
}

// Inodes identifies the site's namespaces as /proc/PID/ns/net shows them,
// also after they are gone (to find what survived).
func (s *Site) Inodes() map[uint64]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint64]bool, len(s.inodes))
	for k := range s.inodes {
		out[k] = true
	}
	return out
}

// killWait is how long processes killed at teardown get to disappear.
const killWait = 5 * time.Second

// Close tears the site down: it ends the launcher (whatever it started and
// still runs dies), releases the mount namespaces, kills every process
// still inside a namespace of the site and deletes the namespaces, newest
// first. Stop what should stop gracefully (agents) first. It carries on
// past errors. Only the first Close or Release acts; later calls wait for
// it and return its result.
func (s *Site) Close() error {
	return s.finish(func() error {
		err := s.release()
		_, rerr := Remove(s.Created())
		return errors.Join(err, rerr)
	})
}

// Release lets go of the site without tearing it down: it ends the launcher
// (whatever it started and still runs dies) and closes the mount namespaces
// (processes running in them keep them). The namespaces and the processes
// started with Start stay, for a later Remove of their names (`weft demo
// --keep` then `weft demo down`). The site is unusable afterwards.
func (s *Site) Release() error { return s.finish(s.release) }

// finish runs the first Close or Release.
func (s *Site) finish(fn func() error) error {
	s.finished.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.closeErr = fn()
	})
	return s.closeErr
}

func (s *Site) release() error {
	s.launcher.Close()
	var errs []error
	for _, n := range append([]*Namespace{s.router}, s.workloads...) {
		errs = append(errs, n.closeMounts())
	}
	for _, h := range s.hosts {
		errs = append(errs, h.closeMounts())
	}
	return errors.Join(errs...)
}

// Removed counts what Remove removed.
type Removed struct {
	Killed  int // processes killed because they were inside a namespace
	Deleted int // namespaces deleted
}

// Remove kills every process inside the named namespaces and deletes them,
// last name first; names that do not exist are skipped. It carries on past
// errors and reports them all. It needs no Site: sweeps of interrupted runs
// and `weft demo down` use it with the names they find.
func Remove(names []string) (Removed, error) {
	var (
		r    Removed
		errs []error
	)
	inodes := map[uint64]bool{}
	var present []string
	for _, name := range names {
		ino, err := netns.Inode(netns.PathOf(name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		inodes[ino] = true
		present = append(present, name)
	}
	pids := netns.ProcessesIn(inodes)
	r.Killed = len(pids)
	if err := netns.Kill(pids, syscall.SIGKILL, killWait); err != nil {
		errs = append(errs, err)
	}
	for i := len(present) - 1; i >= 0; i-- {
		if err := netns.Delete(present[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Deleted++
	}
	return r, errors.Join(errs...)
}

// Watch follows a started process: Proc reports when and how it ended.
func Watch(cmd *exec.Cmd) *Proc {
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// Proc is a started process and its exit.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, valid after done
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (Wait's error); valid once Done.
func (p *Proc) Err() error { return p.err }

// ExitDescription says how the process ended, for error messages.
func (p *Proc) ExitDescription() string {
	if p.err == nil {
		return "exited with status 0"
	}
	return p.err.Error()
}
