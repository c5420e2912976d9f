package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
)

// Annotations weft keeps on a Node about its WireGuard device (Calico's
// Node has only status.wireguardPublicKey, which weft fills as Calico
// does).
const (
	// AnnotationWireGuardNextKey is the public key a node is rotating to:
	// its own device already uses it, the other nodes still use
	// status.wireguardPublicKey until the node publishes it there.
	AnnotationWireGuardNextKey = "weft.io/wireguard-next-public-key"
	// AnnotationWireGuardPort is the node's WireGuard listen port (the
	// other nodes' endpoint for it; absent: their own port, as Calico).
	AnnotationWireGuardPort = "weft.io/wireguard-listen-port"
	// AnnotationWireGuardHostEncryption is "true" when the node encrypts
	// host-to-host traffic: two nodes do it only when both say so, or
	// one would drop the other's host traffic.
	AnnotationWireGuardHostEncryption = "weft.io/wireguard-host-encryption"
)

// WireGuardConfig is the [wireguard] configuration the calculation needs.
type WireGuardConfig struct {
	Enabled bool
	// Interface is the device name.
	Interface  string
	ListenPort int
	// Require: never reach another node unencrypted; a node without a
	// usable key is not reached at all (its addresses are blackholed).
	Require bool
	// HostEncryption also routes the other nodes' own addresses through
	// the device (with nodes that do the same).
	HostEncryption      bool
	PersistentKeepalive time.Duration
}

// NodeWireGuard is what a Node publishes about its WireGuard device.
type NodeWireGuard struct {
	// PublicKey is status.wireguardPublicKey (zero: none, or malformed).
	PublicKey dataplane.WireGuardKey
	// BadKey is the published key when it does not decode.
	BadKey string
	// NextKey is the key the node is rotating to (its own business).
	NextKey dataplane.WireGuardKey
	// Addr4 and Addr6 are spec.wireguard.interfaceIPv4Address/IPv6Address.
	Addr4, Addr6 netip.Addr
	// ListenPort is the published listen port, 0 when unknown.
	ListenPort int
	// HostEncryption: the node encrypts host-to-host traffic.
	HostEncryption bool
}

func decodeWireGuard(n *api.Node) NodeWireGuard {
	var w NodeWireGuard
	if s := n.Status.WireguardPublicKey; s != "" {
		if k, err := dataplane.ParseWireGuardKey(s); err == nil && !k.IsZero() {
			w.PublicKey = k
		} else {
			w.BadKey = s
		}
	}
	ann := n.Metadata.Annotations
	if k, err := dataplane.ParseWireGuardKey(ann[AnnotationWireGuardNextKey]); err == nil {
		w.NextKey = k
	}
	if p, err := strconv.Atoi(ann[AnnotationWireGuardPort]); err == nil && p > 0 && p <= 65535 {
		w.ListenPort = p
	}
	w.HostEncryption = ann[AnnotationWireGuardHostEncryption] == "true"
	if s := n.Spec.Wireguard; s != nil {
		if a, err := netip.ParseAddr(s.InterfaceIPv4Address); err == nil && a.Is4() {
			w.Addr4 = a
		}
		if a, err := netip.ParseAddr(s.InterfaceIPv6Address); err == nil && a.Is6() && !a.Is4In6() {
			w.Addr6 = a
		}
	}
	return w
}

// WireGuardOverhead is the WireGuard encapsulation overhead of this node:
// its tunnels run over its IPv4 underlay when it has one (60 bytes), over
// IPv6 otherwise (80).
func (c Config) WireGuardOverhead() int {
	if !c.Address.IsValid() && c.Address6.IsValid() {
		return dataplane.OverheadWireGuardV6
	}
	return dataplane.OverheadWireGuardV4
}

// wireGuardSettings is the [wireguard] configuration with the
// FelixConfiguration wireguard* fields weft applies laid over it (a set
// field wins, as for VXLAN): wireguardListeningPort, wireguardKeepAlive,
// wireguardHostEncryptionEnabled, wireguardMTU and
// wireguardRoutingRulePriority. Switching WireGuard on or off and the
// device's name stay the config file's (the key and the device are set up
// at the agent's start); api.FelixFields refuses those fields.
type wireGuardSettings struct {
	WireGuardConfig
	// MTU is wireguardMTU, 0 when unset (the underlay's less the
	// overhead).
	MTU int
	// RulePriority is the priority of the "not fwmark" rule.
	RulePriority int
}

