// Package calc turns the replicated store's state into this node's desired
// dataplane state: which workloads to plumb, which routes to own, the VXLAN
// device and its peers, and outgoing NAT. It is pure: no I/O, no clocks,
// and the result depends only on the current state, never on the order in
// which changes arrived (ARCHITECTURE.md, "Calc depends on current state
// only").
//
// The calculation is a full recompute over an in-memory cache of the
// relevant objects. At weft's scale (≤ 50 nodes, a few thousand blocks and
// workloads) that takes well under a millisecond, and it is never the
// kernel path: the dataplane drivers diff the result against the kernel and
// touch only what changed.
package calc

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/store"
)

// Annotations weft keeps on the WorkloadEndpoints it makes: the workload's
// network namespace path (the dataplane needs it to re-plumb a workload
// after a restart or drift) and the interface name inside it.
const (
	AnnotationNetNS = "weft.io/netns"
)

// Config is the node's static identity and settings.
type Config struct {
	NodeName string
	// Address is the node's underlay IPv4 address and UnderlayPrefix its
	// connected subnet (for CrossSubnet and native routing).
	Address        netip.Addr
	UnderlayPrefix netip.Prefix
	// Address6 and UnderlayPrefix6 are the same for IPv6 (zero without
	// an IPv6 underlay): IPv6 blocks are routed natively between nodes
	// that share an IPv6 subnet.
	Address6        netip.Addr
	UnderlayPrefix6 netip.Prefix
	// UnderlayIface is the interface holding Address (native routes go out
	// of it).
	UnderlayIface string
	// VXLANIface is the VXLAN device name (vxlan.interface).
	VXLANIface string
	// MTU is the configured VXLAN device MTU, 0 = derive.
	VXLANMTU int
}

// nodeInfo is what the calculation needs of a Node.
type nodeInfo struct {
	name      string
	underlay  netip.Addr
	subnet    netip.Prefix
	underlay6 netip.Addr
	tunnelIP  netip.Addr
	tunnelMAC net.HardwareAddr
}

// blockInfo is what the calculation needs of an IPAM block.
type blockInfo struct {
	cidr  netip.Prefix
	owner string // node holding the affinity, "" when none
	// borrowed maps addresses allocated in this block by nodes other than
	// the owner to the node holding them.
	borrowed map[netip.Addr]string
}

// Calculator caches the relevant store objects and computes the desired
// state. It is not safe for concurrent use: one goroutine feeds it events
// and asks for the result.
type Calculator struct {
	cfg       Config
	nodes     map[string]nodeInfo
	pools     map[string]*api.IPPool
	blocks    map[string]blockInfo
	workloads map[store.Key]*api.WorkloadEndpoint
	// problems are objects that could not be decoded, by key; they are
	// skipped (validated at the store's entrance, so this is a safety net).
	problems map[store.Key]string
	// dropped are items of the last desired state left out because they
	// conflict with others or are invalid (e.g. two nodes claiming one
	// tunnel address): one bad object must not freeze the whole dataplane.
	dropped []string
}

// New returns an empty calculator.
func New(cfg Config) *Calculator {
	return &Calculator{
		cfg:       cfg,
		nodes:     map[string]nodeInfo{},
		pools:     map[string]*api.IPPool{},
		blocks:    map[string]blockInfo{},
		workloads: map[store.Key]*api.WorkloadEndpoint{},
		problems:  map[store.Key]string{},
	}
}

// Kinds are the store kinds the calculation reads.
func Kinds() []string {
	return []string{api.KindNode, api.KindIPPool, ipam.KindBlock, api.KindWorkloadEndpoint}
}

// Reset forgets everything (a watch RESET).
func (c *Calculator) Reset() {
	*c = *New(c.cfg)
}

// Problems lists objects the calculation had to skip, for the logs.
func (c *Calculator) Problems() []string {
	var out []string
	for k, p := range c.problems {
		out = append(out, k.String()+": "+p)
	}
	out = append(out, c.dropped...)
	sort.Strings(out)
	return out
}

