package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
)

// DefaultIPIPIface is the name of weft's IP-in-IP device (Calico's tunl0).
// It is not the kernel's fallback tunl0, which catches any IP-in-IP packet
// and which weft leaves alone: weft's device is bound to the node's
// underlay address, so it receives the IP-in-IP packets sent to this node.
const DefaultIPIPIface = "weft.ipip"

// IPIPDevice is the desired state of the node's IP-in-IP device
// (calico.md §5.2). Routes to other nodes' blocks go "via <peer underlay
// address> dev <device> onlink".
type IPIPDevice struct {
	// TunnelAddr is the node's IP-in-IP tunnel address (Calico's
	// ipv4IPIPTunnelAddr), put on the device as a /32.
	TunnelAddr netip.Addr
	// Source is the underlay IPv4 address the device is bound to (the
	// outer source of what it sends, the outer destination of what it
	// receives).
	Source netip.Addr
	// MTU is the device MTU; 0 means the MTU of the interface holding
	// Source minus 20.
	MTU int
}

// Equal reports whether two device descriptions are the same.
func (v *IPIPDevice) Equal(o *IPIPDevice) bool {
	if v == nil || o == nil {
		return v == o
	}
	return *v == *o
}

// Validate checks the device description.
func (v *IPIPDevice) Validate() error {
	var errs []error
	if !v.Source.Is4() || v.Source.IsUnspecified() {
		errs = append(errs, fmt.Errorf("source %s: want an IPv4 underlay address", v.Source))
	}
	if !v.TunnelAddr.Is4() || v.TunnelAddr.IsUnspecified() {
		errs = append(errs, fmt.Errorf("tunnel address %s: want an IPv4 address", v.TunnelAddr))
	}
	if v.MTU != 0 && (v.MTU < MinMTU || v.MTU > MaxMTU) {
		errs = append(errs, fmt.Errorf("MTU %d out of range %d..%d", v.MTU, MinMTU, MaxMTU))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ipip device: %w", err)
	}
	return nil
}

// ErrUnsupported wraps the error of a manager whose kernel lacks what the
// desired state asks for (no ipip module): retrying cannot help.
var ErrUnsupported = errors.New("not supported by this kernel")
