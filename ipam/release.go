package ipam

import (
	"encoding/json"
	"strings"

	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/api"

	"github.com/weftnet/weft/store"
)

// ReleaseRequest is the payload of ipam.release: one address, optionally
// with the handle and sequence number the caller believes hold it; if
// either differs the release is refused (Calico's protection against
// releasing an address that was freed and reused meanwhile).
type ReleaseRequest struct {
	// IP is the address, bare or with a mask ("10.0.0.5", "10.0.0.5/26").
	IP             string  `json:"ip"`
	Handle         string  `json:"handle,omitempty"`
	SequenceNumber *uint64 `json:"sequenceNumber,omitempty"`
	// Force releases an address a WorkloadEndpoint or a node's tunnel still
	// uses (Calico refuses that unless forced: the next allocation could
	// hand the address to a second workload).
	Force bool `json:"force,omitempty"`
}

// ReleaseHandleRequest is the payload of ipam.releaseHandle.
type ReleaseHandleRequest struct {
	Handle string `json:"handle"`
}

// Released is one address given back.
type Released struct {
	IP     string `json:"ip"`
	Handle string `json:"handle"`
	Block  string `json:"block"`
	Node   string `json:"node,omitempty"`
	Type   string `json:"type,omitempty"`
}

// ReleaseResponse is the result of ipam.release and ipam.releaseHandle.
type ReleaseResponse struct {
	Released []Released `json:"released"`
}

// findBlock returns the block that holds address a: the block of its pool
// (disabled pools too; the validators keep every block inside a pool with
// that pool's block size), or, for an address outside every pool, any
// block containing it, so that even a state the validators would refuse
// can be repaired.
func (s *session) findBlock(a netip.Addr) (netip.Prefix, *Block, bool, error) {
	pools, err := s.allPools()
	if err != nil {
		return netip.Prefix{}, nil, false, err
	}
	if pl, ok := poolContaining(pools, a); ok {
		if !pl.usable() {
			return netip.Prefix{}, nil, false, nil
		}
		p := pl.blockOf(a)
		b, ok, err := s.block(p)
		return p, b, ok, err
	}
	all, err := s.blockPrefixes()
	if err != nil {
		return netip.Prefix{}, nil, false, err
	}
	for _, p := range all {
		if p.Contains(a) {
			b, ok, err := s.block(p)
			return p, b, ok, err
		}
	}
	return netip.Prefix{}, nil, false, nil
}

// releaseOrdinal frees ordinal o of block b and updates its handle. An
// empty block nobody claims, with nothing cooling down, is deleted.
func (s *session) releaseOrdinal(p netip.Prefix, b *Block, o int) (Released, error) {
	cfg, err := s.config()
	if err != nil {
		return Released{}, err
	}
	attr, _ := b.attribute(o)
	b.expireCooldown(s.now, cfg.cooldown)
	b.release(o, s.now, cfg.cooldown)
	if err := s.removeFromHandle(attr.Handle, BlockName(p.String()), 1); err != nil {
		return Released{}, err
	}
	if _, claimed := b.Node(); !claimed && b.quiet() {
		s.deleteBlock(p)
	} else {
		s.putBlock(p, b)
	}
	return Released{
		IP:     addrAt(p, o).String(),
		Handle: attr.Handle,
		Block:  p.String(),
		Node:   attr.Node,
		Type:   attr.Type,
	}, nil
}

