package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/api/selector"
	"github.com/weftnet/weft/store"
)

// pool is a decoded IPPool with Calico's defaults applied.
type pool struct {
	name      string
	prefix    netip.Prefix
	blockSize int
	spec      api.IPPoolSpec
}

// defaultBlockSize is Calico's default block size for a family.
func defaultBlockSize(is4 bool) int {
	if is4 {
		return api.DefaultBlockSizeV4
	}
	return api.DefaultBlockSizeV6
}

// decodePool parses an IPPool's value and applies the defaults IPAM
// depends on (block size, allowed uses, assignment mode), whether or not
// the writer defaulted them.
func decodePool(name string, value []byte) (pool, error) {
	var p api.IPPool
	if err := json.Unmarshal(value, &p); err != nil {
		return pool{}, fmt.Errorf("decode: %w", err)
	}
	prefix, err := ParseCIDR(p.Spec.CIDR)
	if err != nil {
		return pool{}, fmt.Errorf("spec.cidr: %w", err)
	}
	bs := p.Spec.BlockSize
	if bs == 0 {
		bs = defaultBlockSize(prefix.Addr().Is4())
	}
	return pool{name: name, prefix: prefix, blockSize: bs, spec: p.Spec}, nil
}

// loadPools decodes every IPPool (in name order, as Tx.List returns them).
func loadPools(objs []store.Object) ([]pool, error) {
	out := make([]pool, 0, len(objs))
	for _, o := range objs {
		p, err := decodePool(o.Name, o.Value)
		if err != nil {
			return nil, fmt.Errorf("IPPool %s: %w", o.Name, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func (p pool) is4() bool      { return p.prefix.Addr().Is4() }
func (p pool) family() int    { return family(p.prefix.Addr()) }
func (p pool) disabled() bool { return p.spec.Disabled }

// manual reports whether the pool is only used when a request names it.
func (p pool) manual() bool { return p.spec.AssignmentMode == api.AssignmentManual }

// allows reports whether the pool's allowedUses (default Workload and
// Tunnel) include use.
func (p pool) allows(use string) bool {
	uses := p.spec.AllowedUses
	if len(uses) == 0 {
		uses = []string{api.UseWorkload, api.UseTunnel}
	}
	return slices.Contains(uses, use)
}

// usable reports whether blocks can be cut from the pool: Calico lets a
// disabled pool have a prefix longer than its block size, never an enabled
// one.
func (p pool) usable() bool {
	return p.blockSize >= p.prefix.Bits() && p.blockSize <= p.prefix.Addr().BitLen()
}

// blockOf is the block of this pool containing a.
func (p pool) blockOf(a netip.Addr) netip.Prefix { return blockFor(a, p.blockSize) }

// poolContaining returns the pool whose CIDR contains a, if any.
func poolContaining(pools []pool, a netip.Addr) (pool, bool) {
	for _, p := range pools {
		if p.prefix.Contains(a) {
			return p, true
		}
	}
	return pool{}, false
}

// poolOfBlock returns the pool containing the block p, if any.
func poolOfBlock(pools []pool, b netip.Prefix) (pool, bool) {
	for _, p := range pools {
		if contains(p.prefix, b) {
			return p, true
		}
	}
	return pool{}, false
}

// selectorMatches evaluates a pool selector against labels; an empty
// selector matches everything.
func selectorMatches(sel string, labels map[string]string) (bool, error) {
	if strings.TrimSpace(sel) == "" {
		return true, nil
	}
	s, err := selector.Parse(sel)
	if err != nil {
		return false, err
	}
	return s.Evaluate(labels), nil
}

// eligibility is what decides which pools a request may use.
type eligibility struct {
	node            string
	nodeLabels      map[string]string
	namespace       string
	namespaceLabels map[string]string
	use             string
	encapsulation   string   // "", EncapVXLAN or EncapIPIP
	requested       []string // pool names; empty = any automatic pool
}

// encapsulates reports whether the pool has the encapsulation enabled.
func (p pool) encapsulates(encap string) bool {
	mode := p.spec.VXLANMode
	if encap == EncapIPIP {
		mode = p.spec.IPIPMode
	}
	return mode == api.EncapAlways || mode == api.EncapCrossSubnet
}

// eligiblePools returns the pools of one family a request may allocate
// from, in name order (calico.md §4.2 step 1), or an error that says why
// there are none.
func eligiblePools(all []pool, fam int, e eligibility) ([]pool, error) {
	var out []pool
	if len(e.requested) > 0 {
		// Named pools are used as given: selectors do not apply (Calico's
		// rule), but they must exist, be enabled and allow the use.
		for _, name := range e.requested {
			i := slices.IndexFunc(all, func(p pool) bool { return p.name == name })
			if i < 0 {
				return nil, newError(ErrNoPool, store.ErrInvalid, "IP pool %q does not exist", name)
			}
			p := all[i]
			if p.family() != fam {
				continue
			}
			if p.disabled() {
				return nil, newError(ErrNoPool, store.ErrInvalid, "IP pool %q is disabled", name)
			}
			if !p.allows(e.use) {
				return nil, newError(ErrNoPool, store.ErrInvalid, "IP pool %q does not allow use %s (allowedUses %v)", name, e.use, p.spec.AllowedUses)
			}
			if e.encapsulation != "" && !p.encapsulates(e.encapsulation) {
				continue
			}
			if p.usable() {
				out = append(out, p)
			}
		}
		if len(out) == 0 {
			return nil, newError(ErrNoPool, store.ErrInvalid, "none of the requested pools %v is a usable IPv%d pool%s", e.requested, fam, encapSuffix(e.encapsulation))
		}
		return out, nil
	}
	anyFamily, selecting := false, false
	for _, p := range all {
		if p.family() != fam || p.disabled() || p.manual() || !p.usable() {
			continue
		}
		anyFamily = true
		ok, err := selectorMatches(p.spec.NodeSelector, e.nodeLabels)
		if err != nil {
			return nil, newError(ErrNoPool, store.ErrInvalid, "IP pool %s: nodeSelector: %v", p.name, err)
		}
		if !ok {
			continue
		}
		if e.namespace != "" && p.spec.NamespaceSelector != "" {
			ok, err := selectorMatches(p.spec.NamespaceSelector, e.namespaceLabels)
			if err != nil {
				return nil, newError(ErrNoPool, store.ErrInvalid, "IP pool %s: namespaceSelector: %v", p.name, err)
			}
			if !ok {
				continue
			}
		}
		selecting = true
		if p.allows(e.use) && (e.encapsulation == "" || p.encapsulates(e.encapsulation)) {
			out = append(out, p)
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case !anyFamily:
		return nil, newError(ErrNoPool, store.ErrInvalid, "no enabled IPv%d pool", fam)
	case !selecting:
		return nil, newError(ErrNoPool, store.ErrInvalid, "no IP pool matches node %s (IPv%d)", e.node, fam)
	case e.encapsulation != "":
		return nil, newError(ErrNoPool, store.ErrInvalid, "no IPv%d pool selecting node %s allows use %s with %s enabled", fam, e.node, e.use, e.encapsulation)
	default:
		return nil, newError(ErrNoPool, store.ErrInvalid, "no IPv%d pool selecting node %s allows use %s", fam, e.node, e.use)
	}
}

func encapSuffix(encap string) string {
	if encap == "" {
		return ""
	}
	return " with " + encap + " enabled"
}

// freeBlock finds the lowest block CIDR of the pool that has no block
// object and is not entirely reserved. existing holds the blocks of the
// pool. The scan jumps over existing blocks and reserved ranges, so it
// costs O(existing + reservations) even for an IPv6 pool with 2^70 blocks.
func freeBlock(p pool, existing map[netip.Prefix]bool, res reservations) (netip.Prefix, bool) {
	if !p.usable() {
		return netip.Prefix{}, false
	}
	b := netip.PrefixFrom(p.prefix.Addr(), p.blockSize)
	for p.prefix.Contains(b.Addr()) {
		if existing[b] {
			next, ok := nextBlock(b)
			if !ok {
				return netip.Prefix{}, false
			}
			b = next
			continue
		}
		if r, ok := res.covering(b); ok {
			// Jump past the whole reserved range; it is at least one
			// block long and block-aligned because it covers b.
			a, ok := addrAfter(lastAddr(r))
			if !ok {
				return netip.Prefix{}, false
			}
			b = netip.PrefixFrom(a, p.blockSize)
			continue
		}
		return b, true
	}
	return netip.Prefix{}, false
}
