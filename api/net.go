package api

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParseCIDROrIP parses "10.0.0.0/24" or a bare address ("10.0.0.1" is
// 10.0.0.1/32) and returns the masked prefix, as Calico's
// cnet.ParseCIDROrIP does for the fields that accept unmasked CIDRs.
func ParseCIDROrIP(s string) (netip.Prefix, error) {
	p, err := parsePrefixOrAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Masked(), nil
}

// parsePrefixOrAddr keeps the host bits so callers can insist on masking.
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR", s)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid IP address or CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseNet parses a Calico "net" value: an address or a strictly masked
// CIDR.
func parseNet(s string) (netip.Prefix, error) {
	p, err := parsePrefixOrAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q is not strictly masked (host bits are set; did you mean %s?)", s, m)
	}
	return p, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not a valid IP address", s)
	}
	return a, nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// poolForbidden are the ranges an IP pool may not overlap: their
// addresses cannot be given to a workload. Link-local is Calico's rule
// (169.254.0.0/16, fe80::/10: the kernel and weft use them on every link,
// e.g. the workloads' gateway 169.254.1.1); loopback and multicast are
// weft's (an address there is never a unicast address on a veth).
var poolForbidden = []struct {
	what   string
	prefix netip.Prefix
}{
	{"IPv4 loopback", netip.MustParsePrefix("127.0.0.0/8")},
	{"IPv4 link-local", netip.MustParsePrefix("169.254.0.0/16")},
	{"IPv4 multicast", netip.MustParsePrefix("224.0.0.0/4")},
	{"IPv6 loopback", netip.MustParsePrefix("::1/128")},
	{"IPv6 link-local", netip.MustParsePrefix("fe80::/10")},
	{"IPv6 multicast", netip.MustParsePrefix("ff00::/8")},
}

// PoolRangeProblem says why an IP pool may not use p ("overlaps the IPv4
// loopback range 127.0.0.0/8"), or "" when it may: pools must not overlap
// the loopback, link-local or multicast ranges of their family.
func PoolRangeProblem(p netip.Prefix) string {
	for _, r := range poolForbidden {
		if p.Overlaps(r.prefix) {
			return fmt.Sprintf("overlaps the %s range %s", r.what, r.prefix)
		}
	}
	return ""
}
