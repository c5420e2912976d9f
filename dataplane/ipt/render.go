package ipt

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
)

// The tables, and what weft's chains do in each (every built-in chain
// named here gets one jump, at the top, to weft-<BUILT-IN>):
//
//	raw    PREROUTING   host endpoints: failsafe, doNotTrack ingress
//	raw    OUTPUT       host endpoints: failsafe, doNotTrack egress
//	mangle PREROUTING   host endpoints: preDNAT
//	filter INPUT        workloads' egress to the host, endpoint-to-host action, host endpoints' ingress
//	filter FORWARD      workloads' egress, workloads' ingress, host endpoints with applyOnForward
//	filter OUTPUT       host endpoints' egress
//	nat    POSTROUTING  outgoing NAT
//
// nftables runs each check in a base chain of its own, where an accept
// ends that chain only. In iptables an ACCEPT ends the whole hook, so an
// Allow sets [dataplane.PolicyMarkAllow] and returns instead (through the
// weft-allow chain, entered with a goto: it returns to the endpoint
// chain's caller); each endpoint chain returns only when its policy
// allowed the packet and drops otherwise, and the top chain ACCEPTs at its
// end when a check allowed the packet and none dropped it. Traffic weft
// does not police returns to the built-in chain, so foreign rules still
// decide about it.
const (
	tFilter = "filter"
	tMangle = "mangle"
	tRaw    = "raw"
	tNAT    = "nat"

	chainAllow   = "weft-allow"    // sets the allow mark (falls off: returns to the caller's caller)
	chainAllowNT = "weft-allow-nt" // untracked Allow: allow and accepted marks, no conntrack
	chainPass    = "weft-pass"     // sets the pass mark

	chainWlFrom    = "weft-wl-from"
	chainWlTo      = "weft-wl-to"
	chainHepIn     = "weft-hep-in"
	chainHepOut    = "weft-hep-out"
	chainHepFwdIn  = "weft-hep-fwd-in"
	chainHepFwdOut = "weft-hep-fwd-out"
	chainHepPre    = "weft-hep-pre"
	chainHepRawIn  = "weft-hep-raw-in"
	chainHepRawOut = "weft-hep-raw-out"

	// jumpTag is the comment of the jumps from the built-in chains.
	jumpTag = "weft:jump"
	// tagPrefix starts every comment weft writes.
	tagPrefix = "weft:"

	// maxChainName is the longest iptables chain name.
	maxChainName = 28
)

// builtins are the built-in chains weft jumps from, by table.
var builtins = map[string][]string{
	tRaw:    {"PREROUTING", "OUTPUT"},
	tMangle: {"PREROUTING"},
	tFilter: {"INPUT", "FORWARD", "OUTPUT"},
	tNAT:    {"POSTROUTING"},
}

// tables in the order they are written.
var tables = []string{tRaw, tMangle, tFilter, tNAT}

// topChain is weft's chain a built-in chain jumps to.
func topChain(builtin string) string { return "weft-" + builtin }

// renderConfig is the static configuration of the renderer.
type renderConfig struct {
	ifacePrefix string
}

func (c renderConfig) wildcard() string { return c.ifacePrefix + "+" }

// ---- names ---------------------------------------------------------------

// chainName is the kernel name of a model chain ID: "weft-<id>", or, when
// that is too long for iptables, "weft-<kind>H<hash>" (H cannot appear in
// the IDs, which are made of DNS names).
func chainName(id string) string {
	if n := "weft-" + id; len(n) <= maxChainName {
		return n
	}
	kind := ""
	if i := strings.IndexAny(id, "-."); i >= 0 && i < 4 {
		kind = id[:i+1]
	}
	sum := sha256.Sum256([]byte(id))
	return "weft-" + kind + "H" + hex.EncodeToString(sum[:6])
}

// setName is the ipset of a model set ID for one family.
func setName(id string, v uint8) string {
	return fmt.Sprintf("weft%d-%s", v, id)
}

// ---- the model -------------------------------------------------------------

// irule is one rule: its matches, its target, and the comment that tags it.
type irule struct {
	match, target string
	tag           string
}

