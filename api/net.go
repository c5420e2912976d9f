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

// linkLocal is the link-local range of a's family, which pools may not
// overlap.
func linkLocal(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.MustParsePrefix("169.254.0.0/16")
	}
	return netip.MustParsePrefix("fe80::/10")
}
