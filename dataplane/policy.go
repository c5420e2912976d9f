package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// This file is the policy section of [Desired]: Calico's policy model
// (calico.md §2) resolved for one node into a rule model that no backend
// owns. The calculation (node/policy) has already resolved selectors into
// address sets, named ports into (address, protocol, port) sets, and the
// tiers, policies and profiles of every local endpoint into ordered lists;
// a backend (nftables today, iptables next) only renders it. The same model
// is evaluated in Go by node/policy's tracer, so `weft policy trace`
// explains exactly what the kernel does.
//
// Evaluation of one endpoint and one direction ([DirectionPolicy]):
//
//  1. Tiers, in order. Within a tier the policies run in order; in a policy
//     the rules run in order: Allow accepts (evaluation ends), Deny drops,
//     Log logs and goes on, Pass leaves the tier (the next tier, or the
//     profiles). A tier whose policies do not decide ends with its
//     default action: drop, or pass when [TierPolicies.EndPass].
//  2. Profiles, in order, when no tier applied or every tier passed: the
//     first Allow accepts, Deny drops, Pass goes to the next profile.
//  3. Nothing decided: drop — except in the pre-DNAT and untracked stages
//     ([ChainStage]), where an undecided packet goes on to normal policy.
//
// A policy's Allow in the untracked stage also exempts the packet from
// connection tracking, so its replies need a rule of their own (Calico's
// doNotTrack).

// Firewall marks weft's policy uses. The policy backends keep them within
// [PolicyMarkMask] and never touch other bits, which other subsystems
// (WireGuard's routing rules) may use.
const (
	// PolicyMarkPass is set by a Pass rule while the rest of its tier is
	// skipped; it is cleared before the next tier.
	PolicyMarkPass uint32 = 0x00020000
	// PolicyMarkAccepted is set on a packet an untracked (doNotTrack) or
	// pre-DNAT policy allowed, so that the later filter stage accepts it
	// too (an untracked packet has no connection state to accept it by).
	PolicyMarkAccepted uint32 = 0x00010000
	// PolicyMarkAllow is set by an Allow while one endpoint's policy is
	// evaluated, where an accept would end more than that evaluation (the
	// iptables backend: an ACCEPT ends the whole hook, not one stage).
	PolicyMarkAllow uint32 = 0x00040000
	// PolicyMarkMask covers every bit policy uses.
	PolicyMarkMask = PolicyMarkPass | PolicyMarkAccepted | PolicyMarkAllow
)

// RuleAction is what a matching rule does.
type RuleAction uint8

const (
	ActionAllow RuleAction = iota + 1
	ActionDeny
	ActionPass
	ActionLog
)

func (a RuleAction) String() string {
	switch a {
	case ActionAllow:
		return "Allow"
	case ActionDeny:
		return "Deny"
	case ActionPass:
		return "Pass"
	case ActionLog:
		return "Log"
	}
	return fmt.Sprintf("RuleAction(%d)", uint8(a))
}

// Direction is the direction of traffic at an endpoint.
type Direction uint8

