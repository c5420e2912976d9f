package calc

import (
	"slices"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/node/policy"
)

// policyResolver is the resolver of network policy: it feeds the policy
// kinds (and every WorkloadEndpoint of the cluster, from the Topology's
// decoding) to the incremental calculation of node/policy, whose state is
// the policy section of the desired state. Its cost per change is in
// proportion to what the change touches (see node/policy). The policy
// settings are the node's configuration (Config.Policy) overridden by the
// FelixConfiguration fields policy honours (failsafe ports,
// defaultEndpointToHostAction; see policy.FelixOverrides).
type policyResolver struct {
	env  Env
	calc *policy.Calculator
}

func newPolicy(env Env) Resolver {
	return &policyResolver{
		env:  env,
		calc: policy.New(policy.Config{NodeName: env.Config.NodeName, Settings: env.Config.Policy}),
	}
}

func (r *policyResolver) Name() string { return "policy" }

func (r *policyResolver) Kinds() []string { return slices.Clone(policy.Kinds) }

func (r *policyResolver) Reset() {
	r.calc.Reset()
	r.calc.SetSettings(r.env.Config.Policy)
}

func (r *policyResolver) OnUpdate(u Update) {
	if u.Value == nil {
		r.calc.Delete(u.Key.Kind, u.Key.Namespace, u.Key.Name)
		return
	}
	switch v := u.Value.(type) {
	case *EndpointView:
		r.calc.SetWorkloadEndpoint(u.Key.Namespace, u.Key.Name, v.WorkloadEndpoint)
	case api.Resource:
		r.calc.Put(v)
	}
}

func (r *policyResolver) Contribute(out *Output) {
	// Settings depend on the FelixConfigurations and the pools (which the
	// Topology keeps); setting equal ones costs a comparison.
	r.calc.SetSettings(r.settings())
	st := r.calc.State()
	for _, p := range r.calc.Problems() {
		out.problem("policy: %s", p)
	}
	// Nothing to enforce is the same as no policy section (the backend
	// keeps its fail-closed base either way).
	if st.AddrSets.Len() == 0 && st.PortSets.Len() == 0 && st.Chains.Len() == 0 && st.Workloads.Len() == 0 && st.Hosts.Len() == 0 {
		return
	}
	out.Desired.Policy = st
}

// settings are the node's policy settings with the FelixConfiguration
// overrides; workloads may not send VXLAN (to the node's VXLAN port) or
// IP-in-IP packets while the node uses that encapsulation, unless
// allowVXLANPacketsFromWorkloads / allowIPIPPacketsFromWorkloads say so
// (Calico's rules).
func (r *policyResolver) settings() dataplane.PolicySettings {
	topo := r.env.Topology
	s := policy.FelixOverrides(r.env.Config.Policy, topo.Felix)
	if p := topo.Felix.VXLANPort; p != nil {
		s.VXLANPort = uint16(*p)
	}
	if !topo.VXLANWanted() || isTrue(topo.Felix.AllowVXLANPacketsFromWorkloads) {
		s.VXLANPort = 0
	}
	s.DropIPIP = topo.IPIPWanted() && !isTrue(topo.Felix.AllowIPIPPacketsFromWorkloads)
	return s
}

func isTrue(p *bool) bool { return p != nil && *p }
