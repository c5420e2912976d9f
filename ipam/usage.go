package ipam

import (
	"math/big"
	"sort"
)

// PoolUsage is the usage of one pool, for metrics (ipam_ippool_size,
// ipam_ippool_reserved, ipam_allocations_in_use, ...).
type PoolUsage struct {
	Name     string `json:"name"`
	CIDR     string `json:"cidr"`
	Family   int    `json:"family"`
	Disabled bool   `json:"disabled"`
	// Size and Reserved are float64 because an IPv6 pool can exceed 2^64
	// addresses (Prometheus values are float64 anyway).
	Size     float64 `json:"size"`
	Reserved float64 `json:"reserved"`
	InUse    int     `json:"inUse"`
	Borrowed int     `json:"borrowed"`
	Blocks   int     `json:"blocks"`
}

// NodeUsage is the usage of one node: addresses used on it (in its own
// blocks or borrowed) and blocks it holds.
type NodeUsage struct {
	Node     string `json:"node"`
	InUse    int    `json:"inUse"`
	Borrowed int    `json:"borrowed"`
	Blocks   int    `json:"blocks"`
}

// UsageReport is the IPAM usage for metrics.
type UsageReport struct {
	InUse    int         `json:"inUse"`
	Borrowed int         `json:"borrowed"`
	Blocks   int         `json:"blocks"`
	Pools    []PoolUsage `json:"pools"`
	Nodes    []NodeUsage `json:"nodes"`
}

// Usage counts addresses in use and borrowed, and blocks, per pool and
// per node. (GC candidates and reclamations come from ipam.gc's response.)
func Usage(r Reader) (*UsageReport, error) {
	v, err := load(r)
	if err != nil {
		return nil, err
	}
	rep := &UsageReport{Pools: []PoolUsage{}, Nodes: []NodeUsage{}}
	nodes := map[string]*NodeUsage{}
	node := func(n string) *NodeUsage {
		if nodes[n] == nil {
			nodes[n] = &NodeUsage{Node: n}
		}
		return nodes[n]
	}
	pools := make([]PoolUsage, len(v.pools))
	for i, pl := range v.pools {
		size, _ := new(big.Float).SetInt(prefixSize(pl.prefix)).Float64()
		reserved, _ := new(big.Float).SetInt(v.res.count(pl.prefix)).Float64()
		pools[i] = PoolUsage{Name: pl.name, CIDR: pl.prefix.String(), Family: pl.family(), Disabled: pl.disabled(), Size: size, Reserved: reserved}
	}
	for _, bv := range v.blocks {
		rep.Blocks++
		owner, claimed := bv.b.Node()
		if claimed {
			node(owner).Blocks++
		}
		pi := -1
		for i, pl := range v.pools {
			if contains(pl.prefix, bv.prefix) {
				pi = i
				pools[i].Blocks++
				break
			}
		}
		for o := range bv.b.Allocations {
			attr, ok := bv.b.attribute(o)
			if !ok {
				continue
			}
			borrowed := attr.Node != owner || !claimed
			rep.InUse++
			n := node(attr.Node)
			n.InUse++
			if borrowed {
				rep.Borrowed++
				n.Borrowed++
			}
			if pi >= 0 {
				pools[pi].InUse++
				if borrowed {
					pools[pi].Borrowed++
				}
			}
		}
	}
	rep.Pools = pools
	for _, n := range nodes {
		rep.Nodes = append(rep.Nodes, *n)
	}
	sort.Slice(rep.Nodes, func(i, j int) bool { return rep.Nodes[i].Node < rep.Nodes[j].Node })
	return rep, nil
}