const (
	// Ingress is traffic to the endpoint.
	Ingress Direction = iota + 1
	// Egress is traffic from the endpoint.
	Egress
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// ChainStage is where a policy chain runs.
type ChainStage uint8

const (
	// StageNormal: the filter stage, with connection tracking; an
	// undecided packet is dropped.
	StageNormal ChainStage = iota
	// StagePreDNAT: host endpoint ingress before DNAT (Calico's preDNAT);
	// Allow ends this stage only, normal policy still runs.
	StagePreDNAT
	// StageUntracked: before connection tracking (Calico's doNotTrack);
	// Allow also exempts the packet from connection tracking.
	StageUntracked
)

func (s ChainStage) String() string {
	switch s {
	case StageNormal:
		return "normal"
	case StagePreDNAT:
		return "preDNAT"
	case StageUntracked:
		return "untracked"
	}
	return fmt.Sprintf("ChainStage(%d)", uint8(s))
}

// PolicyRef names the policy or profile a chain renders.
type PolicyRef struct {
	// Kind is NetworkPolicy, GlobalNetworkPolicy or Profile.
	Kind      string
	Namespace string
	Name      string
}

func (r PolicyRef) String() string {
	if r.Namespace != "" {
		return r.Kind + " " + r.Namespace + "/" + r.Name
	}
	return r.Kind + " " + r.Name
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Min, Max uint16 }

func (p PortRange) String() string {
	if p.Min == p.Max {
		return fmt.Sprint(p.Min)
	}
	return fmt.Sprintf("%d-%d", p.Min, p.Max)
}

// ICMPMatch matches an ICMP (or ICMPv6) type and, when Code >= 0, code.
type ICMPMatch struct {
	Type uint8
	Code int16
}

// AddrMatch constrains one side (source or destination) of a packet. All
// fields must hold (AND); an empty AddrMatch matches everything.
type AddrMatch struct {
	// Sets: the address is in every one of these address sets.
	Sets []string
	// NotSets: the address is in none of these address sets.
	NotSets []string
	// Ports: the port is in one of these ranges (the protocol is TCP, UDP
	// or SCTP). Empty means any port.
	Ports []PortRange
	// PortSet: (address, protocol, port) is in this named-port set. A
	// rule that lists numeric and named ports is split into one rule per
	// alternative, so a rule has Ports or PortSet, never both.
	PortSet string
	// NotPorts: the port is in none of these ranges.
	NotPorts []PortRange
	// NotPortSets: (address, protocol, port) is in none of these sets.
	NotPortSets []string
}

// IsZero reports whether m matches everything.
func (m *AddrMatch) IsZero() bool {
	return len(m.Sets) == 0 && len(m.NotSets) == 0 && len(m.Ports) == 0 && m.PortSet == "" &&
		len(m.NotPorts) == 0 && len(m.NotPortSets) == 0
}

func (m *AddrMatch) equal(o *AddrMatch) bool {
	return slices.Equal(m.Sets, o.Sets) && slices.Equal(m.NotSets, o.NotSets) &&
		slices.Equal(m.Ports, o.Ports) && m.PortSet == o.PortSet &&
		slices.Equal(m.NotPorts, o.NotPorts) && slices.Equal(m.NotPortSets, o.NotPortSets)
}

// PortAlternatives splits a port list into its ranges, each a rule of its
// own in a backend (neither nftables nor iptables has an OR within a
// rule); no ports give one alternative, nil: no port match.
func PortAlternatives(rs []PortRange) []*PortRange {
	if len(rs) == 0 {
		return []*PortRange{nil}
	}
	out := make([]*PortRange, len(rs))
	for i := range rs {
		out[i] = &rs[i]
	}
	return out
}

// UsesPorts reports whether m matches on ports (numeric or named).
func (m *AddrMatch) UsesPorts() bool {
	return len(m.Ports) > 0 || m.PortSet != "" || len(m.NotPorts) > 0 || len(m.NotPortSets) > 0
}

// PolicyRule is one rule of a chain. Every field that is set must match.
type PolicyRule struct {
	// Index is the position of the API rule this comes from in its
	// policy's list for the direction: counters and traces name it. One
	// API rule may become several PolicyRules (one per port alternative).
	Index  int
	Action RuleAction
	// IPVersion limits the rule to 4 or 6; 0 means both.
	IPVersion uint8
	// Protocol, when non-zero, is the IP protocol number that must match;
	// NotProtocol, when non-zero, one that must not.
	Protocol, NotProtocol uint8
	// ICMP and NotICMP match ICMP (Protocol 1) or ICMPv6 (58) types.
	ICMP, NotICMP *ICMPMatch
	Src, Dst      AddrMatch
}

func (r *PolicyRule) equal(o *PolicyRule) bool {
	return r.Index == o.Index && r.Action == o.Action && r.IPVersion == o.IPVersion &&
		r.Protocol == o.Protocol && r.NotProtocol == o.NotProtocol &&
		equalICMP(r.ICMP, o.ICMP) && equalICMP(r.NotICMP, o.NotICMP) &&
		r.Src.equal(&o.Src) && r.Dst.equal(&o.Dst)
}

func equalICMP(a, b *ICMPMatch) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Families are the IP versions the rule can match: what its IPVersion,
// its protocol (ICMP is IPv4, ICMPv6 IPv6) and the sets it names allow.
// setFamily returns the family of an address set's members (0 when it has
// both or none).
func (r *PolicyRule) Families() []uint8 {
	switch {
	case r.IPVersion != 0:
		return []uint8{r.IPVersion}
	case r.Protocol == ProtoICMP:
		return []uint8{4}
	case r.Protocol == ProtoICMPv6:
		return []uint8{6}
	}
	return []uint8{4, 6}
}

// IP protocol numbers the rule model names.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
	ProtoSCTP   = 132
)

