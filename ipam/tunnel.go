package ipam

import (
	"fmt"

	"github.com/weftnet/weft/api"
)

// TunnelKind names a node tunnel device that needs an address from IPAM.
type TunnelKind string

// Tunnel kinds.
const (
	TunnelVXLAN     TunnelKind = "vxlan"
	TunnelWireguard TunnelKind = "wireguard"
	TunnelIPIP      TunnelKind = "ipip"
)

// TunnelHandle is Calico's handle ID for a node's tunnel address
// (calico.md §4.1): "vxlan-tunnel-addr-<node>", "vxlan-v6-tunnel-addr-<node>",
// "wireguard-tunnel-addr-<node>", "wireguard-v6-tunnel-addr-<node>",
// "ipip-tunnel-addr-<node>".
func TunnelHandle(kind TunnelKind, node string, v6 bool) string {
	if v6 {
		return fmt.Sprintf("%s-v6-tunnel-addr-%s", kind, node)
	}
	return fmt.Sprintf("%s-tunnel-addr-%s", kind, node)
}

// TunnelType is the allocation type attribute of a tunnel address.
func TunnelType(kind TunnelKind, v6 bool) string {
	switch {
	case kind == TunnelVXLAN && v6:
		return TypeVXLANV6Tunnel
	case kind == TunnelVXLAN:
		return TypeVXLANTunnel
	case kind == TunnelWireguard && v6:
		return TypeWireguardV6Tunnel
	case kind == TunnelWireguard:
		return TypeWireguardTunnel
	default:
		return TypeIPIPTunnel
	}
}

// TunnelRequest builds the ipam.assign request for a node's tunnel
// address: the tunnel handle and type, use Tunnel, and for VXLAN and IPIP
// only pools with that encapsulation enabled (WireGuard may use any pool
// that allows tunnels). IPIP has no IPv6 form. The same request sent
// again returns the same address.
func TunnelRequest(kind TunnelKind, node string, v6 bool) (AssignRequest, error) {
	switch kind {
	case TunnelVXLAN, TunnelWireguard:
	case TunnelIPIP:
		if v6 {
			return AssignRequest{}, fmt.Errorf("IPIP tunnels are IPv4 only")
		}
	default:
		return AssignRequest{}, fmt.Errorf("unknown tunnel kind %q", kind)
	}
	if node == "" {
		return AssignRequest{}, fmt.Errorf("node is required")
	}
	r := AssignRequest{
		Handle: TunnelHandle(kind, node, v6),
		Attrs:  Attributes{Node: node, Type: TunnelType(kind, v6)},
		Node:   node,
		Use:    api.UseTunnel,
	}
	switch kind {
	case TunnelVXLAN:
		r.Encapsulation = EncapVXLAN
	case TunnelIPIP:
		r.Encapsulation = EncapIPIP
	}
	if v6 {
		r.Num6 = 1
	} else {
		r.Num4 = 1
	}
	return r, nil
}
