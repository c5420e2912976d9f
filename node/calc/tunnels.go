package calc

import (
	"net/netip"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
)

// TunnelNeeds is what this node's tunnel-address controller must do: the
// calculation decides, the controller only carries it out (allocate in
// IPAM and record on the Node, or release and clear).
type TunnelNeeds struct {
	VXLAN TunnelState
	// WireGuard and WireGuardV6 are the WireGuard tunnel addresses, and
	// WireGuardNode what the Node publishes about the device (see
	// [WireGuardNodeState]).
	WireGuard, WireGuardV6 TunnelState
	WireGuardNode          WireGuardNodeState
	// IPIP is the IP-in-IP tunnel address (ipip-tunnel-addr-<node>,
	// recorded as the Node's spec.bgp.ipv4IPIPTunnelAddr). It is wanted
	// only when this node can honour IP-in-IP: other nodes route to this
	// node over IP-in-IP only when it has one.
	IPIP TunnelState
}

// Settled reports whether nothing needs doing.
func (n TunnelNeeds) Settled() bool { return n.VXLAN.Settled() && n.IPIP.Settled() }

// TunnelState describes one tunnel address of this node.
type TunnelState struct {
	// Wanted: some pool uses the encapsulation (and the node has an
	// underlay address of the family).
	Wanted bool
	// Addr is the address recorded on this node's Node (zero: none).
	Addr netip.Addr
	// Allocated: IPAM holds Addr for this node's tunnel handle. False
	// when a forced pool delete or `ipam release` took it away: another
	// workload could then be given it, so the controller allocates again.
	Allocated bool
	// MACCurrent: the Node records a VTEP MAC for the address (true
	// whenever there is an address for IP-in-IP, which has no MAC).
	MACCurrent bool
}

// Settled reports whether nothing needs doing.
func (s TunnelState) Settled() bool {
	if s.Wanted {
		return s.Addr.IsValid() && s.Allocated && s.MACCurrent
	}
	return !s.Addr.IsValid()
}

// tunnels is the resolver of TunnelNeeds.
type tunnels struct{ env Env }

func newTunnels(env Env) Resolver { return &tunnels{env: env} }

func (r *tunnels) Name() string { return "tunnels" }
func (r *tunnels) Kinds() []string {
	return []string{api.KindNode, api.KindIPPool, ipam.KindBlock, api.KindFelixConfiguration, LocalKindIPIP}
}
func (r *tunnels) OnUpdate(Update) {}

func (r *tunnels) Contribute(out *Output) {
	cfg, topo := r.env.Config, r.env.Topology
	wg := cfg.WireGuard
	st := TunnelState{Wanted: topo.VXLANWanted() && cfg.Address.IsValid() && !(wg.Enabled && wg.Require)}
	if self := topo.Self(); self != nil && self.TunnelIP.IsValid() {
		st.Addr = self.TunnelIP
		st.MACCurrent = self.RawTunnelMAC != ""
		st.Allocated = r.allocated(st.Addr, ipam.TunnelVXLAN)
	}
	out.Tunnels.VXLAN = st

	ipip := TunnelState{Wanted: topo.IPIPWanted() && topo.IPIPSupport().Available && cfg.Address.Is4() && !(wg.Enabled && wg.Require)}
	if self := topo.Self(); self != nil && self.IPIPTunnelIP.IsValid() {
		ipip.Addr, ipip.MACCurrent = self.IPIPTunnelIP, true
		ipip.Allocated = r.allocated(ipip.Addr, ipam.TunnelIPIP)
	}
	out.Tunnels.IPIP = ipip
	r.wireguard(&out.Tunnels)
}

// allocated reports whether IPAM holds addr for this node's tunnel handle
// of that kind.
func (r *tunnels) allocated(addr netip.Addr, kind ipam.TunnelKind) bool {
	topo := r.env.Topology
	handle := ipam.TunnelHandle(kind, r.env.Config.NodeName, false)
	for _, name := range topo.BlockNames() {
		b := topo.Blocks[name]
		if !b.CIDR.Contains(addr) {
			continue
		}
		if h, ok := b.Holders[addr]; ok && h.Handle == handle {
			return true
		}
	}
	return false
}
