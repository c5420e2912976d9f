package dataplane

import "sort"

// mapShards is the number of shards of a [Map]. A change copies the shards
// it touches: with 10,000 entries a one-entry change copies about 160.
const mapShards = 64

// Map is an immutable map from string keys to values, copied on write by
// shard. States computed one from the other share every shard nothing
// changed in, so handing a large section over is a pointer copy, and
// comparing two related states (or finding what changed between them)
// skips the shared shards without looking inside. The zero Map is empty.
type Map[V any] struct {
	shards *[mapShards]*mapShard[V]
	n      int
}

type mapShard[V any] struct{ m map[string]V }

func shardOf(k string) int {
	// FNV-1a, inlined: keys are short and this runs on every access.
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return int(h % mapShards)
}

// Len is the number of entries.
func (m Map[V]) Len() int { return m.n }

// Get returns the value of k.
func (m Map[V]) Get(k string) (V, bool) {
	var zero V
	if m.shards == nil {
		return zero, false
	}
	s := m.shards[shardOf(k)]
	if s == nil {
		return zero, false
	}
	v, ok := s.m[k]
	return v, ok
}

// Range calls f for every entry, in no particular order, until f returns
// false.
func (m Map[V]) Range(f func(k string, v V) bool) {
	if m.shards == nil {
		return
	}
	for _, s := range m.shards {
		if s == nil {
			continue
		}
		for k, v := range s.m {
			if !f(k, v) {
				return
			}
		}
	}
}

// Keys returns the keys, sorted.
func (m Map[V]) Keys() []string {
	out := make([]string, 0, m.n)
	m.Range(func(k string, _ V) bool {
		out = append(out, k)
		return true
	})
	sort.Strings(out)
	return out
}

// Same reports whether m and o are the same map value (the same shards):
// true means equal without looking at the entries.
func (m Map[V]) Same(o Map[V]) bool { return m.shards == o.shards && m.n == o.n }

// Equal reports whether both maps hold the same keys with equal values;
// shards they share are not looked into.
func (m Map[V]) Equal(o Map[V], eq func(a, b V) bool) bool {
	if m.Same(o) {
		return true
	}
	if m.n != o.n {
		return false
	}
	equal := true
	DiffMaps(m, o, eq, func(string, V, V, bool, bool) bool {
		equal = false
		return false
	})
	return equal
}

// DiffMaps calls f for every key whose entry differs between a and b
// (by eq), with inA/inB telling where it exists, until f returns false.
// Shards the two maps share are skipped.
func DiffMaps[V any](a, b Map[V], eq func(x, y V) bool, f func(k string, va, vb V, inA, inB bool) bool) {
	if a.shards == b.shards {
		return
	}
	var empty [mapShards]*mapShard[V]
	as, bs := a.shards, b.shards
	if as == nil {
		as = &empty
	}
	if bs == nil {
		bs = &empty
	}
	for i := range mapShards {
		sa, sb := as[i], bs[i]
		if sa == sb {
			continue
		}
		var ma, mb map[string]V
		if sa != nil {
			ma = sa.m
		}
		if sb != nil {
			mb = sb.m
		}
		for k, va := range ma {
			vb, ok := mb[k]
			if ok && eq(va, vb) {
				continue
			}
			if !f(k, va, vb, true, ok) {
				return
			}
		}
		for k, vb := range mb {
			if _, ok := ma[k]; ok {
				continue
			}
			var zero V
			if !f(k, zero, vb, false, true) {
				return
			}
		}
	}
}

// MapEditor builds a new Map from an old one; the old one is unchanged.
// Each shard is copied at most once per editor.
type MapEditor[V any] struct {
	shards [mapShards]*mapShard[V]
	copied [mapShards]bool
	n      int
	base   Map[V]
	dirty  bool
}

// Edit starts editing a copy of m.
func (m Map[V]) Edit() *MapEditor[V] {
	e := &MapEditor[V]{n: m.n, base: m}
	if m.shards != nil {
		e.shards = *m.shards
	}
	return e
}

func (e *MapEditor[V]) shard(k string) *mapShard[V] {
	i := shardOf(k)
	if !e.copied[i] {
		s := &mapShard[V]{}
		if old := e.shards[i]; old != nil {
			s.m = make(map[string]V, len(old.m)+1)
			for k, v := range old.m {
				s.m[k] = v
			}
		} else {
			s.m = map[string]V{}
		}
		e.shards[i] = s
		e.copied[i] = true
	}
	return e.shards[i]
}

// Get reads the map being built.
func (e *MapEditor[V]) Get(k string) (V, bool) {
	var zero V
	s := e.shards[shardOf(k)]
	if s == nil {
		return zero, false
	}
	v, ok := s.m[k]
	return v, ok
}

// Set sets k to v.
func (e *MapEditor[V]) Set(k string, v V) {
	s := e.shard(k)
	if _, ok := s.m[k]; !ok {
		e.n++
	}
	s.m[k] = v
	e.dirty = true
}

// Delete removes k.
func (e *MapEditor[V]) Delete(k string) {
	if _, ok := e.Get(k); !ok {
		return
	}
	s := e.shard(k)
	delete(s.m, k)
	e.n--
	e.dirty = true
}

// Map returns the result. Without changes it is the map Edit started
// from (the same value, [Map.Same] is true). The editor must not be used
// afterwards.
func (e *MapEditor[V]) Map() Map[V] {
	if !e.dirty {
		return e.base
	}
	for i, s := range e.shards {
		if s != nil && len(s.m) == 0 {
			e.shards[i] = nil
		}
	}
	shards := e.shards
	return Map[V]{shards: &shards, n: e.n}
}

// MapOf builds a Map from a plain map (tests, small sections).
func MapOf[V any](m map[string]V) Map[V] {
	e := Map[V]{}.Edit()
	for k, v := range m {
		e.Set(k, v)
	}
	return e.Map()
}