// OnEvent updates the cache with one store change.
func (c *Calculator) OnEvent(ev store.Event) {
	switch ev.Type {
	case store.EventPut:
		c.put(ev.Object)
	case store.EventDelete:
		c.del(ev.Object.Key)
	}
}

func (c *Calculator) del(k store.Key) {
	delete(c.problems, k)
	switch k.Kind {
	case api.KindNode:
		delete(c.nodes, k.Name)
	case api.KindIPPool:
		delete(c.pools, k.Name)
	case ipam.KindBlock:
		delete(c.blocks, k.Name)
	case api.KindWorkloadEndpoint:
		delete(c.workloads, k)
	}
}

func (c *Calculator) put(o store.Object) {
	delete(c.problems, o.Key)
	fail := func(err error) {
		c.del(o.Key)
		c.problems[o.Key] = err.Error()
	}
	switch o.Kind {
	case api.KindNode:
		var n api.Node
		if err := json.Unmarshal(o.Value, &n); err != nil {
			fail(err)
			return
		}
		c.nodes[o.Name] = decodeNode(o.Name, &n)
	case api.KindIPPool:
		var p api.IPPool
		if err := json.Unmarshal(o.Value, &p); err != nil {
			fail(err)
			return
		}
		c.pools[o.Name] = &p
	case ipam.KindBlock:
		var b blockFields
		if err := json.Unmarshal(o.Value, &b); err != nil {
			fail(err)
			return
		}
		bi, err := decodeBlock(&b)
		if err != nil {
			fail(err)
			return
		}
		c.blocks[o.Name] = bi
	case api.KindWorkloadEndpoint:
		var w api.WorkloadEndpoint
		if err := json.Unmarshal(o.Value, &w); err != nil {
			fail(err)
			return
		}
		if w.Spec.Node != c.cfg.NodeName {
			delete(c.workloads, o.Key)
			return
		}
		c.workloads[o.Key] = &w
	}
}

func decodeNode(name string, n *api.Node) nodeInfo {
	ni := nodeInfo{name: name}
	if n.Spec.BGP != nil && n.Spec.BGP.IPv4Address != "" {
		if p, err := netip.ParsePrefix(n.Spec.BGP.IPv4Address); err == nil {
			ni.underlay, ni.subnet = p.Addr(), p.Masked()
		} else if a, err := netip.ParseAddr(n.Spec.BGP.IPv4Address); err == nil {
			ni.underlay, ni.subnet = a, netip.PrefixFrom(a, 32)
		}
	}
	if n.Spec.BGP != nil && n.Spec.BGP.IPv6Address != "" {
		if p, err := netip.ParsePrefix(n.Spec.BGP.IPv6Address); err == nil {
			ni.underlay6 = p.Addr()
		} else if a, err := netip.ParseAddr(n.Spec.BGP.IPv6Address); err == nil {
			ni.underlay6 = a
		}
	}
	if a, err := netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr); err == nil {
		ni.tunnelIP = a
	}
	if mac, err := net.ParseMAC(n.Spec.VXLANTunnelMACAddr); err == nil && len(mac) == 6 && mac[0]&1 == 0 && !isZero(mac) {
		ni.tunnelMAC = mac
	} else {
		// Missing, or not a unicast Ethernet address: the MAC weft
		// derives from the name (what the node itself uses then).
		ni.tunnelMAC = dataplane.VXLANMAC(name)
	}
	return ni
}

// blockFields is the part of an ipam.Block the calculation reads. Blocks
// change on every allocation, on every node: decoding only these fields
// (and not the attributes' other fields) keeps that cheap.
type blockFields struct {
	CIDR        string `json:"cidr"`
	Affinity    string `json:"affinity"`
	Allocations []*int `json:"allocations"`
	Attributes  []struct {
		Node string `json:"node"`
	} `json:"attributes"`
}