// wireGuard returns the node's WireGuard settings and a problem ("" if
// none) with a FelixConfiguration value it could not take.
func (e Env) wireGuard() (wireGuardSettings, string) {
	s := wireGuardSettings{WireGuardConfig: e.Config.WireGuard, RulePriority: dataplane.RulePriorityWireGuard}
	f := e.Topology.Felix
	problem := ""
	if p := deref(f.WireguardListeningPort); p > 0 {
		vxlanPort := e.Config.VXLANPort
		if v := deref(f.VXLANPort); v > 0 {
			vxlanPort = v
		}
		if p == vxlanPort {
			problem = fmt.Sprintf("FelixConfiguration wireguardListeningPort %d is the VXLAN port: the config file's listen port %d is kept", p, s.ListenPort)
		} else {
			s.ListenPort = p
		}
	}
	if d := f.WireguardKeepAlive; d != nil {
		s.PersistentKeepalive = d.Duration
	}
	if h := f.WireguardHostEncryptionEnabled; h != nil {
		s.HostEncryption = *h
	}
	s.MTU = deref(f.WireguardMTU)
	if p := deref(f.WireguardRoutingRulePriority); p > 0 {
		s.RulePriority = p
	}
	return s, problem
}

// mtu is the device's MTU: wireguardMTU, else the underlay's (as the node
// observes it, see Topology.UnderlayMTU) less the overhead (a larger one
// makes wireguard-go's batched sends fail outright, they are not
// fragmented), 0 when the underlay MTU is unknown (the driver's default).
// A wireguardMTU above that limit is used, and reported as a problem.
func (r *wireguard) mtu(wg wireGuardSettings, out *Output) int {
	u, _ := r.env.Topology.UnderlayMTU(r.env.Config.UnderlayMTU)
	limit := 0
	if u > 0 {
		limit = u - r.env.Config.WireGuardOverhead()
	}
	if wg.MTU > 0 {
		if limit > 0 && wg.MTU > limit {
			out.problem("wireguard: FelixConfiguration wireguardMTU %d is above the underlay MTU %d less WireGuard's overhead (%d): packets that large are dropped by the sender, not fragmented", wg.MTU, u, limit)
		}
		return wg.MTU
	}
	return limit
}

// wireguard is the resolver of the WireGuard device, its peers, and the
// routes and rules through it (calico.md §5.4). It runs before the VXLAN
// and block-route resolvers and tells them which nodes it routes
// (Output.wireguardOwns), so that traffic between two WireGuard nodes has
// one path only:
//
//   - a peer is every other node when both publish a usable key (present,
//     and no other node publishes it: a key claimed twice is used by
//     neither, as in Calico) and the peer has an underlay address;
//   - its allowed IPs are its affine blocks, the addresses it borrowed
//     from other blocks and its tunnel addresses (plus its own address
//     with host encryption on both sides); a borrowed address is more
//     specific than the block it lies in, so WireGuard's longest-prefix
//     match gives it to its holder;
//   - each allowed IP is routed through the device in [TableWireGuard],
//     looked up by every packet without the device's mark (the rule at
//     priority 99), and blackholed in the main table: when the device is
//     gone (its process killed, the module unloaded) the table's routes go
//     with it and the traffic is dropped, never sent in clear or over
//     VXLAN, also while the agent is down;
//   - an address inside a peer's allowed IPs that is not the peer's (a
//     local workload's, or another node's borrowed address) gets a throw
//     route in the table, so the main table decides;
//   - with wireguard.require, a node without a usable key is not reached
//     at all: its addresses are blackholed and it is listed as blocked.
//
// The other nodes keep the path their pools give them (VXLAN or native).
type wireguard struct{ env Env }

func newWireGuard(env Env) Resolver { return &wireguard{env: env} }

func (r *wireguard) Name() string { return "wireguard" }
func (r *wireguard) Kinds() []string {
	return []string{api.KindNode, api.KindIPPool, ipam.KindBlock, api.KindWorkloadEndpoint, api.KindFelixConfiguration, LocalKindLinks}
}
func (r *wireguard) OnUpdate(Update) {}

