package calc

import (
	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// vxlan is the resolver of the VXLAN device and its peers: the device
// exists when some pool uses VXLAN and this node has its tunnel address;
// every other node with a tunnel address and an underlay address is a
// peer (a permanent neighbour and FDB entry each), unless the wireguard
// resolver routes it (one path only: no VXLAN packet is ever sent to a
// node reached over WireGuard). With wireguard.require no node is reached
// over VXLAN, so there is no device at all (and VXLAN other nodes send is
// refused: nothing listens on its port).
type vxlan struct{ env Env }

func newVXLAN(env Env) Resolver { return &vxlan{env: env} }

func (r *vxlan) Name() string    { return "vxlan" }
func (r *vxlan) Kinds() []string { return []string{api.KindNode, api.KindIPPool} }
func (r *vxlan) OnUpdate(Update) {}

func (r *vxlan) Contribute(out *Output) {
	cfg, topo := r.env.Config, r.env.Topology
	self := topo.Self()
	if self == nil || !r.wanted() || !self.TunnelIP.IsValid() || !cfg.Address.IsValid() || cfg.VXLANIface == "" {
		return
	}
	d := &out.Desired
	d.VXLAN = &dataplane.VXLANDevice{
		TunnelAddr: self.TunnelIP,
		MAC:        self.TunnelMAC,
		Source:     cfg.Address,
		Parent:     cfg.UnderlayIface,
		MTU:        cfg.VXLANMTU,
	}
	for _, n := range topo.NodeNames() {
		peer := topo.Nodes[n]
		if n == cfg.NodeName || !peer.TunnelIP.IsValid() || !peer.Underlay.IsValid() || out.wireguardOwns[n] {
			continue
		}
		d.VXLANPeers = append(d.VXLANPeers, dataplane.VXLANPeer{
			Node: n, TunnelIP: peer.TunnelIP, VTEPMAC: peer.TunnelMAC, UnderlayIP: peer.Underlay,
		})
	}
}

// wanted reports whether this node has a VXLAN device: some pool uses
// VXLAN and wireguard.require does not rule out every unencrypted path.
func (r *vxlan) wanted() bool {
	wg := r.env.Config.WireGuard
	return r.env.Topology.VXLANWanted() && !(wg.Enabled && wg.Require)
}
