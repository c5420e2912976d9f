package demo

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inUse is a prefix this machine already uses: an address or a route.
type inUse struct {
	Prefix netip.Prefix
	What   string // "route 10.0.0.0/8 dev tun0", "address 10.250.77.5/24 on eth0"
}

// checkMachine makes sure the demo's ranges do not overlap any address or
// route of the machine (its current network namespace). The demo's own
// addresses live only inside its namespaces, but a range the machine also
// uses would make the walkthrough's addresses ambiguous to the operator.
func checkMachine(l Layout) error {
	used, err := machinePrefixes()
	if err != nil {
		return fmt.Errorf("read this machine's addresses and routes: %w", err)
	}
	return conflict(l, used)
}

// conflict reports the first of the demo's ranges that overlaps a prefix
// the machine uses.
func conflict(l Layout, used []inUse) error {
	ranges := []struct {
		name   string
		prefix netip.Prefix
	}{{"underlay", l.Underlay}, {"pool", l.Pool}}
	for _, r := range ranges {
		for _, u := range used {
			if u.Prefix.Overlaps(r.prefix) {
				return fmt.Errorf("%s %s overlaps this machine's %s; choose free ranges with --underlay and --pool",
					r.name, r.prefix, u.What)
			}
		}
	}
	return nil
}

// machinePrefixes lists the IPv4 addresses of this namespace's interfaces
// and the destinations of its routes in every table except local (whose
// entries are the addresses again) and default routes (which overlap
// everything and are no conflict).
func machinePrefixes() ([]inUse, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := dump(h.LinkList)
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var used []inUse
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip.Unmap(), ones)
		used = append(used, inUse{Prefix: p.Masked(), What: fmt.Sprintf("address %s on %s", p, names[a.LinkIndex])})
	}
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_LOCAL || r.Dst == nil {
			continue
		}
		rt := fromNetlink(r, names)
		if rt.Dst.Bits() == 0 {
			continue
		}
		what := "route " + rt.String()
		if r.Table != unix.RT_TABLE_MAIN {
			what += fmt.Sprintf(" (table %d)", r.Table)
		}
		used = append(used, inUse{Prefix: rt.Dst.Masked(), What: what})
	}
	return used, nil
}
