package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// Reader lists stored objects of a kind (namespace "" = all namespaces),
// sorted by namespace then name. store.Tx satisfies it; StoreReader adapts
// a store.Store and Objects a plain slice.
type Reader interface {
	List(kind, namespace string) []store.Object
}

// ReaderFunc adapts a function to Reader.
type ReaderFunc func(kind, namespace string) []store.Object

// List implements Reader.
func (f ReaderFunc) List(kind, namespace string) []store.Object { return f(kind, namespace) }

// StoreReader reads from the local replica of a store. For a consistent
// view across kinds, call ConsistentRevision first and expect the odd
// transient difference while allocations are being made.
func StoreReader(s store.Store) Reader {
	return ReaderFunc(func(kind, namespace string) []store.Object {
		objs, _ := s.List(kind, namespace)
		return objs
	})
}

// Objects is a Reader over a fixed set of objects.
type Objects []store.Object

// List implements Reader.
func (o Objects) List(kind, namespace string) []store.Object {
	var out []store.Object
	for _, x := range o {
		if x.Kind == kind && (namespace == "" || x.Namespace == namespace) {
			out = append(out, x)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// view is everything the read side looks at, decoded once.
type view struct {
	pools      []pool
	res        reservations
	cfg        api.IPAMConfigurationSpec
	blocks     []blockView
	affinities []affinityView
	handles    map[string]*Handle
	endpoints  []user
	nodes      map[string]bool
	nodeUsers  []user
	// broken lists objects that could not be decoded (check reports them).
	broken []Problem
	// brokenBlocks are the CIDRs of undecodable blocks: check does not
	// pile further problems on what they might hold.
	brokenBlocks []netip.Prefix
}

type blockView struct {
	prefix netip.Prefix
	b      *Block
}

type affinityView struct {
	node   string
	prefix netip.Prefix
}

// user is a WorkloadEndpoint or a node tunnel device using addresses.
type user struct {
	ref string // "WorkloadEndpoint ns/name" or "Node n (vxlanTunnelAddress)"
	ips []netip.Addr
}

// tunnelAddrs lists a node's tunnel addresses with their allocation type.
func tunnelAddrs(n *api.Node) [][2]string {
	var out [][2]string
	add := func(addr, typ string) {
		if addr != "" {
			out = append(out, [2]string{addr, typ})
		}
	}
	if n.Spec.BGP != nil {
		add(n.Spec.BGP.IPv4IPIPTunnelAddr, TypeIPIPTunnel)
	}
	add(n.Spec.IPv4VXLANTunnelAddr, TypeVXLANTunnel)
	add(n.Spec.IPv6VXLANTunnelAddr, TypeVXLANV6Tunnel)
	if n.Spec.Wireguard != nil {
		add(n.Spec.Wireguard.InterfaceIPv4Address, TypeWireguardTunnel)
		add(n.Spec.Wireguard.InterfaceIPv6Address, TypeWireguardV6Tunnel)
	}
	return out
}

// load decodes the IPAM state. Undecodable blocks, affinities and handles
// become problems rather than errors so that check can still report the
// rest; an undecodable pool, reservation or configuration is an error.
func load(r Reader) (*view, error) {
	v := &view{handles: map[string]*Handle{}, nodes: map[string]bool{}}
	var err error
	if v.pools, err = loadPools(r.List(KindIPPool, "")); err != nil {
		return nil, err
	}
	if v.res, err = loadReservations(r.List(KindIPReservation, "")); err != nil {
		return nil, err
	}
	for _, o := range r.List(KindIPAMConfiguration, "") {
		if o.Name == ConfigName {
			c, err := decodeConfig(o.Value)
			if err != nil {
				return nil, err
			}
			v.cfg = c.Spec
		}
	}
	for _, o := range r.List(KindBlock, "") {
		b, p, err := decodeBlock(o.Value)
		if err != nil {
			v.broken = append(v.broken, Problem{Kind: ProblemInvalidBlock, Block: o.Name, Detail: err.Error()})
			if p, err := ParseBlockName(o.Name); err == nil {
				v.brokenBlocks = append(v.brokenBlocks, p)
			}
			continue
		}
		v.blocks = append(v.blocks, blockView{p, b})
	}
	sort.Slice(v.blocks, func(i, j int) bool { return v.blocks[i].prefix.Addr().Less(v.blocks[j].prefix.Addr()) })
	for _, o := range r.List(KindBlockAffinity, "") {
		p, err := ParseBlockName(o.Name)
		if err != nil {
			v.broken = append(v.broken, Problem{Kind: ProblemAffinityMismatch, Node: o.Namespace, Block: o.Name, Detail: err.Error()})
			continue
		}
		v.affinities = append(v.affinities, affinityView{o.Namespace, p})
	}
	for _, o := range r.List(KindHandle, "") {
		var h Handle
		if err := json.Unmarshal(o.Value, &h); err != nil {
			v.broken = append(v.broken, Problem{Kind: ProblemHandleMismatch, Handle: o.Name, Detail: "undecodable handle: " + err.Error()})
			continue
		}
		if h.Blocks == nil {
			h.Blocks = map[string]int{}
		}
		v.handles[o.Name] = &h
	}
	for _, o := range r.List(KindWorkloadEndpoint, "") {
		ips, _ := workloadEndpointIPs(o.Value)
		v.endpoints = append(v.endpoints, user{ref: fmt.Sprintf("WorkloadEndpoint %s/%s", o.Namespace, o.Name), ips: ips})
	}
	for _, o := range r.List(KindNode, "") {
		v.nodes[o.Name] = true
		var n api.Node
		if json.Unmarshal(o.Value, &n) != nil {
			continue
		}
		for _, t := range tunnelAddrs(&n) {
			if a, err := ParseAddrOrPrefix(t[0]); err == nil {
				v.nodeUsers = append(v.nodeUsers, user{ref: fmt.Sprintf("Node %s (%s)", o.Name, t[1]), ips: []netip.Addr{a}})
			}
		}
	}
	return v, nil
}

// users maps every address in use to who uses it.
func (v *view) users() map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, list := range [][]user{v.endpoints, v.nodeUsers} {
		for _, u := range list {
			for _, a := range u.ips {
				out[a] = append(out[a], u.ref)
			}
		}
	}
	return out
}

// blockOf returns the block containing a, if any.
func (v *view) blockOf(a netip.Addr) (blockView, bool) {
	for _, bv := range v.blocks {
		if bv.prefix.Contains(a) {
			return bv, true
		}
	}
	return blockView{}, false
}

// inBrokenBlock reports whether a lies in an undecodable block.
func (v *view) inBrokenBlock(a netip.Addr) bool {
	for _, p := range v.brokenBlocks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
