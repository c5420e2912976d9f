// Package ipam is weft's Calico-style IP address management.
//
// Pools (api.IPPool) are cut into blocks; a node claims blocks for itself
// (BlockAffinity) and hands out addresses from its own blocks first,
// claiming a free block when they are full and, unless strictAffinity is
// set, borrowing single addresses from other nodes' blocks when no block is
// free. Every address belongs to a handle (one per workload or tunnel) with
// attributes naming the node, namespace and workload.
//
// Everything that writes runs as a registered store command inside the raft
// apply (see Register): the whole operation sees one consistent state and
// commits atomically, so there are no compare-and-swap retry loops, and
// every replica computes the same result because the handlers use only the
// transaction (Tx.Now, Tx.Index) and iterate in sorted order.
//
// The read side (Show, Check, Usage) is a set of pure functions over the
// stored objects, for the CLI and metrics.
//
// docs/ipam.md describes the data model, the algorithm and the decisions.
package ipam
