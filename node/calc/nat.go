package calc

import (
	"net/netip"

	"github.com/weftnet/weft/api"
)

// nat is the resolver of outgoing NAT (calico.md §5.6): traffic from a
// natOutgoing pool to anywhere outside all pools is masqueraded. With
// FelixConfiguration:
//   - natOutgoingExclusions: unset or IPPoolsAndHostIPs also exempt
//     traffic towards the nodes' own addresses (weft's behaviour since its
//     first release: a workload reaching another node keeps its address);
//     IPPoolsOnly exempts only the pools, as Calico's default does.
//   - natOutgoingAddress: IPv4 traffic is source-NATed to it instead.
//   - natPortRange: TCP and UDP get their source ports from the range.
//     The NAT driver cannot give a masquerade a port range, so without
//     natOutgoingAddress IPv4 traffic is source-NATed to this node's own
//     address with it; IPv6 traffic keeps a plain masquerade (reported).
type nat struct{ env Env }

func newNAT(env Env) Resolver { return &nat{env: env} }

func (r *nat) Name() string { return "nat" }
func (r *nat) Kinds() []string {
	return []string{api.KindNode, api.KindIPPool, api.KindFelixConfiguration}
}
func (r *nat) OnUpdate(Update) {}

func (r *nat) Contribute(out *Output) {
	cfg, topo := r.env.Config, r.env.Topology
	felix := topo.Felix
	n := &out.Desired.NAT
	if felix.NATOutgoingExclusions != api.NATOutgoingExclusionsIPPoolsOnly {
		for _, name := range topo.NodeNames() {
			for _, a := range []netip.Addr{topo.Nodes[name].Underlay, topo.Nodes[name].Underlay6} {
				if a.IsValid() {
					n.ExcludeDests = append(n.ExcludeDests, netip.PrefixFrom(a, a.BitLen()))
				}
			}
		}
	}
	masq6 := false
	for _, name := range topo.PoolNames() {
		p := topo.Pools[name]
		n.AllPools = append(n.AllPools, p.CIDR)
		if p.Spec.NATOutgoing {
			n.MasqPools = append(n.MasqPools, p.CIDR)
			masq6 = masq6 || p.CIDR.Addr().Is6()
		}
	}
	if a, err := netip.ParseAddr(felix.NATOutgoingAddress); err == nil && a.Is4() {
		n.SNATAddress = a
	}
	if pr := felix.NATPortRange; pr != nil && !pr.IsNamed() && pr.MinPort > 0 && pr.MinPort <= pr.MaxPort {
		if !n.SNATAddress.IsValid() {
			n.SNATAddress = cfg.Address // invalid on an IPv6-only node: no port range then
		}
		if n.SNATAddress.IsValid() {
			n.PortMin, n.PortMax = pr.MinPort, pr.MaxPort
		} else {
			out.problem("FelixConfiguration natPortRange %s: this node has no IPv4 address to source-NAT to: not applied", pr)
		}
		if masq6 {
			out.problem("FelixConfiguration natPortRange %s applies to IPv4 only: IPv6 traffic of natOutgoing pools is masqueraded without it", pr)
		}
	}
}
