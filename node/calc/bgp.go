package calc

import (
	"cmp"
	"crypto/sha256"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/api/selector"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
)

// bgp is the resolver of the BGP speaker's configuration ([Output.BGP])
// and of the routes the speaker learned (RouteClassBGP). It reads the
// BGPConfigurations ("default", and "node.<this node>"), the BGPPeers,
// the nodes (addresses, labels, AS, route-reflector cluster IDs), the
// pools and the blocks (calico.md §1.10, §1.11, §6):
//
//   - sessions: the node-to-node mesh (unless nodeToNodeMeshEnabled is
//     false), and every BGPPeer that selects this node (node, nodeSelector
//     or neither) toward its peerIP or the nodes its peerSelector picks,
//     with the reverse peering unless reversePeering is Manual; one
//     session per address and port, an explicit BGPPeer before the mesh;
//   - paths: this node's blocks and the addresses it borrowed from other
//     nodes' blocks, of pools without disableBGPExport, each advertised
//     only once its route is in the kernel (the speaker checks);
//   - learned routes: every best path, except those inside pools that use
//     VXLAN (the tunnel routes own them) and those back to this node,
//     with a next hop resolved recursively.
type bgp struct {
	env     Env
	configs map[string]*api.BGPConfiguration
	peers   map[string]*api.BGPPeer
}

func newBGP(env Env) Resolver {
	return &bgp{env: env, configs: map[string]*api.BGPConfiguration{}, peers: map[string]*api.BGPPeer{}}
}

func (r *bgp) Name() string { return "bgp" }
func (r *bgp) Kinds() []string {
	return []string{api.KindBGPConfiguration, api.KindBGPPeer, api.KindNode, api.KindIPPool, ipam.KindBlock}
}

func (r *bgp) Reset() {
	clear(r.configs)
	clear(r.peers)
}

func (r *bgp) OnUpdate(u Update) {
	switch u.Key.Kind {
	case api.KindBGPConfiguration:
		if c, ok := u.Value.(*api.BGPConfiguration); ok {
			r.configs[u.Key.Name] = c
		} else {
			delete(r.configs, u.Key.Name)
		}
	case api.KindBGPPeer:
		if p, ok := u.Value.(*api.BGPPeer); ok {
			r.peers[u.Key.Name] = p
		} else {
			delete(r.peers, u.Key.Name)
		}
	}
}

