package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
)

// Names of the table's fixed objects. The base chains run at these hooks:
//
//	raw-prerouting     prerouting  raw (-300)    host endpoints: failsafe, doNotTrack ingress
//	raw-output         output      raw (-300)    host endpoints: failsafe, doNotTrack egress
//	mangle-prerouting  prerouting  mangle (-150) host endpoints: preDNAT
//	filter-input       input       filter (0)    workloads' egress to the host; host endpoints' ingress
//	filter-input-host  input       filter+1      workload → host: defaultEndpointToHostAction
//	filter-forward     forward     filter (0)    workloads' egress
//	filter-forward-to  forward     filter+1      workloads' ingress
//	filter-fwd-hep-in  forward     filter+2      host endpoints, applyOnForward, ingress
//	filter-fwd-hep-out forward     filter+3      host endpoints, applyOnForward, egress
//	filter-output      output      filter (0)    host endpoints' egress
//	nat-postrouting    postrouting srcnat (100)  outgoing NAT
//
// An accept ends only the base chain it happens in; the next base chain
// of the same hook still runs (a drop is final). That is what lets each
// check be its own chain: a workload-to-workload packet passes the
// source's egress in filter-forward and the destination's ingress in
// filter-forward-to.
const (
	TableName = "weft"

	mapWlFrom     = "wl-from"
	mapWlTo       = "wl-to"
	mapHepIn      = "hep-in"
	mapHepOut     = "hep-out"
	mapHepFwdIn   = "hep-fwd-in"
	mapHepFwdOut  = "hep-fwd-out"
	mapHepPre     = "hep-pre"
	mapHepRawIn   = "hep-raw-in"
	mapHepRawOut  = "hep-raw-out"
	chainNAT      = "nat-postrouting"
	setNATMasq4   = "nat-masq-v4"
	setNATMasq6   = "nat-masq-v6"
	setNATNoMasq4 = "nat-nomasq-v4"
	setNATNoMasq6 = "nat-nomasq-v6"
)

// renderConfig is the static configuration of the renderer.
type renderConfig struct {
	ifacePrefix string
}

// ---- sets --------------------------------------------------------------

func addrSets(id string, s *dataplane.AddrSet) (*nset, *nset) {
	return &nset{name: id + "-4", kind: setAddr4, spans: spansOf(s.Members, true), comment: s.Comment},
		&nset{name: id + "-6", kind: setAddr6, spans: spansOf(s.Members, false), comment: s.Comment}
}

func portSets(id string, s *dataplane.PortSet) (*nset, *nset) {
	v4 := &nset{name: id + "-4", kind: setPort4, comment: s.Comment}
	v6 := &nset{name: id + "-6", kind: setPort6, comment: s.Comment}
	for _, m := range s.Members {
		k := portKey(m)
		if m.Addr.Is4() {
			v4.keys = append(v4.keys, k)
		} else {
			v6.keys = append(v6.keys, k)
		}
	}
	return v4, v6
}

// portKey is the concatenated key (address . protocol . port), each part
// padded to 4 bytes.
func portKey(m dataplane.NamedPort) string {
	b := m.Addr.AsSlice()
	b = append(b, m.Proto, 0, 0, 0)
	b = append(b, byte(m.Port>>8), byte(m.Port), 0, 0)
	return string(b)
}

// ---- policy and profile chains ---------------------------------------

// policyChain renders one policy or profile for one direction.
func policyChain(id string, c *dataplane.PolicyChain) *nchain {
	out := &nchain{name: id, owner: &c.Policy, dir: c.Direction}
	profile := c.Policy.Kind == "Profile"
	var descs []string
	var idx []int
	for i := range c.Rules {
		for _, b := range ruleVariants(&c.Rules[i]) {
			action(b, &c.Rules[i], c, profile)
			out.rules = append(out.rules, nrule{exprs: b.exprs})
			descs = append(descs, b.text())
			idx = append(idx, c.Rules[i].Index)
		}
	}
	tagRules(out, descs, idx)
	return out
}

