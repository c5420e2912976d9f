package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// newBlock returns an empty block for p, claimed by node (none if empty).
// seq is the raft index of the write creating it.
func newBlock(p netip.Prefix, node string, now time.Time, seq uint64) *Block {
	n := blockLen(p)
	b := &Block{
		CIDR:           p.String(),
		Allocations:    make([]*int, n),
		Unallocated:    make([]int, n),
		Attributes:     []AllocationAttribute{},
		SequenceNumber: seq,
	}
	for i := range n {
		b.Unallocated[i] = i
	}
	if node != "" {
		b.claim(node, now)
	}
	return b
}

// decodeBlock parses a stored block and checks its shape enough for the
// allocator to index it safely; validate checks everything.
func decodeBlock(value []byte) (*Block, netip.Prefix, error) {
	var b Block
	if err := json.Unmarshal(value, &b); err != nil {
		return nil, netip.Prefix{}, fmt.Errorf("decode IPAMBlock: %w", err)
	}
	p, err := ParseCIDR(b.CIDR)
	if err != nil {
		return nil, netip.Prefix{}, fmt.Errorf("IPAMBlock: %w", err)
	}
	if len(b.Allocations) != blockLen(p) {
		return nil, netip.Prefix{}, fmt.Errorf("IPAMBlock %s: %d allocation slots, want %d", b.CIDR, len(b.Allocations), blockLen(p))
	}
	return &b, p, nil
}

func (b *Block) claim(node string, now time.Time) {
	b.Affinity = affinityPrefix + node
	t := now
	b.AffinityClaimTime = &t
}

func (b *Block) unclaim() {
	b.Affinity = ""
	b.AffinityClaimTime = nil
}

// Node returns the node the block is affine to, if any.
func (b *Block) Node() (string, bool) {
	n, ok := strings.CutPrefix(b.Affinity, affinityPrefix)
	return n, ok && n != ""
}

func (b *Block) affineTo(node string) bool {
	n, ok := b.Node()
	return ok && n == node
}

// expireCooldown returns ordinals whose cooldown has passed to the tail of
// the free list, oldest release first. It reports whether anything moved.
func (b *Block) expireCooldown(now time.Time, cooldown time.Duration) bool {
	if len(b.Released) == 0 {
		return false
	}
	kept := b.Released[:0:0]
	moved := false
	for _, r := range b.Released {
		if !r.ReleasedAt.Add(cooldown).After(now) {
			b.Unallocated = append(b.Unallocated, r.Ordinal)
			moved = true
			continue
		}
		kept = append(kept, r)
	}
	if len(kept) == 0 {
		kept = nil
	}
	b.Released = kept
	return moved
}

// freeCount is the number of free ordinals that are not reserved (call
// expireCooldown first).
func (b *Block) freeCount(p netip.Prefix, res reservations) int {
	if !res.touches(p) {
		return len(b.Unallocated)
	}
	n := 0
	for _, o := range b.Unallocated {
		if !res.contains(addrAt(p, o)) {
			n++
		}
	}
	return n
}

// attributeIndex returns the index of an identical attribute entry,
// adding one if there is none.
func (b *Block) attributeIndex(a AllocationAttribute) int {
	for i := range b.Attributes {
		if sameAttribute(b.Attributes[i], a) {
			return i
		}
	}
	b.Attributes = append(b.Attributes, a)
	return len(b.Attributes) - 1
}

// sameAttribute compares attributes, timestamps by instant (a decoded time
// and a fresh one differ in representation).
func sameAttribute(x, y AllocationAttribute) bool {
	tx, ty := x.Timestamp, y.Timestamp
	x.Timestamp, y.Timestamp = time.Time{}, time.Time{}
	return x == y && tx.Equal(ty)
}

// allocateNext takes the first free, unreserved ordinal from the head of
// the FIFO free list.
func (b *Block) allocateNext(p netip.Prefix, a AllocationAttribute, seq uint64, res reservations) (int, bool) {
	check := res.touches(p)
	for i, o := range b.Unallocated {
		if check && res.contains(addrAt(p, o)) {
			continue
		}
		b.Unallocated = slices.Delete(b.Unallocated, i, i+1)
		b.setAllocation(o, a, seq)
		return o, true
	}
	return 0, false
}

// allocateOrdinal allocates a specific ordinal, which must be free.
func (b *Block) allocateOrdinal(o int, a AllocationAttribute, seq uint64) bool {
	i := slices.Index(b.Unallocated, o)
	if i < 0 {
		return false
	}
	b.Unallocated = slices.Delete(b.Unallocated, i, i+1)
	b.setAllocation(o, a, seq)
	return true
}

func (b *Block) setAllocation(o int, a AllocationAttribute, seq uint64) {
	idx := b.attributeIndex(a)
	b.Allocations[o] = &idx
	if b.SequenceNumberForAllocation == nil {
		b.SequenceNumberForAllocation = map[int]uint64{}
	}
	b.SequenceNumberForAllocation[o] = seq
}

// attribute returns the attributes of an allocated ordinal.
func (b *Block) attribute(o int) (AllocationAttribute, bool) {
	if o < 0 || o >= len(b.Allocations) || b.Allocations[o] == nil {
		return AllocationAttribute{}, false
	}
	i := *b.Allocations[o]
	if i < 0 || i >= len(b.Attributes) {
		// Only a corrupt block (which validate rejects) gets here.
		return AllocationAttribute{}, false
	}
	return b.Attributes[i], true
}

