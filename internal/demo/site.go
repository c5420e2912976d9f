package demo

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// buildSite creates every namespace of the layout and wires the underlay:
// a bridge in the site namespace, and per host a veth whose bridge side
// is enslaved to it and whose other side is the host's eth0 with its
// underlay address; forwarding is on in the hosts. Workload namespaces
// get loopback only: the agents attach them.
func buildSite(l Layout) error {
	if err := prepareNetnsDir(); err != nil {
		return err
	}
	for _, name := range l.Namespaces() {
		if err := createNetns(name); err != nil {
			return err
		}
	}
	var bridge netlink.Link
	err := inNetns(SiteNetns, func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", bridgeName, err)
		}
		var err error
		if bridge, err = h.LinkByName(bridgeName); err != nil {
			return err
		}
		return h.LinkSetUp(bridge)
	})
	if err != nil {
		return err
	}
	for _, host := range l.Hosts {
		if err := plugHost(l, host, bridge); err != nil {
			return err
		}
	}
	return nil
}

// plugHost connects one host to the site bridge and configures its side.
func plugHost(l Layout, host Host, bridge netlink.Link) error {
	hostNS, err := netns.GetFromPath(host.NetnsPath())
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", host.Netns, err)
	}
	defer hostNS.Close()
	err = inNetns(SiteNetns, func(h *netlink.Handle) error {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: host.BridgePort},
			PeerName:      hostUplink,
			PeerNamespace: netlink.NsFd(int(hostNS)),
		}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s to %s: %w", host.BridgePort, host.Netns, err)
		}
		port, err := h.LinkByName(host.BridgePort)
		if err != nil {
			return err
		}
		if err := h.LinkSetMaster(port, bridge); err != nil {
			return fmt.Errorf("attach %s to %s: %w", host.BridgePort, bridgeName, err)
		}
		return h.LinkSetUp(port)
	})
	if err != nil {
		return err
	}
	err = inNetns(host.Netns, func(h *netlink.Handle) error {
		up, err := h.LinkByName(hostUplink)
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(host.Address, l.Underlay.Bits()))}
		if err := h.AddrAdd(up, addr); err != nil {
			return fmt.Errorf("add %s to %s: %w", addr.IPNet, hostUplink, err)
		}
		return h.LinkSetUp(up)
	})
	if err != nil {
		return err
	}
	return setSysctl(host.Netns, "net/ipv4/ip_forward", "1")
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
