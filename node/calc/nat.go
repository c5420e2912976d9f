package calc

import (
	"net/netip"

	"github.com/weftnet/weft/api"
)

// nat is the resolver of outgoing NAT (calico.md §5.6): traffic from a
// natOutgoing pool to anywhere outside all pools is masqueraded, never
// traffic towards another node's address.
type nat struct{ env Env }

func newNAT(env Env) Resolver { return &nat{env: env} }

func (r *nat) Name() string    { return "nat" }
func (r *nat) Kinds() []string { return []string{api.KindNode, api.KindIPPool} }
func (r *nat) OnUpdate(Update) {}

func (r *nat) Contribute(out *Output) {
	topo := r.env.Topology
	n := &out.Desired.NAT
	for _, name := range topo.NodeNames() {
		for _, a := range []netip.Addr{topo.Nodes[name].Underlay, topo.Nodes[name].Underlay6} {
			if a.IsValid() {
				n.ExcludeDests = append(n.ExcludeDests, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	for _, name := range topo.PoolNames() {
		p := topo.Pools[name]
		n.AllPools = append(n.AllPools, p.CIDR)
		if p.Spec.NATOutgoing {
			n.MasqPools = append(n.MasqPools, p.CIDR)
		}
	}
}
