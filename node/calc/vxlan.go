package calc

import (
	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// vxlan is the resolver of the VXLAN device and its peers: the device
// exists when some pool uses VXLAN and this node has its tunnel address;
// every other node with a tunnel address and an underlay address is a
// peer (a permanent neighbour and FDB entry each).
type vxlan struct{ env Env }

func newVXLAN(env Env) Resolver { return &vxlan{env: env} }

func (r *vxlan) Name() string    { return "vxlan" }
func (r *vxlan) Kinds() []string { return []string{api.KindNode, api.KindIPPool} }
func (r *vxlan) OnUpdate(Update) {}

func (r *vxlan) Contribute(out *Output) {
	cfg, topo := r.env.Config, r.env.Topology
	self := topo.Self()
	if self == nil || !topo.VXLANWanted() || !self.TunnelIP.IsValid() || !cfg.Address.IsValid() || cfg.VXLANIface == "" {
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
		if n == cfg.NodeName || !peer.TunnelIP.IsValid() || !peer.Underlay.IsValid() {
			continue
		}
		d.VXLANPeers = append(d.VXLANPeers, dataplane.VXLANPeer{
			Node: n, TunnelIP: peer.TunnelIP, VTEPMAC: peer.TunnelMAC, UnderlayIP: peer.Underlay,
		})
	}
}
