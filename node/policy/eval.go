package policy

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/dataplane"
)

// Packet is what the evaluator looks at: addresses, protocol, ports (TCP,
// UDP, SCTP) or ICMP type and code.
type Packet struct {
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
	ICMPType         uint8
	ICMPCode         uint8
}

func (p Packet) String() string {
	switch p.Proto {
	case dataplane.ProtoTCP, dataplane.ProtoUDP, dataplane.ProtoSCTP:
		return fmt.Sprintf("%s %s -> %s", protoName(p.Proto), netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
	case dataplane.ProtoICMP, dataplane.ProtoICMPv6:
		return fmt.Sprintf("%s %s -> %s type %d code %d", protoName(p.Proto), p.Src, p.Dst, p.ICMPType, p.ICMPCode)
	}
	return fmt.Sprintf("%s %s -> %s", protoName(p.Proto), p.Src, p.Dst)
}

func protoName(n uint8) string {
	switch n {
	case dataplane.ProtoTCP:
		return "tcp"
	case dataplane.ProtoUDP:
		return "udp"
	case dataplane.ProtoSCTP:
		return "sctp"
	case dataplane.ProtoICMP:
		return "icmp"
	case dataplane.ProtoICMPv6:
		return "icmpv6"
	}
	return fmt.Sprintf("proto %d", n)
}

// Verdict is the outcome of evaluating one endpoint direction.
type Verdict uint8

const (
	// NoVerdict: nothing decided (only in the pre-DNAT and untracked
	// stages, where normal policy decides later).
	NoVerdict Verdict = iota
	Allowed
	Denied
)

func (v Verdict) String() string {
	switch v {
	case Allowed:
		return "allow"
	case Denied:
		return "deny"
	}
	return "no verdict"
}

// Step is one thing the evaluation did, in order.
type Step struct {
	// Tier is "" for profiles and the end of the evaluation.
	Tier string `json:"tier,omitempty"`
	// Policy names the policy or profile ("GlobalNetworkPolicy
	// security.deny-db"); "" for the end of a tier or of the evaluation.
	Policy string `json:"policy,omitempty"`
	// Rule is the index of the rule in the policy's list for the
	// direction; -1 when no rule matched.
	Rule int `json:"rule"`
	// Action is the rule's action (Allow, Deny, Pass, Log), or what
	// happened without a rule ("no rule matched", "end of tier: Deny", ...).
	Action string `json:"action"`
}

// Result is the evaluation of one direction of one endpoint.
type Result struct {
	Verdict Verdict
	Steps   []Step
}

// decision is what one chain decided.
type decision uint8

const (
	decNone decision = iota
	decAllow
	decDeny
	decPass
)

// Evaluate runs a packet through one direction of an endpoint, exactly as
// the dataplane does (see dataplane/policy.go), and records every step.
// stage selects the end of the evaluation: [dataplane.StageNormal] drops
// what nothing decided; the others leave it undecided.
func Evaluate(st *dataplane.PolicyState, d *dataplane.DirectionPolicy, dir dataplane.Direction, stage dataplane.ChainStage, pkt Packet) Result {
	var res Result
	if d == nil {
		return res
	}
	for _, t := range d.Tiers {
		passed := false
		for _, id := range t.Policies {
			dec := evalChain(st, id, dir, pkt, t.Name, &res)
			switch dec {
			case decAllow:
				res.Verdict = Allowed
				return res
			case decDeny:
				res.Verdict = Denied
				return res
			case decPass:
				passed = true
			}
			if passed {
				break
			}
		}
		if passed {
			continue
		}
		if t.EndPass {
			res.Steps = append(res.Steps, Step{Tier: t.Name, Rule: -1, Action: "end of tier: Pass (the tier's defaultAction)"})
			continue
		}
		if stage != dataplane.StageNormal {
			res.Steps = append(res.Steps, Step{Tier: t.Name, Rule: -1, Action: "end of tier: no policy decided"})
			continue
		}
		res.Steps = append(res.Steps, Step{Tier: t.Name, Rule: -1, Action: "end of tier: Deny (a policy of the tier applies and none allowed)"})
		res.Verdict = Denied
		return res
	}
	for _, id := range d.Profiles {
		switch evalChain(st, id, dir, pkt, "", &res) {
		case decAllow:
			res.Verdict = Allowed
			return res
		case decDeny:
			res.Verdict = Denied
			return res
		}
	}
	if stage != dataplane.StageNormal {
		return res
	}
	why := "no profile allowed it: Deny"
	if len(d.Profiles) == 0 {
		why = "no profile: Deny"
	}
	res.Steps = append(res.Steps, Step{Rule: -1, Action: why})
	res.Verdict = Denied
	return res
}

func evalChain(st *dataplane.PolicyState, id string, dir dataplane.Direction, pkt Packet, tier string, res *Result) decision {
	c, ok := st.Chains.Get(id)
	if !ok {
		// Cannot happen in a valid state; the dataplane would not
		// program it either.
		res.Steps = append(res.Steps, Step{Tier: tier, Policy: id, Rule: -1, Action: "missing chain: no match"})
		return decNone
	}
	name := c.Policy.String()
	for i := range c.Rules {
		r := &c.Rules[i]
		if !ruleMatches(st, r, pkt) {
			continue
		}
		res.Steps = append(res.Steps, Step{Tier: tier, Policy: name, Rule: r.Index, Action: r.Action.String()})
		switch r.Action {
		case dataplane.ActionAllow:
			return decAllow
		case dataplane.ActionDeny:
			return decDeny
		case dataplane.ActionPass:
			return decPass
		}
	}
	res.Steps = append(res.Steps, Step{Tier: tier, Policy: name, Rule: -1, Action: "no rule matched"})
	return decNone
}

// ruleMatches is the match of one rule, as the backends render it.
func ruleMatches(st *dataplane.PolicyState, r *dataplane.PolicyRule, pkt Packet) bool {
	v := uint8(4)
	if pkt.Src.Is6() && !pkt.Src.Is4In6() {
		v = 6
	}
	if !slices.Contains(r.Families(), v) {
		return false
	}
	if r.Protocol != 0 && pkt.Proto != r.Protocol {
		return false
	}
	if r.NotProtocol != 0 && pkt.Proto == r.NotProtocol {
		return false
	}
	icmp := pkt.Proto == dataplane.ProtoICMP || pkt.Proto == dataplane.ProtoICMPv6
	if m := r.ICMP; m != nil && (!icmp || pkt.ICMPType != m.Type || (m.Code >= 0 && int16(pkt.ICMPCode) != m.Code)) {
		return false
	}
	if m := r.NotICMP; m != nil && icmp && pkt.ICMPType == m.Type && (m.Code < 0 || int16(pkt.ICMPCode) == m.Code) {
		return false
	}
	return sideMatches(st, &r.Src, pkt.Src, pkt.Proto, pkt.SrcPort) && sideMatches(st, &r.Dst, pkt.Dst, pkt.Proto, pkt.DstPort)
}

func sideMatches(st *dataplane.PolicyState, m *dataplane.AddrMatch, addr netip.Addr, proto uint8, port uint16) bool {
	for _, id := range m.Sets {
		s, ok := st.AddrSets.Get(id)
		if !ok || !s.Contains(addr) {
			return false
		}
	}
	for _, id := range m.NotSets {
		if s, ok := st.AddrSets.Get(id); ok && s.Contains(addr) {
			return false
		}
	}
	hasPorts := proto == dataplane.ProtoTCP || proto == dataplane.ProtoUDP || proto == dataplane.ProtoSCTP
	if len(m.Ports) > 0 && (!hasPorts || !inRanges(m.Ports, port)) {
		return false
	}
	if len(m.NotPorts) > 0 && (!hasPorts || inRanges(m.NotPorts, port)) {
		return false
	}
	np := dataplane.NamedPort{Addr: addr, Proto: proto, Port: port}
	if m.PortSet != "" {
		s, ok := st.PortSets.Get(m.PortSet)
		if !ok || !hasPorts || !s.Contains(np) {
			return false
		}
	}
	for _, id := range m.NotPortSets {
		if s, ok := st.PortSets.Get(id); ok && hasPorts && s.Contains(np) {
			return false
		}
	}
	return true
}

func inRanges(rs []dataplane.PortRange, port uint16) bool {
	for _, r := range rs {
		if port >= r.Min && port <= r.Max {
			return true
		}
	}
	return false
}