// ruleVariants renders the match part of one rule: one nftables rule per
// address family it needs and per port range alternative.
func ruleVariants(r *dataplane.PolicyRule) []*rb {
	usesAddrs := len(r.Src.Sets)+len(r.Src.NotSets)+len(r.Dst.Sets)+len(r.Dst.NotSets) > 0 ||
		r.Src.PortSet != "" || r.Dst.PortSet != "" || len(r.Src.NotPortSets)+len(r.Dst.NotPortSets) > 0
	fams := []uint8{0}
	if usesAddrs || r.IPVersion != 0 {
		fams = r.Families()
	}
	srcAlts := dataplane.PortAlternatives(r.Src.Ports)
	dstAlts := dataplane.PortAlternatives(r.Dst.Ports)
	var out []*rb
	for _, v := range fams {
		for _, sp := range srcAlts {
			for _, dp := range dstAlts {
				b := &rb{}
				if v != 0 {
					b.family(v)
				}
				if r.Protocol != 0 {
					b.l4proto(r.Protocol, false)
				}
				if r.NotProtocol != 0 {
					b.l4proto(r.NotProtocol, true)
				}
				if r.ICMP != nil {
					b.icmp(r.ICMP, false)
				}
				if r.NotICMP != nil {
					b.icmp(r.NotICMP, true)
				}
				side(b, v, true, &r.Src, sp)
				side(b, v, false, &r.Dst, dp)
				out = append(out, b)
			}
		}
	}
	return out
}

func side(b *rb, v uint8, src bool, m *dataplane.AddrMatch, port *dataplane.PortRange) {
	for _, s := range m.Sets {
		b.inSet(v, src, fmt.Sprintf("%s-%d", s, v), false)
	}
	for _, s := range m.NotSets {
		b.inSet(v, src, fmt.Sprintf("%s-%d", s, v), true)
	}
	if port != nil {
		b.port(src, *port, false)
	}
	for _, r := range m.NotPorts {
		b.port(src, r, true)
	}
	if m.PortSet != "" {
		b.portSet(v, src, fmt.Sprintf("%s-%d", m.PortSet, v), false)
	}
	for _, s := range m.NotPortSets {
		b.portSet(v, src, fmt.Sprintf("%s-%d", s, v), true)
	}
}

// action renders what a matching rule does.
func action(b *rb, r *dataplane.PolicyRule, c *dataplane.PolicyChain, profile bool) {
	b.counter()
	switch r.Action {
	case dataplane.ActionAllow:
		if c.Stage == dataplane.StageUntracked {
			b.setMark(dataplane.PolicyMarkAccepted, true).notrack()
		}
		b.accept()
	case dataplane.ActionDeny:
		b.drop()
	case dataplane.ActionPass:
		if !profile {
			b.setMark(dataplane.PolicyMarkPass, true)
		}
		b.ret()
	case dataplane.ActionLog:
		b.log(fmt.Sprintf("weft-packet %s %s rule %d: ", c.Policy, c.Direction, r.Index))
	}
}

// ---- endpoint chains -------------------------------------------------

// direction renders an endpoint's tiers and profiles for one direction
// into rules appended to rs: each tier's policies are jumped to while the
// Pass mark is clear; a tier that applies ends with a drop (unless its
// defaultAction is Pass); the profiles follow; the end drops (stage
// normal) or returns (preDNAT, untracked: normal policy decides later).
func direction(rs *[]*rb, d *dataplane.DirectionPolicy, stage dataplane.ChainStage) {
	add := func(b *rb) { *rs = append(*rs, b) }
	for _, t := range d.Tiers {
		add((&rb{}).setMark(dataplane.PolicyMarkPass, false))
		for _, id := range t.Policies {
			add((&rb{}).markHas(dataplane.PolicyMarkPass, false).jump(id))
		}
		if !t.EndPass && stage == dataplane.StageNormal {
			add((&rb{}).markHas(dataplane.PolicyMarkPass, false).add("tier " + t.Name).counter().drop())
		}
	}
	if len(d.Tiers) > 0 {
		add((&rb{}).setMark(dataplane.PolicyMarkPass, false))
	}
	for _, id := range d.Profiles {
		add((&rb{}).jump(id))
	}
	if stage == dataplane.StageNormal {
		add((&rb{}).add("end").counter().drop())
	}
}