// line is the rule as iptables-restore reads it, after "-A <chain> ".
func (r irule) line() string {
	var b strings.Builder
	if r.match != "" {
		b.WriteString(r.match)
		b.WriteByte(' ')
	}
	b.WriteString("-m comment --comment ")
	b.WriteString(r.tag)
	b.WriteString(" ")
	b.WriteString(r.target)
	return b.String()
}

// ichain is one chain of one family and table.
type ichain struct {
	fam   uint8
	table string
	name  string
	rules []irule
	// owner and direction of policy and profile chains (counters).
	owner *dataplane.PolicyRef
	dir   dataplane.Direction
}

// key is the chain's key in the model.
func (c *ichain) key() string { return chainKey(c.fam, c.table, c.name) }

func chainKey(fam uint8, table, name string) string {
	return strconv.Itoa(int(fam)) + " " + table + " " + name
}

// strip drops the rules' text once the chain is in the kernel.
func (c *ichain) strip() {
	for i := range c.rules {
		c.rules[i].match, c.rules[i].target = "", ""
	}
}

func (c *ichain) tags() []string {
	out := make([]string, len(c.rules))
	for i, r := range c.rules {
		out[i] = r.tag
	}
	return out
}

func (c *ichain) equal(o *ichain) bool {
	if c == o {
		return true
	}
	return c != nil && o != nil && c.key() == o.key() && slices.Equal(c.tags(), o.tags())
}

// tag stamps each rule with "weft:<content hash>:<position>" (plus
// ":r<index>" for policy rules: the API rule it comes from). The hash
// covers the chain's family, table, name and every rule, so a chain whose
// content changes gets new tags in every rule: reading the tags back
// (iptables-save) tells whether the kernel holds the chain as wanted.
func (c *ichain) tag(ruleIdx []int) {
	h := sha256.New()
	fmt.Fprintf(h, "v1|%d|%s|%s\n", c.fam, c.table, c.name)
	for _, r := range c.rules {
		h.Write([]byte(r.match))
		h.Write([]byte{'|'})
		h.Write([]byte(r.target))
		h.Write([]byte{'\n'})
	}
	sum := hex.EncodeToString(h.Sum(nil)[:6])
	for i := range c.rules {
		idx := -1
		if ruleIdx != nil {
			idx = ruleIdx[i]
		}
		c.rules[i].tag = tagPrefix + firewall.RuleTag(sum, i, idx)
	}
}

// Set types.
const (
	typeNet    = "hash:net"
	typeIPPort = "hash:ip,port"
)

// iset is one ipset: its members in canonical text (sorted).
type iset struct {
	name    string
	typ     string
	fam     uint8
	members []string
}

func (s *iset) equal(o *iset) bool {
	if s == o {
		return true
	}
	return s != nil && o != nil && s.name == o.name && s.typ == o.typ && s.fam == o.fam && slices.Equal(s.members, o.members)
}

