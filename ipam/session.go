package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/weftnet/weft/store"
)

// session is one command's view of the IPAM state: it reads through the
// Tx, keeps decoded blocks and handles in memory while the command works
// on them, and writes each changed one once, in name order, at the end.
// Affinities are written straight through (they are small and rare).
type session struct {
	tx    store.Tx
	now   time.Time
	index uint64
	log   *slog.Logger
	cache *blockCache // may be nil

	cfg    *config
	pools  []pool
	loaded bool // pools
	res    reservations
	resOK  bool

	blocks  map[string]*blockEntry
	handles map[string]*handleEntry
}

type blockEntry struct {
	b       *Block
	prefix  netip.Prefix
	stored  bool // present in the store when the session read it
	dirty   bool
	deleted bool
}

type handleEntry struct {
	h       *Handle
	stored  bool
	dirty   bool
	deleted bool
}

func newSession(tx store.Tx, log *slog.Logger, cache *blockCache) *session {
	return &session{
		tx:    tx,
		cache: cache,
		// UTC so that the JSON of every timestamp is the same bytes on
		// every replica whatever the leader's time zone.
		now:     tx.Now().UTC(),
		index:   tx.Index(),
		log:     log,
		blocks:  map[string]*blockEntry{},
		handles: map[string]*handleEntry{},
	}
}

func (s *session) config() (config, error) {
	if s.cfg == nil {
		spec, err := loadConfigSpec(s.tx)
		if err != nil {
			return config{}, err
		}
		c := effectiveConfig(spec)
		s.cfg = &c
	}
	return *s.cfg, nil
}

func (s *session) allPools() ([]pool, error) {
	if !s.loaded {
		p, err := loadPools(s.tx.List(KindIPPool, ""))
		if err != nil {
			return nil, err
		}
		s.pools, s.loaded = p, true
	}
	return s.pools, nil
}

func (s *session) reservations() (reservations, error) {
	if !s.resOK {
		r, err := loadReservations(s.tx.List(KindIPReservation, ""))
		if err != nil {
			return nil, err
		}
		s.res, s.resOK = r, true
	}
	return s.res, nil
}

// block returns the block with CIDR p, or false if there is none.
func (s *session) block(p netip.Prefix) (*Block, bool, error) {
	name := BlockName(p.String())
	if e, ok := s.blocks[name]; ok {
		return e.b, !e.deleted, nil
	}
	o, ok := s.tx.Get(BlockKey(p.String()))
	if !ok {
		s.blocks[name] = &blockEntry{prefix: p, deleted: true}
		return nil, false, nil
	}
	b, bp, err := s.cache.decode(name, o.Value)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", o.Key, err)
	}
	if bp != p {
		return nil, false, fmt.Errorf("%s: stored CIDR %s does not match its name", o.Key, b.CIDR)
	}
	s.blocks[name] = &blockEntry{b: b, prefix: p, stored: true}
	return b, true, nil
}

// noRoom reports, cheaply, that block p exists, is affine to owner (when
// owner is not empty) and has no free or cooling address, so that loading
// it could change nothing; false means "maybe not".
func (s *session) noRoom(p netip.Prefix, owner string) bool {
	name := BlockName(p.String())
	if e, ok := s.blocks[name]; ok {
		return !e.deleted && full(e.b, owner)
	}
	o, ok := s.tx.Get(BlockKey(p.String()))
	return ok && s.cache.noRoom(name, o.Value, owner)
}

// full reports whether b has no free or cooling ordinal and, when owner is
// not empty, is affine to owner.
func full(b *Block, owner string) bool {
	return len(b.Unallocated) == 0 && len(b.Released) == 0 && (owner == "" || b.affineTo(owner))
}

// putBlock records that block b (CIDR p) must be written.
func (s *session) putBlock(p netip.Prefix, b *Block) {
	name := BlockName(p.String())
	e, ok := s.blocks[name]
	if !ok {
		_, stored := s.tx.Get(BlockKey(p.String()))
		e = &blockEntry{prefix: p, stored: stored}
		s.blocks[name] = e
	}
	e.b, e.dirty, e.deleted = b, true, false
}

// deleteBlock records that the block with CIDR p must be deleted.
func (s *session) deleteBlock(p netip.Prefix) {
	name := BlockName(p.String())
	e, ok := s.blocks[name]
	if !ok {
		_, stored := s.tx.Get(BlockKey(p.String()))
		e = &blockEntry{prefix: p, stored: stored}
		s.blocks[name] = e
	}
	e.b, e.dirty, e.deleted = nil, false, true
}

// blockPrefixes returns the CIDRs of every existing block (including the
// session's own changes) in address order.
func (s *session) blockPrefixes() ([]netip.Prefix, error) {
	seen := map[netip.Prefix]bool{}
	for _, o := range s.tx.List(KindBlock, "") {
		p, err := ParseBlockName(o.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.Key, err)
		}
		seen[p] = true
	}
	for _, e := range s.blocks {
		seen[e.prefix] = !e.deleted
	}
	out := make([]netip.Prefix, 0, len(seen))
	for p, ok := range seen {
		if ok {
			out = append(out, p)
		}
	}
	sortPrefixes(out)
	return out, nil
}

// sortPrefixes orders prefixes by address then length.
func sortPrefixes(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool {
		if c := ps[i].Addr().Compare(ps[j].Addr()); c != 0 {
			return c < 0
		}
		return ps[i].Bits() < ps[j].Bits()
	})
}

