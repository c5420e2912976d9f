package ipam

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/api/selector"
	"github.com/weftnet/weft/store"
)

// Validators returns the store validators of the kinds IPAM depends on.
// They run inside the FSM for every write of the kind from any command or
// transaction, so an invariant holds whatever wrote the object:
//
//   - IPPool: a valid, masked CIDR; a block size in Calico's range; no
//     overlap with another pool or a loopback, link-local or multicast
//     range (api.PoolRangeProblem, through api.Validate); cidr and
//     blockSize immutable; not deleted while it has blocks.
//   - IPReservation: valid CIDRs. IPAMConfiguration: Calico's rules.
//   - IPAMBlock: exactly the block size of the pool that contains it (so
//     two blocks never overlap and no address has two blocks), and every
//     ordinal in exactly one state with one holder.
//   - BlockAffinity, IPAMHandle: well-formed.
func Validators() map[string][]store.Validator {
	return validators(nil)
}

func validators(cache *blockCache) map[string][]store.Validator {
	return map[string][]store.Validator{
		KindIPPool:            {validatePoolWrite},
		KindIPReservation:     {validateReservationWrite},
		KindIPAMConfiguration: {validateConfigWrite},
		KindBlock: {func(tx store.Tx, old, new *store.Object) error {
			return validateBlockWrite(tx, cache, new)
		}},
		KindBlockAffinity: {validateAffinityWrite},
		KindHandle:        {validateHandleWrite},
	}
}

// invariant is a validator error. Its message does not name the object:
// the store prefixes validator errors with the key.
func invariant(format string, args ...any) error {
	return newError(ErrInvariant, store.ErrInvalid, format, args...)
}

func validatePoolWrite(tx store.Tx, old, new *store.Object) error {
	if new == nil {
		return validatePoolDelete(tx, old)
	}
	p, err := decodePool(new.Name, new.Value)
	if err != nil {
		return invariant("%v", err)
	}
	if err := validateResource(old, new, func() api.Resource { return &api.IPPool{} }); err != nil {
		return err
	}
	lo, hi := api.MinBlockSizeV6, api.MaxBlockSizeV6
	if p.is4() {
		lo, hi = api.MinBlockSizeV4, api.MaxBlockSizeV4
	}
	if p.blockSize < lo || p.blockSize > hi {
		return invariant("spec.blockSize %d is outside %d-%d for IPv%d", p.blockSize, lo, hi, p.family())
	}
	if p.prefix.Bits() > p.blockSize && !p.disabled() {
		return invariant("spec.cidr %s is smaller than one block (/%d): use a shorter prefix or a longer blockSize", p.prefix, p.blockSize)
	}
	for _, f := range [...]struct{ field, sel string }{{"nodeSelector", p.spec.NodeSelector}, {"namespaceSelector", p.spec.NamespaceSelector}} {
		if f.sel == "" {
			continue
		}
		if _, err := selector.Parse(f.sel); err != nil {
			return invariant("spec.%s: %v", f.field, err)
		}
	}
	if old != nil {
		if was, err := decodePool(old.Name, old.Value); err == nil {
			if was.prefix != p.prefix {
				return invariant("spec.cidr is immutable (was %s, now %s)", was.prefix, p.prefix)
			}
			if was.blockSize != p.blockSize {
				return invariant("spec.blockSize is immutable (was %d, now %d)", was.blockSize, p.blockSize)
			}
		}
	}
	for _, o := range tx.List(KindIPPool, "") {
		if o.Name == new.Name {
			continue
		}
		q, err := decodePool(o.Name, o.Value)
		if err != nil {
			continue
		}
		if q.prefix.Overlaps(p.prefix) {
			return invariant("spec.cidr %s overlaps IPPool %s (%s)", p.prefix, q.name, q.prefix)
		}
	}
	return nil
}

// validatePoolDelete keeps every block inside a pool: a pool with blocks
// goes through ipam.deletePool, which releases them first.
func validatePoolDelete(tx store.Tx, old *store.Object) error {
	if old == nil {
		return nil
	}
	p, err := decodePool(old.Name, old.Value)
	if err != nil {
		return nil
	}
	n := 0
	for _, o := range tx.List(KindBlock, "") {
		if b, err := ParseBlockName(o.Name); err == nil && contains(p.prefix, b) {
			n++
		}
	}
	if n > 0 {
		return invariant("the pool still has %d IPAM blocks: delete it with the ipam.deletePool command (weft delete ippool), which releases them", n)
	}
	return nil
}

