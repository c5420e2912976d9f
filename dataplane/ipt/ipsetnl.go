package ipt

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// maxNetlinkMembers: member changes up to this many (in sets that
// already exist) go through netlink, one message each, without starting a
// process: a label change costs microseconds instead of an `ipset`
// process. Larger changes, and new sets, go through `ipset restore`.
const maxNetlinkMembers = 1000

// netlinkable reports whether the set changes can go through netlink.
func netlinkable(ch changes) bool {
	if len(ch.newSets) > 0 {
		return false
	}
	n := 0
	for _, d := range ch.setDeltas {
		n += len(d.add) + len(d.del)
	}
	return n <= maxNetlinkMembers
}

// ipsetEntry parses a member's canonical text into a netlink entry.
func ipsetEntry(typ, m string) (*netlink.IPSetEntry, error) {
	switch typ {
	case typeNet:
		p, err := netip.ParsePrefix(m)
		if err != nil {
			a, aerr := netip.ParseAddr(m)
			if aerr != nil {
				return nil, fmt.Errorf("ipset member %q: %w", m, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		return &netlink.IPSetEntry{IP: p.Addr().AsSlice(), CIDR: uint8(p.Bits()), Replace: true}, nil
	case typeIPPort:
		addr, rest, _ := strings.Cut(m, ",")
		proto, port, _ := strings.Cut(rest, ":")
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return nil, fmt.Errorf("ipset member %q: %w", m, err)
		}
		pn, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("ipset member %q: %w", m, err)
		}
		var p uint8
		switch proto {
		case "tcp":
			p = unix.IPPROTO_TCP
		case "udp":
			p = unix.IPPROTO_UDP
		case "sctp":
			p = unix.IPPROTO_SCTP
		default:
			n, err := strconv.ParseUint(proto, 10, 8)
			if err != nil {
				return nil, fmt.Errorf("ipset member %q: protocol %q", m, proto)
			}
			p = uint8(n)
		}
		port16 := uint16(pn)
		return &netlink.IPSetEntry{IP: a.AsSlice(), Protocol: &p, Port: &port16, Replace: true}, nil
	}
	return nil, fmt.Errorf("ipset type %q", typ)
}

// netlinkMembers applies the member changes through netlink.
func (b *Backend) netlinkMembers(ch changes) error {
	h, err := b.ns.Netlink()
	if err != nil {
		return err
	}
	defer h.Close()
	for _, d := range ch.setDeltas {
		for _, m := range d.del {
			e, err := ipsetEntry(d.set.typ, m)
			if err != nil {
				return err
			}
			if err := h.IpsetDel(d.set.name, e); err != nil {
				return fmt.Errorf("ipset del %s %s: %w", d.set.name, m, err)
			}
		}
		for _, m := range d.add {
			e, err := ipsetEntry(d.set.typ, m)
			if err != nil {
				return err
			}
			if err := h.IpsetAdd(d.set.name, e); err != nil {
				return fmt.Errorf("ipset add %s %s: %w", d.set.name, m, err)
			}
		}
	}
	return nil
}