// validate checks one rule; sets are the address and port sets it may name.
func (r *PolicyRule) validate(addrSets Map[*AddrSet], portSets Map[*PortSet]) error {
	var errs []error
	if r.Action < ActionAllow || r.Action > ActionLog {
		errs = append(errs, fmt.Errorf("unknown action %d", r.Action))
	}
	if r.IPVersion != 0 && r.IPVersion != 4 && r.IPVersion != 6 {
		errs = append(errs, fmt.Errorf("IP version %d", r.IPVersion))
	}
	for _, ic := range []*ICMPMatch{r.ICMP, r.NotICMP} {
		if ic != nil && r.Protocol != ProtoICMP && r.Protocol != ProtoICMPv6 {
			errs = append(errs, errors.New("ICMP match without protocol ICMP or ICMPv6"))
		}
		if ic != nil && (ic.Code < -1 || ic.Code > 255) {
			errs = append(errs, fmt.Errorf("ICMP code %d", ic.Code))
		}
	}
	for _, m := range []*AddrMatch{&r.Src, &r.Dst} {
		for _, s := range slices.Concat(m.Sets, m.NotSets) {
			if _, ok := addrSets.Get(s); !ok {
				errs = append(errs, fmt.Errorf("address set %q does not exist", s))
			}
		}
		for _, s := range m.NotPortSets {
			if _, ok := portSets.Get(s); !ok {
				errs = append(errs, fmt.Errorf("port set %q does not exist", s))
			}
		}
		if m.PortSet != "" {
			if _, ok := portSets.Get(m.PortSet); !ok {
				errs = append(errs, fmt.Errorf("port set %q does not exist", m.PortSet))
			}
			if len(m.Ports) > 0 {
				errs = append(errs, errors.New("numeric ports and a named-port set in one rule"))
			}
		}
		if (len(m.Ports) > 0 || len(m.NotPorts) > 0) && r.Protocol != ProtoTCP && r.Protocol != ProtoUDP && r.Protocol != ProtoSCTP {
			errs = append(errs, errors.New("numeric ports need protocol TCP, UDP or SCTP"))
		}
		for _, p := range slices.Concat(m.Ports, m.NotPorts) {
			if p.Min == 0 || p.Min > p.Max {
				errs = append(errs, fmt.Errorf("port range %s", p))
			}
		}
	}
	return errors.Join(errs...)
}

// PolicyChain is one policy or profile, rendered for one direction.
type PolicyChain struct {
	Policy    PolicyRef
	Direction Direction
	Stage     ChainStage
	Rules     []PolicyRule
}

// Equal compares two chains.
func (c *PolicyChain) Equal(o *PolicyChain) bool {
	if c == o {
		return true
	}
	if c == nil || o == nil || c.Policy != o.Policy || c.Direction != o.Direction || c.Stage != o.Stage || len(c.Rules) != len(o.Rules) {
		return false
	}
	for i := range c.Rules {
		if !c.Rules[i].equal(&o.Rules[i]) {
			return false
		}
	}
	return true
}

// TierPolicies is one tier's policies that apply to an endpoint in one
// direction, in order.
type TierPolicies struct {
	Name string
	// EndPass: when none of the policies decides, go on to the next tier
	// (the tier's defaultAction Pass) instead of dropping.
	EndPass bool
	// Policies are chain IDs (keys of [PolicyState.Chains]).
	Policies []string
}

