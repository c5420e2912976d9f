// Package mtu detects the underlay MTU (calico.md §5.5). The arithmetic
// that derives workload and tunnel MTUs from it is pure and lives in
// package dataplane ([dataplane.WorkloadMTU]), where the calculation can
// use it.
package mtu

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/dataplane/internal/kroute"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/internal/netns"
)

// Fallback is the underlay MTU assumed when no interface qualifies, as
// Calico does.
const Fallback = 1460

// PhysicalPattern matches interface names that look physical: Calico's
// default mtuIfacePattern.
var PhysicalPattern = regexp.MustCompile(`^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)`)

// Underlay is a detected underlay MTU and where it came from.
type Underlay struct {
	MTU int
	// Iface is the interface it was read from; "" for the fallback.
	Iface string
	// How: "address" (the interface holding a node address), "pattern"
	// (the smallest physical-looking interface) or "fallback".
	How string
}

// Config configures detection.
type Config struct {
	// NetNS is the namespace to look in; "" is the current one.
	NetNS string
	// Pattern selects physical-looking interfaces; nil is PhysicalPattern.
	Pattern *regexp.Regexp
}

// Detect finds the underlay MTU: that of the interface holding one of the
// node's addresses (the smallest, if they are on several), else the
// smallest MTU among up interfaces matching the pattern, else Fallback.
func Detect(cfg Config, nodeAddrs ...netip.Addr) (Underlay, error) {
	if cfg.Pattern == nil {
		cfg.Pattern = PhysicalPattern
	}
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return Underlay{}, err
	}
	defer ns.Close()
	h, err := ns.Netlink()
	if err != nil {
		return Underlay{}, err
	}
	defer h.Close()
	links, err := nlutil.Dump(h.LinkList)
	if err != nil {
		return Underlay{}, fmt.Errorf("list links: %w", err)
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	var best *Underlay
	consider := func(l netlink.Link, how string) {
		a := l.Attrs()
		if best == nil || a.MTU < best.MTU {
			best = &Underlay{MTU: a.MTU, Iface: a.Name, How: how}
		}
	}
	if len(nodeAddrs) > 0 {
		addrs, err := nlutil.Dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
		if err != nil {
			return Underlay{}, fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			ip := kroute.Addr(a.IP)
			for _, want := range nodeAddrs {
				l, ok := byIndex[a.LinkIndex]
				if ip == want && ok && l.Attrs().Flags&net.FlagLoopback == 0 {
					consider(l, "address")
				}
			}
		}
	}
	if best == nil {
		for _, l := range links {
			a := l.Attrs()
			if a.Flags&net.FlagUp != 0 && a.Flags&net.FlagLoopback == 0 && cfg.Pattern.MatchString(a.Name) {
				consider(l, "pattern")
			}
		}
	}
	if best == nil {
		return Underlay{MTU: Fallback, How: "fallback"}, nil
	}
	if best.MTU < 576 {
		return *best, fmt.Errorf("underlay MTU %d on %s is too small to carry workloads", best.MTU, best.Iface)
	}
	return *best, nil
}