func (r *bgp) Contribute(out *Output) {
	cfg, topo := r.env.Config, r.env.Topology
	if !cfg.BGP {
		return
	}
	self := topo.Self()
	global := r.configs["default"]
	if global == nil {
		global = &api.BGPConfiguration{}
	}
	local := r.configs["node."+cfg.NodeName]
	if local == nil {
		local = &api.BGPConfiguration{}
	}
	c := &BGPConfig{AS: uint32(api.DefaultASNumber), ListenPort: DefaultBGPPort, LogLevel: "info"}
	if global.Spec.ASNumber != nil {
		c.AS = uint32(*global.Spec.ASNumber)
	}
	clusterAS := c.AS
	if self != nil && self.ASNumber != 0 {
		c.AS = self.ASNumber
	}
	c.RouterID = routerID(cfg)
	for _, s := range []*api.BGPConfigurationSpec{&global.Spec, &local.Spec} {
		if s.ListenPort != 0 {
			c.ListenPort = s.ListenPort
		}
		if s.LogSeverityScreen != "" {
			c.LogLevel = strings.ToLower(s.LogSeverityScreen)
		}
	}
	if cmp.Or(local.Spec.BindMode, global.Spec.BindMode) == api.BindModeNodeIP {
		for _, a := range []netip.Addr{cfg.Address, cfg.Address6} {
			if a.IsValid() {
				c.ListenAddrs = append(c.ListenAddrs, a)
			}
		}
	}
	if self != nil && self.RRClusterID != "" {
		if id, err := netip.ParseAddr(self.RRClusterID); err == nil && id.Is4() {
			c.RRClusterID = id
		} else {
			out.problem("node %s: spec.bgp.routeReflectorClusterID %q is not an IPv4 address; not acting as a route reflector", cfg.NodeName, self.RRClusterID)
		}
	}
	timers := sessionTimers{keepalive: DefaultBGPKeepalive, hold: DefaultBGPHoldTime}
	if d := global.Spec.KeepaliveTime; d != nil {
		timers.keepalive = d.Duration
	}
	if d := global.Spec.HoldTime; d != nil {
		timers.hold = d.Duration
	}
	asOf := func(n *NodeView) uint32 {
		if n.ASNumber != 0 {
			return n.ASNumber
		}
		return clusterAS
	}
	b := &peerSet{cfg: cfg, topo: topo, out: out, self: c, byAddr: map[netip.AddrPort]int{}}
	r.explicitPeers(b, global, timers, asOf)
	if global.Spec.NodeToNodeMeshEnabled == nil || *global.Spec.NodeToNodeMeshEnabled {
		restart := DefaultBGPRestartTime
		if d := global.Spec.NodeMeshMaxRestartTime; d != nil {
			restart = d.Duration
		}
		for _, name := range topo.NodeNames() {
			n := topo.Nodes[name]
			if name == cfg.NodeName {
				continue
			}
			for _, pair := range [][2]netip.Addr{{cfg.Address, n.Underlay}, {cfg.Address6, n.Underlay6}} {
				mine, theirs := pair[0], pair[1]
				if !mine.IsValid() || !theirs.IsValid() {
					continue
				}
				b.add(BGPPeerConfig{
					Address: theirs, AS: asOf(n), Type: PeerTypeMesh, Node: name,
					Passive:   theirs.Compare(mine) > 0,
					Keepalive: timers.keepalive, HoldTime: timers.hold, RestartTime: restart,
					MaxPrefixes: DefaultBGPMaxPrefixes, SourceAddr: mine,
				}, "")
			}
		}
	}
	for i := range b.peers {
		p := &b.peers[i]
		if c.RRClusterID.IsValid() && !p.EBGP(c.AS) {
			// calico.md §6.2: every iBGP peer without this cluster ID is
			// a client.
			if n := topo.Nodes[p.Node]; n == nil || n.RRClusterID != c.RRClusterID.String() {
				p.RRClient = true
				p.Type = PeerTypeRRClient
			}
		}
		if p.EBGP(c.AS) && !connected(cfg, p.Address) {
			p.Multihop = true
		}
	}
	slices.SortFunc(b.peers, func(x, y BGPPeerConfig) int {
		return cmp.Or(x.Address.Compare(y.Address), cmp.Compare(x.Port, y.Port))
	})
	c.Peers = b.peers
	c.Paths = r.paths(global)
	for _, name := range topo.PoolNames() {
		if p := topo.Pools[name]; !p.Spec.DisableBGPExport && !p.Spec.Disabled {
			c.ExportPrefixes = append(c.ExportPrefixes, p.CIDR)
		}
	}
	slices.SortFunc(c.ExportPrefixes, comparePrefix)
	c.ExportPrefixes = slices.Compact(c.ExportPrefixes)
	out.BGP = c
	r.learned(out, c)
}

// sessionTimers are a session's keepalive and hold time.
type sessionTimers struct{ keepalive, hold time.Duration }

