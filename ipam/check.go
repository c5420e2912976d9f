package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// Problem kinds found by Check (calico.md §4.5 a–g, plus weft's own).
const (
	// ProblemLeaked (a): allocated, but no WorkloadEndpoint or node tunnel
	// uses the address (addresses cooling down are not allocations).
	ProblemLeaked = "leaked"
	// ProblemMultipleOwners (b): an address used by several endpoints/nodes.
	ProblemMultipleOwners = "multiple-owners"
	// ProblemOutsidePools (c): an address in use outside every pool.
	ProblemOutsidePools = "outside-pools"
	// ProblemNoAllocation (d): an address in use inside a pool with no
	// IPAM allocation.
	ProblemNoAllocation = "no-allocation"
	// ProblemEmptyHandle (e): a handle object that holds no address.
	ProblemEmptyHandle = "empty-handle"
	// ProblemMissingHandle (f): blocks refer to a handle with no object.
	ProblemMissingHandle = "missing-handle"
	// ProblemInvalidBlock (g): a block that breaks its invariants or does
	// not fit its pool.
	ProblemInvalidBlock = "invalid-block"
	// ProblemHandleMismatch: a handle's counts disagree with the blocks.
	ProblemHandleMismatch = "handle-mismatch"
	// ProblemAffinityMismatch: a block's affinity and the BlockAffinity
	// objects disagree.
	ProblemAffinityMismatch = "affinity-mismatch"
	// ProblemDeadNode: a block is affine to a node that no longer exists.
	ProblemDeadNode = "dead-node"
)

// Problem is one finding of Check.
type Problem struct {
	Kind   string `json:"kind"`
	IP     string `json:"ip,omitempty"`
	Handle string `json:"handle,omitempty"`
	Block  string `json:"block,omitempty"`
	Node   string `json:"node,omitempty"`
	Detail string `json:"detail"`
}

// NodeCount is a node's number of allocations.
type NodeCount struct {
	Node        string `json:"node"`
	Allocations int    `json:"allocations"`
}

// CheckReport is the result of Check.
type CheckReport struct {
	Blocks      int `json:"blocks"`
	Allocations int `json:"allocations"`
	Handles     int `json:"handles"`
	// InUse is the number of addresses used by WorkloadEndpoints and node
	// tunnels.
	InUse int `json:"inUse"`
	// TopNodes are the nodes with the most allocations (at most 20).
	TopNodes []NodeCount `json:"topNodes"`
	Problems []Problem   `json:"problems"`
}

// Summary is calicoctl's closing line.
func (r *CheckReport) Summary() string {
	return fmt.Sprintf("Check complete; found %d problems", len(r.Problems))
}

// problemRank orders problems in the report: Calico's a–g first.
func problemRank(kind string) int {
	return slices.Index([]string{
		ProblemLeaked, ProblemMultipleOwners, ProblemOutsidePools, ProblemNoAllocation,
		ProblemEmptyHandle, ProblemMissingHandle, ProblemInvalidBlock, ProblemHandleMismatch,
		ProblemAffinityMismatch, ProblemDeadNode,
	}, kind)
}

