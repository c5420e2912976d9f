package testbed

import (
	"errors"
	"fmt"
	"net/netip"
)

// SetAddress moves a host to another IPv4 address of its subnet, as when a
// machine gets a new DHCP lease: the address of its eth0 is replaced (with
// the default route via the router), and every address the generated
// configuration derives from it (node.address, cluster.listen and
// .advertise, metrics.listen) and ClusterAddress follow from the next
// StartAgent. Its agent must be stopped. IPv6 addresses stay as they are.
// The address must be a host address of the host's subnet that neither the
// router nor another host uses.
func (h *Host) SetAddress(addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return fmt.Errorf("testbed: SetAddress(%q): not an IPv4 address", addr)
	}
	if h.Running() {
		return errors.New("testbed: SetAddress: stop " + h.name + "'s agent first")
	}
	if err := h.sh.SetAddress(a); err != nil {
		return fmt.Errorf("testbed: SetAddress(%s): %w", a, err)
	}
	h.mu.Lock()
	h.addr = a.String()
	h.mu.Unlock()
	return nil
}