func chainOf(name string, rs []*rb) *nchain {
	c := &nchain{name: name}
	descs := make([]string, len(rs))
	for i, b := range rs {
		c.rules = append(c.rules, nrule{exprs: b.exprs})
		descs[i] = b.text()
	}
	tagRules(c, descs, nil)
	return c
}

// workloadChains are a workload's from (egress) and to (ingress) chains.
func workloadChains(iface string, e *dataplane.EndpointPolicy, st dataplane.PolicySettings) (*nchain, *nchain) {
	var from, to []*rb
	if st.VXLANPort != 0 {
		// Workloads may not send VXLAN packets (Calico's
		// allowVXLANPacketsFromWorkloads false).
		from = append(from, (&rb{}).l4proto(unix.IPPROTO_UDP, false).port(false, dataplane.PortRange{Min: st.VXLANPort, Max: st.VXLANPort}, false).counter().drop())
	}
	if st.DropIPIP {
		// Nor IP-in-IP packets (allowIPIPPacketsFromWorkloads false).
		from = append(from, (&rb{}).family(4).l4proto(unix.IPPROTO_IPIP, false).counter().drop())
	}
	direction(&from, &e.Egress, dataplane.StageNormal)
	direction(&to, &e.Ingress, dataplane.StageNormal)
	return chainOf("fw-"+iface, from), chainOf("tw-"+iface, to)
}

// hostChainNames are the chains of a host endpoint ("*" gets "-all").
type hostChainNames struct{ in, out, fwdIn, fwdOut, pre, rawIn, rawOut string }

func hostNames(h *dataplane.HostEndpointPolicy) hostChainNames {
	suffix := "." + h.Name
	if h.Iface == dataplane.HostIfaceAll {
		suffix = "-all"
	} else if len(suffix) > 100 {
		sum := sha256.Sum256([]byte(h.Name))
		suffix = "." + hex.EncodeToString(sum[:8])
	}
	return hostChainNames{
		in: "fh" + suffix, out: "th" + suffix, fwdIn: "fhf" + suffix, fwdOut: "thf" + suffix,
		pre: "fhp" + suffix, rawIn: "fhu" + suffix, rawOut: "thu" + suffix,
	}
}

// failsafe renders the failsafe rules of one direction: the ports open
// in that direction, and replies from the ports open in the other.
func failsafe(rs *[]*rb, open, replies []dataplane.ProtoPort, in bool) {
	for _, pp := range open {
		*rs = append(*rs, failsafeRule(pp, in, false))
	}
	for _, pp := range replies {
		*rs = append(*rs, failsafeRule(pp, in, true))
	}
}

// failsafeRule accepts a failsafe port: inbound to the port (or, reply,
// outbound from it), the remote side within the port's net if it has one.
func failsafeRule(pp dataplane.ProtoPort, in, reply bool) *rb {
	b := &rb{}
	if pp.Net.IsValid() {
		v := uint8(4)
		if pp.Net.Addr().Is6() {
			v = 6
		}
		// The remote side: the source of inbound traffic, the
		// destination of outbound.
		b.family(v).inNet(v, in, pp.Net)
	}
	b.l4proto(pp.Proto, false)
	// The failsafe port is the destination of the traffic it opens, and
	// the source of the replies.
	return b.port(reply, dataplane.PortRange{Min: pp.Port, Max: pp.Port}, false).add("failsafe").counter().accept()
}

