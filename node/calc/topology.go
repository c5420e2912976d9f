package calc

import (
	"encoding/json"
	"net"
	"net/netip"
	"sort"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/store"
)

// topologyKinds are the kinds the Topology keeps for every resolver.
var topologyKinds = []string{api.KindNode, api.KindIPPool, ipam.KindBlock, api.KindWorkloadEndpoint, api.KindFelixConfiguration}

// Topology is the decoded state every resolver may read: the cluster's
// nodes, pools, IPAM blocks and WorkloadEndpoints (of every node: policy
// needs remote endpoints' addresses and labels). The dispatcher keeps it;
// resolvers only read it.
type Topology struct {
	me        string
	Nodes     map[string]*NodeView
	Pools     map[string]*PoolView
	Blocks    map[string]ipam.BlockSummary
	Endpoints map[store.Key]*EndpointView
	// FelixConfigs are the FelixConfigurations that apply to this node:
	// "default" and "node.<this node>", by name.
	FelixConfigs map[string]*api.FelixConfiguration
	// Felix is their merged spec: node.<name> over default (calico.md
	// §1.14).
	Felix api.FelixConfigurationSpec

	// local holds the local inputs (see [LocalInput]); a store RESET
	// leaves them.
	local map[store.Key]any
}

// NodeView is what the calculation needs of a Node.
type NodeView struct {
	Name      string
	Underlay  netip.Addr
	Subnet    netip.Prefix
	Underlay6 netip.Addr
	TunnelIP  netip.Addr
	// TunnelMAC is the VTEP MAC: the Node's, or the one weft derives from
	// the name when the Node has none (or a non-unicast one).
	TunnelMAC net.HardwareAddr
	// RawTunnelMAC is the Node's vxlanTunnelMACAddr as written.
	RawTunnelMAC string
	// IPIPTunnelIP is the Node's IP-in-IP tunnel address
	// (spec.bgp.ipv4IPIPTunnelAddr). A node records one only when it can
	// honour IP-in-IP, so its absence also says that IP-in-IP packets
	// sent to it would be lost.
	IPIPTunnelIP netip.Addr
	Labels       map[string]string
	// ASNumber is spec.bgp.asNumber (0: the cluster's AS) and RRClusterID
	// spec.bgp.routeReflectorClusterID ("": not a route reflector).
	ASNumber    uint32
	RRClusterID string
	// WireGuard is what the Node publishes about its WireGuard device.
	WireGuard NodeWireGuard
}

// PoolView is a decoded IPPool.
type PoolView struct {
	Name string
	CIDR netip.Prefix
	Spec api.IPPoolSpec
}

// EndpointView is a WorkloadEndpoint with the store's bookkeeping.
type EndpointView struct {
	*api.WorkloadEndpoint
	// CreateRevision orders endpoints by age: when two local endpoints
	// conflict (which the store's invariants prevent), the older one wins.
	CreateRevision uint64
}

func newTopology(me string) *Topology {
	t := &Topology{me: me, local: map[store.Key]any{}}
	t.reset()
	return t
}

func (t *Topology) reset() {
	t.Nodes = map[string]*NodeView{}
	t.Pools = map[string]*PoolView{}
	t.Blocks = map[string]ipam.BlockSummary{}
	t.Endpoints = map[store.Key]*EndpointView{}
	t.FelixConfigs = map[string]*api.FelixConfiguration{}
	t.Felix = api.FelixConfigurationSpec{}
}

// appliesHere reports whether a FelixConfiguration of that name applies to
// this node (selector-scoped ones are refused at the API).
func (t *Topology) appliesHere(name string) bool {
	return name == "default" || name == "node."+t.me
}

// mergeFelix recomputes the merged FelixConfiguration spec.
func (t *Topology) mergeFelix() {
	var base, over api.FelixConfigurationSpec
	if c := t.FelixConfigs["default"]; c != nil {
		base = c.Spec
	}
	if c := t.FelixConfigs["node."+t.me]; c != nil {
		over = c.Spec
	}
	t.Felix = api.MergeFelixConfiguration(base, over)
}

// put decodes and caches an object of a kind the Topology keeps; for other
// kinds it decodes the resource (api.FromStore) for the resolvers. It
// returns the decoded value.
func (t *Topology) put(o store.Object) (any, error) {
	switch o.Kind {
	case api.KindNode:
		var n api.Node
		if err := json.Unmarshal(o.Value, &n); err != nil {
			return nil, err
		}
		v := decodeNode(o.Name, &n)
		t.Nodes[o.Name] = v
		return v, nil
	case api.KindIPPool:
		var p api.IPPool
		if err := json.Unmarshal(o.Value, &p); err != nil {
			return nil, err
		}
		cidr, err := ipam.ParseCIDR(p.Spec.CIDR)
		if err != nil {
			return nil, err
		}
		v := &PoolView{Name: o.Name, CIDR: cidr, Spec: p.Spec}
		t.Pools[o.Name] = v
		return v, nil
	case ipam.KindBlock:
		b, err := ipam.DecodeBlockSummary(o.Value)
		if err != nil {
			return nil, err
		}
		t.Blocks[o.Name] = b
		return b, nil
	case api.KindWorkloadEndpoint:
		var w api.WorkloadEndpoint
		if err := json.Unmarshal(o.Value, &w); err != nil {
			return nil, err
		}
		w.Metadata.Namespace, w.Metadata.Name = o.Namespace, o.Name
		v := &EndpointView{WorkloadEndpoint: &w, CreateRevision: o.CreateRevision}
		t.Endpoints[o.Key] = v
		return v, nil
	case api.KindFelixConfiguration:
		r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
		if err != nil {
			return nil, err
		}
		c := r.(*api.FelixConfiguration)
		if t.appliesHere(o.Name) {
			t.FelixConfigs[o.Name] = c
			t.mergeFelix()
		}
		return c, nil
	}
	return api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
}

