package ipam

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/weftnet/weft/store"
)

// ReleaseHostRequest is the payload of ipam.releaseHost, run when a node
// leaves the cluster.
type ReleaseHostRequest struct {
	Node string `json:"node"`
}

// ReleaseHostResponse lists what was given back. Releasing a node that
// holds nothing succeeds with empty lists (the removal may be retried).
type ReleaseHostResponse struct {
	Released []Released `json:"released"`
	// BlocksDeleted were the node's blocks and are gone.
	BlocksDeleted []string `json:"blocksDeleted"`
	// BlocksUnclaimed were the node's blocks but still hold addresses of
	// other nodes (borrowed) or addresses cooling down: they lose their
	// affinity and are deleted once empty (ipam.reclaimEmpty).
	BlocksUnclaimed []string `json:"blocksUnclaimed"`
}

// releaseHost is the ipam.releaseHost command: every address used on the
// node (in its own blocks or borrowed from others) and every affinity it
// holds (Calico's node-delete cascade, calico.md §1.13 steps 1 and 3).
func (s *session) releaseHost(r ReleaseHostRequest) (ReleaseHostResponse, error) {
	if r.Node == "" {
		return ReleaseHostResponse{}, newError(ErrBadRequest, store.ErrInvalid, "node is required")
	}
	resp := ReleaseHostResponse{Released: []Released{}, BlocksDeleted: []string{}, BlocksUnclaimed: []string{}}
	blocks, err := s.blockPrefixes()
	if err != nil {
		return resp, err
	}
	err = s.eachBlock(blocks, func(p netip.Prefix, b *Block) error {
		rel, err := s.releaseMatching(p, b, func(a AllocationAttribute) bool { return a.Node == r.Node })
		resp.Released = append(resp.Released, rel...)
		if err != nil || !b.affineTo(r.Node) {
			return err
		}
		if b.quiet() {
			s.deleteBlock(p)
			resp.BlocksDeleted = append(resp.BlocksDeleted, p.String())
		} else {
			b.unclaim()
			s.putBlock(p, b)
			resp.BlocksUnclaimed = append(resp.BlocksUnclaimed, p.String())
		}
		return nil
	})
	if err != nil {
		return resp, err
	}
	affs, err := s.affinities(r.Node)
	if err != nil {
		return resp, err
	}
	for _, p := range affs {
		if err := s.deleteAffinity(r.Node, p); err != nil {
			return resp, err
		}
	}
	s.log.Info("released IPAM state of node", "node", r.Node, "addresses", len(resp.Released),
		"blocksDeleted", len(resp.BlocksDeleted), "blocksUnclaimed", len(resp.BlocksUnclaimed))
	return resp, s.flush()
}

// ReclaimEmptyRequest is the payload of ipam.reclaimEmpty.
type ReclaimEmptyRequest struct {
	// GracePeriodSeconds is how long a block must have been empty before
	// it loses its affinity; nil means DefaultEmptyBlockGrace.
	GracePeriodSeconds *int64 `json:"gracePeriodSeconds,omitempty"`
}

// ReclaimEmptyResponse lists the blocks deleted.
type ReclaimEmptyResponse struct {
	// Released are blocks taken from their node (affinity dropped, block
	// deleted).
	Released []string `json:"released"`
	// Orphans are empty blocks without a node that were deleted.
	Orphans []string `json:"orphans"`
}

// DefaultEmptyBlockGrace is how long a block stays empty before
// ipam.reclaimEmpty takes it from its node by default. Calico releases an
// empty block after two consecutive GC observations (5 minutes apart by
// default); a timestamp makes that independent of the caller's period.
const DefaultEmptyBlockGrace = 5 * time.Minute

// reclaimEmpty is the ipam.reclaimEmpty command: empty blocks (nothing
// allocated, nothing cooling down) that stayed empty for the grace period
// lose their affinity and are deleted, except that a node keeps at least
// one block per IP family so it does not churn blocks.
func (s *session) reclaimEmpty(r ReclaimEmptyRequest) (ReclaimEmptyResponse, error) {
	grace := DefaultEmptyBlockGrace
	if r.GracePeriodSeconds != nil {
		if *r.GracePeriodSeconds < 0 {
			return ReclaimEmptyResponse{}, newError(ErrBadRequest, store.ErrInvalid, "gracePeriodSeconds must not be negative")
		}
		grace = time.Duration(*r.GracePeriodSeconds) * time.Second
	}
	cfg, err := s.config()
	if err != nil {
		return ReclaimEmptyResponse{}, err
	}
	resp := ReclaimEmptyResponse{Released: []string{}, Orphans: []string{}}
	blocks, err := s.blockPrefixes()
	if err != nil {
		return resp, err
	}
	type nodeFamily struct {
		node string
		fam  int
	}
	total := map[nodeFamily]int{}
	var reclaimable []nodeFamily
	var reclaimableBlocks []int // index into blocks
	for i, p := range blocks {
		b, ok, err := s.block(p)
		if err != nil {
			return resp, err
		}
		if !ok {
			continue
		}
		node, claimed := b.Node()
		key := nodeFamily{node, family(p.Addr())}
		if claimed {
			total[key]++
		}
		b.expireCooldown(s.now, cfg.cooldown)
		if !b.quiet() || b.EmptySince == nil || s.now.Sub(*b.EmptySince) < grace {
			continue
		}
		if !claimed {
			s.deleteBlock(p)
			resp.Orphans = append(resp.Orphans, p.String())
			continue
		}
		reclaimable = append(reclaimable, key)
		reclaimableBlocks = append(reclaimableBlocks, i)
	}
	// Walk from the highest address down so that a node left with only
	// reclaimable blocks keeps its lowest one.
	for j := len(reclaimable) - 1; j >= 0; j-- {
		key, p := reclaimable[j], blocks[reclaimableBlocks[j]]
		if total[key] <= 1 {
			continue
		}
		total[key]--
		if err := s.deleteAffinity(key.node, p); err != nil {
			return resp, err
		}
		s.deleteBlock(p)
		resp.Released = append(resp.Released, p.String())
	}
	// Report in address order.
	for i, k := 0, len(resp.Released)-1; i < k; i, k = i+1, k-1 {
		resp.Released[i], resp.Released[k] = resp.Released[k], resp.Released[i]
	}
	if n := len(resp.Released) + len(resp.Orphans); n > 0 {
		s.log.Info("reclaimed empty IPAM blocks", "released", len(resp.Released), "orphans", len(resp.Orphans))
	}
	if err := s.flush(); err != nil {
		return resp, fmt.Errorf("reclaim empty blocks: %w", err)
	}
	return resp, nil
}