// hostChains are a host endpoint's chains.
func hostChains(h *dataplane.HostEndpointPolicy, st dataplane.PolicySettings) []*nchain {
	n := hostNames(h)
	var in, out []*rb
	failsafe(&in, st.FailsafeIn, st.FailsafeOut, true)
	failsafe(&out, st.FailsafeOut, st.FailsafeIn, false)
	direction(&in, &h.Ingress, dataplane.StageNormal)
	direction(&out, &h.Egress, dataplane.StageNormal)
	chains := []*nchain{chainOf(n.in, in), chainOf(n.out, out)}
	opt := func(name string, d *dataplane.DirectionPolicy, stage dataplane.ChainStage, fs bool, inbound bool) {
		if d == nil {
			return
		}
		var rs []*rb
		if fs {
			if inbound {
				failsafe(&rs, st.FailsafeIn, st.FailsafeOut, true)
			} else {
				failsafe(&rs, st.FailsafeOut, st.FailsafeIn, false)
			}
		}
		direction(&rs, d, stage)
		chains = append(chains, chainOf(name, rs))
	}
	opt(n.fwdIn, h.ForwardIngress, dataplane.StageNormal, false, true)
	opt(n.fwdOut, h.ForwardEgress, dataplane.StageNormal, false, false)
	opt(n.pre, h.PreDNAT, dataplane.StagePreDNAT, false, true)
	opt(n.rawIn, h.UntrackedIngress, dataplane.StageUntracked, true, true)
	opt(n.rawOut, h.UntrackedEgress, dataplane.StageUntracked, true, false)
	return chains
}

// ---- base chains and maps --------------------------------------------

func baseHook(num *nftables.ChainHook, prio int32, typ nftables.ChainType) *hook {
	return &hook{typ: typ, num: *num, prio: nftables.ChainPriority(prio)}
}

// allHost is what the base chains need to know about the "*" host
// endpoint: which of its chains exist.
type allHost struct {
	present                       bool
	names                         hostChainNames
	fwdIn, fwdOut, pre, raw, raw6 bool
}

func allHostOf(p *dataplane.PolicyState) allHost {
	var a allHost
	if p == nil {
		return a
	}
	h, ok := p.Hosts.Get(dataplane.HostIfaceAll)
	if !ok {
		return a
	}
	a.present, a.names = true, hostNames(h)
	a.fwdIn, a.fwdOut, a.pre = h.ForwardIngress != nil, h.ForwardEgress != nil, h.PreDNAT != nil
	a.raw, a.raw6 = h.UntrackedIngress != nil, h.UntrackedEgress != nil
	return a
}