// explicitPeers adds the sessions BGPPeer resources ask for.
func (r *bgp) explicitPeers(b *peerSet, global *api.BGPConfiguration, timers sessionTimers, asOf func(*NodeView) uint32) {
	cfg, topo := r.env.Config, r.env.Topology
	self := topo.Self()
	var myLabels map[string]string
	if self != nil {
		myLabels = self.Labels
	}
	names := make([]string, 0, len(r.peers))
	for name := range r.peers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := r.peers[name]
		s := &p.Spec
		forward := appliesTo(s.Node, s.NodeSelector, cfg.NodeName, myLabels)
		var reverse bool
		if s.PeerSelector != "" && s.ReversePeering != api.ReversePeeringManual {
			if sel, err := selector.Parse(s.PeerSelector); err == nil && self != nil && sel.Evaluate(myLabels) {
				reverse = true
			}
		}
		if !forward && !reverse {
			continue
		}
		typ := PeerTypeGlobal
		if s.Node != "" || s.NodeSelector != "" {
			typ = PeerTypeNodeSpecific
		}
		base := BGPPeerConfig{
			Type: typ, Keepalive: timers.keepalive, HoldTime: timers.hold,
			RestartTime: DefaultBGPRestartTime, MaxPrefixes: DefaultBGPMaxPrefixes,
		}
		if d := s.KeepaliveTime; d != nil {
			base.Keepalive = d.Duration
		}
		if d := s.HoldTime; d != nil {
			base.HoldTime = d.Duration
			if s.KeepaliveTime == nil {
				base.Keepalive = d.Duration / 3
			}
		} else if s.KeepaliveTime != nil {
			base.HoldTime = 3 * s.KeepaliveTime.Duration
		}
		if d := s.MaxRestartTime; d != nil {
			base.RestartTime = d.Duration
		}
		if s.LocalASNumber != nil {
			base.LocalAS = uint32(*s.LocalASNumber)
		}
		if s.TTLSecurity != nil {
			base.TTLSecurity = *s.TTLSecurity
		}
		if s.NumAllowedLocalASNumbers != nil {
			base.AllowOwnAS = uint8(min(*s.NumAllowedLocalASNumbers, 10))
		}
		if s.MaxPrefixes != nil {
			base.MaxPrefixes = *s.MaxPrefixes
		}
		switch {
		case s.KeepOriginalNextHop || s.NextHopMode == api.NextHopModeKeep:
			base.NextHop = NextHopKeep
		case s.NextHopMode == api.NextHopModeSelf:
			base.NextHop = NextHopSelf
		}
		if pw := s.Password; pw != nil && pw.SecretKeyRef != nil {
			base.Password = SecretRef{Name: pw.SecretKeyRef.Name, Key: pw.SecretKeyRef.Key}
		}
		useNodeIP := s.SourceAddress != api.SourceAddressNone
		if s.PeerIP != "" {
			if !forward {
				continue
			}
			ap, ok := parsePeerIP(s.PeerIP)
			if !ok {
				b.out.problem("BGPPeer %s: peerIP %q is not an address: no session", name, s.PeerIP)
				continue
			}
			pc := base
			pc.Address, pc.Port = ap.Addr(), ap.Port()
			pc.AS = uint32(s.ASNumber)
			if n := topo.nodeWithAddr(pc.Address); n != nil {
				if n.Name == cfg.NodeName {
					b.out.problem("BGPPeer %s: peerIP %s is this node's own address: no session", name, pc.Address)
					continue
				}
				pc.Node = n.Name
				if pc.AS == 0 {
					pc.AS = asOf(n)
				}
			}
			if pc.AS == 0 {
				b.out.problem("BGPPeer %s: asNumber is required: peerIP %s is not a weft node's address; no session", name, pc.Address)
				continue
			}
			if useNodeIP {
				pc.SourceAddr = sourceFor(cfg, pc.Address)
			}
			b.add(pc, name)
			if s.ReachableBy != "" {
				if gw, err := netip.ParseAddr(s.ReachableBy); err == nil && gw.Is4() == pc.Address.Is4() {
					b.out.Desired.Routes = append(b.out.Desired.Routes, dataplane.Route{
						Dst: netip.PrefixFrom(pc.Address, pc.Address.BitLen()), Class: dataplane.RouteClassBGP,
						Via: gw, Recursive: true,
					})
				}
			}
			continue
		}
		// peerSelector: the selected nodes (forward), and the nodes the
		// peering applies to (reverse).
		var targets []*NodeView
		if forward {
			if sel, err := selector.Parse(s.PeerSelector); err == nil {
				for _, n := range topo.NodeNames() {
					if v := topo.Nodes[n]; sel.Evaluate(v.Labels) {
						targets = append(targets, v)
					}
				}
			}
		}
		if reverse {
			for _, n := range topo.NodeNames() {
				if v := topo.Nodes[n]; appliesTo(s.Node, s.NodeSelector, n, v.Labels) {
					targets = append(targets, v)
				}
			}
		}
		for _, n := range targets {
			if n.Name == cfg.NodeName {
				continue
			}
			for _, pair := range [][2]netip.Addr{{cfg.Address, n.Underlay}, {cfg.Address6, n.Underlay6}} {
				if !pair[0].IsValid() || !pair[1].IsValid() {
					continue
				}
				pc := base
				pc.Address, pc.AS, pc.Node = pair[1], asOf(n), n.Name
				if useNodeIP {
					pc.SourceAddr = pair[0]
				}
				b.add(pc, name)
			}
		}
	}
}

// peerSet collects sessions, one per address and port.
type peerSet struct {
	cfg    Config
	topo   *Topology
	out    *Output
	self   *BGPConfig
	peers  []BGPPeerConfig
	byAddr map[netip.AddrPort]int
}