// release is the ipam.release command.
func (s *session) release(r ReleaseRequest) (ReleaseResponse, error) {
	a, err := ParseAddrOrPrefix(r.IP)
	if err != nil {
		return ReleaseResponse{}, newError(ErrBadRequest, store.ErrInvalid, "%v", err)
	}
	p, b, ok, err := s.findBlock(a)
	if err != nil {
		return ReleaseResponse{}, err
	}
	if !ok {
		return ReleaseResponse{}, newError(ErrNotAllocated, store.ErrNotFound, "address %s is not allocated", a)
	}
	o, _ := ordinalOf(p, a)
	attr, ok := b.attribute(o)
	if !ok {
		if _, cooling := b.cooling(o); cooling {
			return ReleaseResponse{}, newError(ErrNotAllocated, store.ErrNotFound, "address %s is not allocated (already released, cooling down)", a)
		}
		return ReleaseResponse{}, newError(ErrNotAllocated, store.ErrNotFound, "address %s is not allocated", a)
	}
	if r.Handle != "" && r.Handle != attr.Handle {
		return ReleaseResponse{}, newError(ErrHandleMismatch, store.ErrConflict, "address %s is held by handle %s, not %s: not released", a, attr.Handle, r.Handle)
	}
	if seq := b.SequenceNumberForAllocation[o]; r.SequenceNumber != nil && *r.SequenceNumber != seq {
		return ReleaseResponse{}, newError(ErrSequence, store.ErrConflict,
			"address %s was reallocated since (sequence number %d, expected %d): not released", a, seq, *r.SequenceNumber)
	}
	if !r.Force {
		if users := usersOf(s.tx, a); len(users) > 0 {
			return ReleaseResponse{}, newError(ErrInUse, store.ErrConflict,
				"address %s is in use by %s: not released (pass --force to release it anyway; the workload then keeps an address IPAM may hand out again)",
				a, strings.Join(users, ", "))
		}
	}
	rel, err := s.releaseOrdinal(p, b, o)
	if err != nil {
		return ReleaseResponse{}, err
	}
	return ReleaseResponse{Released: []Released{rel}}, s.flush()
}

// usersOf lists the WorkloadEndpoints and node tunnels that use address a
// (inside the apply: no race can slip past the check).
func usersOf(r Reader, a netip.Addr) []string {
	var out []string
	for _, o := range r.List(KindWorkloadEndpoint, "") {
		ips, _ := workloadEndpointIPs(o.Value)
		if slices.Contains(ips, a) {
			out = append(out, fmt.Sprintf("WorkloadEndpoint %s/%s", o.Namespace, o.Name))
		}
	}
	for _, o := range r.List(KindNode, "") {
		var n api.Node
		if json.Unmarshal(o.Value, &n) != nil {
			continue
		}
		for _, t := range tunnelAddrs(&n) {
			if ta, err := ParseAddrOrPrefix(t[0]); err == nil && ta == a {
				out = append(out, fmt.Sprintf("Node %s (%s)", o.Name, t[1]))
			}
		}
	}
	return out
}

// releaseHandle is the ipam.releaseHandle command.
func (s *session) releaseHandle(r ReleaseHandleRequest) (ReleaseResponse, error) {
	if err := validHandle(r.Handle); err != nil {
		return ReleaseResponse{}, err
	}
	h, ok, err := s.handle(r.Handle)
	if err != nil {
		return ReleaseResponse{}, err
	}
	if !ok {
		return ReleaseResponse{}, newError(ErrUnknownHandle, store.ErrNotFound, "handle %s holds no address", r.Handle)
	}
	rels, err := s.releaseWholeHandle(h)
	if err != nil {
		return ReleaseResponse{}, err
	}
	return ReleaseResponse{Released: rels}, s.flush()
}

// releaseWholeHandle frees every address of a handle and the handle.
func (s *session) releaseWholeHandle(h *Handle) ([]Released, error) {
	names := make([]string, 0, len(h.Blocks))
	for n := range h.Blocks {
		names = append(names, n)
	}
	slices.Sort(names)
	rels := []Released{}
	for _, n := range names {
		p, err := ParseBlockName(n)
		if err != nil {
			return nil, fmt.Errorf("handle %s: %w", h.HandleID, err)
		}
		b, ok, err := s.block(p)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		for _, o := range b.ordinalsOf(h.HandleID) {
			rel, err := s.releaseOrdinal(p, b, o)
			if err != nil {
				return nil, err
			}
			rels = append(rels, rel)
		}
	}
	// Drop the handle even if its counts disagreed with the blocks.
	s.deleteHandle(h.HandleID)
	return rels, nil
}
