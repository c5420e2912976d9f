package calc

import (
	"net/netip"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
)

// blockRoutes is the resolver of the routes to IPAM blocks
// (RouteClassBlock): a blackhole for each block this node owns, and a
// route to each other node's block and to each address another node
// borrowed from a block, over VXLAN (the pool's vxlanMode, once the VXLAN
// device exists: it reads the vxlan resolver's section) or natively to a
// node on this node's subnet. Without one of those a remote block has no
// route here (BGP, when it runs, provides them). Nodes the wireguard
// resolver routes are left to it.
type blockRoutes struct{ env Env }

func newBlockRoutes(env Env) Resolver { return &blockRoutes{env: env} }

func (r *blockRoutes) Name() string { return "block-routes" }
func (r *blockRoutes) Kinds() []string {
	return []string{api.KindNode, api.KindIPPool, ipam.KindBlock, api.KindWorkloadEndpoint}
}
func (r *blockRoutes) OnUpdate(Update) {}

func (r *blockRoutes) Contribute(out *Output) {
	me := r.env.Config.NodeName
	topo := r.env.Topology
	vxlanUp := out.Desired.VXLAN != nil
	local := map[netip.Addr]bool{}
	for _, w := range out.Desired.Workloads {
		for _, p := range w.IPs {
			local[p.Addr()] = true
		}
	}
	routes := map[netip.Prefix]dataplane.Route{}
	for _, name := range topo.BlockNames() {
		b := topo.Blocks[name]
		pool := topo.PoolFor(b.CIDR)
		switch {
		case b.Owner == me:
			if b.CIDR.Bits() < b.CIDR.Addr().BitLen() {
				routes[b.CIDR] = dataplane.Route{Dst: b.CIDR, Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole}
			}
		case b.Owner != "" && pool != nil && !out.wireguardOwns[b.Owner]:
			if peer, ok := topo.Nodes[b.Owner]; ok {
				if rt, ok := r.routeTo(b.CIDR, pool, peer, vxlanUp); ok {
					routes[b.CIDR] = rt
				}
			}
		}
		for addr, holder := range b.Borrowed() {
			if holder == me || local[addr] || pool == nil || out.wireguardOwns[holder] {
				continue // our own workloads have host routes
			}
			peer, ok := topo.Nodes[holder]
			if !ok {
				continue
			}
			dst := netip.PrefixFrom(addr, addr.BitLen())
			if rt, ok := r.routeTo(dst, pool, peer, vxlanUp); ok {
				routes[dst] = rt
			}
		}
	}
	for _, rt := range routes {
		out.Desired.Routes = append(out.Desired.Routes, rt)
	}
}

// routeTo builds the route for dst (a remote block or borrowed address)
// held by peer under pool, or reports that there is none (the peer is not
// reachable without BGP, or the VXLAN device or the peer's VXLAN details
// are not there yet).
func (r *blockRoutes) routeTo(dst netip.Prefix, pool *PoolView, peer *NodeView, vxlanUp bool) (dataplane.Route, bool) {
	cfg := r.env.Config
	base := dataplane.Route{Dst: dst, Class: dataplane.RouteClassBlock}
	if !dst.Addr().Is4() {
		// IPv6 blocks are routed natively to a peer on this node's IPv6
		// subnet; an IPv6 overlay (a second VXLAN device) is not built.
		if pool.Spec.VXLANMode != api.EncapAlways && cfg.UnderlayPrefix6.IsValid() && peer.Underlay6.IsValid() &&
			cfg.UnderlayPrefix6.Contains(peer.Underlay6) {
			base.Via = peer.Underlay6
			return base, true
		}
		return dataplane.Route{}, false
	}
	sameSubnet := cfg.UnderlayPrefix.IsValid() && peer.Underlay.IsValid() && cfg.UnderlayPrefix.Contains(peer.Underlay)
	useVXLAN := pool.Spec.VXLANMode == api.EncapAlways || (pool.Spec.VXLANMode == api.EncapCrossSubnet && !sameSubnet)
	if useVXLAN {
		if !vxlanUp || !peer.TunnelIP.IsValid() || !peer.Underlay.IsValid() {
			return dataplane.Route{}, false
		}
		base.Dev, base.Via, base.OnLink = cfg.VXLANIface, peer.TunnelIP, true
		return base, true
	}
	if sameSubnet {
		// No device: the kernel resolves the peer on the connected subnet.
		base.Via = peer.Underlay
		return base, true
	}
	return dataplane.Route{}, false
}
