package calc

import (
	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/policy"
)

// policyResolver is the resolver of network policy: it feeds the policy
// kinds (and every WorkloadEndpoint of the cluster, from the Topology's
// decoding) to the incremental calculation of node/policy, whose state is
// the policy section of the desired state. Its cost per change is in
// proportion to what the change touches (see node/policy).
type policyResolver struct {
	env  Env
	calc *policy.Calculator
}

func newPolicy(env Env) Resolver {
	return &policyResolver{env: env, calc: policy.New(policy.Config{NodeName: env.Config.NodeName, Settings: env.Config.Policy})}
}

func (r *policyResolver) Name() string    { return "policy" }
func (r *policyResolver) Kinds() []string { return policy.Kinds }
func (r *policyResolver) Reset()          { r.calc.Reset() }

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
	if r.env.Config.NoPolicy {
		return
	}
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
