package testbed

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"regexp"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/site"
)

// Workload is a network namespace standing for a container or VM on a host.
// The test bed only creates it (loopback up); weft attaches it
// (`weft workload add NAME --netns PATH`), or AttachVeth does so by hand.
type Workload struct {
	ns   *Netns
	host *Host
	name string
}

var workloadNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// AddWorkload creates the namespace of workload name on host h; it fails the
// test on error. Its path is /run/netns/wtb-<id>-<host>-<name>.
func (s *Site) AddWorkload(h *Host, name string) *Workload {
	s.t.Helper()
	if !workloadNameRE.MatchString(name) {
		s.t.Fatalf("testbed: bad workload name %q (want %s)", name, workloadNameRE)
	}
	ns, err := s.site.AddWorkload(h.sh, name)
	if err != nil {
		s.t.Fatalf("testbed: %v", err)
	}
	w := &Workload{ns: newNetns(s, ns), host: h, name: name}
	s.mu.Lock()
	s.workloads = append(s.workloads, w)
	s.mu.Unlock()
	return w
}

// Netns returns the workload's network namespace.
func (w *Workload) Netns() *Netns { return w.ns }

// Name is the workload's name as given to AddWorkload.
func (w *Workload) Name() string { return w.name }

// Host is the host the workload lives on.
func (w *Workload) Host() *Host { return w.host }

// Path is the namespace's path, for `weft workload add NAME --netns PATH`.
func (w *Workload) Path() string { return w.ns.Path() }

// Exec runs argv inside the workload's namespace.
func (w *Workload) Exec(argv ...string) (string, error) { return w.ns.Exec(argv...) }

// HostVeth is the name AttachVeth gives the host side of the workload's
// veth: "wtb" and 8 hex digits of a hash of the namespace name.
func (w *Workload) HostVeth() string {
	h := fnv.New32a()
	h.Write([]byte(w.ns.Name()))
	return fmt.Sprintf("wtb%08x", h.Sum32())
}

// AttachVeth wires the workload to its host without weft, the way Calico
// does: a veth with eth0 in the workload holding addr (a single IPv4
// address), a default route via 169.254.1.1 on eth0, and on the host side
// proxy ARP and a /32 route to addr. Routing between hosts is not set up.
func (w *Workload) AttachVeth(addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return fmt.Errorf("testbed: AttachVeth wants one IPv4 address, got %q", addr)
	}
	if err := w.attachVeth(a); err != nil {
		return fmt.Errorf("testbed: attach %s: %w", w.ns.label, err)
	}
	return nil
}

func (w *Workload) attachVeth(a netip.Addr) error {
	hv := w.HostVeth()
	wl, err := w.ns.ns.Open()
	if err != nil {
		return err
	}
	defer wl.Close()
	host := w.host.ns
	err = host.ns.Netlink(func(nl *netlink.Handle) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hv}, PeerName: "eth0", PeerNamespace: netlink.NsFd(wl.Fd())}
		if err := nl.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", hv, err)
		}
		return nl.LinkSetUp(veth)
	})
	if err != nil {
		return err
	}
	if err := host.SetSysctl("net/ipv4/conf/"+hv+"/proxy_arp", "1"); err != nil {
		return err
	}
	err = host.ns.Netlink(func(nl *netlink.Handle) error {
		l, err := nl.LinkByName(hv)
		if err != nil {
			return err
		}
		return nl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: site.IPNet(netip.PrefixFrom(a, 32)), Scope: netlink.SCOPE_LINK})
	})
	if err != nil {
		return err
	}
	return w.ns.ns.Netlink(func(nl *netlink.Handle) error {
		eth0, err := nl.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := nl.AddrAdd(eth0, &netlink.Addr{IPNet: site.IPNet(netip.PrefixFrom(a, 32))}); err != nil {
			return err
		}
		if err := nl.LinkSetUp(eth0); err != nil {
			return err
		}
		gw := netip.MustParseAddr("169.254.1.1")
		if err := nl.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: site.IPNet(netip.PrefixFrom(gw, 32)), Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
		return nl.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: site.IPNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: gw.AsSlice()})
	})
}