// DirectionPolicy is how one endpoint evaluates one direction.
type DirectionPolicy struct {
	// Tiers holds only the tiers with at least one policy for the
	// endpoint and direction.
	Tiers []TierPolicies
	// Profiles are chain IDs, evaluated after the tiers.
	Profiles []string
}

func (d *DirectionPolicy) equal(o *DirectionPolicy) bool {
	if d == nil || o == nil {
		return d == o
	}
	return slices.EqualFunc(d.Tiers, o.Tiers, func(a, b TierPolicies) bool {
		return a.Name == b.Name && a.EndPass == b.EndPass && slices.Equal(a.Policies, b.Policies)
	}) && slices.Equal(d.Profiles, o.Profiles)
}

// Chains lists every chain the direction names.
func (d *DirectionPolicy) Chains() []string {
	if d == nil {
		return nil
	}
	var out []string
	for _, t := range d.Tiers {
		out = append(out, t.Policies...)
	}
	return append(out, d.Profiles...)
}

// EndpointPolicy is the policy of one local workload.
type EndpointPolicy struct {
	// Name is "<namespace>/<workload>", for logs and traces.
	Name string
	// Ingress is traffic to the workload, Egress traffic from it.
	Ingress, Egress DirectionPolicy
}

// Equal compares two endpoint policies.
func (e *EndpointPolicy) Equal(o *EndpointPolicy) bool {
	if e == o {
		return true
	}
	return e != nil && o != nil && e.Name == o.Name && e.Ingress.equal(&o.Ingress) && e.Egress.equal(&o.Egress)
}

// HostIfaceAll is the interface name of a host endpoint for every
// interface of the host (Calico's interfaceName "*"): every interface
// that has no host endpoint of its own, except loopback and workload
// interfaces.
const HostIfaceAll = "*"

// HostEndpointPolicy is the policy of one of this node's host endpoints
// (calico.md §1.5, §2.6). The failsafe ports ([PolicySettings]) are open
// before any of it.
type HostEndpointPolicy struct {
	// Name is the HostEndpoint's name.
	Name string
	// Iface is the interface, or [HostIfaceAll].
	Iface string
	// Ingress and Egress police the host's own traffic on the interface
	// (to and from local processes).
	Ingress, Egress DirectionPolicy
	// ForwardIngress and ForwardEgress police traffic forwarded through
	// the interface; nil when no applyOnForward policy selects the
	// endpoint in that direction: forwarded traffic is then allowed.
	ForwardIngress, ForwardEgress *DirectionPolicy
	// PreDNAT is the ingress policy before DNAT; nil for none.
	PreDNAT *DirectionPolicy
	// UntrackedIngress and UntrackedEgress run before connection tracking;
	// nil for none.
	UntrackedIngress, UntrackedEgress *DirectionPolicy
}

// Equal compares two host endpoint policies.
func (h *HostEndpointPolicy) Equal(o *HostEndpointPolicy) bool {
	if h == o {
		return true
	}
	return h != nil && o != nil && h.Name == o.Name && h.Iface == o.Iface &&
		h.Ingress.equal(&o.Ingress) && h.Egress.equal(&o.Egress) &&
		h.ForwardIngress.equal(o.ForwardIngress) && h.ForwardEgress.equal(o.ForwardEgress) &&
		h.PreDNAT.equal(o.PreDNAT) && h.UntrackedIngress.equal(o.UntrackedIngress) &&
		h.UntrackedEgress.equal(o.UntrackedEgress)
}

// Directions lists every direction policy of the host endpoint that is
// set, with its stage, for renderers and validation.
func (h *HostEndpointPolicy) Directions() []*DirectionPolicy {
	out := []*DirectionPolicy{&h.Ingress, &h.Egress}
	for _, d := range []*DirectionPolicy{h.ForwardIngress, h.ForwardEgress, h.PreDNAT, h.UntrackedIngress, h.UntrackedEgress} {
		if d != nil {
			out = append(out, d)
		}
	}
	return out
}