func decodeBlock(b *blockFields) (blockInfo, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return blockInfo{}, fmt.Errorf("block cidr: %w", err)
	}
	bi := blockInfo{cidr: cidr, owner: strings.TrimPrefix(b.Affinity, "host:")}
	if !strings.HasPrefix(b.Affinity, "host:") {
		bi.owner = ""
	}
	for ord, idx := range b.Allocations {
		if idx == nil || *idx < 0 || *idx >= len(b.Attributes) {
			continue
		}
		holder := b.Attributes[*idx].Node
		if holder == "" || holder == bi.owner {
			continue
		}
		addr, ok := ordinalAddr(cidr, ord)
		if !ok {
			continue
		}
		if bi.borrowed == nil {
			bi.borrowed = map[netip.Addr]string{}
		}
		bi.borrowed[addr] = holder
	}
	return bi, nil
}

// ordinalAddr is the address at offset ord in the block.
func ordinalAddr(block netip.Prefix, ord int) (netip.Addr, bool) {
	b := block.Masked().Addr().AsSlice()
	carry := ord
	for i := len(b) - 1; i >= 0 && carry > 0; i-- {
		sum := int(b[i]) + carry
		b[i] = byte(sum & 0xff)
		carry = sum >> 8
	}
	a, _ := netip.AddrFromSlice(b)
	if !block.Contains(a) {
		return netip.Addr{}, false
	}
	return a, true
}

// poolFor returns the pool containing prefix p, if any.
func (c *Calculator) poolFor(p netip.Prefix) *api.IPPool {
	var best *api.IPPool
	bestBits := -1
	for _, pool := range c.pools {
		pp, err := netip.ParsePrefix(pool.Spec.CIDR)
		if err != nil || pp.Bits() > p.Bits() || !pp.Contains(p.Addr()) {
			continue
		}
		if pp.Bits() > bestBits {
			best, bestBits = pool, pp.Bits()
		}
	}
	return best
}

// useVXLAN decides whether traffic to peer for a pool goes over VXLAN.
func (c *Calculator) useVXLAN(pool *api.IPPool, peer nodeInfo) bool {
	switch pool.Spec.VXLANMode {
	case api.EncapAlways:
		return true
	case api.EncapCrossSubnet:
		return !c.sameSubnet(peer)
	}
	return false
}

// sameSubnet reports whether peer's underlay address is on this node's
// connected subnet.
func (c *Calculator) sameSubnet(peer nodeInfo) bool {
	return c.cfg.UnderlayPrefix.IsValid() && peer.underlay.IsValid() && c.cfg.UnderlayPrefix.Contains(peer.underlay)
}

// TunnelState is what decides whether this node needs a VXLAN tunnel
// address: whether a pool uses VXLAN, and the address its Node has.
type TunnelState struct {
	VXLANWanted bool
	TunnelIP    netip.Addr
}

// Tunnel returns the current TunnelState.
func (c *Calculator) Tunnel() TunnelState {
	return TunnelState{VXLANWanted: c.vxlanWanted(), TunnelIP: c.nodes[c.cfg.NodeName].tunnelIP}
}

// vxlanWanted reports whether any pool uses VXLAN.
func (c *Calculator) vxlanWanted() bool {
	for _, p := range c.pools {
		if p.Spec.VXLANMode == api.EncapAlways || p.Spec.VXLANMode == api.EncapCrossSubnet {
			return true
		}
	}
	return false
}

// routeTo builds the route for dst (a remote block or borrowed address)
// held by peer under pool, or reports that there is none (the peer is not
// reachable without BGP, or its VXLAN details are not known yet).
func (c *Calculator) routeTo(dst netip.Prefix, pool *api.IPPool, peer nodeInfo) (dataplane.Route, bool) {
	if !dst.Addr().Is4() {
		// IPv6 blocks are routed natively to a peer on this node's IPv6
		// subnet; an IPv6 overlay (a second VXLAN device) is not built.
		if pool.Spec.VXLANMode != api.EncapAlways && c.cfg.UnderlayPrefix6.IsValid() && peer.underlay6.IsValid() &&
			c.cfg.UnderlayPrefix6.Contains(peer.underlay6) {
			return dataplane.Route{Dst: dst, Via: peer.underlay6}, true
		}
		return dataplane.Route{}, false
	}
	if c.useVXLAN(pool, peer) {
		if !peer.tunnelIP.IsValid() || !peer.underlay.IsValid() || c.cfg.VXLANIface == "" {
			return dataplane.Route{}, false
		}
		return dataplane.Route{Dst: dst, Dev: c.cfg.VXLANIface, Via: peer.tunnelIP, OnLink: true}, true
	}
	if c.sameSubnet(peer) {
		// No device: the kernel resolves the peer on the connected subnet.
		return dataplane.Route{Dst: dst, Via: peer.underlay}, true
	}
	return dataplane.Route{}, false
}

