package policy

import (
	"net/netip"
	"slices"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/api/selector"
	"github.com/weftnet/weft/dataplane"
)

// epKind is the kind of a labelled object.
type epKind uint8

const (
	kindWorkload epKind = iota + 1
	kindHost
	kindNetworkSet
	kindGlobalNetworkSet
)

// EndpointKey identifies a labelled object of the model: a workload
// endpoint, host endpoint, network set or global network set.
type EndpointKey struct {
	kind      epKind
	Namespace string
	Name      string
}

func (k EndpointKey) String() string {
	if k.Namespace != "" {
		return k.Namespace + "/" + k.Name
	}
	return k.Name
}

// endpoint is one labelled object. Network sets are endpoints that rule
// selectors match but policies never apply to.
type endpoint struct {
	key EndpointKey
	// namespace is "" for the non-namespaced (host endpoints, global
	// network sets).
	namespace string
	// own are the object's own labels (with projectcalico.org/namespace
	// for the namespaced); labels adds its profiles' labelsToApply.
	own, labels map[string]string
	profiles    []string
	// addrs are the addresses (as /32 or /128) or, for network sets, nets.
	addrs []netip.Prefix
	ports []namedPortDef
	// local: a workload of this node, or one of this node's host
	// endpoints; iface is its host interface (HostIfaceAll for "*"; "" for
	// a host endpoint without one).
	local bool
	iface string
	name  string // for EndpointPolicy.Name
}

type namedPortDef struct {
	name  string
	proto uint8
	port  uint16
}

func (e *endpoint) isSet() bool {
	return e.key.kind == kindNetworkSet || e.key.kind == kindGlobalNetworkSet
}

// sameContribution reports whether two versions of an endpoint put the
// same members into every set that matches both (same addresses and named
// ports).
func (e *endpoint) sameContribution(o *endpoint) bool {
	return slices.Equal(e.addrs, o.addrs) && slices.Equal(e.ports, o.ports)
}

// namedPorts are the members the endpoint puts in a set of port name.
func (e *endpoint) namedPorts(name string) []dataplane.NamedPort {
	var out []dataplane.NamedPort
	for _, p := range e.ports {
		if p.name != name {
			continue
		}
		for _, a := range e.addrs {
			out = append(out, dataplane.NamedPort{Addr: a.Addr(), Proto: p.proto, Port: p.port})
		}
	}
	return out
}

func hasPort(e *endpoint, name string) bool {
	for _, p := range e.ports {
		if p.name == name {
			return true
		}
	}
	return false
}

// tier is a decoded Tier.
type tier struct {
	order   *float64
	endPass bool
}

// profile is a decoded Profile.
type profile struct {
	name string
	// labels are metadata.labels (a namespace's labels for kns.<ns>);
	// apply are spec.labelsToApply.
	labels, apply map[string]string
	spec          api.ProfileSpec
}

// policyKey identifies a policy.
type policyKey struct {
	kind      string // api.KindNetworkPolicy or api.KindGlobalNetworkPolicy
	namespace string
	name      string
}

func (k policyKey) ref() dataplane.PolicyRef {
	return dataplane.PolicyRef{Kind: k.kind, Namespace: k.namespace, Name: k.name}
}

// policy is a decoded NetworkPolicy or GlobalNetworkPolicy.
type policy struct {
	key            policyKey
	tier           string
	order          *float64
	selector       *selector.Selector
	nsSelector     *selector.Selector // GlobalNetworkPolicy spec.namespaceSelector; nil: any
	ingress        []api.Rule
	egress         []api.Rule
	hasIngress     bool
	hasEgress      bool
	stage          dataplane.ChainStage
	applyOnForward bool
	assumeNeeded   bool
}

func decodeNetworkPolicy(p *api.NetworkPolicy) (*policy, error) {
	s := &p.Spec
	out := &policy{
		key:          policyKey{api.KindNetworkPolicy, p.Metadata.Namespace, p.Metadata.Name},
		tier:         orDefaultTier(s.Tier),
		order:        s.Order,
		ingress:      s.Ingress,
		egress:       s.Egress,
		assumeNeeded: slices.Contains(s.PerformanceHints, api.PerfHintAssumeNeededOnEveryNode),
	}
	var err error
	if out.selector, err = selector.Parse(s.Selector); err != nil {
		return nil, err
	}
	out.hasIngress, out.hasEgress = policyTypes(s.Types, len(s.Ingress), len(s.Egress))
	return out, nil
}

func decodeGlobalNetworkPolicy(p *api.GlobalNetworkPolicy) (*policy, error) {
	s := &p.Spec
	out := &policy{
		key:            policyKey{api.KindGlobalNetworkPolicy, "", p.Metadata.Name},
		tier:           orDefaultTier(s.Tier),
		order:          s.Order,
		ingress:        s.Ingress,
		egress:         s.Egress,
		applyOnForward: s.ApplyOnForward,
		assumeNeeded:   slices.Contains(s.PerformanceHints, api.PerfHintAssumeNeededOnEveryNode),
	}
	switch {
	case s.DoNotTrack:
		out.stage = dataplane.StageUntracked
	case s.PreDNAT:
		out.stage = dataplane.StagePreDNAT
	}
	var err error
	if out.selector, err = selector.Parse(s.Selector); err != nil {
		return nil, err
	}
	if s.NamespaceSelector != "" {
		if out.nsSelector, err = selector.Parse(s.NamespaceSelector); err != nil {
			return nil, err
		}
	}
	out.hasIngress, out.hasEgress = policyTypes(s.Types, len(s.Ingress), len(s.Egress))
	if out.stage == dataplane.StagePreDNAT {
		out.hasEgress = false
	}
	return out, nil
}

// policyTypes applies calico.md §2.4 when types is empty (the store
// always holds them filled; this keeps the calculation right whatever
// wrote the object).
func policyTypes(types []string, ingress, egress int) (bool, bool) {
	if len(types) == 0 {
		switch {
		case egress == 0:
			return true, false
		case ingress == 0:
			return false, true
		default:
			return true, true
		}
	}
	return slices.Contains(types, api.PolicyTypeIngress), slices.Contains(types, api.PolicyTypeEgress)
}

func orDefaultTier(t string) string {
	if t == "" {
		return api.DefaultTierName
	}
	return t
}

// mergeLabels is own plus the profiles' labelsToApply, own first, then
// profiles in order (an earlier value wins).
func mergeLabels(own map[string]string, profiles []string, byName func(string) *profile) map[string]string {
	var extra bool
	for _, name := range profiles {
		if p := byName(name); p != nil && len(p.apply) > 0 {
			extra = true
			break
		}
	}
	if !extra {
		return own
	}
	out := make(map[string]string, len(own)+4)
	for k, v := range own {
		out[k] = v
	}
	for _, name := range profiles {
		p := byName(name)
		if p == nil {
			continue
		}
		for k, v := range p.apply {
			if _, ok := out[k]; !ok {
				out[k] = v
			}
		}
	}
	return out
}

// compareOrder orders two optional orders, unset last.
func compareOrder(a, b *float64) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	case *a < *b:
		return -1
	case *a > *b:
		return 1
	}
	return 0
}
