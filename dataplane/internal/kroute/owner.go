package kroute

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
)

// Writer is the part of a netlink handle [Add] uses.
type Writer interface {
	RouteAdd(*netlink.Route) error
	RouteReplace(*netlink.Route) error
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
}

// Add programs k without ever overwriting a route weft does not own. An
// exclusive add (NLM_F_EXCL) creates a free destination. If a route
// already holds k's destination at k's metric, it is replaced only when
// every route holding it carries weft's protocol; otherwise nothing
// changes and the error is a [*ConflictError] naming the foreign routes.
// A weft route that already is k is adopted without a write. linkName
// resolves interface indexes for the error message (nil: "if<N>"). wrote
// reports whether the kernel changed.
//
// A plain replace (NLM_F_REPLACE) would swap whatever route has the same
// destination and metric, whatever its protocol, and weft would later
// delete it as its own.
func Add(w Writer, k Route, linkName func(int) string) (wrote bool, err error) {
	nr := k.Netlink()
	err = w.RouteAdd(nr)
	if !errors.Is(err, unix.EEXIST) {
		return err == nil, err
	}
	all, lerr := w.RouteListFiltered(Family(k.Dst.Addr()), &netlink.Route{Table: nr.Table, Dst: IPNet(k.Dst)},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if lerr != nil {
		return false, fmt.Errorf("%w; list the routes to %s: %w", err, k.Dst, lerr)
	}
	holding := HoldingAt(all, nr.Table, k.Dst, k.Priority)
	if cerr := Conflict(k.Dst, holding, linkName); cerr != nil {
		return false, cerr
	}
	switch len(holding) {
	case 0:
		// Removed between the add and the dump: the next attempt adds it.
		return false, err
	case 1:
		if cur, ok := FromNetlink(holding[0]); ok && k.Satisfies(cur) {
			return false, nil
		}
	}
	if err := w.RouteReplace(nr); err != nil {
		return false, err
	}
	return true, nil
}

// Metric is the metric of weft's routes to dst, which set none: the
// kernel's default, 0 for IPv4 and 1024 (IP6_RT_PRIO_USER) for IPv6. Only
// a route with the same destination and metric collides with weft's.
func Metric(dst netip.Prefix) int {
	if dst.Addr().Is4() {
		return 0
	}
	return 1024
}

// Holding returns the routes among nrs that hold dst in the main table at
// weft's metric: those an exclusive add of a weft route to dst collides
// with, and a replace would overwrite.
func Holding(nrs []netlink.Route, dst netip.Prefix) []netlink.Route {
	return HoldingIn(nrs, unix.RT_TABLE_MAIN, dst)
}

// HoldingIn is [Holding] for any table.
func HoldingIn(nrs []netlink.Route, table int, dst netip.Prefix) []netlink.Route {
	return HoldingAt(nrs, table, dst, Metric(dst))
}

// HoldingAt is [HoldingIn] at a given metric (learned routes have their
// own, [dataplane.RouteMetricBGP4]).
func HoldingAt(nrs []netlink.Route, table int, dst netip.Prefix, prio int) []netlink.Route {
	var out []netlink.Route
	for _, nr := range nrs {
		d, ok := Dst(nr)
		if !ok || d != dst || nr.Table != table || nr.Tos != 0 || metric(nr, d) != prio {
			continue
		}
		out = append(out, nr)
	}
	return out
}

func metric(nr netlink.Route, dst netip.Prefix) int {
	if nr.Priority == 0 && dst.Addr().Is6() {
		return 1024 // the kernel stores no IPv6 route with metric 0
	}
	return nr.Priority
}

// Dst is the destination of a kernel route; a route without one is a
// default route of its family.
func Dst(nr netlink.Route) (netip.Prefix, bool) {
	if nr.Dst != nil {
		return prefixFromIPNet(nr.Dst)
	}
	switch nr.Family {
	case netlink.FAMILY_V4:
		return netip.MustParsePrefix("0.0.0.0/0"), true
	case netlink.FAMILY_V6:
		return netip.MustParsePrefix("::/0"), true
	}
	return netip.Prefix{}, false
}

// IsWeft reports whether a kernel route carries one of weft's route
// protocols.
func IsWeft(nr netlink.Route) bool {
	return int(nr.Protocol) == dataplane.RouteProtocol || int(nr.Protocol) == dataplane.RouteProtocolBGP
}

// ConflictError says that a destination weft wants is held by routes weft
// does not own. It matches [dataplane.ErrForeignRoute].
type ConflictError struct {
	Dst netip.Prefix
	// Foreign describes the foreign routes as `ip route` would.
	Foreign []string
}

// Conflict is the error for the routes among holding (routes holding dst)
// that are not weft's; nil if there are none.
func Conflict(dst netip.Prefix, holding []netlink.Route, linkName func(int) string) error {
	var foreign []string
	for _, nr := range holding {
		if !IsWeft(nr) {
			foreign = append(foreign, Describe(nr, linkName))
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	return &ConflictError{Dst: dst, Foreign: foreign}
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s is already routed by a route weft does not own (%s); weft leaves it alone",
		e.Dst, strings.Join(e.Foreign, "; "))
}

// Is makes errors.Is(err, dataplane.ErrForeignRoute) hold.
func (e *ConflictError) Is(target error) bool { return target == dataplane.ErrForeignRoute }

// Describe renders a kernel route roughly as `ip route` shows it, with
// the destination always in prefix form and the protocol always shown.
func Describe(nr netlink.Route, linkName func(int) string) string {
	name := func(i int) string {
		if linkName != nil {
			if n := linkName(i); n != "" {
				return n
			}
		}
		return fmt.Sprintf("if%d", i)
	}
	var b strings.Builder
	if t := typeName(nr.Type); t != "" {
		b.WriteString(t + " ")
	}
	if d, ok := Dst(nr); ok {
		b.WriteString(d.String())
	} else {
		b.WriteString("?")
	}
	hop := func(gw []byte, link int) {
		if a := addrFromIP(gw); a.IsValid() {
			b.WriteString(" via " + a.String())
		}
		if link != 0 {
			b.WriteString(" dev " + name(link))
		}
	}
	if len(nr.MultiPath) > 0 {
		for _, h := range nr.MultiPath {
			b.WriteString(" nexthop")
			hop(h.Gw, h.LinkIndex)
		}
	} else if nr.Type == unix.RTN_UNICAST || nr.Type == unix.RTN_LOCAL {
		hop(nr.Gw, nr.LinkIndex)
	}
	b.WriteString(" proto " + nr.Protocol.String())
	if nr.Priority != 0 {
		fmt.Fprintf(&b, " metric %d", nr.Priority)
	}
	return b.String()
}

func typeName(t int) string {
	switch t {
	case unix.RTN_UNICAST, unix.RTN_UNSPEC:
		return ""
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_NAT:
		return "nat"
	default:
		return fmt.Sprintf("type %d", t)
	}
}
