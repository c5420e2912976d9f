package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/api/selector"
	"github.com/weftnet/weft/dataplane"
)

// rendered is one chain and the sets it names.
type rendered struct {
	id      string
	chain   *dataplane.PolicyChain
	selSets map[string]setDef
	netSets map[string][]netip.Prefix
}

// chainID is the ID of a policy's or profile's chain for a direction
// (Calico's names: pi-/po- for policies, pri-/pro- for profiles). It is a
// valid nftables name: a long one is shortened to a hash.
func chainID(ref dataplane.PolicyRef, dir dataplane.Direction) string {
	prefix := "pi-"
	if ref.Kind == api.KindProfile {
		prefix = "pri-"
	}
	if dir == dataplane.Egress {
		prefix = strings.Replace(prefix, "i-", "o-", 1)
	}
	// Namespaces and names are DNS names ([a-z0-9.-]): '_' cannot appear
	// in them, so "<ns>_<name>" never collides with a global name.
	name := ref.Name
	if ref.Namespace != "" {
		name = ref.Namespace + "_" + ref.Name
	}
	if ref.Kind == api.KindProfile {
		// Profile names and policy names may coincide.
		name = "_" + name
	}
	if len(prefix)+len(name) > 120 {
		name = setID("h", ref.String())
	}
	return prefix + name
}

// renderer renders the rules of one policy or profile.
type renderer struct {
	ref        dataplane.PolicyRef
	namespaced bool // a NetworkPolicy: rule selectors default to its namespace
	out        *rendered
}

func renderChain(ref dataplane.PolicyRef, dir dataplane.Direction, stage dataplane.ChainStage, rules []api.Rule) (*rendered, error) {
	r := &renderer{
		ref:        ref,
		namespaced: ref.Kind == api.KindNetworkPolicy,
		out: &rendered{
			id:      chainID(ref, dir),
			chain:   &dataplane.PolicyChain{Policy: ref, Direction: dir, Stage: stage},
			selSets: map[string]setDef{},
			netSets: map[string][]netip.Prefix{},
		},
	}
	for i := range rules {
		lines, err := r.rule(i, &rules[i])
		if err != nil {
			return nil, fmt.Errorf("%s rule %d: %w", dir, i, err)
		}
		r.out.chain.Rules = append(r.out.chain.Rules, lines...)
	}
	return r.out, nil
}

// rule renders one API rule into one PolicyRule per port alternative.
func (r *renderer) rule(index int, in *api.Rule) ([]dataplane.PolicyRule, error) {
	base := dataplane.PolicyRule{Index: index}
	switch in.Action {
	case api.ActionAllow:
		base.Action = dataplane.ActionAllow
	case api.ActionDeny:
		base.Action = dataplane.ActionDeny
	case api.ActionPass:
		base.Action = dataplane.ActionPass
	case api.ActionLog:
		base.Action = dataplane.ActionLog
	default:
		return nil, fmt.Errorf("action %q", in.Action)
	}
	if in.IPVersion != nil {
		base.IPVersion = uint8(*in.IPVersion)
	}
	if in.Protocol != nil {
		n, ok := in.Protocol.NumValue()
		if !ok {
			return nil, fmt.Errorf("protocol %q", in.Protocol)
		}
		base.Protocol = n
	}
	if in.NotProtocol != nil {
		n, ok := in.NotProtocol.NumValue()
		if !ok {
			return nil, fmt.Errorf("notProtocol %q", in.NotProtocol)
		}
		base.NotProtocol = n
	}
	base.ICMP = icmpMatch(in.ICMP)
	base.NotICMP = icmpMatch(in.NotICMP)
	src, srcAlts, err := r.entity(&in.Source)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dst, dstAlts, err := r.entity(&in.Destination)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	base.Src, base.Dst = src, dst
	// A rule with nets of one family applies to that family only (the
	// store refuses a rule that mixes families or contradicts ipVersion).
	if base.IPVersion == 0 {
		base.IPVersion = netsFamily(in)
	}
	var out []dataplane.PolicyRule
	for _, sa := range srcAlts {
		for _, da := range dstAlts {
			line := base
			line.Src.Ports, line.Src.PortSet = sa.ports, sa.set
			line.Dst.Ports, line.Dst.PortSet = da.ports, da.set
			out = append(out, line)
		}
	}
	return out, nil
}

// netsFamily is the family of a rule's nets (0 when it has none).
func netsFamily(in *api.Rule) uint8 {
	for _, e := range []*api.EntityRule{&in.Source, &in.Destination} {
		for _, n := range slices.Concat(e.Nets, e.NotNets) {
			if p, err := api.ParseCIDROrIP(n); err == nil {
				if p.Addr().Is4() {
					return 4
				}
				return 6
			}
		}
	}
	return 0
}