// AddrSet is a set of addresses and networks: the addresses of the
// endpoints a selector matches, the nets of the network sets it matches,
// or a rule's nets.
type AddrSet struct {
	// Members are sorted (by address, then prefix length) without
	// repeats; they may overlap (an endpoint inside a network set's net).
	Members []netip.Prefix
	// Comment says where the set comes from (the selector), for operators.
	Comment string
}

// Equal compares two sets.
func (s *AddrSet) Equal(o *AddrSet) bool {
	if s == o {
		return true
	}
	return s != nil && o != nil && s.Comment == o.Comment && slices.Equal(s.Members, o.Members)
}

// Contains reports whether a is in one of the members.
func (s *AddrSet) Contains(a netip.Addr) bool {
	a = a.Unmap()
	// Members are sorted by start address: the candidates are those that
	// start at or before a.
	i, _ := slices.BinarySearchFunc(s.Members, a, func(p netip.Prefix, a netip.Addr) int {
		return p.Addr().Compare(a)
	})
	for j := min(i, len(s.Members)-1); j >= 0; j-- {
		if s.Members[j].Contains(a) {
			return true
		}
		// A /0 or a short prefix may start long before a; members are few
		// enough per start address that walking back is cheap, but stop at
		// the first member of the other family.
		if s.Members[j].Addr().Is4() != a.Is4() {
			break
		}
	}
	return false
}

// NamedPort is one member of a named-port set: an endpoint's address with
// the protocol and port its port name stands for.
type NamedPort struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

// ComparePorts orders named ports by address, protocol, port.
func ComparePorts(a, b NamedPort) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Proto != b.Proto {
		return int(a.Proto) - int(b.Proto)
	}
	return int(a.Port) - int(b.Port)
}

// PortSet is a named port resolved over the endpoints a selector matches.
type PortSet struct {
	// Members are sorted by [ComparePorts] without repeats.
	Members []NamedPort
	Comment string
}

// Equal compares two port sets.
func (s *PortSet) Equal(o *PortSet) bool {
	if s == o {
		return true
	}
	return s != nil && o != nil && s.Comment == o.Comment && slices.Equal(s.Members, o.Members)
}

// Contains reports whether p is a member.
func (s *PortSet) Contains(p NamedPort) bool {
	p.Addr = p.Addr.Unmap()
	_, ok := slices.BinarySearchFunc(s.Members, p, ComparePorts)
	return ok
}

// ProtoPort is a failsafe port: protocol and port, optionally limited to
// a network (the remote side).
type ProtoPort struct {
	Proto uint8
	Port  uint16
	// Net, when valid, is the remote network: the source of inbound
	// traffic, the destination of outbound.
	Net netip.Prefix
}

// EndpointToHost is what happens to traffic from a workload to the host
// itself once the workload's egress policy allowed it (Calico's
// defaultEndpointToHostAction).
type EndpointToHost uint8

const (
	// EndpointToHostDrop drops it (Calico's default).
	EndpointToHostDrop EndpointToHost = iota
	// EndpointToHostAccept accepts it.
	EndpointToHostAccept
	// EndpointToHostReturn hands it to the host endpoint policy (the
	// host's own ingress), as traffic from any other interface.
	EndpointToHostReturn
)

// PolicySettings are the node's policy settings (configuration, not
// calculation).
type PolicySettings struct {
	// FailsafeIn are always open into the host on host endpoints (and
	// their replies out); FailsafeOut always open out of the host (and
	// their replies in).
	FailsafeIn, FailsafeOut []ProtoPort
	EndpointToHost          EndpointToHost
	// VXLANPort: UDP to this port from a workload is dropped (workloads
	// may not inject VXLAN packets); 0 = no such rule.
	VXLANPort uint16
	// DropIPIP: IPv4 IP-in-IP (protocol 4) from a workload is dropped.
	DropIPIP bool
}

// Equal compares settings.
func (s PolicySettings) Equal(o PolicySettings) bool {
	return slices.Equal(s.FailsafeIn, o.FailsafeIn) && slices.Equal(s.FailsafeOut, o.FailsafeOut) &&
		s.EndpointToHost == o.EndpointToHost && s.VXLANPort == o.VXLANPort && s.DropIPIP == o.DropIPIP
}