// netMember is the canonical member text of a prefix in a hash:net set
// (as ipset prints it: a host without its length).
func netMember(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// netMembers renders prefixes of family v; a /0 (which hash:net cannot
// hold) becomes its two halves.
func netMembers(ps []netip.Prefix, v uint8) []string {
	var out []string
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is4() != (v == 4) {
			continue
		}
		p = p.Masked()
		if p.Bits() == 0 {
			lo := netip.PrefixFrom(p.Addr(), 1)
			b := p.Addr().AsSlice()
			b[0] = 0x80
			hiAddr, _ := netip.AddrFromSlice(b)
			out = append(out, netMember(lo), netMember(netip.PrefixFrom(hiAddr, 1)))
			continue
		}
		out = append(out, netMember(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func protoName(p uint8) string {
	switch p {
	case dataplane.ProtoTCP:
		return "tcp"
	case dataplane.ProtoUDP:
		return "udp"
	case dataplane.ProtoSCTP:
		return "sctp"
	case dataplane.ProtoICMP:
		return "icmp"
	case dataplane.ProtoICMPv6:
		return "ipv6-icmp"
	}
	return strconv.Itoa(int(p))
}

func portMember(m dataplane.NamedPort) string {
	return fmt.Sprintf("%s,%s:%d", m.Addr, protoName(m.Proto), m.Port)
}

func addrSets(id string, s *dataplane.AddrSet) [2]*iset {
	return [2]*iset{
		{name: setName(id, 4), typ: typeNet, fam: 4, members: netMembers(s.Members, 4)},
		{name: setName(id, 6), typ: typeNet, fam: 6, members: netMembers(s.Members, 6)},
	}
}

func portSets(id string, s *dataplane.PortSet) [2]*iset {
	out := [2]*iset{{name: setName(id, 4), typ: typeIPPort, fam: 4}, {name: setName(id, 6), typ: typeIPPort, fam: 6}}
	for _, m := range s.Members {
		i := 0
		if !m.Addr.Is4() {
			i = 1
		}
		out[i].members = append(out[i].members, portMember(m))
	}
	for _, s := range out {
		slices.Sort(s.members)
		s.members = slices.Compact(s.members)
	}
	return out
}

// ---- rule text -------------------------------------------------------------

func hexMark(v uint32) string { return fmt.Sprintf("0x%x", v) }

// markIs matches the bits of mask being bits.
func markIs(bits, mask uint32) string {
	return "-m mark --mark " + hexMark(bits) + "/" + hexMark(mask)
}

// setMark sets (on) or clears the bits.
func setMark(bits uint32, on bool) string {
	v := uint32(0)
	if on {
		v = bits
	}
	return "-j MARK --set-xmark " + hexMark(v) + "/" + hexMark(bits)
}

const (
	markAllow = dataplane.PolicyMarkAllow
	markPass  = dataplane.PolicyMarkPass
	markAcc   = dataplane.PolicyMarkAccepted
)

func ctEstablished() string { return "-m conntrack --ctstate RELATED,ESTABLISHED" }
func ctInvalid() string     { return "-m conntrack --ctstate INVALID" }

func portList(rs []dataplane.PortRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		if r.Min == r.Max {
			parts[i] = strconv.Itoa(int(r.Min))
		} else {
			parts[i] = fmt.Sprintf("%d:%d", r.Min, r.Max)
		}
	}
	return strings.Join(parts, ",")
}

// multiport matches ports (or, invert, none of them). A range counts
// twice towards multiport's 15 ports, so long lists become several
// matches: one of them must hold (positive: the caller splits rules), or
// all (negative: each excludes its part).
func multiport(src bool, rs []dataplane.PortRange, invert bool) []string {
	opt := "--dports"
	if src {
		opt = "--sports"
	}
	not := ""
	if invert {
		not = "! "
	}
	var out []string
	var cur []dataplane.PortRange
	weight := 0
	flush := func() {
		if len(cur) > 0 {
			out = append(out, "-m multiport "+not+opt+" "+portList(cur))
		}
		cur, weight = nil, 0
	}
	for _, r := range rs {
		w := 1
		if r.Min != r.Max {
			w = 2
		}
		if weight+w > 15 {
			flush()
		}
		cur = append(cur, r)
		weight += w
	}
	flush()
	return out
}

func side(v uint8, src bool, m *dataplane.AddrMatch, port *dataplane.PortRange) []string {
	dir := "dst"
	if src {
		dir = "src"
	}
	var out []string
	for _, s := range m.Sets {
		out = append(out, "-m set --match-set "+setName(s, v)+" "+dir)
	}
	for _, s := range m.NotSets {
		out = append(out, "-m set ! --match-set "+setName(s, v)+" "+dir)
	}
	if port != nil {
		out = append(out, multiport(src, []dataplane.PortRange{*port}, false)...)
	}
	if len(m.NotPorts) > 0 {
		out = append(out, multiport(src, m.NotPorts, true)...)
	}
	if m.PortSet != "" {
		out = append(out, "-m set --match-set "+setName(m.PortSet, v)+" "+dir+","+dir)
	}
	for _, s := range m.NotPortSets {
		out = append(out, "-m set ! --match-set "+setName(s, v)+" "+dir+","+dir)
	}
	return out
}

func icmpMatch(v uint8, m *dataplane.ICMPMatch, invert bool) string {
	t := strconv.Itoa(int(m.Type))
	if m.Code >= 0 {
		t += "/" + strconv.Itoa(int(m.Code))
	}
	not := ""
	if invert {
		not = "! "
	}
	if v == 6 {
		return "-m icmp6 " + not + "--icmpv6-type " + t
	}
	return "-m icmp " + not + "--icmp-type " + t
}

// ruleMatches renders the match part of one rule for family v: one
// string per port range alternative; none when the rule cannot match in
// that family.
func ruleMatches(r *dataplane.PolicyRule, v uint8) []string {
	if !slices.Contains(r.Families(), v) {
		return nil
	}
	var base []string
	switch {
	case r.Protocol != 0 && r.NotProtocol == r.Protocol:
		return nil // never matches
	case r.Protocol != 0:
		base = append(base, "-p "+protoName(r.Protocol))
	case r.NotProtocol != 0:
		base = append(base, "! -p "+protoName(r.NotProtocol))
	}
	if r.ICMP != nil {
		base = append(base, icmpMatch(v, r.ICMP, false))
	}
	if r.NotICMP != nil {
		base = append(base, icmpMatch(v, r.NotICMP, true))
	}
	var out []string
	for _, sp := range dataplane.PortAlternatives(r.Src.Ports) {
		for _, dp := range dataplane.PortAlternatives(r.Dst.Ports) {
			parts := slices.Concat(base, side(v, true, &r.Src, sp), side(v, false, &r.Dst, dp))
			out = append(out, strings.Join(parts, " "))
		}
	}
	return out
}

// logPrefix is the LOG prefix of a Log rule: iptables allows 29
// characters, so a long policy name is cut (the rule's comment and the
// counters name it in full).
func logPrefix(c *dataplane.PolicyChain, idx int) string {
	d := "i"
	if c.Direction == dataplane.Egress {
		d = "o"
	}
	tail := fmt.Sprintf(" %s%d: ", d, idx)
	name := c.Policy.Name
	if c.Policy.Namespace != "" {
		name = c.Policy.Namespace + "/" + name
	}
	head := "weft "
	if room := 29 - len(head) - len(tail); len(name) > room {
		name = name[:room]
	}
	return strconv.Quote(head + name + tail)
}

// tableOf is the table of a stage's chains.
func tableOf(s dataplane.ChainStage) string {
	switch s {
	case dataplane.StagePreDNAT:
		return tMangle
	case dataplane.StageUntracked:
		return tRaw
	}
	return tFilter
}

// policyChain renders one policy or profile for family v.
func policyChain(id string, c *dataplane.PolicyChain, v uint8) *ichain {
	out := &ichain{fam: v, table: tableOf(c.Stage), name: chainName(id), owner: &c.Policy, dir: c.Direction}
	profile := c.Policy.Kind == "Profile"
	var idx []int
	for i := range c.Rules {
		r := &c.Rules[i]
		var target string
		switch r.Action {
		case dataplane.ActionAllow:
			target = "-g " + chainAllow
			if c.Stage == dataplane.StageUntracked {
				target = "-g " + chainAllowNT
			}
		case dataplane.ActionDeny:
			target = "-j DROP"
		case dataplane.ActionPass:
			target = "-j RETURN"
			if !profile {
				target = "-g " + chainPass
			}
		case dataplane.ActionLog:
			target = "-j LOG --log-prefix " + logPrefix(c, r.Index)
		}
		for _, m := range ruleMatches(r, v) {
			out.rules = append(out.rules, irule{match: m, target: target})
			idx = append(idx, r.Index)
		}
	}
	out.tag(idx)
	return out
}

// ---- endpoint chains ---------------------------------------------------------

// rb collects the rules of a fixed or endpoint chain.
type rb []irule

func (b *rb) add(match, target string) { *b = append(*b, irule{match: match, target: target}) }

// direction renders an endpoint's tiers and profiles for one direction:
// each tier's policies are jumped to while the pass mark is clear, and
// the endpoint chain returns as soon as one allowed; a tier that applies
// ends with a drop (unless its defaultAction is Pass); the profiles
// follow; the end drops (stage normal) or returns (preDNAT, untracked:
// normal policy decides later).
func direction(b *rb, d *dataplane.DirectionPolicy, stage dataplane.ChainStage) {
	allowed := markIs(markAllow, markAllow)
	for _, t := range d.Tiers {
		b.add("", setMark(markPass, false))
		for _, id := range t.Policies {
			b.add(markIs(0, markPass), "-j "+chainName(id))
			b.add(allowed, "-j RETURN")
		}
		if !t.EndPass && stage == dataplane.StageNormal {
			b.add(markIs(0, markPass), "-j DROP")
		}
	}
	if len(d.Tiers) > 0 {
		b.add("", setMark(markPass, false))
	}
	for _, id := range d.Profiles {
		b.add("", "-j "+chainName(id))
		b.add(allowed, "-j RETURN")
	}
	if stage == dataplane.StageNormal {
		b.add("", "-j DROP")
	}
}

// clearMarks starts an endpoint chain: no allow or pass from before.
func clearMarks(b *rb) {
	b.add("-m mark ! --mark 0x0/"+hexMark(markAllow|markPass), setMark(markAllow|markPass, false))
}

func chainOf(fam uint8, table, name string, b rb) *ichain {
	c := &ichain{fam: fam, table: table, name: name, rules: b}
	c.tag(nil)
	return c
}

// workloadChains are a workload's from (egress) and to (ingress) chains.
func workloadChains(iface string, e *dataplane.EndpointPolicy, st dataplane.PolicySettings, v uint8) (*ichain, *ichain) {
	var from, to rb
	clearMarks(&from)
	clearMarks(&to)
	if st.VXLANPort != 0 {
		// Workloads may not send VXLAN packets (Calico's
		// allowVXLANPacketsFromWorkloads false).
		from.add("-p udp "+multiport(false, []dataplane.PortRange{{Min: st.VXLANPort, Max: st.VXLANPort}}, false)[0], "-j DROP")
	}
	if st.DropIPIP && v == 4 {
		// Nor IP-in-IP packets (allowIPIPPacketsFromWorkloads false).
		from.add("-p 4", "-j DROP")
	}
	direction(&from, &e.Egress, dataplane.StageNormal)
	direction(&to, &e.Ingress, dataplane.StageNormal)
	return chainOf(v, tFilter, chainName("fw-"+iface), from), chainOf(v, tFilter, chainName("tw-"+iface), to)
}

// hostChainNames are the chains of a host endpoint ("*" gets "-all").
type hostChainNames struct{ in, out, fwdIn, fwdOut, pre, rawIn, rawOut string }

func hostNames(h *dataplane.HostEndpointPolicy) hostChainNames {
	suffix := "." + h.Name
	if h.Iface == dataplane.HostIfaceAll {
		suffix = "-all"
	}
	return hostChainNames{
		in: chainName("fh" + suffix), out: chainName("th" + suffix), fwdIn: chainName("fhf" + suffix), fwdOut: chainName("thf" + suffix),
		pre: chainName("fhp" + suffix), rawIn: chainName("fhu" + suffix), rawOut: chainName("thu" + suffix),
	}
}

// failsafe renders the failsafe rules of one direction: the ports open
// in that direction, and replies from the ports open in the other.
func failsafe(b *rb, open, replies []dataplane.ProtoPort, in bool, v uint8) {
	for _, pp := range open {
		failsafeRule(b, pp, in, false, v)
	}
	for _, pp := range replies {
		failsafeRule(b, pp, in, true, v)
	}
}

// failsafeRule allows a failsafe port: inbound to the port (or, reply,
// outbound from it), the remote side within the port's net if it has one.
func failsafeRule(b *rb, pp dataplane.ProtoPort, in, reply bool, v uint8) {
	var parts []string
	if pp.Net.IsValid() {
		if pp.Net.Addr().Is4() != (v == 4) {
			return
		}
		// The remote side: the source of inbound traffic, the
		// destination of outbound.
		opt := "-d "
		if in {
			opt = "-s "
		}
		parts = append(parts, opt+pp.Net.Masked().String())
	}
	parts = append(parts, "-p "+protoName(pp.Proto))
	// The failsafe port is the destination of the traffic it opens, and
	// the source of the replies.
	parts = append(parts, multiport(reply, []dataplane.PortRange{{Min: pp.Port, Max: pp.Port}}, false)...)
	b.add(strings.Join(parts, " "), "-g "+chainAllow)
}

// hostChains are a host endpoint's chains for family v.
func hostChains(h *dataplane.HostEndpointPolicy, st dataplane.PolicySettings, v uint8) []*ichain {
	n := hostNames(h)
	var in, out rb
	clearMarks(&in)
	clearMarks(&out)
	failsafe(&in, st.FailsafeIn, st.FailsafeOut, true, v)
	failsafe(&out, st.FailsafeOut, st.FailsafeIn, false, v)
	direction(&in, &h.Ingress, dataplane.StageNormal)
	direction(&out, &h.Egress, dataplane.StageNormal)
	chains := []*ichain{chainOf(v, tFilter, n.in, in), chainOf(v, tFilter, n.out, out)}
	opt := func(name, table string, d *dataplane.DirectionPolicy, stage dataplane.ChainStage, fs, inbound bool) {
		if d == nil {
			return
		}
		var b rb
		clearMarks(&b)
		if fs {
			if inbound {
				failsafe(&b, st.FailsafeIn, st.FailsafeOut, true, v)
			} else {
				failsafe(&b, st.FailsafeOut, st.FailsafeIn, false, v)
			}
		}
		direction(&b, d, stage)
		chains = append(chains, chainOf(v, table, name, b))
	}
	opt(n.fwdIn, tFilter, h.ForwardIngress, dataplane.StageNormal, false, true)
	opt(n.fwdOut, tFilter, h.ForwardEgress, dataplane.StageNormal, false, false)
	opt(n.pre, tMangle, h.PreDNAT, dataplane.StagePreDNAT, false, true)
	opt(n.rawIn, tRaw, h.UntrackedIngress, dataplane.StageUntracked, true, true)
	opt(n.rawOut, tRaw, h.UntrackedEgress, dataplane.StageUntracked, true, false)
	return chains
}

// ---- fixed chains ------------------------------------------------------------

// fixedChains are the top, dispatch and helper chains of family v.
func fixedChains(cfg renderConfig, p *dataplane.PolicyState, v uint8) []*ichain {
	wl := cfg.wildcard()
	st := p.Settings
	var chains []*ichain
	mk := func(table, name string, b rb) { chains = append(chains, chainOf(v, table, name, b)) }

	// Helpers: an Allow or failsafe leaves its chain with a goto to
	// weft-allow, which sets the mark and, falling off its end, returns
	// to the caller of that chain.
	for _, t := range []string{tRaw, tMangle, tFilter} {
		mk(t, chainAllow, rb{{target: setMark(markAllow, true)}})
		mk(t, chainPass, rb{{target: setMark(markPass, true)}})
	}
	mk(tRaw, chainAllowNT, rb{{target: setMark(markAllow|markAcc, true)}, {target: "-j CT --notrack"}})

	// Dispatch chains, by interface; the "*" host endpoint last.
	type disp struct {
		table, name, opt string
		pick             func(n hostChainNames, h *dataplane.HostEndpointPolicy) string
	}
	disps := []disp{
		{tFilter, chainHepIn, "-i", func(n hostChainNames, _ *dataplane.HostEndpointPolicy) string { return n.in }},
		{tFilter, chainHepOut, "-o", func(n hostChainNames, _ *dataplane.HostEndpointPolicy) string { return n.out }},
		{tFilter, chainHepFwdIn, "-i", func(n hostChainNames, h *dataplane.HostEndpointPolicy) string {
			return pick(h.ForwardIngress != nil, n.fwdIn)
		}},
		{tFilter, chainHepFwdOut, "-o", func(n hostChainNames, h *dataplane.HostEndpointPolicy) string {
			return pick(h.ForwardEgress != nil, n.fwdOut)
		}},
		{tMangle, chainHepPre, "-i", func(n hostChainNames, h *dataplane.HostEndpointPolicy) string { return pick(h.PreDNAT != nil, n.pre) }},
		{tRaw, chainHepRawIn, "-i", func(n hostChainNames, h *dataplane.HostEndpointPolicy) string {
			return pick(h.UntrackedIngress != nil, n.rawIn)
		}},
		{tRaw, chainHepRawOut, "-o", func(n hostChainNames, h *dataplane.HostEndpointPolicy) string {
			return pick(h.UntrackedEgress != nil, n.rawOut)
		}},
	}
	hosts := p.Hosts.Keys()
	slices.Sort(hosts)
	for _, d := range disps {
		var b rb
		var all string
		for _, iface := range hosts {
			h, _ := p.Hosts.Get(iface)
			target := d.pick(hostNames(h), h)
			if target == "" {
				continue
			}
			if iface == dataplane.HostIfaceAll {
				all = target
				continue
			}
			b.add(d.opt+" "+iface, "-g "+target)
		}
		if all != "" {
			b.add("! "+d.opt+" lo", "-g "+all)
		}
		mk(d.table, d.name, b)
	}
	wls := p.Workloads.Keys()
	slices.Sort(wls)
	var from, to rb
	for _, iface := range wls {
		from.add("-i "+iface, "-g "+chainName("fw-"+iface))
		to.add("-o "+iface, "-g "+chainName("tw-"+iface))
	}
	// Fail closed: a workload-shaped interface no workload policy names.
	from.add("", "-j DROP")
	to.add("", "-j DROP")
	mk(tFilter, chainWlFrom, from)
	mk(tFilter, chainWlTo, to)

	allowedAccept := func(b *rb) { b.add(markIs(markAllow, markAllow), "-j ACCEPT") }
	start := func(b *rb) {
		clearMarks(b)
		b.add(ctEstablished(), "-j ACCEPT")
		b.add(ctInvalid(), "-j DROP")
		b.add(markIs(markAcc, markAcc), "-j ACCEPT")
	}
	// iptables matches interface names by prefix only. weft's own devices
	// (weft.vxlan, weft.ipip) start with the prefix and a '.', which a
	// workload interface (the prefix and hex digits) never has: each top
	// chain sends those to its host part first, then the rest of the
	// prefix to its workload part.
	dotted := cfg.ifacePrefix + ".+"
	split := func(table, top, opt string, pre, wlPart, hostPart rb) {
		host := top + "-host"
		b := pre
		b.add(opt+" "+dotted, "-g "+host)
		b = append(b, wlPart...)
		b.add("", "-g "+host)
		mk(table, top, b)
		mk(table, host, hostPart)
	}
	_, allPresent := p.Hosts.Get(dataplane.HostIfaceAll)

	// filter INPUT: workloads' egress to the host and what then happens
	// to it; host endpoints' ingress.
	var input, inputHost rb
	start(&input)
	var inWl rb
	if v == 6 {
		// IPv6 router and neighbour discovery between a workload and its
		// host is never subject to policy.
		for t := 133; t <= 136; t++ {
			inWl.add(fmt.Sprintf("-i %s -p ipv6-icmp -m icmp6 --icmpv6-type %d", wl, t), "-j ACCEPT")
		}
	}
	inWl.add("-i "+wl, "-j "+chainWlFrom)
	switch st.EndpointToHost {
	case dataplane.EndpointToHostDrop:
		inWl.add("-i "+wl, "-j DROP")
	case dataplane.EndpointToHostReturn:
		if allPresent {
			h, _ := p.Hosts.Get(dataplane.HostIfaceAll)
			inWl.add("-i "+wl, "-j "+hostNames(h).in)
		}
		inWl.add("-i "+wl, "-j ACCEPT")
	default:
		inWl.add("-i "+wl, "-j ACCEPT")
	}
	inputHost.add("", "-j "+chainHepIn)
	allowedAccept(&inputHost)
	split(tFilter, topChain("INPUT"), "-i", input, inWl, inputHost)

	// filter FORWARD: the source workload's egress or the ingress host
	// endpoint (applyOnForward); then (weft-FORWARD-out) the destination
	// workload's ingress or the egress host endpoint.
	var fwd rb
	start(&fwd)
	fwdOut := topChain("FORWARD") + "-out"
	fwd.add("-i "+dotted, "-j "+chainHepFwdIn)
	fwd.add("-i "+dotted, "-g "+fwdOut)
	fwd.add("-i "+wl, "-j "+chainWlFrom)
	fwd.add("-i "+wl, "-g "+fwdOut)
	fwd.add("", "-j "+chainHepFwdIn)
	fwd.add("", "-g "+fwdOut)
	mk(tFilter, topChain("FORWARD"), fwd)
	var outWl, outHost rb
	outWl.add("-o "+wl, "-j "+chainWlTo)
	allowedAccept(&outWl)
	outHost.add("", "-j "+chainHepFwdOut)
	allowedAccept(&outHost)
	split(tFilter, fwdOut, "-o", nil, outWl, outHost)

	// filter OUTPUT: the host reaches its workloads (as in Calico); host
	// endpoints' egress.
	var output, outputWl, outputHost rb
	start(&output)
	outputWl.add("-o "+wl, "-j ACCEPT")
	outputHost.add("", "-j "+chainHepOut)
	allowedAccept(&outputHost)
	split(tFilter, topChain("OUTPUT"), "-o", output, outputWl, outputHost)

	// mangle PREROUTING: preDNAT policy of host endpoints.
	var pre, preWl, preHost rb
	pre.add(ctEstablished(), "-j RETURN")
	preWl.add("-i "+wl, "-j RETURN")
	preHost.add("", "-j "+chainHepPre)
	clearMarks(&preHost)
	split(tMangle, topChain("PREROUTING"), "-i", pre, preWl, preHost)

	// raw: failsafe and untracked policy of host endpoints.
	var rawWlIn, rawHostIn, rawWlOut, rawHostOut rb
	rawWlIn.add("-i "+wl, "-j RETURN")
	rawHostIn.add("", "-j "+chainHepRawIn)
	clearMarks(&rawHostIn)
	split(tRaw, topChain("PREROUTING"), "-i", nil, rawWlIn, rawHostIn)
	rawWlOut.add("-o "+wl, "-j RETURN")
	rawHostOut.add("", "-j "+chainHepRawOut)
	clearMarks(&rawHostOut)
	split(tRaw, topChain("OUTPUT"), "-o", nil, rawWlOut, rawHostOut)
	return chains
}

func pick(ok bool, name string) string {
	if ok {
		return name
	}
	return ""
}

// ---- outgoing NAT --------------------------------------------------------------

// NAT set names.
func natSetNames(v uint8) (masq, noMasq string) {
	return fmt.Sprintf("weft%d-nat-masq", v), fmt.Sprintf("weft%d-nat-nomasq", v)
}

// natObjects renders outgoing NAT (calico.md §5.6) for family v: traffic
// whose source is in a natOutgoing pool and whose destination is in no
// pool (nor an excluded destination) is masqueraded with fully random
// ports — or, for IPv4 with a natOutgoingAddress, SNATed to it, TCP and
// UDP into the natPortRange when one is set.
func natObjects(c dataplane.NATConfig, v uint8) ([2]*iset, *ichain) {
	masq, noMasq := natSetNames(v)
	sets := [2]*iset{
		{name: masq, typ: typeNet, fam: v, members: netMembers(c.MasqPools, v)},
		{name: noMasq, typ: typeNet, fam: v, members: netMembers(slices.Concat(c.AllPools, c.ExcludeDests), v)},
	}
	match := "-m set --match-set " + masq + " src -m set ! --match-set " + noMasq + " dst"
	var b rb
	if v == 4 && c.SNATAddress.IsValid() && c.SNATAddress.Is4() {
		if c.PortMin != 0 {
			for _, proto := range []string{"tcp", "udp"} {
				b.add(match+" -p "+proto, fmt.Sprintf("-j SNAT --to-source %s:%d-%d --random-fully", c.SNATAddress, c.PortMin, c.PortMax))
			}
		}
		b.add(match, "-j SNAT --to-source "+c.SNATAddress.String()+" --random-fully")
	} else {
		b.add(match, "-j MASQUERADE --random-fully")
	}
	return sets, chainOf(v, tNAT, topChain("POSTROUTING"), b)
}
