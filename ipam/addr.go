package ipam

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
)

// u128 is an address as an unsigned 128-bit integer; an IPv4 address sits
// in the low 32 bits.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr(is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(u.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

// add returns u+n and whether it overflowed 128 bits.
func (u u128) add(n uint64) (u128, bool) {
	lo := u.lo + n
	hi := u.hi
	if lo < u.lo {
		hi++
		if hi == 0 {
			return u128{hi, lo}, true
		}
	}
	return u128{hi, lo}, false
}

// sub returns u-v (v <= u).
func (u u128) sub(v u128) u128 {
	lo := u.lo - v.lo
	hi := u.hi - v.hi
	if u.lo < v.lo {
		hi--
	}
	return u128{hi, lo}
}

// ParseAddr parses an address, refusing zones and IPv4-mapped IPv6 forms so
// that one address has exactly one spelling.
func ParseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid IP address %q", s)
	}
	if a.Zone() != "" || a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("invalid IP address %q: use the plain IPv4 or IPv6 form", s)
	}
	return a, nil
}

// ParseAddrOrPrefix parses "10.0.0.5", "10.0.0.5/32" or "10.0.0.5/26"
// (the last as returned by ipam.assign) and returns the address.
func ParseAddrOrPrefix(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("invalid IP address %q", s)
		}
		return ParseAddr(p.Addr().String())
	}
	return ParseAddr(s)
}

// ParseCIDR parses a strictly masked CIDR ("10.0.0.0/24", not "10.0.0.1/24").
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: use the plain IPv4 or IPv6 form", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("CIDR %q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// parseCIDROrIP parses a CIDR or a single address (as a /32 or /128) and
// masks it; IPReservation accepts both.
func parseCIDROrIP(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: use the plain IPv4 or IPv6 form", s)
	}
	return p.Masked(), nil
}

// family is 4 or 6.
func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// BlockName is the store name of a block: its CIDR with "/" replaced by
// "-", as in Calico's etcd keys.
func BlockName(cidr string) string {
	return strings.Replace(cidr, "/", "-", 1)
}

// ParseBlockName is the inverse of BlockName.
func ParseBlockName(name string) (netip.Prefix, error) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("invalid block name %q", name)
	}
	return ParseCIDR(name[:i] + "/" + name[i+1:])
}

// blockFor is the block of the given size containing a.
func blockFor(a netip.Addr, blockSize int) netip.Prefix {
	return netip.PrefixFrom(a, blockSize).Masked()
}

// blockLen is the number of addresses in a block (at most 4096: block
// sizes leave at most 12 host bits).
func blockLen(p netip.Prefix) int {
	return 1 << (p.Addr().BitLen() - p.Bits())
}

// ordinalOf is the offset of a in block p, or false if p does not contain a.
func ordinalOf(p netip.Prefix, a netip.Addr) (int, bool) {
	if !p.Contains(a) {
		return 0, false
	}
	d := toU128(a).sub(toU128(p.Addr()))
	return int(d.lo), true
}

// addrAt is the address at ordinal ord of block p (0 <= ord < blockLen(p)).
func addrAt(p netip.Prefix, ord int) netip.Addr {
	u, _ := toU128(p.Addr()).add(uint64(ord))
	return u.addr(p.Addr().Is4())
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	u := toU128(p.Addr())
	hostBits := p.Addr().BitLen() - p.Bits()
	switch {
	case hostBits >= 128:
		u = u128{^uint64(0), ^uint64(0)}
	case hostBits >= 64:
		u.lo = ^uint64(0)
		u.hi |= (uint64(1) << (hostBits - 64)) - 1
	default:
		u.lo |= (uint64(1) << hostBits) - 1
	}
	return u.addr(p.Addr().Is4())
}

// addrAfter is the address following a, or false at the end of the family.
func addrAfter(a netip.Addr) (netip.Addr, bool) {
	n := a.Next()
	return n, n.IsValid()
}

// contains reports whether outer contains all of inner.
func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// hostPrefix is a as a /32 or /128.
func hostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

// prefixSize is the number of addresses in p.
func prefixSize(p netip.Prefix) *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
}

// BlockCIDRs returns up to limit block CIDRs of the given size in pool, in
// address order (a /16 pool with /26 blocks has 1024; a v6 pool may have
// more than can be listed, hence the limit).
func BlockCIDRs(pool netip.Prefix, blockSize, limit int) []netip.Prefix {
	if blockSize < pool.Bits() || blockSize > pool.Addr().BitLen() {
		return nil
	}
	var out []netip.Prefix
	b := netip.PrefixFrom(pool.Addr(), blockSize)
	for len(out) < limit {
		out = append(out, b)
		next, ok := nextBlock(b)
		if !ok || !pool.Contains(next.Addr()) {
			break
		}
		b = next
	}
	return out
}

// nextBlock is the block of the same size right after b.
func nextBlock(b netip.Prefix) (netip.Prefix, bool) {
	a, ok := addrAfter(lastAddr(b))
	if !ok {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, b.Bits()), true
}