// baseChains are the fixed chains: conntrack, the fail-closed drop of
// unknown workload interfaces, and dispatch through the maps.
func baseChains(cfg renderConfig, st dataplane.PolicySettings, all allHost) []*nchain {
	pfx := cfg.ifacePrefix
	est := func() *rb {
		return (&rb{}).ctState(dataplaneCtEstablished).accept()
	}
	inv := func() *rb { return (&rb{}).ctState(dataplaneCtInvalid).counter().drop() }
	accepted := func() *rb { return (&rb{}).markHas(dataplane.PolicyMarkAccepted, true).accept() }
	unknown := func(in bool) *rb {
		return (&rb{}).workloadShaped(in, pfx, true).add("unknown workload interface").counter().drop()
	}
	skipWorkloads := func(in bool) *rb { return (&rb{}).workloadShaped(in, pfx, true).accept() }
	nd := func() *rb {
		// IPv6 router and neighbour discovery between a workload and
		// its host is never subject to policy.
		return (&rb{}).workloadShaped(true, pfx, true).family(6).l4proto(unix.IPPROTO_ICMPV6, false).icmpTypes(133, 136).accept()
	}
	allRule := func(in bool, chain string) *rb {
		return (&rb{}).ifaceIs(in, "lo", true).gotoChain(chain)
	}

	var chains []*nchain
	mk := func(name string, h *hook, rs ...*rb) {
		c := chainOf(name, rs)
		c.hook = h
		chains = append(chains, c)
	}
	filter := nftables.ChainTypeFilter

	// raw: failsafe and untracked policy of host endpoints.
	rawIn := []*rb{skipWorkloads(true), (&rb{}).ifaceMap(true, mapHepRawIn)}
	if all.raw {
		rawIn = append(rawIn, allRule(true, all.names.rawIn))
	}
	mk("raw-prerouting", baseHook(nftables.ChainHookPrerouting, -300, filter), rawIn...)
	rawOut := []*rb{skipWorkloads(false), (&rb{}).ifaceMap(false, mapHepRawOut)}
	if all.raw6 {
		rawOut = append(rawOut, allRule(false, all.names.rawOut))
	}
	mk("raw-output", baseHook(nftables.ChainHookOutput, -300, filter), rawOut...)

	// mangle: preDNAT.
	pre := []*rb{est(), skipWorkloads(true), (&rb{}).ifaceMap(true, mapHepPre)}
	if all.pre {
		pre = append(pre, allRule(true, all.names.pre))
	}
	mk("mangle-prerouting", baseHook(nftables.ChainHookPrerouting, -150, filter), pre...)

	// input: workloads' egress (to the host), then host endpoints.
	input := []*rb{est(), inv(), accepted(), nd(), (&rb{}).ifaceMap(true, mapWlFrom), unknown(true), (&rb{}).ifaceMap(true, mapHepIn)}
	if all.present {
		input = append(input, allRule(true, all.names.in))
	}
	mk("filter-input", baseHook(nftables.ChainHookInput, 0, filter), input...)
	toHost := []*rb{est(), nd()}
	switch st.EndpointToHost {
	case dataplane.EndpointToHostDrop:
		toHost = append(toHost, (&rb{}).workloadShaped(true, pfx, true).add("endpoint to host").counter().drop())
	case dataplane.EndpointToHostReturn:
		if all.present {
			toHost = append(toHost, (&rb{}).workloadShaped(true, pfx, true).gotoChain(all.names.in))
		}
	}
	mk("filter-input-host", baseHook(nftables.ChainHookInput, 1, filter), toHost...)

	// forward: the source workload's egress, the destination workload's
	// ingress, then host endpoints (applyOnForward) both ways.
	mk("filter-forward", baseHook(nftables.ChainHookForward, 0, filter),
		est(), inv(), accepted(), (&rb{}).ifaceMap(true, mapWlFrom), unknown(true))
	mk("filter-forward-to", baseHook(nftables.ChainHookForward, 1, filter),
		est(), inv(), accepted(), (&rb{}).ifaceMap(false, mapWlTo), unknown(false))
	fwdIn := []*rb{est(), accepted(), skipWorkloads(true), (&rb{}).ifaceMap(true, mapHepFwdIn)}
	if all.fwdIn {
		fwdIn = append(fwdIn, allRule(true, all.names.fwdIn))
	}
	mk("filter-fwd-hep-in", baseHook(nftables.ChainHookForward, 2, filter), fwdIn...)
	fwdOut := []*rb{est(), accepted(), skipWorkloads(false), (&rb{}).ifaceMap(false, mapHepFwdOut)}
	if all.fwdOut {
		fwdOut = append(fwdOut, allRule(false, all.names.fwdOut))
	}
	mk("filter-fwd-hep-out", baseHook(nftables.ChainHookForward, 3, filter), fwdOut...)

	// output: the host's own traffic to workloads is allowed (Calico
	// lets the host reach its workloads); host endpoints' egress.
	output := []*rb{est(), inv(), accepted(), skipWorkloads(false), (&rb{}).ifaceMap(false, mapHepOut)}
	if all.present {
		output = append(output, allRule(false, all.names.out))
	}
	mk("filter-output", baseHook(nftables.ChainHookOutput, 0, filter), output...)
	return chains
}

