// Package devaddr holds what the tunnel drivers (VXLAN, IP-in-IP) share
// about their device's addresses: keeping the tunnel address as the
// device's only global address, and finding the interface that holds an
// underlay address.
package devaddr

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane/internal/kroute"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
)

// EnsureOnly makes want (a full-length prefix, or the zero Prefix for
// none) the only global address of link: others are removed, IPv6
// link-local addresses are left alone. It returns the number of kernel
// changes made.
func EnsureOnly(h *netlink.Handle, link netlink.Link, want netip.Prefix) (int, error) {
	name := link.Attrs().Name
	addrs, err := nlutil.Dump(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return 0, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	writes, found := 0, false
	var errs []error
	for _, a := range addrs {
		ip := kroute.Addr(a.IP)
		if ip.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		if netip.PrefixFrom(ip, ones) == want {
			found = true
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove address %s from %s: %w", ip, name, err))
			continue
		}
		writes++
	}
	if want.IsValid() && !found {
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: kroute.IPNet(want)}); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add tunnel address %s to %s: %w", want, name, err))
		} else {
			writes++
		}
	}
	return writes, errors.Join(errs...)
}

// LinkHolding finds the interface that holds addr.
func LinkHolding(h *netlink.Handle, addr netip.Addr) (netlink.Link, error) {
	addrs, err := nlutil.Dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, kroute.Family(addr)) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if kroute.Addr(a.IP) == addr {
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("interface holding %s: %w", addr, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("no interface holds the underlay address %s", addr)
}
