package node

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// interfaceAddrs is what address autodetection looks at: the addresses of
// the interface that holds the default route, and every address of the
// machine (in this network namespace).
type interfaceAddrs struct {
	DefaultRoute []netip.Addr // addresses on the default route's interface, preferred source first
	All          []netip.Addr
}

// detectAddress picks the node's underlay address (SPEC §2 node.address):
// the address of the interface holding the default route, else the only
// non-loopback address, else an error asking for node.address.
func detectAddress(in interfaceAddrs) (netip.Addr, error) {
	usable := func(a netip.Addr) bool {
		return a.IsValid() && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsMulticast() && !a.IsUnspecified()
	}
	for _, want4 := range []bool{true, false} {
		for _, a := range in.DefaultRoute {
			if usable(a) && a.Is4() == want4 {
				return a, nil
			}
		}
	}
	var candidates []netip.Addr
	for _, a := range in.All {
		if usable(a) {
			candidates = append(candidates, a)
		}
	}
	switch len(candidates) {
	case 1:
		return candidates[0], nil
	case 0:
		return netip.Addr{}, errors.New("cannot autodetect the node address: no default route and no non-loopback address; set node.address in the config")
	}
	list := make([]string, len(candidates))
	for i, a := range candidates {
		list[i] = a.String()
	}
	return netip.Addr{}, fmt.Errorf("cannot autodetect the node address: no default route and several addresses (%s); set node.address in the config", strings.Join(list, ", "))
}

// gatherAddrs reads the current network namespace with netlink.
func gatherAddrs(h *netlink.Handle) (interfaceAddrs, error) {
	var out interfaceAddrs
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return out, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			if src, ok := netip.AddrFromSlice(r.Src); ok {
				out.DefaultRoute = append(out.DefaultRoute, src.Unmap())
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if idx == 0 {
				continue
			}
			link, err := h.LinkByIndex(idx)
			if err != nil {
				continue
			}
			addrs, err := h.AddrList(link, family)
			if err != nil {
				return out, fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
			}
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok {
					out.DefaultRoute = append(out.DefaultRoute, ip.Unmap())
				}
			}
		}
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return out, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out.All = append(out.All, ip.Unmap())
		}
	}
	return out, nil
}

// autodetectAddress returns the node address of this network namespace.
func autodetectAddress() (netip.Addr, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("opening netlink: %w", err)
	}
	defer h.Close()
	in, err := gatherAddrs(h)
	if err != nil {
		return netip.Addr{}, err
	}
	return detectAddress(in)
}
