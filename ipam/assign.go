package ipam

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"unicode"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// Attributes describe who an allocation is for.
type Attributes struct {
	// Node is the node the address is used on (defaults to the request's
	// node).
	Node      string `json:"node,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Workload  string `json:"workload,omitempty"`
	// WorkloadEndpoint is "<namespace>/<name>" of the WorkloadEndpoint
	// that will carry the address; ipam.gc releases the allocation once it
	// is gone.
	WorkloadEndpoint string `json:"workloadEndpoint,omitempty"`
	// Type is "workload" (the default for use Workload) or a tunnel type
	// (vxlanTunnelAddress, wireguardTunnelAddress, ...).
	Type string `json:"type,omitempty"`
}

// AssignRequest is the payload of ipam.assign.
type AssignRequest struct {
	// Handle identifies the holder (one per workload or tunnel); the same
	// handle asked again gets the same addresses.
	Handle string     `json:"handle"`
	Attrs  Attributes `json:"attrs"`
	// Node is the node that will use the addresses: its blocks are used
	// first and new blocks are claimed for it.
	Node string `json:"node"`
	// NodeLabels are matched against pools' nodeSelector. When nil, the
	// labels of the stored Node object are used.
	NodeLabels map[string]string `json:"nodeLabels,omitempty"`
	// NamespaceLabels are matched against pools' namespaceSelector (when
	// Attrs.Namespace is set). When nil, {"projectcalico.org/name": ns}.
	NamespaceLabels map[string]string `json:"namespaceLabels,omitempty"`
	// Num4 and Num6 (0 or 1) ask for an IPv4 and/or an IPv6 address.
	Num4 int `json:"num4,omitempty"`
	Num6 int `json:"num6,omitempty"`
	// EachFamily asks for one address of each family that some pool
	// eligible for the request offers (dual stack when the cluster has
	// IPv4 and IPv6 pools), decided inside the apply with the pools'
	// selectors: the rule exists once, here. It fails when no family
	// has an eligible pool. Use it instead of Num4/Num6 and IP4/IP6.
	EachFamily bool `json:"eachFamily,omitempty"`
	// IP4 and IP6 ask for a specific address (implying Num4/Num6 = 1).
	IP4 string `json:"ip4,omitempty"`
	IP6 string `json:"ip6,omitempty"`
	// Pools restricts the request to these pools (by name); a Manual pool
	// is only used when named here.
	Pools []string `json:"pools,omitempty"`
	// Use is Workload (default) or Tunnel, matched against allowedUses.
	Use string `json:"use,omitempty"`
	// Encapsulation (EncapVXLAN or EncapIPIP) limits the choice to pools
	// with that encapsulation enabled, as Calico does for tunnel addresses.
	Encapsulation string `json:"encapsulation,omitempty"`
}

// Encapsulations a tunnel address request may require.
const (
	EncapVXLAN = "VXLAN"
	EncapIPIP  = "IPIP"
)

// Assignment is one address handed out.
type Assignment struct {
	// IP is the bare address ("10.244.3.5").
	IP string `json:"ip"`
	// CIDR is the address with its block's mask ("10.244.3.5/26"), as
	// Calico's AutoAssign returns it.
	CIDR string `json:"cidr"`
	// HostCIDR is the address as a /32 or /128, as a workload uses it.
	HostCIDR string `json:"hostCIDR"`
	Family   int    `json:"family"`
	Block    string `json:"block"`
	Pool     string `json:"pool,omitempty"`
	// SequenceNumber identifies this allocation of the address: pass it to
	// ipam.release to be sure to release this one and not a later reuse.
	SequenceNumber uint64 `json:"sequenceNumber"`
	// Borrowed is true when the block belongs to another node (or none).
	Borrowed bool `json:"borrowed,omitempty"`
}

// AssignResponse is the result of ipam.assign.
type AssignResponse struct {
	Handle    string       `json:"handle"`
	Addresses []Assignment `json:"addresses"`
}

// namespaceNameLabel is the label Calico sets on a namespace with its name.
const namespaceNameLabel = "projectcalico.org/name"

// validHandle checks a handle ID: it becomes a store name.
func validHandle(id string) error {
	if id == "" {
		return newError(ErrBadRequest, store.ErrInvalid, "handle is required")
	}
	if len(id) > 253 {
		return newError(ErrBadRequest, store.ErrInvalid, "handle %.40q... is longer than 253 characters", id)
	}
	if strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return newError(ErrBadRequest, store.ErrInvalid, "handle %q contains spaces or control characters", id)
	}
	return nil
}

// normalize checks the request and fills its defaults.
func (r *AssignRequest) normalize() (ip4, ip6 netip.Addr, err error) {
	if err := validHandle(r.Handle); err != nil {
		return ip4, ip6, err
	}
	if r.Node == "" {
		return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "node is required")
	}
	if r.Attrs.Node == "" {
		r.Attrs.Node = r.Node
	}
	switch r.Use {
	case "":
		r.Use = api.UseWorkload
	case api.UseWorkload, api.UseTunnel:
	default:
		return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "use must be %s or %s, got %q", api.UseWorkload, api.UseTunnel, r.Use)
	}
	switch r.Encapsulation {
	case "", EncapVXLAN, EncapIPIP:
	default:
		return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "encapsulation must be %s or %s, got %q", EncapVXLAN, EncapIPIP, r.Encapsulation)
	}
	if r.Attrs.Type == "" && r.Use == api.UseWorkload {
		r.Attrs.Type = TypeWorkload
	}
	if r.IP4 != "" {
		if ip4, err = ParseAddrOrPrefix(r.IP4); err != nil || !ip4.Is4() {
			return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "ip4 %q is not an IPv4 address", r.IP4)
		}
		if r.Num4 == 0 {
			r.Num4 = 1
		}
	}
	if r.IP6 != "" {
		if ip6, err = ParseAddrOrPrefix(r.IP6); err != nil || !ip6.Is6() {
			return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "ip6 %q is not an IPv6 address", r.IP6)
		}
		if r.Num6 == 0 {
			r.Num6 = 1
		}
	}
	if r.Num4 < 0 || r.Num4 > 1 || r.Num6 < 0 || r.Num6 > 1 {
		return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "num4 and num6 must be 0 or 1 (one address per family), got %d and %d", r.Num4, r.Num6)
	}
	if r.EachFamily && (r.Num4+r.Num6 > 0) {
		return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "eachFamily excludes num4, num6, ip4 and ip6")
	}
	if r.Num4+r.Num6 == 0 && !r.EachFamily {
		return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "nothing to assign: set num4 and/or num6")
	}
	for _, p := range r.Pools {
		if p == "" {
			return ip4, ip6, newError(ErrBadRequest, store.ErrInvalid, "empty pool name in pools")
		}
	}
	return ip4, ip6, nil
}

// nodeLabels reads the labels of a stored Node object (Calico's v3 shape).
func nodeLabels(g getter, node string) map[string]string {
	o, ok := g.Get(store.Key{Kind: KindNode, Name: node})
	if !ok {
		return map[string]string{}
	}
	var n api.Node
	if json.Unmarshal(o.Value, &n) != nil || n.Metadata.Labels == nil {
		return map[string]string{}
	}
	return n.Metadata.Labels
}

// assign is the ipam.assign command.
func (s *session) assign(r AssignRequest) (AssignResponse, error) {
	ip4, ip6, err := r.normalize()
	if err != nil {
		return AssignResponse{}, err
	}
	attr := AllocationAttribute{
		Handle:           r.Handle,
		Node:             r.Attrs.Node,
		Namespace:        r.Attrs.Namespace,
		Workload:         r.Attrs.Workload,
		WorkloadEndpoint: r.Attrs.WorkloadEndpoint,
		Type:             r.Attrs.Type,
		Timestamp:        s.now,
	}
	if r.EachFamily {
		if err := s.pickFamilies(&r); err != nil {
			return AssignResponse{}, err
		}
	}
	held, err := s.handleAssignments(r.Handle)
	if err != nil {
		return AssignResponse{}, err
	}
	resp := AssignResponse{Handle: r.Handle, Addresses: []Assignment{}}
	for _, f := range []struct {
		fam  int
		num  int
		want netip.Addr
	}{{4, r.Num4, ip4}, {6, r.Num6, ip6}} {
		if f.num == 0 {
			continue
		}
		if i := slices.IndexFunc(held, func(a Assignment) bool { return a.Family == f.fam }); i >= 0 {
			// Idempotent: the handle already holds an address of this
			// family; asking again returns it.
			if f.want.IsValid() && held[i].IP != f.want.String() {
				return AssignResponse{}, newError(ErrHandleMismatch, store.ErrExists, "handle %s already holds %s, not %s", r.Handle, held[i].IP, f.want)
			}
			resp.Addresses = append(resp.Addresses, held[i])
			continue
		}
		var a Assignment
		if f.want.IsValid() {
			a, err = s.assignSpecific(r, f.want, attr)
		} else {
			a, err = s.autoAssign(r, f.fam, attr)
		}
		if err != nil {
			return AssignResponse{}, err
		}
		resp.Addresses = append(resp.Addresses, a)
	}
	return resp, s.flush()
}

// pickFamilies sets Num4 and Num6 to 1 for each family some eligible pool
// offers; with none, it returns the IPv4 (else IPv6) reason.
func (s *session) pickFamilies(r *AssignRequest) error {
	all, err := s.allPools()
	if err != nil {
		return err
	}
	e := s.eligibility(*r)
	var first error
	for _, fam := range []int{4, 6} {
		_, err := eligiblePools(all, fam, e)
		switch {
		case err == nil && fam == 4:
			r.Num4 = 1
		case err == nil:
			r.Num6 = 1
		case first == nil:
			first = err
		}
	}
	if r.Num4+r.Num6 == 0 {
		return first
	}
	return nil
}

// handleAssignments returns what a handle holds, in block order.
func (s *session) handleAssignments(id string) ([]Assignment, error) {
	h, ok, err := s.handle(id)
	if err != nil || !ok {
		return nil, err
	}
	pools, err := s.allPools()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(h.Blocks))
	for n := range h.Blocks {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []Assignment
	for _, n := range names {
		p, err := ParseBlockName(n)
		if err != nil {
			return nil, fmt.Errorf("handle %s: %w", id, err)
		}
		b, ok, err := s.block(p)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		for _, o := range b.ordinalsOf(id) {
			out = append(out, s.assignment(pools, p, b, o))
		}
	}
	return out, nil
}

// assignment describes ordinal o of block b.
func (s *session) assignment(pools []pool, p netip.Prefix, b *Block, o int) Assignment {
	a := addrAt(p, o)
	attr, _ := b.attribute(o)
	out := Assignment{
		IP:             a.String(),
		CIDR:           netip.PrefixFrom(a, p.Bits()).String(),
		HostCIDR:       hostPrefix(a).String(),
		Family:         family(a),
		Block:          p.String(),
		SequenceNumber: b.SequenceNumberForAllocation[o],
		Borrowed:       !b.affineTo(attr.Node),
	}
	if pl, ok := poolContaining(pools, a); ok {
		out.Pool = pl.name
	}
	return out
}

// eligibility builds the pool-selection inputs of a request.
func (s *session) eligibility(r AssignRequest) eligibility {
	e := eligibility{
		node:            r.Node,
		nodeLabels:      r.NodeLabels,
		namespace:       r.Attrs.Namespace,
		namespaceLabels: r.NamespaceLabels,
		use:             r.Use,
		encapsulation:   r.Encapsulation,
		requested:       r.Pools,
	}
	if e.nodeLabels == nil {
		e.nodeLabels = nodeLabels(s.tx, r.Node)
	}
	if e.namespaceLabels == nil {
		e.namespaceLabels = map[string]string{namespaceNameLabel: r.Attrs.Namespace}
	}
	return e
}

// autoAssign picks one address of family fam for the request, following
// Calico's AutoAssign (calico.md §4.2): the node's own blocks, then a new
// block (or an empty one reclaimed from another node), then borrowing.
func (s *session) autoAssign(r AssignRequest, fam int, attr AllocationAttribute) (Assignment, error) {
	cfg, err := s.config()
	if err != nil {
		return Assignment{}, err
	}
	all, err := s.allPools()
	if err != nil {
		return Assignment{}, err
	}
	res, err := s.reservations()
	if err != nil {
		return Assignment{}, err
	}
	pools, err := eligiblePools(all, fam, s.eligibility(r))
	if err != nil {
		return Assignment{}, err
	}

	// 1. The node's own blocks in the eligible pools, in address order.
	affs, err := s.affinities(r.Node)
	if err != nil {
		return Assignment{}, err
	}
	owned := 0
	for _, p := range affs {
		if family(p.Addr()) != fam {
			continue
		}
		if _, ok := poolOfBlock(pools, p); !ok {
			continue
		}
		if s.noRoom(p, r.Node) {
			// Certainly full and ours: loading it would change nothing,
			// and it counts towards maxBlocksPerHost.
			owned++
			continue
		}
		b, ok, err := s.block(p)
		if err != nil {
			return Assignment{}, err
		}
		switch {
		case !ok:
			// The affinity outlived its block: recreate the block, as
			// Calico does after a crash mid-claim.
			b = newBlock(p, r.Node, s.now, s.index)
		case !b.affineTo(r.Node):
			// Stale affinity: the block belongs to someone else now.
			if err := s.deleteAffinity(r.Node, p); err != nil {
				return Assignment{}, err
			}
			continue
		}
		owned++
		if _, whole := res.covering(p); whole {
			continue
		}
		if a, ok, err := s.allocateIn(all, p, b, attr, cfg, res); err != nil || ok {
			return a, err
		}
	}

	// 2. Claim a new block.
	if owned >= cfg.maxBlocksPerHost {
		return Assignment{}, newError(ErrBlockLimit, store.ErrConflict,
			"cannot assign an IPv%d address to node %s: its %d blocks are full and maxBlocksPerHost is %d", fam, r.Node, owned, cfg.maxBlocksPerHost)
	}
	if cfg.autoAllocateBlocks {
		p, b, ok, err := s.claimBlock(pools, r.Node, res)
		if err != nil {
			return Assignment{}, err
		}
		if ok {
			if a, ok, err := s.allocateIn(all, p, b, attr, cfg, res); err != nil || ok {
				return a, err
			}
		}
	}

	// 3. Borrow from any block of the eligible pools.
	if !cfg.strictAffinity {
		if a, ok, err := s.borrow(all, pools, r.Node, attr, cfg, res); err != nil || ok {
			return a, err
		}
		return Assignment{}, newError(ErrExhausted, store.ErrConflict,
			"pool exhausted: no free IPv%d address in pools %s for node %s", fam, poolNames(pools), r.Node)
	}
	return Assignment{}, newError(ErrExhausted, store.ErrConflict,
		"pool exhausted: no free IPv%d address in the blocks of node %s and no free block in pools %s (strictAffinity forbids borrowing)", fam, r.Node, poolNames(pools))
}

func poolNames(pools []pool) string {
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = p.name
	}
	return "[" + strings.Join(names, " ") + "]"
}

// allocateIn takes the next free address of block b, if it has one.
func (s *session) allocateIn(all []pool, p netip.Prefix, b *Block, attr AllocationAttribute, cfg config, res reservations) (Assignment, bool, error) {
	b.expireCooldown(s.now, cfg.cooldown)
	o, ok := b.allocateNext(p, attr, s.index, res)
	if !ok {
		return Assignment{}, false, nil
	}
	s.putBlock(p, b)
	if err := s.addToHandle(attr.Handle, BlockName(p.String()), 1); err != nil {
		return Assignment{}, false, err
	}
	return s.assignment(all, p, b, o), true, nil
}

// claimBlock claims the lowest free block CIDR of the first eligible pool
// that has one; when none is free it reclaims an empty block another node
// claimed more than EmptyBlockMinReclaimAge ago (calico.md §4.2 3f).
func (s *session) claimBlock(pools []pool, node string, res reservations) (netip.Prefix, *Block, bool, error) {
	existing, err := s.blockPrefixes()
	if err != nil {
		return netip.Prefix{}, nil, false, err
	}
	set := make(map[netip.Prefix]bool, len(existing))
	for _, p := range existing {
		set[p] = true
	}
	for _, pl := range pools {
		p, ok := freeBlock(pl, set, res)
		if !ok {
			continue
		}
		b := newBlock(p, node, s.now, s.index)
		s.putBlock(p, b)
		if err := s.putAffinity(node, p); err != nil {
			return netip.Prefix{}, nil, false, err
		}
		s.log.Debug("claimed IPAM block", "block", p, "node", node, "pool", pl.name)
		return p, b, true, nil
	}
	cfg, err := s.config()
	if err != nil {
		return netip.Prefix{}, nil, false, err
	}
	for _, pl := range pools {
		for _, p := range existing {
			if !contains(pl.prefix, p) {
				continue
			}
			if _, whole := res.covering(p); whole {
				continue
			}
			b, ok, err := s.block(p)
			if err != nil {
				return netip.Prefix{}, nil, false, err
			}
			if !ok || b.affineTo(node) {
				continue
			}
			b.expireCooldown(s.now, cfg.cooldown)
			if !b.quiet() {
				continue
			}
			if b.AffinityClaimTime != nil && s.now.Sub(*b.AffinityClaimTime) < EmptyBlockMinReclaimAge {
				continue
			}
			if owner, ok := b.Node(); ok {
				if err := s.deleteAffinity(owner, p); err != nil {
					return netip.Prefix{}, nil, false, err
				}
			}
			nb := newBlock(p, node, s.now, s.index)
			s.putBlock(p, nb)
			if err := s.putAffinity(node, p); err != nil {
				return netip.Prefix{}, nil, false, err
			}
			s.log.Info("reclaimed empty IPAM block from another node", "block", p, "from", b.Affinity, "node", node)
			return p, nb, true, nil
		}
	}
	return netip.Prefix{}, nil, false, nil
}

// borrowOrder orders candidate blocks for a node: a hash of node and block
// spreads competing nodes over different blocks, and is the same on every
// replica.
func borrowOrder(node string, blocks []netip.Prefix) {
	key := func(p netip.Prefix) uint64 {
		h := fnv.New64a()
		h.Write([]byte(node))
		h.Write([]byte{0})
		h.Write([]byte(p.String()))
		return h.Sum64()
	}
	keys := make(map[netip.Prefix]uint64, len(blocks))
	for _, p := range blocks {
		keys[p] = key(p)
	}
	sort.Slice(blocks, func(i, j int) bool {
		ki, kj := keys[blocks[i]], keys[blocks[j]]
		if ki != kj {
			return ki < kj
		}
		return blocks[i].Addr().Less(blocks[j].Addr())
	})
}

// borrow takes a single address from any block of the eligible pools that
// is not the node's own (those are full).
func (s *session) borrow(all, pools []pool, node string, attr AllocationAttribute, cfg config, res reservations) (Assignment, bool, error) {
	existing, err := s.blockPrefixes()
	if err != nil {
		return Assignment{}, false, err
	}
	var candidates []netip.Prefix
	for _, p := range existing {
		if _, ok := poolOfBlock(pools, p); !ok {
			continue
		}
		if _, whole := res.covering(p); whole {
			continue
		}
		candidates = append(candidates, p)
	}
	borrowOrder(node, candidates)
	for _, p := range candidates {
		if s.noRoom(p, "") {
			continue
		}
		b, ok, err := s.block(p)
		if err != nil {
			return Assignment{}, false, err
		}
		if !ok || b.affineTo(node) {
			continue
		}
		a, ok, err := s.allocateIn(all, p, b, attr, cfg, res)
		if err != nil {
			return Assignment{}, false, err
		}
		if ok {
			s.log.Debug("borrowed address", "ip", a.IP, "block", p, "owner", b.Affinity, "node", node)
			return a, true, nil
		}
	}
	return Assignment{}, false, nil
}

// assignSpecific allocates the requested address (Calico's AssignIP).
func (s *session) assignSpecific(r AssignRequest, a netip.Addr, attr AllocationAttribute) (Assignment, error) {
	cfg, err := s.config()
	if err != nil {
		return Assignment{}, err
	}
	all, err := s.allPools()
	if err != nil {
		return Assignment{}, err
	}
	res, err := s.reservations()
	if err != nil {
		return Assignment{}, err
	}
	pl, ok := poolContaining(all, a)
	switch {
	case !ok:
		return Assignment{}, newError(ErrNoPool, store.ErrInvalid, "address %s is outside every IP pool", a)
	case pl.disabled():
		return Assignment{}, newError(ErrNoPool, store.ErrInvalid, "address %s is in IP pool %s, which is disabled", a, pl.name)
	case len(r.Pools) > 0 && !slices.Contains(r.Pools, pl.name):
		return Assignment{}, newError(ErrNoPool, store.ErrInvalid, "address %s is in IP pool %s, not in the requested pools %v", a, pl.name, r.Pools)
	case !pl.usable():
		return Assignment{}, newError(ErrNoPool, store.ErrInvalid, "IP pool %s (%s) is smaller than its block size /%d", pl.name, pl.prefix, pl.blockSize)
	}
	if name, ok := res.reservedBy(a); ok {
		return Assignment{}, newError(ErrReserved, store.ErrInvalid, "address %s is reserved by IPReservation %s", a, name)
	}
	p := pl.blockOf(a)
	b, ok, err := s.block(p)
	if err != nil {
		return Assignment{}, err
	}
	if !ok {
		b = newBlock(p, r.Node, s.now, s.index)
		if err := s.putAffinity(r.Node, p); err != nil {
			return Assignment{}, err
		}
	} else if cfg.strictAffinity && !b.affineTo(r.Node) {
		owner, _ := b.Node()
		if owner == "" {
			owner = "(none)"
		}
		return Assignment{}, newError(ErrStrictAffinity, store.ErrConflict,
			"address %s is in block %s of node %s and strictAffinity forbids node %s to use it", a, p, owner, r.Node)
	}
	b.expireCooldown(s.now, cfg.cooldown)
	o, _ := ordinalOf(p, a)
	if held, ok := b.attribute(o); ok {
		return Assignment{}, newError(ErrAllocated, store.ErrExists, "address %s is already allocated to handle %s", a, held.Handle)
	}
	if at, ok := b.cooling(o); ok {
		return Assignment{}, newError(ErrCoolingDown, store.ErrConflict,
			"address %s was released at %s and cools down until %s", a, at.Format("2006-01-02T15:04:05Z07:00"), at.Add(cfg.cooldown).Format("2006-01-02T15:04:05Z07:00"))
	}
	if !b.allocateOrdinal(o, attr, s.index) {
		return Assignment{}, fmt.Errorf("block %s: ordinal %d of %s is in no state", p, o, a)
	}
	s.putBlock(p, b)
	if err := s.addToHandle(attr.Handle, BlockName(p.String()), 1); err != nil {
		return Assignment{}, err
	}
	return s.assignment(all, p, b, o), nil
}