func icmpMatch(f *api.ICMPFields) *dataplane.ICMPMatch {
	if f == nil || f.Type == nil {
		return nil
	}
	m := &dataplane.ICMPMatch{Type: uint8(*f.Type), Code: -1}
	if f.Code != nil {
		m.Code = int16(*f.Code)
	}
	return m
}

// portAlt is one alternative of a port list: numeric ranges or one
// named-port set.
type portAlt struct {
	ports []dataplane.PortRange
	set   string
}

// entity renders a source or destination (calico.md §2.2, with
// libcalico-go's namespace rules): the positive selector set, the
// negative ones, and the port alternatives (one rule each).
func (r *renderer) entity(e *api.EntityRule) (dataplane.AddrMatch, []portAlt, error) {
	var m dataplane.AddrMatch
	sc := scope{kind: scopeAny}
	switch {
	case e.NamespaceSelector != "":
		nsSel, err := selector.Parse(e.NamespaceSelector)
		if err != nil {
			return m, nil, err
		}
		if nsSel.IsGlobal() {
			sc = scope{kind: scopeGlobal}
		} else {
			// all() included: every namespace, but namespaced objects only.
			sc = scope{kind: scopeNamespaces, nsSel: nsSel}
		}
	case r.namespaced:
		sc = scope{kind: scopeNamespace, ns: r.ref.Namespace}
	}
	var sel *selector.Selector
	if e.Selector != "" {
		s, err := selector.Parse(e.Selector)
		if err != nil {
			return m, nil, err
		}
		if !s.IsAll() {
			sel = s
		}
	}
	// The positive set: a selector, or a namespace restriction that
	// applies (an explicit namespaceSelector, or the policy's namespace
	// when a selector or notSelector is given).
	var positive *setDef
	if e.Selector != "" || e.NamespaceSelector != "" || (e.NotSelector != "" && sc.kind != scopeAny) {
		positive = &setDef{sel: sel, scope: sc}
		m.Sets = append(m.Sets, r.selSet(*positive))
	}
	if e.NotSelector != "" {
		ns, err := selector.Parse(e.NotSelector)
		if err != nil {
			return m, nil, err
		}
		m.NotSets = append(m.NotSets, r.selSet(setDef{sel: ns, scope: scope{kind: scopeAny}}))
	}
	if len(e.Nets) > 0 {
		id, err := r.netSet(e.Nets)
		if err != nil {
			return m, nil, err
		}
		m.Sets = append(m.Sets, id)
	}
	if len(e.NotNets) > 0 {
		id, err := r.netSet(e.NotNets)
		if err != nil {
			return m, nil, err
		}
		m.NotSets = append(m.NotSets, id)
	}
	// Named ports are resolved over the objects the positive set covers
	// (all of them when there is none).
	portDef := setDef{scope: scope{kind: scopeAny}}
	if positive != nil {
		portDef = *positive
	}
	var numeric []dataplane.PortRange
	var alts []portAlt
	for _, p := range e.Ports {
		if p.IsNamed() {
			d := portDef
			d.port = p.PortName
			alts = append(alts, portAlt{set: r.selSet(d)})
			continue
		}
		numeric = append(numeric, dataplane.PortRange{Min: p.MinPort, Max: p.MaxPort})
	}
	if len(numeric) > 0 {
		alts = append([]portAlt{{ports: numeric}}, alts...)
	}
	if len(alts) == 0 {
		alts = []portAlt{{}}
	}
	for _, p := range e.NotPorts {
		if p.IsNamed() {
			d := portDef
			d.port = p.PortName
			m.NotPortSets = append(m.NotPortSets, r.selSet(d))
			continue
		}
		m.NotPorts = append(m.NotPorts, dataplane.PortRange{Min: p.MinPort, Max: p.MaxPort})
	}
	return m, alts, nil
}

func (r *renderer) selSet(d setDef) string {
	id := d.id()
	r.out.selSets[id] = d
	return id
}

// netSet is the set of a rule's nets (or notNets).
func (r *renderer) netSet(nets []string) (string, error) {
	ps := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		p, err := api.ParseCIDROrIP(n)
		if err != nil {
			return "", err
		}
		ps = append(ps, p.Masked())
	}
	slices.SortFunc(ps, dataplane.ComparePrefix)
	ps = slices.Compact(ps)
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte(',')
	}
	id := setID("n-", b.String())
	r.out.netSets[id] = ps
	return id, nil
}
