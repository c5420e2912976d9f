// Package kroute converts between weft's route descriptions and netlink
// routes, and normalises kernel routes so desired and actual compare
// exactly.
package kroute

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
)

// Route is the part of a kernel route weft owns and compares.
type Route struct {
	// Table is the routing table (unix.RT_TABLE_MAIN for the main table).
	Table     int
	Dst       netip.Prefix
	Type      int // unix.RTN_UNICAST, RTN_BLACKHOLE or RTN_THROW
	LinkIndex int // 0 for blackhole routes
	Gw        netip.Addr
	OnLink    bool
	Src       netip.Addr
	// Scope is RT_SCOPE_LINK for directly connected IPv4 routes and
	// universe otherwise (the kernel reports universe for every IPv6 route).
	Scope netlink.Scope
	// Protocol is weft's: [dataplane.RouteProtocol] or, for learned
	// routes, [dataplane.RouteProtocolBGP].
	Protocol int
	// Priority is the metric as the kernel keeps it (IPv6 never 0).
	Priority int
}

// FromDesired is the kernel form of r once its device resolved to
// linkIndex.
func FromDesired(r dataplane.Route, linkIndex int) Route {
	k := Route{Table: r.TableID(), Dst: r.Dst, Protocol: r.Protocol(), Priority: r.Metric()}
	switch r.Type {
	case dataplane.RouteBlackhole:
		k.Type = unix.RTN_BLACKHOLE
		return k
	case dataplane.RouteThrow:
		k.Type = unix.RTN_THROW
		return k
	}
	k.Type = unix.RTN_UNICAST
	k.LinkIndex = linkIndex
	k.Gw = r.Via
	k.OnLink = r.OnLink
	k.Src = r.Src
	if !r.Via.IsValid() && r.Dst.Addr().Is4() {
		k.Scope = netlink.SCOPE_LINK
	}
	return k
}

// Satisfies reports whether the kernel route cur is the desired route
// want. A desired unicast route without a device (LinkIndex 0) accepts
// whichever device the kernel chose.
func (want Route) Satisfies(cur Route) bool {
	if want.Type == unix.RTN_UNICAST && want.LinkIndex == 0 {
		cur.LinkIndex = 0
	}
	return cur == want
}

// FromNetlink normalises a kernel route. It reports false for routes weft
// never writes (multipath, other types), which callers treat as foreign
// content to replace.
func FromNetlink(nr netlink.Route) (Route, bool) {
	if nr.Dst == nil || len(nr.MultiPath) > 0 {
		return Route{}, false
	}
	dst, ok := prefixFromIPNet(nr.Dst)
	if !ok {
		return Route{}, false
	}
	k := Route{Table: nr.Table, Dst: dst, Type: nr.Type, Protocol: int(nr.Protocol), Priority: metric(nr, dst)}
	if k.Table == 0 {
		k.Table = unix.RT_TABLE_MAIN
	}
	switch nr.Type {
	case unix.RTN_BLACKHOLE, unix.RTN_THROW:
		return k, true
	case unix.RTN_UNICAST:
	default:
		return k, true
	}
	k.LinkIndex = nr.LinkIndex
	k.Gw = addrFromIP(nr.Gw)
	k.Src = addrFromIP(nr.Src)
	k.OnLink = nr.Flags&int(netlink.FLAG_ONLINK) != 0
	if dst.Addr().Is4() {
		k.Scope = nr.Scope
	}
	return k, true
}

// Key identifies the route (table and destination).
func (k Route) Key() dataplane.RouteKey { return dataplane.RouteKey{Table: k.Table, Dst: k.Dst} }

// Netlink is the netlink route that programs k in its table with weft's
// protocol.
func (k Route) Netlink() *netlink.Route {
	table := k.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	proto := k.Protocol
	if proto == 0 {
		proto = dataplane.RouteProtocol
	}
	nr := &netlink.Route{
		Dst:      IPNet(k.Dst),
		Table:    table,
		Protocol: netlink.RouteProtocol(proto),
		Type:     k.Type,
		Family:   Family(k.Dst.Addr()),
	}
	if k.Priority != Metric(k.Dst) {
		nr.Priority = k.Priority
	}
	if k.Type != unix.RTN_UNICAST {
		return nr
	}
	nr.LinkIndex = k.LinkIndex
	nr.Scope = k.Scope
	if k.Gw.IsValid() {
		nr.Gw = k.Gw.AsSlice()
	}
	if k.OnLink {
		nr.Flags |= int(netlink.FLAG_ONLINK)
	}
	if k.Src.IsValid() {
		nr.Src = k.Src.AsSlice()
	}
	return nr
}

// Family is the netlink family of an address.
func Family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// IPNet converts a prefix to the form netlink takes.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a := addrFromIP(n.IP)
	if !a.IsValid() {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

// addrFromIP converts, unmapping IPv4 addresses netlink may hand out in
// 16-byte form (weft never uses IPv4-mapped IPv6 addresses).
func addrFromIP(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// Addr converts a net.IP to netip.Addr (zero for nil), keeping 4-byte
// addresses IPv4.
func Addr(ip net.IP) netip.Addr { return addrFromIP(ip) }