// Connection-tracking state bits.
const (
	dataplaneCtEstablished = 2 | 4 // established, related
	dataplaneCtInvalid     = 1
)

// mapNames are every dispatch map.
var mapNames = []string{mapWlFrom, mapWlTo, mapHepIn, mapHepOut, mapHepFwdIn, mapHepFwdOut, mapHepPre, mapHepRawIn, mapHepRawOut}

// maps builds the dispatch maps of a policy state.
func dispatchMaps(p *dataplane.PolicyState) []*nset {
	m := map[string]map[string]string{}
	for _, n := range mapNames {
		m[n] = map[string]string{}
	}
	if p != nil {
		p.Workloads.Range(func(iface string, _ *dataplane.EndpointPolicy) bool {
			m[mapWlFrom][iface] = "fw-" + iface
			m[mapWlTo][iface] = "tw-" + iface
			return true
		})
		p.Hosts.Range(func(iface string, h *dataplane.HostEndpointPolicy) bool {
			if iface == dataplane.HostIfaceAll {
				return true
			}
			n := hostNames(h)
			m[mapHepIn][iface] = n.in
			m[mapHepOut][iface] = n.out
			if h.ForwardIngress != nil {
				m[mapHepFwdIn][iface] = n.fwdIn
			}
			if h.ForwardEgress != nil {
				m[mapHepFwdOut][iface] = n.fwdOut
			}
			if h.PreDNAT != nil {
				m[mapHepPre][iface] = n.pre
			}
			if h.UntrackedIngress != nil {
				m[mapHepRawIn][iface] = n.rawIn
			}
			if h.UntrackedEgress != nil {
				m[mapHepRawOut][iface] = n.rawOut
			}
			return true
		})
	}
	out := make([]*nset, 0, len(mapNames))
	for _, n := range mapNames {
		out = append(out, &nset{name: n, kind: setIfaceMap, vmap: m[n]})
	}
	return out
}

// ---- outgoing NAT ----------------------------------------------------

// natObjects renders outgoing NAT (calico.md §5.6): traffic whose source
// is in a natOutgoing pool and whose destination is in no pool (nor an
// excluded destination) is masqueraded, with fully random ports — or, for
// IPv4 with a natOutgoingAddress, SNATed to it, TCP and UDP into the
// natPortRange when one is set.
func natObjects(c dataplane.NATConfig) ([]*nset, *nchain) {
	noMasq := append(append([]netip.Prefix(nil), c.AllPools...), c.ExcludeDests...)
	sets := []*nset{
		{name: setNATMasq4, kind: setAddr4, spans: spansOf(c.MasqPools, true)},
		{name: setNATMasq6, kind: setAddr6, spans: spansOf(c.MasqPools, false)},
		{name: setNATNoMasq4, kind: setAddr4, spans: spansOf(noMasq, true)},
		{name: setNATNoMasq6, kind: setAddr6, spans: spansOf(noMasq, false)},
	}
	match := func(v uint8, masq, noMasq string) *rb {
		return (&rb{}).family(v).inSet(v, true, masq, false).inSet(v, false, noMasq, true)
	}
	var rules []*rb
	if c.SNATAddress.IsValid() && c.SNATAddress.Is4() {
		if c.PortMin != 0 {
			for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				rules = append(rules, match(4, setNATMasq4, setNATNoMasq4).l4proto(proto, false).counter().snat(c.SNATAddress, c.PortMin, c.PortMax))
			}
		}
		rules = append(rules, match(4, setNATMasq4, setNATNoMasq4).counter().snat(c.SNATAddress, 0, 0))
	} else {
		rules = append(rules, match(4, setNATMasq4, setNATNoMasq4).counter().masquerade())
	}
	rules = append(rules, match(6, setNATMasq6, setNATNoMasq6).counter().masquerade())
	ch := chainOf(chainNAT, rules)
	ch.hook = baseHook(nftables.ChainHookPostrouting, 100, nftables.ChainTypeNAT)
	return sets, ch
}