// cooling returns when ordinal o was released, if it is in cooldown.
func (b *Block) cooling(o int) (time.Time, bool) {
	for _, r := range b.Released {
		if r.Ordinal == o {
			return r.ReleasedAt, true
		}
	}
	return time.Time{}, false
}

// release frees an allocated ordinal: straight to the free list's tail
// when there is no cooldown, otherwise into cooldown.
func (b *Block) release(o int, now time.Time, cooldown time.Duration) {
	b.Allocations[o] = nil
	delete(b.SequenceNumberForAllocation, o)
	if len(b.SequenceNumberForAllocation) == 0 {
		b.SequenceNumberForAllocation = nil
	}
	if cooldown > 0 {
		b.Released = append(b.Released, ReleasedOrdinal{Ordinal: o, ReleasedAt: now})
	} else {
		b.Unallocated = append(b.Unallocated, o)
	}
	b.compactAttributes()
}

// compactAttributes drops attribute entries no allocation refers to,
// keeping the order of the others.
func (b *Block) compactAttributes() {
	used := make([]bool, len(b.Attributes))
	for _, idx := range b.Allocations {
		if idx != nil {
			used[*idx] = true
		}
	}
	if !slices.Contains(used, false) {
		return
	}
	remap := make([]int, len(b.Attributes))
	kept := b.Attributes[:0:0]
	for i, a := range b.Attributes {
		if used[i] {
			remap[i] = len(kept)
			kept = append(kept, a)
		}
	}
	b.Attributes = kept
	for o, idx := range b.Allocations {
		if idx != nil {
			n := remap[*idx]
			b.Allocations[o] = &n
		}
	}
}

// inUse is the number of allocated ordinals.
func (b *Block) inUse() int {
	n := 0
	for _, idx := range b.Allocations {
		if idx != nil {
			n++
		}
	}
	return n
}

// empty reports whether no ordinal is allocated.
func (b *Block) empty() bool {
	return !slices.ContainsFunc(b.Allocations, func(p *int) bool { return p != nil })
}

// quiet reports whether the block is empty and nothing is cooling down:
// only then may it be deleted without losing cooldown protection.
func (b *Block) quiet() bool { return b.empty() && len(b.Released) == 0 }

// ordinalsOf returns the ordinals held by a handle, in order.
func (b *Block) ordinalsOf(handle string) []int {
	var out []int
	for o, idx := range b.Allocations {
		if idx != nil && b.Attributes[*idx].Handle == handle {
			out = append(out, o)
		}
	}
	return out
}

// validate checks the block's invariants: every ordinal is in exactly one
// state, attribute indexes are valid, every allocation has a handle and a
// sequence number.
func (b *Block) validate() error {
	p, err := ParseCIDR(b.CIDR)
	if err != nil {
		return err
	}
	n := blockLen(p)
	if len(b.Allocations) != n {
		return fmt.Errorf("block %s has %d allocation slots, want %d", b.CIDR, len(b.Allocations), n)
	}
	if b.Affinity != "" {
		if _, ok := b.Node(); !ok {
			return fmt.Errorf("block %s has invalid affinity %q (want host:<node>)", b.CIDR, b.Affinity)
		}
	}
	seen := make([]string, n)
	mark := func(o int, state string) error {
		if o < 0 || o >= n {
			return fmt.Errorf("block %s: %s ordinal %d out of range", b.CIDR, state, o)
		}
		if seen[o] != "" {
			return fmt.Errorf("block %s: ordinal %d (%s) is both %s and %s", b.CIDR, o, addrAt(p, o), seen[o], state)
		}
		seen[o] = state
		return nil
	}
	used := make([]bool, len(b.Attributes))
	for o, idx := range b.Allocations {
		if idx == nil {
			continue
		}
		if *idx < 0 || *idx >= len(b.Attributes) {
			return fmt.Errorf("block %s: ordinal %d refers to attribute %d of %d", b.CIDR, o, *idx, len(b.Attributes))
		}
		used[*idx] = true
		if err := mark(o, "allocated"); err != nil {
			return err
		}
		if _, ok := b.SequenceNumberForAllocation[o]; !ok {
			return fmt.Errorf("block %s: allocated ordinal %d has no sequence number", b.CIDR, o)
		}
	}
	for _, o := range b.Unallocated {
		if err := mark(o, "free"); err != nil {
			return err
		}
	}
	for _, r := range b.Released {
		if err := mark(r.Ordinal, "cooling down"); err != nil {
			return err
		}
	}
	for o, s := range seen {
		if s == "" {
			return fmt.Errorf("block %s: ordinal %d (%s) is neither allocated, free nor cooling down", b.CIDR, o, addrAt(p, o))
		}
	}
	for o := range b.SequenceNumberForAllocation {
		if o < 0 || o >= n || b.Allocations[o] == nil {
			return fmt.Errorf("block %s: sequence number for unallocated ordinal %d", b.CIDR, o)
		}
	}
	for i, a := range b.Attributes {
		if !used[i] {
			return fmt.Errorf("block %s: attribute %d (handle %q) is not used by any allocation", b.CIDR, i, a.Handle)
		}
		if a.Handle == "" {
			return fmt.Errorf("block %s: attribute %d has no handle", b.CIDR, i)
		}
	}
	return nil
}
