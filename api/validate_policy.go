package api

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Rule and policy limits (calico.md §1.1, §2.2).
const (
	maxRules       = 1024
	maxRuleNets    = 256
	maxRulePorts   = 50
	maxICMPType    = 254
	maxICMPCode    = 255
	maxProtocolNum = 255
)

func validateNetworkPolicy(p *problems, np *NetworkPolicy) {
	s := &np.Spec
	validateTieredName(p, np.Metadata.Name, s.Tier)
	validatePolicyCommon(p, s.Tier, s.Order, s.Selector, s.Types, s.PerformanceHints)
	validateRules(p, "spec.ingress", s.Ingress)
	validateRules(p, "spec.egress", s.Egress)
}

func validateGlobalNetworkPolicy(p *problems, gnp *GlobalNetworkPolicy) {
	s := &gnp.Spec
	validateTieredName(p, gnp.Metadata.Name, s.Tier)
	validatePolicyCommon(p, s.Tier, s.Order, s.Selector, s.Types, s.PerformanceHints)
	if s.NamespaceSelector != "" {
		validateSelector(p, "spec.namespaceSelector", s.NamespaceSelector, false)
	}
	validateRules(p, "spec.ingress", s.Ingress)
	validateRules(p, "spec.egress", s.Egress)
	// The CEL rules of GlobalNetworkPolicySpec.
	if s.DoNotTrack && s.PreDNAT {
		p.add("spec.preDNAT", "preDNAT and doNotTrack cannot both be true")
	}
	if s.PreDNAT && len(s.Egress) > 0 {
		p.add("spec.egress", "a preDNAT policy cannot have egress rules")
	}
	if s.PreDNAT && slices.Contains(s.Types, PolicyTypeEgress) {
		p.add("spec.types", "a preDNAT policy cannot have type Egress")
	}
	if (s.DoNotTrack || s.PreDNAT) && !s.ApplyOnForward {
		p.add("spec.applyOnForward", "must be true when preDNAT or doNotTrack is true")
	}
}

// validateTieredName applies Calico's naming rule for tiered policies: a
// policy in a tier other than default is named "<tier>.<name>".
func validateTieredName(p *problems, name, tier string) {
	if tier == "" || tier == DefaultTierName || !IsDNSLabel(tier) {
		return
	}
	if !strings.HasPrefix(name, tier+".") {
		p.add("metadata.name", "a policy in tier %q must be named %q", tier, tier+"."+afterTierPrefix(name))
	}
}

// afterTierPrefix drops a leading "<label>." from a policy name.
func afterTierPrefix(name string) string {
	if _, rest, ok := strings.Cut(name, "."); ok && rest != "" {
		return rest
	}
	return name
}

func validatePolicyCommon(p *problems, tier string, order *float64, sel string, types, hints []string) {
	if tier != "" && !IsDNSLabel(tier) {
		p.add("spec.tier", "%q is not a valid tier name", tier)
	}
	if order != nil && (math.IsNaN(*order) || math.IsInf(*order, 0)) {
		p.add("spec.order", "must be a finite number")
	}
	if sel != "" {
		validateSelector(p, "spec.selector", sel, false)
	}
	if len(types) > 2 {
		p.add("spec.types", "has %d entries, at most 2 (Ingress, Egress)", len(types))
	}
	seen := map[string]bool{}
	for i, t := range types {
		f := fmt.Sprintf("spec.types[%d]", i)
		switch {
		case !oneOf(t, PolicyTypeIngress, PolicyTypeEgress):
			p.add(f, "must be Ingress or Egress, got %q", t)
		case seen[t]:
			p.add(f, "%s is listed twice", t)
		}
		seen[t] = true
	}
	seenHint := map[string]bool{}
	for i, h := range hints {
		f := fmt.Sprintf("spec.performanceHints[%d]", i)
		switch {
		case h != PerfHintAssumeNeededOnEveryNode:
			p.add(f, "must be %s, got %q", PerfHintAssumeNeededOnEveryNode, h)
		case seenHint[h]:
			p.add(f, "%s is listed twice", h)
		}
		seenHint[h] = true
	}
}