func validateReservationWrite(_ store.Tx, _, new *store.Object) error {
	if new == nil {
		return nil
	}
	if _, _, err := decodeReservation(new.Value); err != nil {
		return invariant("%v", err)
	}
	return validateResource(nil, new, func() api.Resource { return &api.IPReservation{} })
}

func validateConfigWrite(_ store.Tx, _, new *store.Object) error {
	if new == nil {
		return nil
	}
	if new.Name != ConfigName {
		return invariant("the IPAMConfiguration must be named %q", ConfigName)
	}
	c, err := decodeConfig(new.Value)
	if err != nil {
		return invariant("%v", err)
	}
	if err := ValidateConfig(c.Spec); err != nil {
		return invariant("%v", err)
	}
	return validateResource(nil, new, func() api.Resource { return &api.IPAMConfiguration{} })
}

// validateResource applies the api package's field rules (and, for an
// update, its immutability rules) to a stored resource, so that IPAM never
// works on a pool, reservation or configuration api would reject.
func validateResource(old, new *store.Object, alloc func() api.Resource) error {
	n := alloc()
	if err := json.Unmarshal(new.Value, n); err != nil {
		return invariant("decode: %v", err)
	}
	var err error
	if o := alloc(); old != nil && json.Unmarshal(old.Value, o) == nil {
		err = api.ValidateUpdate(o, n)
	} else {
		err = api.Validate(n)
	}
	var ve *api.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ve):
		// The store names the object; keep only the field errors.
		msgs := make([]string, len(ve.Errors))
		for i, fe := range ve.Errors {
			msgs[i] = fe.String()
		}
		return invariant("%s", strings.Join(msgs, "; "))
	default:
		return invariant("%v", err)
	}
}

// validateBlockWrite checks a block as stored. The cache spares decoding
// the bytes the allocator has just encoded; it returns the same value.
func validateBlockWrite(tx store.Tx, cache *blockCache, new *store.Object) error {
	if new == nil {
		return nil
	}
	b, p, err := cache.decode(new.Name, new.Value)
	if err != nil {
		return invariant("%v", err)
	}
	if new.Name != BlockName(p.String()) {
		return invariant("the value holds block %s", p)
	}
	if err := b.validate(); err != nil {
		return invariant("%v", err)
	}
	pools, err := loadPools(tx.List(KindIPPool, ""))
	if err != nil {
		return invariant("%v", err)
	}
	pl, ok := poolOfBlock(pools, p)
	if !ok {
		return invariant("block %s is outside every IP pool", p)
	}
	if pl.blockSize != p.Bits() {
		return invariant("block %s does not have the block size /%d of IP pool %s", p, pl.blockSize, pl.name)
	}
	return nil
}

func validateAffinityWrite(_ store.Tx, _, new *store.Object) error {
	if new == nil {
		return nil
	}
	if new.Namespace == "" {
		return invariant("no node (namespace)")
	}
	p, err := ParseBlockName(new.Name)
	if err != nil {
		return invariant("%v", err)
	}
	var a BlockAffinity
	if err := json.Unmarshal(new.Value, &a); err != nil {
		return invariant("decode: %v", err)
	}
	if a.Node != new.Namespace || a.CIDR != p.String() {
		return invariant("the value says node %q block %q", a.Node, a.CIDR)
	}
	return nil
}

func validateHandleWrite(_ store.Tx, _, new *store.Object) error {
	if new == nil {
		return nil
	}
	var h Handle
	if err := json.Unmarshal(new.Value, &h); err != nil {
		return invariant("decode: %v", err)
	}
	if h.HandleID != new.Name {
		return invariant("the value says handle %q", h.HandleID)
	}
	if len(h.Blocks) == 0 {
		return invariant("the handle holds no block")
	}
	for _, name := range slices.Sorted(maps.Keys(h.Blocks)) {
		n := h.Blocks[name]
		if _, err := ParseBlockName(name); err != nil {
			return invariant("%v", err)
		}
		if n <= 0 {
			return invariant("count %d for block %s", n, name)
		}
	}
	return nil
}
