package calc

import (
	"cmp"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// ipipResolver is the resolver of the IP-in-IP device (calico.md §5.2):
// it exists when some IPv4 pool uses IP-in-IP (ipipMode Always or
// CrossSubnet, unless FelixConfiguration's ipipEnabled is false), the
// kernel can create it (local input [LocalKindIPIP]) and this node has its
// IP-in-IP tunnel address. Its MTU is FelixConfiguration's ipipMTU, else
// the underlay MTU − 20. When the node cannot honour IP-in-IP it says so,
// once per pool, in the problems (`weft node status`, the log,
// weft_calc_problems); the block-routes resolver then gives those pools'
// remote blocks blackhole routes rather than unencapsulated ones. With
// wireguard.require there is no device (the wireguard resolver routes or
// blackholes every other node).
type ipipResolver struct{ env Env }

func newIPIP(env Env) Resolver { return &ipipResolver{env: env} }

func (r *ipipResolver) Name() string { return "ipip" }
func (r *ipipResolver) Kinds() []string {
	return []string{api.KindNode, api.KindIPPool, api.KindFelixConfiguration, LocalKindIPIP, LocalKindLinks}
}
func (r *ipipResolver) OnUpdate(Update) {}

func (r *ipipResolver) Contribute(out *Output) {
	cfg, topo := r.env.Config, r.env.Topology
	pools := topo.PoolsWith(func(s api.IPPoolSpec) string { return s.IPIPMode })
	if len(pools) == 0 {
		return
	}
	if wg := cfg.WireGuard; wg.Enabled && wg.Require {
		// No node is reached over IP-in-IP (WireGuard or nothing): no
		// device, so IP-in-IP others send is refused too.
		return
	}
	why := ""
	if e := topo.Felix.IPIPEnabled; e != nil && !*e {
		why = "FelixConfiguration ipipEnabled is false"
	} else if s := topo.IPIPSupport(); !s.Available {
		why = "this node cannot honour IP-in-IP: " + s.Reason
	}
	if why != "" {
		for _, name := range pools {
			where := "other nodes"
			if topo.Pools[name].Spec.IPIPMode == api.EncapCrossSubnet {
				where = "nodes in other subnets"
			}
			out.problem("pool %s uses IP-in-IP (ipipMode %s) but %s: traffic to its blocks on %s is dropped here (blackhole routes), never sent unencapsulated",
				name, topo.Pools[name].Spec.IPIPMode, why, where)
		}
		return
	}
	self := topo.Self()
	if self == nil || !self.IPIPTunnelIP.IsValid() || !cfg.Address.Is4() {
		return // the tunnel address is on its way (node/tunnels)
	}
	mtu := 0
	if p := topo.Felix.IPIPMTU; p != nil && *p > 0 {
		mtu = *p
	} else if u, _ := topo.UnderlayMTU(cfg.UnderlayMTU); u > 0 {
		mtu = dataplane.IPIPDeviceMTU(u)
	}
	out.Desired.IPIP = &dataplane.IPIPDevice{TunnelAddr: self.IPIPTunnelIP, Source: cfg.Address, MTU: mtu}
}

// ipipIface is the IP-in-IP device name.
func (c Config) ipipIface() string { return cmp.Or(c.IPIPIface, dataplane.DefaultIPIPIface) }