// PolicyState is the policy section of [Desired]. It is immutable once
// built; a state computed from another shares every item that did not
// change (the [Map]s share shards), which is what makes handing it over,
// comparing it and finding what changed cost in proportion to the change.
type PolicyState struct {
	// AddrSets and PortSets are the sets the chains name, by ID.
	AddrSets Map[*AddrSet]
	PortSets Map[*PortSet]
	// Chains are the policies and profiles some local endpoint uses, by
	// ID.
	Chains Map[*PolicyChain]
	// Workloads are the local workloads' policies, by host interface. A
	// workload of [Desired.Workloads] without one has its traffic dropped
	// (fail closed).
	Workloads Map[*EndpointPolicy]
	// Hosts are this node's host endpoints, by interface (or
	// [HostIfaceAll]).
	Hosts    Map[*HostEndpointPolicy]
	Settings PolicySettings
}

// Equal compares two states; shared items are not looked into.
func (p *PolicyState) Equal(o *PolicyState) bool {
	if p == o {
		return true
	}
	if p == nil || o == nil {
		return false
	}
	return p.AddrSets.Equal(o.AddrSets, (*AddrSet).Equal) && p.PortSets.Equal(o.PortSets, (*PortSet).Equal) &&
		p.Chains.Equal(o.Chains, (*PolicyChain).Equal) && p.Workloads.Equal(o.Workloads, (*EndpointPolicy).Equal) &&
		p.Hosts.Equal(o.Hosts, (*HostEndpointPolicy).Equal) && p.Settings.Equal(o.Settings)
}

// Validate checks the whole section: every item, and that every chain,
// set and port set named exists. Its cost is the size of the section; see
// ValidateChanges for the incremental check.
func (p *PolicyState) Validate() error {
	return p.ValidateChanges(nil)
}