// Desired computes this node's desired dataplane state.
func (c *Calculator) Desired() dataplane.Desired {
	var d dataplane.Desired
	me := c.cfg.NodeName

	// Local workloads.
	wkeys := make([]store.Key, 0, len(c.workloads))
	for k := range c.workloads {
		wkeys = append(wkeys, k)
	}
	sort.Slice(wkeys, func(i, j int) bool { return wkeys[i].String() < wkeys[j].String() })
	local := map[netip.Addr]bool{}
	for _, k := range wkeys {
		w := c.workloads[k]
		wl := dataplane.Workload{
			Namespace: w.Metadata.Namespace,
			Name:      w.Spec.Workload,
			HostIface: w.Spec.InterfaceName,
			NetNS:     w.Metadata.Annotations[AnnotationNetNS],
			Iface:     w.Spec.Endpoint,
		}
		for _, s := range w.Spec.IPNetworks {
			if p, err := netip.ParsePrefix(s); err == nil {
				wl.IPs = append(wl.IPs, p)
				local[p.Addr()] = true
			}
		}
		if mac, err := net.ParseMAC(w.Spec.MAC); err == nil {
			wl.MAC = mac
		}
		if wl.NetNS == "" || len(wl.IPs) == 0 || wl.HostIface == "" {
			continue // not weft's to plumb (or not yet complete)
		}
		d.Workloads = append(d.Workloads, wl)
	}

	// Routes for blocks and borrowed addresses.
	bnames := make([]string, 0, len(c.blocks))
	for n := range c.blocks {
		bnames = append(bnames, n)
	}
	sort.Strings(bnames)
	routes := map[netip.Prefix]dataplane.Route{}
	for _, n := range bnames {
		b := c.blocks[n]
		pool := c.poolFor(b.cidr)
		switch {
		case b.owner == me:
			if b.cidr.Bits() < b.cidr.Addr().BitLen() {
				routes[b.cidr] = dataplane.Route{Dst: b.cidr, Type: dataplane.RouteBlackhole}
			}
		case b.owner != "" && pool != nil:
			if peer, ok := c.nodes[b.owner]; ok {
				if r, ok := c.routeTo(b.cidr, pool, peer); ok {
					routes[b.cidr] = r
				}
			}
		}
		for addr, holder := range b.borrowed {
			if holder == me || local[addr] || pool == nil {
				continue // our own workloads have host routes
			}
			peer, ok := c.nodes[holder]
			if !ok {
				continue
			}
			dst := netip.PrefixFrom(addr, addr.BitLen())
			if r, ok := c.routeTo(dst, pool, peer); ok {
				routes[dst] = r
			}
		}
	}
	for _, r := range routes {
		d.Routes = append(d.Routes, r)
	}
	sort.Slice(d.Routes, func(i, j int) bool { return d.Routes[i].Dst.String() < d.Routes[j].Dst.String() })

	// VXLAN device and peers.
	if self, ok := c.nodes[me]; ok && c.vxlanWanted() && self.tunnelIP.IsValid() && c.cfg.Address.IsValid() && c.cfg.VXLANIface != "" {
		d.VXLAN = &dataplane.VXLANDevice{
			TunnelAddr: self.tunnelIP,
			MAC:        self.tunnelMAC,
			Source:     c.cfg.Address,
			Parent:     c.cfg.UnderlayIface,
			MTU:        c.cfg.VXLANMTU,
		}
		for _, n := range sortedKeys(c.nodes) {
			peer := c.nodes[n]
			if n == me || !peer.tunnelIP.IsValid() || !peer.underlay.IsValid() {
				continue
			}
			d.VXLANPeers = append(d.VXLANPeers, dataplane.VXLANPeer{
				Node: n, TunnelIP: peer.tunnelIP, VTEPMAC: peer.tunnelMAC, UnderlayIP: peer.underlay,
			})
		}
	}
	if d.VXLAN == nil {
		// Routes through a VXLAN device that does not exist cannot be
		// programmed; drop them until the device can be.
		kept := d.Routes[:0]
		for _, r := range d.Routes {
			if r.Dev != c.cfg.VXLANIface || c.cfg.VXLANIface == "" {
				kept = append(kept, r)
			}
		}
		d.Routes = kept
	}

	// Outgoing NAT: never towards another node's address (traffic between
	// pools and nodes is not masqueraded).
	for _, n := range sortedKeys(c.nodes) {
		for _, a := range []netip.Addr{c.nodes[n].underlay, c.nodes[n].underlay6} {
			if a.IsValid() {
				d.NAT.ExcludeDests = append(d.NAT.ExcludeDests, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	pnames := make([]string, 0, len(c.pools))
	for n := range c.pools {
		pnames = append(pnames, n)
	}
	sort.Strings(pnames)
	for _, n := range pnames {
		p := c.pools[n]
		cidr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil {
			continue
		}
		d.NAT.AllPools = append(d.NAT.AllPools, cidr)
		if p.Spec.NATOutgoing {
			d.NAT.MasqPools = append(d.NAT.MasqPools, cidr)
		}
	}
	c.dropped = sanitize(&d)
	return d
}

// sanitize drops, deterministically, the items of d that are invalid or
// conflict with an earlier one (items are in a stable order), so that the
// rest is always a valid state; it returns what it dropped.
func sanitize(d *dataplane.Desired) (dropped []string) {
	drop := func(format string, args ...any) { dropped = append(dropped, fmt.Sprintf(format, args...)) }
	ifaces := map[string]bool{}
	owners := map[netip.Addr]bool{}
	var ws []dataplane.Workload
	for _, w := range d.Workloads {
		dup := ifaces[w.HostIface]
		for _, p := range w.IPs {
			dup = dup || owners[p.Addr()]
		}
		if err := w.Validate(); err != nil || dup {
			drop("workload %s/%s: invalid or conflicting with another (%v)", w.Namespace, w.Name, err)
			continue
		}
		ifaces[w.HostIface] = true
		for _, p := range w.IPs {
			owners[p.Addr()] = true
		}
		ws = append(ws, w)
	}
	d.Workloads = ws
	if d.VXLAN != nil {
		if err := d.VXLAN.Validate(); err != nil {
			drop("%v", err)
			d.VXLAN, d.VXLANPeers = nil, nil
		}
	}
	tunnels := map[netip.Addr]bool{}
	macs := map[string]bool{}
	if d.VXLAN != nil {
		tunnels[d.VXLAN.TunnelAddr] = true
		macs[d.VXLAN.MAC.String()] = true
	}
	badVia := map[netip.Addr]bool{}
	var peers []dataplane.VXLANPeer
	for _, p := range d.VXLANPeers {
		if tunnels[p.TunnelIP] || macs[p.VTEPMAC.String()] || !p.UnderlayIP.IsValid() {
			drop("vxlan peer %s: tunnel address %s or MAC %s already used (or no underlay address)", p.Node, p.TunnelIP, p.VTEPMAC)
			badVia[p.TunnelIP] = true
			continue
		}
		tunnels[p.TunnelIP], macs[p.VTEPMAC.String()] = true, true
		peers = append(peers, p)
	}
	d.VXLANPeers = peers
	dsts := map[netip.Prefix]bool{}
	for _, w := range d.Workloads {
		for _, r := range w.HostRoutes() {
			dsts[r.Dst] = true
		}
	}
	var routes []dataplane.Route
	for _, r := range d.Routes {
		if err := r.Validate(); err != nil || dsts[r.Dst] || (r.OnLink && badVia[r.Via]) {
			drop("route %s: invalid, conflicting, or via a dropped peer (%v)", r, err)
			continue
		}
		dsts[r.Dst] = true
		routes = append(routes, r)
	}
	d.Routes = routes
	return dropped
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
