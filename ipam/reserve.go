package ipam

import (
	"encoding/json"
	"fmt"
	"math/big"
	"net/netip"
	"sort"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// reservation is one reserved range and the IPReservation naming it.
type reservation struct {
	prefix netip.Prefix
	name   string
}

// reservations is the set of ranges IPAM never hands out automatically
// (calico.md §1.9): whole blocks inside one are skipped, single ordinals
// otherwise.
type reservations []reservation

// decodeReservation parses an IPReservation's value.
func decodeReservation(value []byte) (api.IPReservation, []netip.Prefix, error) {
	var r api.IPReservation
	if err := json.Unmarshal(value, &r); err != nil {
		return r, nil, fmt.Errorf("decode IPReservation: %w", err)
	}
	prefixes := make([]netip.Prefix, 0, len(r.Spec.ReservedCIDRs))
	for i, s := range r.Spec.ReservedCIDRs {
		p, err := parseCIDROrIP(s)
		if err != nil {
			return r, nil, fmt.Errorf("spec.reservedCIDRs[%d]: %w", i, err)
		}
		prefixes = append(prefixes, p)
	}
	return r, prefixes, nil
}

// loadReservations decodes every IPReservation.
func loadReservations(objs []store.Object) (reservations, error) {
	var out reservations
	for _, o := range objs {
		_, prefixes, err := decodeReservation(o.Value)
		if err != nil {
			return nil, fmt.Errorf("IPReservation %s: %w", o.Name, err)
		}
		for _, p := range prefixes {
			out = append(out, reservation{prefix: p, name: o.Name})
		}
	}
	return out, nil
}

// reservedBy returns the IPReservation that reserves a, if any.
func (r reservations) reservedBy(a netip.Addr) (string, bool) {
	for _, x := range r {
		if x.prefix.Contains(a) {
			return x.name, true
		}
	}
	return "", false
}

func (r reservations) contains(a netip.Addr) bool {
	_, ok := r.reservedBy(a)
	return ok
}

// covering returns a reserved range that contains all of p, if any.
func (r reservations) covering(p netip.Prefix) (netip.Prefix, bool) {
	for _, x := range r {
		if contains(x.prefix, p) {
			return x.prefix, true
		}
	}
	return netip.Prefix{}, false
}

// touches reports whether any reserved range overlaps p.
func (r reservations) touches(p netip.Prefix) bool {
	for _, x := range r {
		if x.prefix.Overlaps(p) {
			return true
		}
	}
	return false
}

// count is the number of addresses of p that are reserved. Two prefixes
// either nest or are disjoint, so the union is the sum of the outermost
// ones, each clipped to p.
func (r reservations) count(p netip.Prefix) *big.Int {
	var inside []netip.Prefix
	for _, x := range r {
		if contains(x.prefix, p) {
			return prefixSize(p)
		}
		if x.prefix.Overlaps(p) {
			inside = append(inside, x.prefix)
		}
	}
	sort.Slice(inside, func(i, j int) bool { return inside[i].Bits() < inside[j].Bits() })
	total := new(big.Int)
	var kept []netip.Prefix
	for _, q := range inside {
		nested := false
		for _, k := range kept {
			if contains(k, q) {
				nested = true
				break
			}
		}
		if !nested {
			kept = append(kept, q)
			total.Add(total, prefixSize(q))
		}
	}
	return total
}
