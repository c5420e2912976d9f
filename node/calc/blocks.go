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
// device exists: it reads the vxlan resolver's section), over IP-in-IP
// (the pool's ipipMode, once the IP-in-IP device exists, to a peer that
// has its IP-in-IP tunnel address: "via <peer underlay> dev weft.ipip
// onlink"), or natively to a node on this node's subnet. A block whose
// pool asks for an encapsulation this node refuses (no ipip module,
// FelixConfiguration ipipEnabled or vxlanEnabled false) or the peer cannot
// take (no IP-in-IP tunnel address) gets a blackhole: its traffic is
// dropped here, never sent unencapsulated (to a neighbour on this subnet,
// or to a router by the default route); the ipip and vxlan resolvers say
// why in the problems. Otherwise a remote block without one of those has
// no route here (BGP, when it runs, provides them). A node the BGP speaker
// found dead ([Topology.NodeDown]) gets no routes: its blocks must not stay
// routed to it for minutes. Nodes the wireguard resolver routes are left to
// it.
type blockRoutes struct {
	env Env
	// Set by Contribute: this node refuses the encapsulation.
	vxlanRefused, ipipRefused bool
}

func newBlockRoutes(env Env) Resolver { return &blockRoutes{env: env} }

func (r *blockRoutes) Name() string { return "block-routes" }
func (r *blockRoutes) Kinds() []string {
	return []string{api.KindNode, api.KindIPPool, ipam.KindBlock, api.KindWorkloadEndpoint}
}
func (r *blockRoutes) OnUpdate(Update) {}

func (r *blockRoutes) Contribute(out *Output) {
	me := r.env.Config.NodeName
	topo := r.env.Topology
	vxlanUp, ipipUp := out.Desired.VXLAN != nil, out.Desired.IPIP != nil
	r.vxlanRefused = topo.Felix.VXLANEnabled != nil && !*topo.Felix.VXLANEnabled
	r.ipipRefused = (topo.Felix.IPIPEnabled != nil && !*topo.Felix.IPIPEnabled) || !topo.IPIPSupport().Available
	noIPIPAddr := map[string]bool{} // peers whose blocks need IP-in-IP but that have no tunnel address
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
		case b.Owner != "" && pool != nil && !topo.NodeDown(b.Owner) && !out.wireguardOwns[b.Owner]:
			if peer, ok := topo.Nodes[b.Owner]; ok {
				if rt, ok := r.routeTo(b.CIDR, pool, peer, vxlanUp, ipipUp, noIPIPAddr); ok {
					routes[b.CIDR] = rt
				}
			}
		}
		for addr, holder := range b.Borrowed() {
			if holder == me || local[addr] || pool == nil || topo.NodeDown(holder) || out.wireguardOwns[holder] {
				continue // our own workloads have host routes; a dead node's go; WireGuard routes its peers'
			}
			peer, ok := topo.Nodes[holder]
			if !ok {
				continue
			}
			dst := netip.PrefixFrom(addr, addr.BitLen())
			if rt, ok := r.routeTo(dst, pool, peer, vxlanUp, ipipUp, noIPIPAddr); ok {
				routes[dst] = rt
			}
		}
	}
	for _, rt := range routes {
		out.Desired.Routes = append(out.Desired.Routes, rt)
	}
	for _, n := range sortedKeys(noIPIPAddr) {
		out.problem("node %s has no IP-in-IP tunnel address (it cannot honour IP-in-IP, or is still allocating it): traffic to its blocks of IP-in-IP pools is dropped here, never sent unencapsulated", n)
	}
}

// routeTo builds the route for dst (a remote block or borrowed address)
// held by peer under pool, or reports that there is none (the peer is not
// reachable without BGP, or the VXLAN device or the peer's VXLAN details
// are not there yet).
func (r *blockRoutes) routeTo(dst netip.Prefix, pool *PoolView, peer *NodeView, vxlanUp, ipipUp bool, noIPIPAddr map[string]bool) (dataplane.Route, bool) {
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
	drop := dataplane.Route{Dst: dst, Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole}
	if useVXLAN {
		if r.vxlanRefused {
			return drop, true
		}
		if !vxlanUp || !peer.TunnelIP.IsValid() || !peer.Underlay.IsValid() {
			return dataplane.Route{}, false
		}
		base.Dev, base.Via, base.OnLink = cfg.VXLANIface, peer.TunnelIP, true
		return base, true
	}
	useIPIP := pool.Spec.IPIPMode == api.EncapAlways || (pool.Spec.IPIPMode == api.EncapCrossSubnet && !sameSubnet)
	if useIPIP {
		// This node cannot honour IP-in-IP (the ipip resolver reports
		// why), or the peer cannot decapsulate (no tunnel address):
		// dropped, never unencapsulated.
		if r.ipipRefused {
			return drop, true
		}
		if !ipipUp || !peer.Underlay.IsValid() {
			return dataplane.Route{}, false // the device is on its way
		}
		if !peer.IPIPTunnelIP.IsValid() {
			noIPIPAddr[peer.Name] = true
			return drop, true
		}
		base.Dev, base.Via, base.OnLink = cfg.ipipIface(), peer.Underlay, true
		return base, true
	}
	if sameSubnet {
		// No device: the kernel resolves the peer on the connected subnet.
		base.Via = peer.Underlay
		return base, true
	}
	return dataplane.Route{}, false
}