func validateProfile(p *problems, pr *Profile) {
	validateRules(p, "spec.ingress", pr.Spec.Ingress)
	validateRules(p, "spec.egress", pr.Spec.Egress)
	validateLabels(p, "spec.labelsToApply", pr.Spec.LabelsToApply)
}

func validateTier(p *problems, t *Tier) {
	s := &t.Spec
	if s.Order != nil && (math.IsNaN(*s.Order) || math.IsInf(*s.Order, 0)) {
		p.add("spec.order", "must be a finite number")
	}
	if s.DefaultAction != "" && !oneOf(s.DefaultAction, ActionDeny, ActionPass) {
		p.add("spec.defaultAction", "must be Deny or Pass, got %q", s.DefaultAction)
	}
	builtin := func(order float64, action string) {
		if s.Order != nil && *s.Order != order {
			p.add("spec.order", "the %s tier's order must be %s", t.Metadata.Name, formatOrder(&order))
		}
		if s.DefaultAction != "" && s.DefaultAction != action {
			p.add("spec.defaultAction", "the %s tier's default action must be %s", t.Metadata.Name, action)
		}
	}
	switch t.Metadata.Name {
	case DefaultTierName:
		builtin(DefaultTierOrder, ActionDeny)
	case KubeAdminTierName:
		builtin(KubeAdminTierOrder, ActionPass)
	case KubeBaselineTierName:
		builtin(KubeBaselineTierOrder, ActionPass)
	}
}

func validateRules(p *problems, field string, rules []Rule) {
	if len(rules) > maxRules {
		p.add(field, "has %d rules, the limit is %d", len(rules), maxRules)
	}
	for i := range rules {
		validateRule(p, fmt.Sprintf("%s[%d]", field, i), &rules[i])
	}
}

func validateProtocol(p *problems, field string, pr *Protocol) {
	if pr.Name == "" {
		if pr.Number == 0 || int(pr.Number) > maxProtocolNum {
			p.add(field, "protocol number must be between 1 and 255, got %d", pr.Number)
		}
		return
	}
	if _, ok := pr.NumValue(); !ok {
		p.add(field, "must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number between 1 and 255, got %q", pr.Name)
	}
}

func validateRule(p *problems, f string, r *Rule) {
	switch {
	case r.Action == "":
		p.add(f+".action", "is required (Allow, Deny, Log or Pass)")
	case !oneOf(r.Action, ActionAllow, ActionDeny, ActionLog, ActionPass):
		p.add(f+".action", "must be Allow, Deny, Log or Pass, got %q", r.Action)
	}
	if r.IPVersion != nil && *r.IPVersion != 4 && *r.IPVersion != 6 {
		p.add(f+".ipVersion", "must be 4 or 6, got %d", *r.IPVersion)
	}
	if r.Protocol != nil {
		validateProtocol(p, f+".protocol", r.Protocol)
	}
	if r.NotProtocol != nil {
		validateProtocol(p, f+".notProtocol", r.NotProtocol)
	}
	// ICMP protocols pin the IP version (CEL rules of Rule).
	for _, pf := range []struct {
		field string
		proto *Protocol
	}{{f + ".protocol", r.Protocol}, {f + ".notProtocol", r.NotProtocol}} {
		if pf.proto == nil || r.IPVersion == nil {
			continue
		}
		if pf.proto.IsICMP() && *r.IPVersion != 4 {
			p.add(pf.field, "protocol ICMP requires ipVersion 4")
		}
		if pf.proto.IsICMPv6() && *r.IPVersion != 6 {
			p.add(pf.field, "protocol ICMPv6 requires ipVersion 6")
		}
	}
	isICMP := r.Protocol != nil && (r.Protocol.IsICMP() || r.Protocol.IsICMPv6())
	for _, ic := range []struct {
		field  string
		fields *ICMPFields
	}{{f + ".icmp", r.ICMP}, {f + ".notICMP", r.NotICMP}} {
		if ic.fields == nil {
			continue
		}
		if !isICMP {
			p.add(ic.field, "ICMP fields require protocol ICMP or ICMPv6")
		}
		if t := ic.fields.Type; t != nil && (*t < 0 || *t > maxICMPType) {
			p.add(ic.field+".type", "must be between 0 and %d, got %d", maxICMPType, *t)
		}
		if c := ic.fields.Code; c != nil {
			if *c < 0 || *c > maxICMPCode {
				p.add(ic.field+".code", "must be between 0 and %d, got %d", maxICMPCode, *c)
			}
			if ic.fields.Type == nil {
				p.add(ic.field+".code", "an ICMP code requires an ICMP type")
			}
		}
	}
	nets := netFamilies{rule: r, p: p}
	validateEntity(p, f+".source", &r.Source, r.Protocol, &nets)
	validateEntity(p, f+".destination", &r.Destination, r.Protocol, &nets)
	if r.Metadata != nil {
		validateAnnotations(p, f+".metadata.annotations", r.Metadata.Annotations)
	}
}