// handle returns the handle with the given ID, or false.
func (s *session) handle(id string) (*Handle, bool, error) {
	if e, ok := s.handles[id]; ok {
		return e.h, !e.deleted, nil
	}
	o, ok := s.tx.Get(HandleKey(id))
	if !ok {
		s.handles[id] = &handleEntry{deleted: true}
		return nil, false, nil
	}
	var h Handle
	if err := json.Unmarshal(o.Value, &h); err != nil {
		return nil, false, fmt.Errorf("%s: decode: %w", o.Key, err)
	}
	if h.Blocks == nil {
		h.Blocks = map[string]int{}
	}
	s.handles[id] = &handleEntry{h: &h, stored: true}
	return &h, true, nil
}

func (s *session) putHandle(h *Handle) {
	e, ok := s.handles[h.HandleID]
	if !ok {
		_, stored := s.tx.Get(HandleKey(h.HandleID))
		e = &handleEntry{stored: stored}
		s.handles[h.HandleID] = e
	}
	e.h, e.dirty, e.deleted = h, true, false
}

func (s *session) deleteHandle(id string) {
	e, ok := s.handles[id]
	if !ok {
		_, stored := s.tx.Get(HandleKey(id))
		e = &handleEntry{stored: stored}
		s.handles[id] = e
	}
	e.h, e.dirty, e.deleted = nil, false, true
}

// addToHandle counts n more addresses of a handle in a block, creating the
// handle if needed.
func (s *session) addToHandle(id, block string, n int) error {
	h, ok, err := s.handle(id)
	if err != nil {
		return err
	}
	if !ok {
		h = &Handle{HandleID: id, Blocks: map[string]int{}}
	}
	h.Blocks[block] += n
	s.putHandle(h)
	return nil
}

// removeFromHandle counts n fewer addresses of a handle in a block and
// deletes the handle when it holds nothing. A missing handle is tolerated
// (ipam check reports it) so that an address can always be released.
func (s *session) removeFromHandle(id, block string, n int) error {
	h, ok, err := s.handle(id)
	if err != nil || !ok {
		return err
	}
	h.Blocks[block] -= n
	if h.Blocks[block] <= 0 {
		delete(h.Blocks, block)
	}
	if len(h.Blocks) == 0 {
		s.deleteHandle(id)
		return nil
	}
	s.putHandle(h)
	return nil
}

// putAffinity records that node holds block p.
func (s *session) putAffinity(node string, p netip.Prefix) error {
	v, err := json.Marshal(BlockAffinity{Node: node, CIDR: p.String()})
	if err != nil {
		return err
	}
	if _, err := s.tx.Put(AffinityKey(node, p.String()), v); err != nil {
		return fmt.Errorf("claim block %s for node %s: %w", p, node, err)
	}
	return nil
}

// deleteAffinity drops node's affinity for block p, if it exists.
func (s *session) deleteAffinity(node string, p netip.Prefix) error {
	err := s.tx.Delete(AffinityKey(node, p.String()))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("release block %s of node %s: %w", p, node, err)
	}
	return nil
}

// affinities returns the blocks a node holds, in address order.
func (s *session) affinities(node string) ([]netip.Prefix, error) {
	objs := s.tx.List(KindBlockAffinity, node)
	out := make([]netip.Prefix, 0, len(objs))
	for _, o := range objs {
		p, err := ParseBlockName(o.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.Key, err)
		}
		out = append(out, p)
	}
	sortPrefixes(out)
	return out, nil
}

// flush writes every changed block and handle, in name order.
func (s *session) flush() error {
	names := make([]string, 0, len(s.blocks))
	for n, e := range s.blocks {
		if e.dirty || (e.deleted && e.stored) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		e := s.blocks[n]
		key := store.Key{Kind: KindBlock, Name: n}
		if e.deleted {
			if err := s.tx.Delete(key); err != nil {
				return fmt.Errorf("delete block %s: %w", e.prefix, err)
			}
			e.stored = false
			continue
		}
		b := e.b
		b.SequenceNumber = s.index
		switch {
		case !b.empty():
			b.EmptySince = nil
		case b.EmptySince == nil:
			t := s.now
			b.EmptySince = &t
		}
		b.normalize()
		v, err := json.Marshal(b)
		if err != nil {
			return err
		}
		s.cache.remember(n, v, b, e.prefix)
		if _, err := s.tx.Put(key, v); err != nil {
			return fmt.Errorf("write block %s: %w", e.prefix, err)
		}
		e.stored, e.dirty = true, false
	}
	ids := make([]string, 0, len(s.handles))
	for id, e := range s.handles {
		if e.dirty || (e.deleted && e.stored) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		e := s.handles[id]
		if e.deleted {
			if err := s.tx.Delete(HandleKey(id)); err != nil {
				return fmt.Errorf("delete handle %s: %w", id, err)
			}
			e.stored = false
			continue
		}
		v, err := json.Marshal(e.h)
		if err != nil {
			return err
		}
		if _, err := s.tx.Put(HandleKey(id), v); err != nil {
			return fmt.Errorf("write handle %s: %w", id, err)
		}
		e.stored, e.dirty = true, false
	}
	return nil
}

// eachBlock calls f for every block that exists among prefixes, in order,
// and stops at the first error.
func (s *session) eachBlock(prefixes []netip.Prefix, f func(p netip.Prefix, b *Block) error) error {
	for _, p := range prefixes {
		b, ok, err := s.block(p)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := f(p, b); err != nil {
			return err
		}
	}
	return nil
}

// releaseMatching releases the allocations of block b whose attributes
// match, in ordinal order.
func (s *session) releaseMatching(p netip.Prefix, b *Block, match func(AllocationAttribute) bool) ([]Released, error) {
	var out []Released
	for o := range b.Allocations {
		if attr, ok := b.attribute(o); ok && match(attr) {
			rel, err := s.releaseOrdinal(p, b, o)
			if err != nil {
				return out, err
			}
			out = append(out, rel)
		}
	}
	return out, nil
}
