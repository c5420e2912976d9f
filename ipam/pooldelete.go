package ipam

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/store"
)

// DeletePoolRequest is the payload of ipam.deletePool.
type DeletePoolRequest struct {
	Name string `json:"name"`
	// Force releases the addresses still in use and deletes the pool
	// anyway.
	Force bool `json:"force,omitempty"`
	// Revision, when set, must be the pool's current revision (the
	// resourceVersion the caller read), as for any other delete.
	Revision uint64 `json:"revision,omitempty"`
}

// DeletePoolResponse reports what a delete did. When addresses are in use
// and Force is false the command fails (ErrPoolInUse, a store.ErrConflict)
// and changes nothing: the pool stays as it was, enabled or not.
type DeletePoolResponse struct {
	Deleted       bool       `json:"deleted"`
	Disabled      bool       `json:"disabled"`
	InUse         int        `json:"inUse"`
	BlocksDeleted []string   `json:"blocksDeleted"`
	Released      []Released `json:"released"`
}

// deletePool is the ipam.deletePool command: refused while addresses are in
// use unless forced; otherwise release the blocks, then delete the pool.
func (s *session) deletePool(r DeletePoolRequest) (DeletePoolResponse, error) {
	resp := DeletePoolResponse{BlocksDeleted: []string{}, Released: []Released{}}
	key := store.Key{Kind: KindIPPool, Name: r.Name}
	o, ok := s.tx.Get(key)
	if !ok {
		return resp, newError(ErrNoPool, store.ErrNotFound, "IP pool %q does not exist", r.Name)
	}
	if r.Revision != 0 && o.Revision != r.Revision {
		return resp, newError(ErrBadRequest, store.ErrConflict, "IP pool %q is at revision %d, not %d: it changed since it was read", r.Name, o.Revision, r.Revision)
	}
	pl, err := decodePool(r.Name, o.Value)
	if err != nil {
		return resp, fmt.Errorf("IP pool %s: %w", r.Name, err)
	}
	all, err := s.blockPrefixes()
	if err != nil {
		return resp, err
	}
	var blocks []netip.Prefix
	for _, p := range all {
		if contains(pl.prefix, p) {
			blocks = append(blocks, p)
		}
	}
	err = s.eachBlock(blocks, func(_ netip.Prefix, b *Block) error {
		resp.InUse += b.inUse()
		return nil
	})
	if err != nil {
		return resp, err
	}
	if resp.InUse > 0 && !r.Force {
		// Refused, and nothing changes: the pool keeps serving as before.
		// (Calico disables the pool first; a refused delete that left the
		// only pool disabled would make every later workload add fail.)
		what := "addresses"
		if resp.InUse == 1 {
			what = "address"
		}
		return resp, newError(ErrPoolInUse, store.ErrConflict,
			"IP pool %s still has %d %s in use: not deleted, nothing changed; release them (or set spec.disabled: true to stop new allocations while it drains), or delete it with --force, which releases them", r.Name, resp.InUse, what)
	}
	err = s.eachBlock(blocks, func(p netip.Prefix, b *Block) error {
		rel, err := s.releaseMatching(p, b, func(AllocationAttribute) bool { return true })
		resp.Released = append(resp.Released, rel...)
		if err != nil {
			return err
		}
		resp.BlocksDeleted = append(resp.BlocksDeleted, p.String())
		return s.dropBlock(p, b)
	})
	if err != nil {
		return resp, err
	}
	// The blocks must be gone before the pool: the IPPool validator
	// refuses to delete a pool that still has blocks.
	if err := s.flush(); err != nil {
		return resp, err
	}
	if err := s.tx.Delete(key); err != nil {
		return resp, fmt.Errorf("delete IP pool %s: %w", r.Name, err)
	}
	resp.Deleted, resp.Disabled = true, true
	s.log.Info("deleted IP pool", "pool", r.Name, "blocks", len(resp.BlocksDeleted), "released", len(resp.Released))
	return resp, nil
}

// dropBlock deletes a block and its owner's affinity.
func (s *session) dropBlock(p netip.Prefix, b *Block) error {
	if node, ok := b.Node(); ok {
		if err := s.deleteAffinity(node, p); err != nil {
			return err
		}
	}
	s.deleteBlock(p)
	return nil
}