func (t *Topology) del(k store.Key) {
	switch k.Kind {
	case api.KindNode:
		delete(t.Nodes, k.Name)
	case api.KindIPPool:
		delete(t.Pools, k.Name)
	case ipam.KindBlock:
		delete(t.Blocks, k.Name)
	case api.KindWorkloadEndpoint:
		delete(t.Endpoints, k)
	case api.KindFelixConfiguration:
		if _, ok := t.FelixConfigs[k.Name]; ok {
			delete(t.FelixConfigs, k.Name)
			t.mergeFelix()
		}
	}
}

func decodeNode(name string, n *api.Node) *NodeView {
	v := &NodeView{Name: name, Labels: n.Metadata.Labels, RawTunnelMAC: n.Spec.VXLANTunnelMACAddr}
	if n.Spec.BGP != nil && n.Spec.BGP.IPv4Address != "" {
		if p, err := netip.ParsePrefix(n.Spec.BGP.IPv4Address); err == nil {
			v.Underlay, v.Subnet = p.Addr(), p.Masked()
		} else if a, err := netip.ParseAddr(n.Spec.BGP.IPv4Address); err == nil {
			v.Underlay, v.Subnet = a, netip.PrefixFrom(a, 32)
		}
	}
	if b := n.Spec.BGP; b != nil {
		if b.ASNumber != nil {
			v.ASNumber = uint32(*b.ASNumber)
		}
		v.RRClusterID = b.RouteReflectorClusterID
	}
	if n.Spec.BGP != nil && n.Spec.BGP.IPv6Address != "" {
		if p, err := netip.ParsePrefix(n.Spec.BGP.IPv6Address); err == nil {
			v.Underlay6 = p.Addr()
		} else if a, err := netip.ParseAddr(n.Spec.BGP.IPv6Address); err == nil {
			v.Underlay6 = a
		}
	}
	if a, err := netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr); err == nil {
		v.TunnelIP = a
	}
	if n.Spec.BGP != nil {
		if a, err := netip.ParseAddr(n.Spec.BGP.IPv4IPIPTunnelAddr); err == nil && a.Is4() {
			v.IPIPTunnelIP = a
		}
	}
	if mac, err := net.ParseMAC(n.Spec.VXLANTunnelMACAddr); err == nil && len(mac) == 6 && mac[0]&1 == 0 && !isZero(mac) {
		v.TunnelMAC = mac
	} else {
		// Missing, or not a unicast Ethernet address: the MAC weft
		// derives from the name (what the node itself uses then).
		v.TunnelMAC = dataplane.VXLANMAC(name)
	}
	v.WireGuard = decodeWireGuard(n)
	return v
}

// NodeDown reports whether the BGP speaker found the node dead: its
// sessions went silent (a cut cable, a power loss), unlike an agent
// restart, which closes them. The routes this node derives to the node's
// blocks go (docs/design.md, "A dead node's routes").
func (t *Topology) NodeDown(name string) bool {
	n, st := t.Nodes[name], t.Speaker()
	if st == nil || n == nil {
		return false
	}
	for _, a := range st.Dead {
		if a.IsValid() && (a == n.Underlay || a == n.Underlay6) {
			return true
		}
	}
	return false
}

// Self is this node's view, nil until its Node exists.
func (t *Topology) Self() *NodeView { return t.Nodes[t.me] }

// PoolFor returns the most specific pool containing prefix p, if any.
func (t *Topology) PoolFor(p netip.Prefix) *PoolView {
	var best *PoolView
	for _, pool := range t.Pools {
		if pool.CIDR.Bits() > p.Bits() || !pool.CIDR.Contains(p.Addr()) {
			continue
		}
		if best == nil || pool.CIDR.Bits() > best.CIDR.Bits() || (pool.CIDR.Bits() == best.CIDR.Bits() && pool.Name < best.Name) {
			best = pool
		}
	}
	return best
}

// VXLANWanted reports whether this node uses VXLAN: some pool uses it and
// FelixConfiguration's vxlanEnabled is not false.
func (t *Topology) VXLANWanted() bool {
	if e := t.Felix.VXLANEnabled; e != nil && !*e {
		return false
	}
	return len(t.PoolsWith(func(s api.IPPoolSpec) string { return s.VXLANMode })) > 0
}

// IPIPWanted reports whether this node is asked to use IP-in-IP: some pool
// uses it and FelixConfiguration's ipipEnabled is not false. Whether the
// kernel can is [Topology.IPIPSupport].
func (t *Topology) IPIPWanted() bool {
	if e := t.Felix.IPIPEnabled; e != nil && !*e {
		return false
	}
	return len(t.PoolsWith(func(s api.IPPoolSpec) string { return s.IPIPMode })) > 0
}

// PoolsWith returns the names (sorted) of the pools whose encapsulation
// mode, as mode reads it, is Always or CrossSubnet.
func (t *Topology) PoolsWith(mode func(api.IPPoolSpec) string) []string {
	var out []string
	for _, name := range t.PoolNames() {
		if m := mode(t.Pools[name].Spec); m == api.EncapAlways || m == api.EncapCrossSubnet {
			out = append(out, name)
		}
	}
	return out
}

// NodeNames returns the node names, sorted.
func (t *Topology) NodeNames() []string { return sortedKeys(t.Nodes) }

// PoolNames returns the pool names, sorted.
func (t *Topology) PoolNames() []string { return sortedKeys(t.Pools) }

// BlockNames returns the block names, sorted.
func (t *Topology) BlockNames() []string { return sortedKeys(t.Blocks) }

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