// add adds a session, or merges the source into the session already there
// (the first one asked for wins: explicit peers come before the mesh).
func (b *peerSet) add(p BGPPeerConfig, source string) {
	k := netip.AddrPortFrom(p.Address, p.Port)
	if i, ok := b.byAddr[k]; ok {
		if source != "" && !slices.Contains(b.peers[i].Sources, source) {
			b.peers[i].Sources = append(b.peers[i].Sources, source)
		}
		return
	}
	if source != "" {
		p.Sources = []string{source}
	}
	b.byAddr[k] = len(b.peers)
	b.peers = append(b.peers, p)
}

// paths are the prefixes this node originates: its blocks, and the
// addresses it borrowed from other nodes' blocks (each only once its route
// is in the kernel), of pools that do not disable BGP export.
func (r *bgp) paths(global *api.BGPConfiguration) []BGPPath {
	cfg, topo := r.env.Config, r.env.Topology
	me := cfg.NodeName
	var paths []BGPPath
	add := func(p netip.Prefix) {
		nh := cfg.Address
		if !p.Addr().Is4() {
			nh = cfg.Address6
		}
		if !nh.IsValid() {
			return
		}
		path := BGPPath{Prefix: p, NextHop: nh, Needs: dataplane.RouteKey{Table: dataplane.TableMain, Dst: p}}
		path.Communities, path.LargeCommunities = communitiesFor(p, global)
		paths = append(paths, path)
	}
	for _, name := range topo.BlockNames() {
		b := topo.Blocks[name]
		pool := topo.PoolFor(b.CIDR)
		if pool == nil || pool.Spec.DisableBGPExport {
			continue
		}
		if b.Owner == me && b.CIDR.Bits() < b.CIDR.Addr().BitLen() {
			add(b.CIDR)
		}
		for a, holder := range b.Borrowed() {
			if holder == me {
				add(netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	slices.SortFunc(paths, func(x, y BGPPath) int { return comparePrefix(x.Prefix, y.Prefix) })
	return paths
}

// communitiesFor are the communities of the prefixAdvertisements whose
// CIDR contains p (BIRD's `net ~ cidr`).
func communitiesFor(p netip.Prefix, global *api.BGPConfiguration) ([]uint32, [][3]uint32) {
	named := map[string]string{}
	for _, c := range global.Spec.Communities {
		named[c.Name] = c.Value
	}
	var std []uint32
	var large [][3]uint32
	for _, pa := range global.Spec.PrefixAdvertisements {
		cidr, err := netip.ParsePrefix(pa.CIDR)
		if err != nil {
			a, aerr := netip.ParseAddr(pa.CIDR)
			if aerr != nil {
				continue
			}
			cidr = netip.PrefixFrom(a, a.BitLen())
		}
		if cidr.Addr().Is4() != p.Addr().Is4() || cidr.Bits() > p.Bits() || !cidr.Masked().Contains(p.Addr()) {
			continue
		}
		for _, v := range pa.Communities {
			if nv, ok := named[v]; ok {
				v = nv
			}
			parts := strings.Split(v, ":")
			var n [3]uint64
			ok := len(parts) == 2 || len(parts) == 3
			for i, part := range parts {
				if !ok {
					break
				}
				x, err := strconv.ParseUint(part, 10, 32)
				ok = err == nil && (len(parts) == 3 || x <= 0xffff)
				n[i] = x
			}
			switch {
			case !ok:
			case len(parts) == 2:
				std = append(std, uint32(n[0]<<16|n[1]))
			default:
				large = append(large, [3]uint32{uint32(n[0]), uint32(n[1]), uint32(n[2])})
			}
		}
	}
	slices.Sort(std)
	std = slices.Compact(std)
	slices.SortFunc(large, func(a, b [3]uint32) int { return slices.Compare(a[:], b[:]) })
	large = slices.Compact(large)
	return std, large
}

// learned turns the speaker's best paths into kernel routes, keeps the
// learned routes of a restarting agent until its speaker has synced, and
// keeps the blackhole of a prefix still advertised until it is withdrawn.
func (r *bgp) learned(out *Output, c *BGPConfig) {
	cfg, topo := r.env.Config, r.env.Topology
	st := topo.Speaker()
	// No report from the speaker yet: the kernel's learned routes stay.
	out.Desired.HoldBGPRoutes = st == nil || st.Syncing
	if st == nil {
		return
	}
	mine := map[netip.Addr]bool{}
	for _, a := range []netip.Addr{cfg.Address, cfg.Address6} {
		if a.IsValid() {
			mine[a] = true
		}
	}
	out.Desired.Routes = slices.Grow(out.Desired.Routes, len(st.Learned))
	// Looking up each learned prefix's pool is only needed when some pool
	// uses VXLAN (thousands of learned routes, a map of pools each).
	vxlanPools := false
	for _, pool := range topo.Pools {
		vxlanPools = vxlanPools || usesVXLAN(pool)
	}
	for _, lr := range st.Learned {
		if !lr.Prefix.IsValid() || !lr.NextHop.IsValid() || mine[lr.NextHop] || lr.NextHop.Is4() != lr.Prefix.Addr().Is4() {
			continue
		}
		if vxlanPools && usesVXLAN(topo.PoolFor(lr.Prefix)) {
			continue // the VXLAN routes own these (calico.md §6.4)
		}
		out.Desired.Routes = append(out.Desired.Routes, dataplane.Route{
			Dst: lr.Prefix.Masked(), Class: dataplane.RouteClassBGP, Via: lr.NextHop, Recursive: true,
		})
	}
	// Withdraw before removal: a prefix the speaker still announces keeps
	// a blackhole here until the speaker has withdrawn it.
	wanted := map[netip.Prefix]bool{}
	for _, p := range c.Paths {
		wanted[p.Prefix] = true
	}
	routed := map[dataplane.RouteKey]bool{}
	for _, rt := range out.Desired.Routes {
		if rt.Class != dataplane.RouteClassBGP {
			routed[rt.Key()] = true
		}
	}
	for _, p := range st.Advertised {
		k := dataplane.RouteKey{Table: dataplane.TableMain, Dst: p}
		if wanted[p] || routed[k] || !p.IsValid() {
			continue
		}
		out.Desired.Routes = append(out.Desired.Routes, dataplane.Route{Dst: p, Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole})
		routed[k] = true
	}
}

// usesVXLAN reports whether pool (nil: none) carries its blocks over VXLAN.
func usesVXLAN(pool *PoolView) bool {
	return pool != nil && pool.Spec.VXLANMode != "" && pool.Spec.VXLANMode != api.EncapNever
}

// appliesTo reports whether a BGPPeer with this node/nodeSelector applies
// to the node (neither set: every node).
func appliesTo(node, nodeSelector, name string, labels map[string]string) bool {
	switch {
	case node != "":
		return node == name
	case nodeSelector != "":
		sel, err := selector.Parse(nodeSelector)
		return err == nil && sel.Evaluate(labels)
	}
	return true
}

// nodeWithAddr is the node with underlay address a, if any.
func (t *Topology) nodeWithAddr(a netip.Addr) *NodeView {
	for _, name := range t.NodeNames() {
		if n := t.Nodes[name]; n.Underlay == a || n.Underlay6 == a {
			return n
		}
	}
	return nil
}

// parsePeerIP reads Calico's peerIP forms: IP, IPv4:port, [IPv6]:port.
func parsePeerIP(s string) (netip.AddrPort, bool) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a.Unmap(), 0), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	return netip.AddrPort{}, false
}

// sourceFor is the node's address of peer's family.
func sourceFor(cfg Config, peer netip.Addr) netip.Addr {
	if peer.Is4() {
		return cfg.Address
	}
	return cfg.Address6
}

// connected reports whether a is on one of the node's underlay subnets.
func connected(cfg Config, a netip.Addr) bool {
	return (cfg.UnderlayPrefix.IsValid() && cfg.UnderlayPrefix.Contains(a)) ||
		(cfg.UnderlayPrefix6.IsValid() && cfg.UnderlayPrefix6.Contains(a))
}

// routerID is the node's IPv4 address or, on an IPv6-only node, an ID
// derived from its name (Calico's CALICO_ROUTER_ID=hash).
func routerID(cfg Config) netip.Addr {
	if cfg.Address.IsValid() {
		return cfg.Address
	}
	h := sha256.Sum256([]byte(cfg.NodeName))
	return netip.AddrFrom4([4]byte{h[0], h[1], h[2], h[3]})
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