func (r *wireguard) Contribute(out *Output) {
	cfg := r.env.Config
	wg, settingsProblem := r.env.wireGuard()
	topo := r.env.Topology
	self := topo.Self()
	if !wg.Enabled || self == nil || wg.Interface == "" {
		return
	}
	if settingsProblem != "" {
		out.problem("wireguard: %s", settingsProblem)
	}
	dev := &dataplane.WireGuardDevice{
		ListenPort: wg.ListenPort,
		Mark:       dataplane.WireGuardMark,
		MTU:        r.mtu(wg, out),
		PublicKey:  self.WireGuard.PublicKey,
	}
	if !self.WireGuard.NextKey.IsZero() {
		dev.PublicKey = self.WireGuard.NextKey
	}
	for _, a := range []netip.Addr{self.WireGuard.Addr4, self.WireGuard.Addr6} {
		if a.IsValid() {
			dev.Addresses = append(dev.Addresses, netip.PrefixFrom(a, a.BitLen()))
		}
	}

	owners := map[dataplane.WireGuardKey][]string{}
	for _, name := range topo.NodeNames() {
		if k := topo.Nodes[name].WireGuard.PublicKey; !k.IsZero() {
			owners[k] = append(owners[k], name)
		}
	}
	// why a node's key cannot be used ("" when it can).
	keyProblem := func(n *NodeView) string {
		w := n.WireGuard
		switch {
		case w.BadKey != "":
			return "its published key " + strconv.Quote(w.BadKey) + " is malformed"
		case w.PublicKey.IsZero():
			return "it publishes no WireGuard key"
		case len(owners[w.PublicKey]) > 1:
			return "its public key is also published by " + strings.Join(slices.DeleteFunc(slices.Clone(owners[w.PublicKey]), func(s string) bool { return s == n.Name }), ", ") + " (a key claimed twice is used by neither)"
		case n.Name != cfg.NodeName && w.PublicKey == dev.PublicKey:
			return "its public key is this node's own"
		}
		return ""
	}
	selfProblem := keyProblem(self)
	if selfProblem != "" && (self.WireGuard.BadKey != "" || !self.WireGuard.PublicKey.IsZero()) {
		out.problem("wireguard: this node is not reached over WireGuard: %s", selfProblem)
	} else if selfProblem != "" && wg.Require {
		out.problem("wireguard: this node's key is not published yet; with wireguard.require no other node is reached until it is")
	}

	holdings := r.holdings()
	local := map[netip.Addr]bool{}
	for _, w := range out.Desired.Workloads {
		for _, p := range w.IPs {
			local[p.Addr()] = true
		}
	}
	out.wireguardOwns = map[string]bool{}
	routes := map[dataplane.RouteKey]dataplane.Route{}
	add := func(rt dataplane.Route) {
		if _, dup := routes[rt.Key()]; !dup {
			routes[rt.Key()] = rt
		}
	}
	blackhole := func(p netip.Prefix) {
		add(dataplane.Route{Dst: p, Class: dataplane.RouteClassWireGuard, Type: dataplane.RouteBlackhole})
	}
	var tablePrefixes []netip.Prefix
	var elsewhere []netip.Prefix // inside the cluster, not a peer's
	for a := range local {
		elsewhere = append(elsewhere, netip.PrefixFrom(a, a.BitLen()))
	}
	for _, name := range topo.NodeNames() {
		if name == cfg.NodeName {
			continue
		}
		n := topo.Nodes[name]
		problem := keyProblem(n)
		endpoint := r.endpoint(n, wg.ListenPort)
		owned := holdings[name]
		for _, a := range []netip.Addr{n.WireGuard.Addr4, n.WireGuard.Addr6} {
			if a.IsValid() && !containedIn(a, owned) {
				owned = append(owned, netip.PrefixFrom(a, a.BitLen()))
			}
		}
		switch {
		case selfProblem == "" && problem == "" && endpoint.IsValid():
			peer := dataplane.WireGuardPeer{
				Node: name, PublicKey: n.WireGuard.PublicKey, Endpoint: endpoint,
				AllowedIPs: slices.Clone(owned), PersistentKeepalive: wg.PersistentKeepalive,
			}
			if wg.HostEncryption && n.WireGuard.HostEncryption {
				for _, a := range []netip.Addr{n.Underlay, n.Underlay6} {
					if a.IsValid() {
						peer.AllowedIPs = append(peer.AllowedIPs, netip.PrefixFrom(a, a.BitLen()))
					}
				}
			}
			dev.Peers = append(dev.Peers, peer)
			out.wireguardOwns[name] = true
			for _, p := range peer.AllowedIPs {
				add(dataplane.Route{Dst: p, Table: dataplane.TableWireGuard, Class: dataplane.RouteClassWireGuard, Type: dataplane.RouteUnicast, Dev: wg.Interface})
				tablePrefixes = append(tablePrefixes, p)
			}
			// Fail closed: the main table never sends a peer's addresses
			// anywhere else (its own address stays routed: the tunnel
			// runs over it).
			for _, p := range owned {
				blackhole(p)
			}
		case wg.Require:
			why := problem
			if why == "" && selfProblem == "" {
				why = "it has no underlay address to reach it at"
			}
			if why != "" {
				out.problem("wireguard: node %s is not reached (wireguard.require is set): %s", name, why)
			}
			dev.Blocked = append(dev.Blocked, name)
			out.wireguardOwns[name] = true
			for _, p := range owned {
				blackhole(p)
			}
			elsewhere = append(elsewhere, owned...)
		default:
			if n.WireGuard.BadKey != "" || (!n.WireGuard.PublicKey.IsZero() && problem != "") {
				out.problem("wireguard: node %s is reached unencrypted: %s", name, problem)
			}
			elsewhere = append(elsewhere, owned...)
		}
	}
	for _, p := range elsewhere {
		if _, exact := routes[dataplane.RouteKey{Table: dataplane.TableWireGuard, Dst: p}]; !exact && strictlyInside(p, tablePrefixes) {
			add(dataplane.Route{Dst: p, Table: dataplane.TableWireGuard, Class: dataplane.RouteClassWireGuard, Type: dataplane.RouteThrow})
		}
	}
	families := map[int]bool{}
	for _, p := range tablePrefixes {
		families[family(p.Addr())] = true
	}
	for _, fam := range []int{4, 6} {
		if families[fam] {
			out.Desired.Rules = append(out.Desired.Rules, dataplane.Rule{
				Family: fam, Priority: wg.RulePriority, Table: dataplane.TableWireGuard,
				Mark: dataplane.WireGuardMark, Mask: dataplane.WireGuardMark, Invert: true,
			})
		}
	}
	for _, rt := range routes {
		out.Desired.Routes = append(out.Desired.Routes, rt)
	}
	out.Desired.WireGuard = dev
}