// netFamilies tracks the address families a rule's nets use: one rule
// may not mix IPv4 and IPv6, and must agree with ipVersion.
type netFamilies struct {
	rule     *Rule
	p        *problems
	v4, v6   bool
	reported bool
}

func (n *netFamilies) add(field string, is4 bool) {
	if v := n.rule.IPVersion; v != nil && ((is4 && *v != 4) || (!is4 && *v != 6)) {
		n.p.add(field, "CIDR family does not match ipVersion %d", *v)
	}
	if is4 {
		n.v4 = true
	} else {
		n.v6 = true
	}
	if n.v4 && n.v6 && !n.reported {
		n.reported = true
		n.p.add(field, "a rule cannot mix IPv4 and IPv6 CIDRs")
	}
}

func validateEntity(p *problems, f string, e *EntityRule, proto *Protocol, fams *netFamilies) {
	for _, nl := range []struct {
		field string
		nets  []string
		not   bool
	}{{f + ".nets", e.Nets, false}, {f + ".notNets", e.NotNets, true}} {
		if len(nl.nets) > maxRuleNets {
			p.add(nl.field, "has %d entries, the limit is %d", len(nl.nets), maxRuleNets)
		}
		for i, n := range nl.nets {
			nf := fmt.Sprintf("%s[%d]", nl.field, i)
			pfx, err := parseNet(n)
			if err != nil {
				p.add(nf, "%v", err)
				continue
			}
			if nl.not && pfx.Bits() == 0 {
				p.add(nf, "%s matches every address, so the rule could never match", n)
			}
			fams.add(nf, pfx.Addr().Is4())
		}
	}
	if e.Selector != "" {
		validateSelector(p, f+".selector", e.Selector, false)
	}
	if e.NotSelector != "" {
		validateSelector(p, f+".notSelector", e.NotSelector, false)
	}
	if e.NamespaceSelector != "" {
		validateSelector(p, f+".namespaceSelector", e.NamespaceSelector, true)
	}
	for _, pl := range []struct {
		field string
		ports []Port
	}{{f + ".ports", e.Ports}, {f + ".notPorts", e.NotPorts}} {
		if len(pl.ports) > maxRulePorts {
			p.add(pl.field, "has %d entries, the limit is %d", len(pl.ports), maxRulePorts)
		}
		numeric := false
		for i, port := range pl.ports {
			pf := fmt.Sprintf("%s[%d]", pl.field, i)
			if port.IsNamed() {
				if !isPortName(port.PortName) {
					p.add(pf, "%q is not a valid port number, range (\"min:max\") or port name", port.PortName)
				}
				continue
			}
			numeric = true
			validatePortRange(p, pf, port)
		}
		switch {
		case len(pl.ports) == 0:
		case proto != nil && !proto.SupportsPorts():
			p.add(pl.field, "protocol %s has no ports; ports need protocol TCP, UDP or SCTP", proto)
		case proto == nil && numeric:
			p.add(pl.field, "numeric ports need protocol TCP, UDP or SCTP")
		}
	}
}

func validatePortRange(p *problems, field string, port Port) {
	switch {
	case port.MinPort == 0 || port.MaxPort == 0:
		p.add(field, "port numbers must be between 1 and 65535, got %s", port)
	case port.MinPort > port.MaxPort:
		p.add(field, "invalid range %s: the first port is greater than the second", port)
	}
}