// Check cross-checks allocations, handles, blocks and affinities against
// each other and against the WorkloadEndpoints and Nodes using addresses.
func Check(r Reader) (*CheckReport, error) {
	v, err := load(r)
	if err != nil {
		return nil, err
	}
	rep := &CheckReport{Blocks: len(v.blocks), Handles: len(v.handles), TopNodes: []NodeCount{}}
	problems := append([]Problem{}, v.broken...)
	add := func(p Problem) { problems = append(problems, p) }

	users := v.users()
	rep.InUse = len(users)
	perNode := map[string]int{}
	handleCounts := map[string]map[string]int{} // handle → block name → count
	allocated := map[netip.Addr]bool{}
	affinity := map[affinityView]bool{}
	for _, a := range v.affinities {
		affinity[a] = true
	}

	for _, bv := range v.blocks {
		name := BlockName(bv.prefix.String())
		if err := bv.b.validate(); err != nil {
			// Reported, and still read as far as it can be, so that its
			// addresses do not show up as unallocated too.
			add(Problem{Kind: ProblemInvalidBlock, Block: bv.prefix.String(), Detail: err.Error()})
		}
		if pl, ok := poolOfBlock(v.pools, bv.prefix); !ok {
			add(Problem{Kind: ProblemInvalidBlock, Block: bv.prefix.String(), Detail: "block is outside every IP pool"})
		} else if pl.blockSize != bv.prefix.Bits() {
			add(Problem{Kind: ProblemInvalidBlock, Block: bv.prefix.String(), Detail: fmt.Sprintf("block size differs from IP pool %s (/%d)", pl.name, pl.blockSize)})
		}
		if owner, ok := bv.b.Node(); ok {
			if !affinity[affinityView{owner, bv.prefix}] {
				add(Problem{Kind: ProblemAffinityMismatch, Block: bv.prefix.String(), Node: owner, Detail: "block is affine to the node but the node has no BlockAffinity for it"})
			}
			if !v.nodes[owner] {
				add(Problem{Kind: ProblemDeadNode, Block: bv.prefix.String(), Node: owner, Detail: fmt.Sprintf("block is affine to node %s, which no longer exists", owner)})
			}
		}
		for o := range bv.b.Allocations {
			attr, ok := bv.b.attribute(o)
			if !ok {
				continue
			}
			a := addrAt(bv.prefix, o)
			rep.Allocations++
			allocated[a] = true
			perNode[attr.Node]++
			if handleCounts[attr.Handle] == nil {
				handleCounts[attr.Handle] = map[string]int{}
			}
			handleCounts[attr.Handle][name]++
			if len(users[a]) == 0 {
				add(Problem{Kind: ProblemLeaked, IP: a.String(), Handle: attr.Handle, Block: bv.prefix.String(), Node: attr.Node,
					Detail: fmt.Sprintf("allocated to %s but not used by any WorkloadEndpoint or node tunnel", allocatedTo(attr))})
			}
		}
	}
	for _, a := range v.affinities {
		if v.inBrokenBlock(a.prefix.Addr()) {
			continue
		}
		bv, ok := v.blockOf(a.prefix.Addr())
		switch {
		case !ok || bv.prefix != a.prefix:
			add(Problem{Kind: ProblemAffinityMismatch, Block: a.prefix.String(), Node: a.node, Detail: "BlockAffinity without a block"})
		case !bv.b.affineTo(a.node):
			add(Problem{Kind: ProblemAffinityMismatch, Block: a.prefix.String(), Node: a.node, Detail: fmt.Sprintf("BlockAffinity of node %s but the block says %q", a.node, bv.b.Affinity)})
		}
		if !v.nodes[a.node] && (!ok || !bv.b.affineTo(a.node)) {
			add(Problem{Kind: ProblemDeadNode, Block: a.prefix.String(), Node: a.node, Detail: fmt.Sprintf("BlockAffinity of node %s, which no longer exists", a.node)})
		}
	}

	addrs := make([]netip.Addr, 0, len(users))
	for a := range users {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(x, y netip.Addr) int { return x.Compare(y) })
	for _, a := range addrs {
		refs := users[a]
		if len(refs) > 1 {
			add(Problem{Kind: ProblemMultipleOwners, IP: a.String(), Detail: "used by " + strings.Join(refs, ", ")})
		}
		if _, ok := poolContaining(v.pools, a); !ok {
			add(Problem{Kind: ProblemOutsidePools, IP: a.String(), Detail: "used by " + strings.Join(refs, ", ") + " but outside every IP pool"})
			continue
		}
		if !allocated[a] && !v.inBrokenBlock(a) {
			add(Problem{Kind: ProblemNoAllocation, IP: a.String(), Detail: "used by " + strings.Join(refs, ", ") + " but has no IPAM allocation"})
		}
	}

	ids := make([]string, 0, len(v.handles)+len(handleCounts))
	for id := range v.handles {
		ids = append(ids, id)
	}
	for id := range handleCounts {
		if v.handles[id] == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		h, actual := v.handles[id], handleCounts[id]
		if h != nil && v.handleInBrokenBlock(h) {
			continue
		}
		switch {
		case h == nil:
			add(Problem{Kind: ProblemMissingHandle, Handle: id, Detail: fmt.Sprintf("blocks hold %d addresses of a handle that has no IPAMHandle object", sum(actual))})
		case len(actual) == 0:
			add(Problem{Kind: ProblemEmptyHandle, Handle: id, Detail: "IPAMHandle holds no address"})
		case !sameCounts(h.Blocks, actual):
			add(Problem{Kind: ProblemHandleMismatch, Handle: id, Detail: fmt.Sprintf("IPAMHandle counts %v, blocks hold %v", h.Blocks, actual)})
		}
	}

	for n, c := range perNode {
		rep.TopNodes = append(rep.TopNodes, NodeCount{Node: n, Allocations: c})
	}
	sort.Slice(rep.TopNodes, func(i, j int) bool {
		if rep.TopNodes[i].Allocations != rep.TopNodes[j].Allocations {
			return rep.TopNodes[i].Allocations > rep.TopNodes[j].Allocations
		}
		return rep.TopNodes[i].Node < rep.TopNodes[j].Node
	})
	if len(rep.TopNodes) > 20 {
		rep.TopNodes = rep.TopNodes[:20]
	}
	sort.SliceStable(problems, func(i, j int) bool {
		return problemRank(problems[i].Kind) < problemRank(problems[j].Kind)
	})
	rep.Problems = problems
	return rep, nil
}

func sum(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// handleInBrokenBlock reports whether a handle counts addresses in an
// undecodable block (its counts cannot be checked).
func (v *view) handleInBrokenBlock(h *Handle) bool {
	for name := range h.Blocks {
		if p, err := ParseBlockName(name); err == nil && slices.Contains(v.brokenBlocks, p) {
			return true
		}
	}
	return false
}