// ValidateChanges checks what differs from prev, a state that passed
// Validate or ValidateChanges (nil: everything): every item added or
// changed, and that every chain, set and port set such an item names
// exists. It does not look at unchanged items again, nor check that a
// removed set or chain is named by no unchanged item: the calculation
// (node/policy) guarantees that by counting references, and its tests run
// the full Validate on every intermediate state. Its cost is in
// proportion to the change.
func (p *PolicyState) ValidateChanges(prev *PolicyState) error {
	if p == nil {
		return nil
	}
	if prev == nil {
		prev = &PolicyState{}
	}
	var errs []error
	DiffMaps(prev.AddrSets, p.AddrSets, (*AddrSet).Equal, func(id string, _, s *AddrSet, _, in bool) bool {
		if in {
			errs = append(errs, validateAddrSet(id, s)...)
		}
		return true
	})
	DiffMaps(prev.PortSets, p.PortSets, (*PortSet).Equal, func(id string, _, s *PortSet, _, in bool) bool {
		if in {
			errs = append(errs, validatePortSet(id, s)...)
		}
		return true
	})
	DiffMaps(prev.Chains, p.Chains, (*PolicyChain).Equal, func(id string, _, c *PolicyChain, _, in bool) bool {
		if !in {
			return true
		}
		if c == nil {
			errs = append(errs, fmt.Errorf("chain %q is nil", id))
			return true
		}
		if c.Direction != Ingress && c.Direction != Egress {
			errs = append(errs, fmt.Errorf("chain %q: unknown direction", id))
		}
		for i := range c.Rules {
			if err := c.Rules[i].validate(p.AddrSets, p.PortSets); err != nil {
				errs = append(errs, fmt.Errorf("chain %q rule %d: %w", id, i, err))
			}
		}
		return true
	})
	checkDir := func(owner string, d *DirectionPolicy) {
		for _, id := range d.Chains() {
			if _, ok := p.Chains.Get(id); !ok {
				errs = append(errs, fmt.Errorf("%s names chain %q, which does not exist", owner, id))
			}
		}
	}
	DiffMaps(prev.Workloads, p.Workloads, (*EndpointPolicy).Equal, func(iface string, _, e *EndpointPolicy, _, in bool) bool {
		if !in {
			return true
		}
		if e == nil || !ValidIfaceName(iface) {
			errs = append(errs, fmt.Errorf("workload policy %q: bad interface or nil", iface))
			return true
		}
		checkDir("workload "+iface, &e.Ingress)
		checkDir("workload "+iface, &e.Egress)
		return true
	})
	DiffMaps(prev.Hosts, p.Hosts, (*HostEndpointPolicy).Equal, func(iface string, _, h *HostEndpointPolicy, _, in bool) bool {
		if !in {
			return true
		}
		if h == nil || h.Iface != iface || (iface != HostIfaceAll && !ValidIfaceName(iface)) {
			errs = append(errs, fmt.Errorf("host endpoint policy %q: bad interface or nil", iface))
			return true
		}
		for _, d := range h.Directions() {
			checkDir("host endpoint "+h.Name, d)
		}
		return true
	})
	for _, pp := range slices.Concat(p.Settings.FailsafeIn, p.Settings.FailsafeOut) {
		if pp.Port == 0 || (pp.Proto != ProtoTCP && pp.Proto != ProtoUDP && pp.Proto != ProtoSCTP) {
			errs = append(errs, fmt.Errorf("failsafe port %d/%d", pp.Proto, pp.Port))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	return nil
}

func validateAddrSet(id string, s *AddrSet) []error {
	if s == nil {
		return []error{fmt.Errorf("address set %q is nil", id)}
	}
	var errs []error
	for i, m := range s.Members {
		if !m.IsValid() || m != m.Masked() || m.Addr().Is4In6() {
			errs = append(errs, fmt.Errorf("address set %q: member %s is not a masked prefix", id, m))
		}
		if i > 0 && comparePrefix(s.Members[i-1], m) >= 0 {
			errs = append(errs, fmt.Errorf("address set %q: members not sorted or repeated at %s", id, m))
		}
	}
	return errs
}

func validatePortSet(id string, s *PortSet) []error {
	if s == nil {
		return []error{fmt.Errorf("port set %q is nil", id)}
	}
	var errs []error
	for i, m := range s.Members {
		if !m.Addr.IsValid() || m.Addr.Is4In6() || m.Port == 0 || (m.Proto != ProtoTCP && m.Proto != ProtoUDP && m.Proto != ProtoSCTP) {
			errs = append(errs, fmt.Errorf("port set %q: bad member %v", id, m))
		}
		if i > 0 && ComparePorts(s.Members[i-1], m) >= 0 {
			errs = append(errs, fmt.Errorf("port set %q: members not sorted or repeated", id))
		}
	}
	return errs
}

// comparePrefix orders prefixes by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// ComparePrefix orders prefixes by address, then length: the order of
// [AddrSet.Members].
func ComparePrefix(a, b netip.Prefix) int { return comparePrefix(a, b) }

// AllowAll is the policy section of a node whose workloads have no
// policies and one allow-all profile each (what a namespace's profile is
// when weft creates it): for tests and benchmarks that build a desired
// state by hand.
func AllowAll(workloads []Workload) *PolicyState {
	ref := PolicyRef{Kind: "Profile", Name: "allow-all"}
	chains := MapOf(map[string]*PolicyChain{
		"pri-allow-all": {Policy: ref, Direction: Ingress, Rules: []PolicyRule{{Action: ActionAllow}}},
		"pro-allow-all": {Policy: ref, Direction: Egress, Rules: []PolicyRule{{Action: ActionAllow}}},
	})
	wls := map[string]*EndpointPolicy{}
	for _, w := range workloads {
		wls[w.HostIface] = &EndpointPolicy{
			Name:    w.Namespace + "/" + w.Name,
			Ingress: DirectionPolicy{Profiles: []string{"pri-allow-all"}},
			Egress:  DirectionPolicy{Profiles: []string{"pro-allow-all"}},
		}
	}
	return &PolicyState{Chains: chains, Workloads: MapOf(wls)}
}
