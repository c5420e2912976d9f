package ipam

import (
	"bytes"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// maxCachedBlocks bounds the cache (a /16 pool in /26 blocks is 1024).
const maxCachedBlocks = 1 << 16

// blockCache remembers decoded blocks by their exact stored bytes, so that
// a block read again unchanged is not decoded again (decoding a full /26
// block costs ~100µs, and the allocator reads every full block of a node
// before it claims a new one). It is content-addressed: a hit returns a
// copy of the block whose encoding is exactly those bytes, the same value
// decoding them would give, so the cache cannot change any result and
// replicas with warm and cold caches stay identical (tested by running
// one of each side by side).
type blockCache struct {
	mu sync.Mutex
	m  map[string]cachedBlock // by block name
}

type cachedBlock struct {
	raw    []byte
	b      *Block
	prefix netip.Prefix
}

func newBlockCache() *blockCache {
	return &blockCache{m: map[string]cachedBlock{}}
}

// decode returns the block stored as value, decoding it only if the cache
// does not hold exactly these bytes. The caller owns the result.
func (c *blockCache) decode(name string, value []byte) (*Block, netip.Prefix, error) {
	if c == nil {
		return decodeBlock(value)
	}
	if e, ok := c.lookup(name, value); ok {
		return e.b.clone(), e.prefix, nil
	}
	b, p, err := decodeBlock(value)
	if err != nil {
		return nil, p, err
	}
	c.store(name, bytes.Clone(value), b.clone(), p)
	return b, p, nil
}

// noRoom reports, without decoding or copying, that the block stored as
// value certainly has no free or cooling ordinal (and is affine to owner,
// if given). false means "unknown or not so".
func (c *blockCache) noRoom(name string, value []byte, owner string) bool {
	if c == nil {
		return false
	}
	e, ok := c.lookup(name, value)
	return ok && full(e.b, owner)
}

// remember records that value is the encoding of b (which the caller just
// marshalled), so the next reader of these bytes need not decode them.
// b must be normalized (see Block.normalize) so that it equals what
// decoding value gives.
func (c *blockCache) remember(name string, value []byte, b *Block, p netip.Prefix) {
	if c == nil {
		return
	}
	c.store(name, value, b.clone(), p)
}

func (c *blockCache) lookup(name string, value []byte) (cachedBlock, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok || !bytes.Equal(e.raw, value) {
		return cachedBlock{}, false
	}
	return e, true
}

func (c *blockCache) store(name string, raw []byte, b *Block, p netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedBlocks {
		clear(c.m)
	}
	c.m[name] = cachedBlock{raw: raw, b: b, prefix: p}
}

// clone copies a block deeply enough for the copy to be changed freely:
// the allocator never writes through the *int and *time.Time pointers, it
// replaces them.
func (b *Block) clone() *Block {
	c := *b
	c.Allocations = slices.Clone(b.Allocations)
	c.Unallocated = slices.Clone(b.Unallocated)
	c.Attributes = slices.Clone(b.Attributes)
	c.SequenceNumberForAllocation = maps.Clone(b.SequenceNumberForAllocation)
	c.Released = slices.Clone(b.Released)
	return &c
}

// normalize makes the in-memory block equal to what decoding its JSON
// gives: fields that JSON omits when empty come back nil.
func (b *Block) normalize() {
	if len(b.SequenceNumberForAllocation) == 0 {
		b.SequenceNumberForAllocation = nil
	}
	if len(b.Released) == 0 {
		b.Released = nil
	}
}
