package calc

import (
	"cmp"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// vxlan is the resolver of the VXLAN device and its peers: the device
// exists when some pool uses VXLAN (unless FelixConfiguration's
// vxlanEnabled is false) and this node has its tunnel address; every other
// node with a tunnel address and an underlay address is a peer (a
// permanent neighbour and FDB entry each). The device's VNI, port and MTU
// are FelixConfiguration's vxlanVNI, vxlanPort and vxlanMTU, else the
// config file's [vxlan] vni and port and the underlay MTU − 50.
// A node the wireguard resolver routes is no VXLAN peer (one path only:
// no VXLAN packet is ever sent to a node reached over WireGuard). With
// wireguard.require no node is reached over VXLAN, so there is no device at
// all (and VXLAN other nodes send is refused: nothing listens on its port).
type vxlan struct{ env Env }

func newVXLAN(env Env) Resolver { return &vxlan{env: env} }

func (r *vxlan) Name() string { return "vxlan" }
func (r *vxlan) Kinds() []string {
	return []string{api.KindNode, api.KindIPPool, api.KindFelixConfiguration, LocalKindLinks}
}
func (r *vxlan) OnUpdate(Update) {}

func (r *vxlan) Contribute(out *Output) {
	cfg, topo := r.env.Config, r.env.Topology
	if e := topo.Felix.VXLANEnabled; e != nil && !*e {
		for _, name := range topo.PoolsWith(func(s api.IPPoolSpec) string { return s.VXLANMode }) {
			out.problem("pool %s uses VXLAN (vxlanMode %s) but FelixConfiguration vxlanEnabled is false: traffic to its blocks on other nodes is dropped here (blackhole routes), never sent unencapsulated",
				name, topo.Pools[name].Spec.VXLANMode)
		}
	}
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
		MTU:        r.mtu(),
		VNI:        cmp.Or(deref(topo.Felix.VXLANVNI), cfg.VXLANVNI),
		Port:       cmp.Or(deref(topo.Felix.VXLANPort), cfg.VXLANPort),
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

// mtu is the device MTU: vxlanMTU, the config's, the observed underlay's
// less the overhead, or 0 (the driver derives it from the parent).
func (r *vxlan) mtu() int {
	cfg, topo := r.env.Config, r.env.Topology
	if m := deref(topo.Felix.VXLANMTU); m > 0 {
		return m
	}
	if cfg.VXLANMTU > 0 {
		return cfg.VXLANMTU
	}
	if _, observed := topo.Local(LocalKindLinks, ""); observed {
		if u, _ := topo.UnderlayMTU(cfg.UnderlayMTU); u > 0 {
			return dataplane.VXLANDeviceMTU(u, false)
		}
	}
	return 0
}

// deref is *p, or 0 for nil.
func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}
