package testbed

import (
	"errors"
	"fmt"
	"net/netip"
)

// SetAddress moves a host to another IPv4 address of the site's subnet, as
// when a machine gets a new DHCP lease: the address of its eth0 is
// replaced (with the default route via the router), and every address the
// generated configuration derives from it (node.address, cluster.listen
// and .advertise, metrics.listen) and ClusterAddress follow from the next
// StartAgent. Its agent must be stopped. IPv6 addresses stay as they are.
// The address must be a host address of Site.Subnet that neither the router
// nor another host uses.
func (h *Host) SetAddress(addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return fmt.Errorf("testbed: SetAddress(%q): not an IPv4 address", addr)
	}
	s := h.site
	if !s.subnet.Contains(a) || a == s.subnet.Addr() || a.String() == s.RouterAddress() || a == lastAddr(s.subnet) {
		return fmt.Errorf("testbed: SetAddress(%s): not a free host address of %s", a, s.subnet)
	}
	for _, o := range s.hosts {
		if o != h && o.Address() == a.String() {
			return fmt.Errorf("testbed: SetAddress(%s): %s uses it", a, o.name)
		}
	}
	if h.Running() {
		return errors.New("testbed: SetAddress: stop " + h.name + "'s agent first")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.addr
	bits := fmt.Sprint(s.subnet.Bits())
	if err := ipBatch(h.ns.name, []string{
		"addr del " + old + "/" + bits + " dev eth0",
		"addr add " + a.String() + "/" + bits + " dev eth0",
		"route replace default via " + s.RouterAddress(),
	}); err != nil {
		return fmt.Errorf("testbed: move %s from %s to %s: %w", h.name, old, a, err)
	}
	h.addr = a.String()
	return nil
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(b)
}
