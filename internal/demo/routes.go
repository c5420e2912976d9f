package demo

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
)

// weftRoutes lists the IPv4 routes weft programmed in one table of the
// handle's namespace (those carrying its route protocol), sorted by
// destination, each formatted as `ip route` prints it.
func weftRoutes(h *netlink.Handle, table int) ([]route, error) {
	filter := &netlink.Route{Table: table, Protocol: dataplane.RouteProtocol}
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	links, err := dump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []route
	for _, r := range routes {
		out = append(out, fromNetlink(r, names))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Dst.Addr() != out[j].Dst.Addr() {
			return out[i].Dst.Addr().Less(out[j].Dst.Addr())
		}
		return out[i].Dst.Bits() < out[j].Dst.Bits()
	})
	return out, nil
}

// dump retries a netlink dump that the kernel interrupted because the
// table changed meanwhile (the agents are busy programming routes).
func dump[T any](list func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var items []T
		items, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return items, err
		}
	}
	return nil, err
}

// route is the part of a kernel route the demo shows.
type route struct {
	Type     int // unix.RTN_*
	Dst      netip.Prefix
	Gw       netip.Addr
	Dev      string
	Protocol int
	Scope    netlink.Scope
	Src      netip.Addr
	Metric   int
	OnLink   bool
	Table    int
}

func fromNetlink(r netlink.Route, names map[int]string) route {
	out := route{
		Type:     r.Type,
		Dev:      names[r.LinkIndex],
		Protocol: int(r.Protocol),
		Scope:    r.Scope,
		Metric:   r.Priority,
		OnLink:   r.Flags&int(netlink.FLAG_ONLINK) != 0,
		Table:    r.Table,
	}
	if r.LinkIndex != 0 && out.Dev == "" {
		out.Dev = fmt.Sprintf("if%d", r.LinkIndex)
	}
	if r.Dst != nil {
		ones, _ := r.Dst.Mask.Size()
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			out.Dst = netip.PrefixFrom(a.Unmap(), ones)
		}
	} else {
		out.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	if a, ok := netip.AddrFromSlice(r.Gw); ok {
		out.Gw = a.Unmap()
	}
	if a, ok := netip.AddrFromSlice(r.Src); ok {
		out.Src = a.Unmap()
	}
	return out
}

// String formats the route as `ip route` does:
// [TYPE] DST [via GW] [dev DEV] proto N [scope S] [src SRC] [metric M] [onlink].
func (r route) String() string { return r.format(true) }

// format is String, leaving out the protocol unless withProto, as `ip
// route show proto N` does.
func (r route) format(withProto bool) string {
	var b strings.Builder
	switch r.Type {
	case unix.RTN_BLACKHOLE:
		b.WriteString("blackhole ")
	case unix.RTN_UNREACHABLE:
		b.WriteString("unreachable ")
	case unix.RTN_PROHIBIT:
		b.WriteString("prohibit ")
	case unix.RTN_THROW:
		b.WriteString("throw ")
	}
	switch {
	case r.Dst.Bits() == 0:
		b.WriteString("default")
	case r.Dst.Bits() == r.Dst.Addr().BitLen():
		b.WriteString(r.Dst.Addr().String())
	default:
		b.WriteString(r.Dst.String())
	}
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	if r.Dev != "" {
		b.WriteString(" dev " + r.Dev)
	}
	if withProto {
		fmt.Fprintf(&b, " proto %d", r.Protocol)
	}
	if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	switch r.Scope {
	case netlink.SCOPE_LINK:
		b.WriteString(" scope link")
	case netlink.SCOPE_HOST:
		b.WriteString(" scope host")
	}
	if r.Src.IsValid() {
		b.WriteString(" src " + r.Src.String())
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	if r.OnLink {
		b.WriteString(" onlink")
	}
	return b.String()
}

// forwards reports whether the routes send addr somewhere (not into a
// blackhole): the most specific route containing it in the WireGuard
// table, which is looked up first, unless that is a throw route or there
// is none, else in the main table; a unicast one.
func forwards(wireguard, main []route, addr netip.Addr) bool {
	lookup := func(routes []route) (route, bool) {
		best := -1
		for i, r := range routes {
			if r.Dst.Contains(addr) && (best < 0 || r.Dst.Bits() > routes[best].Dst.Bits()) {
				best = i
			}
		}
		if best < 0 {
			return route{}, false
		}
		return routes[best], true
	}
	if r, ok := lookup(wireguard); ok && r.Type != unix.RTN_THROW {
		return r.Type == unix.RTN_UNICAST
	}
	r, ok := lookup(main)
	return ok && r.Type == unix.RTN_UNICAST
}