// endpoint is where n's device listens, in the family this node's tunnels
// use (IPv4 when both have it); zero when there is none. A node that
// publishes no port listens on ownPort (as Calico assumes).
func (r *wireguard) endpoint(n *NodeView, ownPort int) netip.AddrPort {
	cfg := r.env.Config
	port := n.WireGuard.ListenPort
	if port == 0 {
		port = ownPort
	}
	switch {
	case cfg.Address.IsValid() && n.Underlay.IsValid():
		return netip.AddrPortFrom(n.Underlay, uint16(port))
	case cfg.Address6.IsValid() && n.Underlay6.IsValid():
		return netip.AddrPortFrom(n.Underlay6, uint16(port))
	}
	return netip.AddrPort{}
}

// holdings maps every other node to the prefixes it owns: its affine
// blocks (of existing pools, as the block routes) and the addresses it
// holds in blocks that are not its own.
func (r *wireguard) holdings() map[string][]netip.Prefix {
	topo, me := r.env.Topology, r.env.Config.NodeName
	out := map[string][]netip.Prefix{}
	for _, name := range topo.BlockNames() {
		b := topo.Blocks[name]
		if topo.PoolFor(b.CIDR) == nil {
			continue
		}
		if b.Owner != "" && b.Owner != me {
			out[b.Owner] = append(out[b.Owner], b.CIDR)
		}
		borrowed := b.Borrowed()
		addrs := make([]netip.Addr, 0, len(borrowed))
		for a := range borrowed {
			addrs = append(addrs, a)
		}
		sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
		for _, a := range addrs {
			if holder := borrowed[a]; holder != me {
				out[holder] = append(out[holder], netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return out
}

func containedIn(a netip.Addr, ps []netip.Prefix) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// strictlyInside reports whether p lies inside one of ps and is not one
// of them.
func strictlyInside(p netip.Prefix, ps []netip.Prefix) bool {
	return slices.ContainsFunc(ps, func(q netip.Prefix) bool {
		return q.Bits() < p.Bits() && q.Contains(p.Addr())
	})
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// sanitizeWireGuard keeps the device valid: a peer that is invalid on its
// own is dropped, and an allowed IP two peers claim is taken from both
// (the store's invariants make both impossible; this is the safety net).
func sanitizeWireGuard(out *Output) {
	w := out.Desired.WireGuard
	if w == nil {
		return
	}
	claims := map[netip.Prefix]int{}
	var peers []dataplane.WireGuardPeer
	for _, p := range w.Peers {
		if err := p.Validate(); err != nil {
			out.problem("%v: left out", err)
			continue
		}
		peers = append(peers, p)
		for _, a := range p.AllowedIPs {
			claims[a]++
		}
	}
	for i, p := range peers {
		peers[i].AllowedIPs = slices.DeleteFunc(slices.Clone(p.AllowedIPs), func(a netip.Prefix) bool {
			if claims[a] > 1 {
				out.problem("wireguard peer %s: allowed IP %s left out: another peer claims it too", p.Node, a)
				return true
			}
			return false
		})
		sort.Slice(peers[i].AllowedIPs, func(a, b int) bool { return peers[i].AllowedIPs[a].String() < peers[i].AllowedIPs[b].String() })
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Node < peers[j].Node })
	w.Peers = peers
	sort.Strings(w.Blocked)
	if err := w.Validate(); err != nil {
		out.problem("%v: the WireGuard device is left out", err)
		out.Desired.WireGuard = nil
	}
}

// WireGuardNodeState is what this node's Node publishes about its
// WireGuard device and what the configuration wants there: the store
// writer compares it with the node's keys and acts on the difference.
type WireGuardNodeState struct {
	// Registered: this node's Node exists (the writer can only write
	// once it does).
	Registered bool
	// Enabled is wireguard.enabled: false makes the writer clear what the
	// Node publishes (the other nodes then reach it unencrypted).
	Enabled bool
	// PublicKey is status.wireguardPublicKey (zero: none or malformed),
	// BadKey set when it is malformed.
	PublicKey dataplane.WireGuardKey
	BadKey    bool
	// NextKey is the key being rotated to (the annotation).
	NextKey dataplane.WireGuardKey
	// ListenPort and HostEncryption are the published values (0 and
	// false when absent); WantPort and WantHostEncryption the configured.
	ListenPort, WantPort               int
	HostEncryption, WantHostEncryption bool
}

// wireguard fills the WireGuard part of the tunnel needs: a tunnel
// address of each family for which an enabled pool may give one (as the
// VXLAN address, but from any pool that allows tunnels), and the Node's
// published key and settings.
func (r *tunnels) wireguard(n *TunnelNeeds) {
	cfg, topo := r.env.Config, r.env.Topology
	wg, _ := r.env.wireGuard()
	var w NodeWireGuard
	self := topo.Self()
	if self != nil {
		w = self.WireGuard
	}
	var want4, want6 bool
	for _, name := range topo.PoolNames() {
		p := topo.Pools[name]
		if p.Spec.Disabled || (len(p.Spec.AllowedUses) > 0 && !slices.Contains(p.Spec.AllowedUses, api.UseTunnel)) {
			continue
		}
		if p.CIDR.Addr().Is4() {
			want4 = true
		} else {
			want6 = true
		}
	}
	n.WireGuard = r.tunnelState(ipam.TunnelHandle(ipam.TunnelWireguard, cfg.NodeName, false), wg.Enabled && want4, w.Addr4)
	n.WireGuardV6 = r.tunnelState(ipam.TunnelHandle(ipam.TunnelWireguard, cfg.NodeName, true), wg.Enabled && want6, w.Addr6)
	n.WireGuardNode = WireGuardNodeState{
		Registered: self != nil, Enabled: wg.Enabled, PublicKey: w.PublicKey, BadKey: w.BadKey != "", NextKey: w.NextKey,
		ListenPort: w.ListenPort, WantPort: wg.ListenPort,
		HostEncryption: w.HostEncryption, WantHostEncryption: wg.HostEncryption,
	}
}

// tunnelState is the state of a tunnel address with no MAC: addr as
// recorded on the Node, and whether IPAM holds it for handle.
func (r *tunnels) tunnelState(handle string, wanted bool, addr netip.Addr) TunnelState {
	// No MAC goes with it: "current" whenever there is an address.
	st := TunnelState{Wanted: wanted, Addr: addr, MACCurrent: addr.IsValid()}
	if !addr.IsValid() {
		return st
	}
	topo := r.env.Topology
	for _, name := range topo.BlockNames() {
		b := topo.Blocks[name]
		if h, ok := b.Holders[addr]; ok && b.CIDR.Contains(addr) && h.Handle == handle {
			st.Allocated = true
		}
	}
	return st
}

// Settled reports whether the published state matches the configuration
// as far as the calculation can tell (the key itself is the writer's to
// compare with the node's key files).
func (s WireGuardNodeState) Settled() bool {
	if !s.Enabled {
		return s.PublicKey.IsZero() && !s.BadKey && s.NextKey.IsZero() && s.ListenPort == 0 && !s.HostEncryption
	}
	return s.ListenPort == s.WantPort && s.HostEncryption == s.WantHostEncryption && !s.BadKey
}
