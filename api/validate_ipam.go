package api

import (
	"fmt"
	"slices"
)

// IPPool block size limits and defaults (calico.md §1.8).
const (
	DefaultBlockSizeV4 = 26
	DefaultBlockSizeV6 = 122
	MinBlockSizeV4     = 20
	MaxBlockSizeV4     = 32
	MinBlockSizeV6     = 116
	MaxBlockSizeV6     = 128
)

// IPAMConfiguration limits.
const (
	DefaultMaxBlocksPerHost = 20
	MaxMaxBlocksPerHost     = 1_000_000
	MaxIPCooldownSeconds    = 1200
)

func hasUse(uses []string, u string) bool { return slices.Contains(uses, u) }

func encapEnabled(mode string) bool { return mode == EncapAlways || mode == EncapCrossSubnet }

// effectiveBlockSize is the pool's block size with the default applied
// (0 when the CIDR does not parse).
func effectiveBlockSize(pool *IPPool) int {
	if pool.Spec.BlockSize != 0 {
		return pool.Spec.BlockSize
	}
	pfx, err := parsePrefixOrAddr(pool.Spec.CIDR)
	if err != nil {
		return 0
	}
	if pfx.Addr().Is4() {
		return DefaultBlockSizeV4
	}
	return DefaultBlockSizeV6
}

func validateIPPool(p *problems, pool *IPPool) {
	s := &pool.Spec
	v6 := false
	if s.CIDR == "" {
		p.add("spec.cidr", "is required")
	} else if pfx, err := parsePrefixOrAddr(s.CIDR); err != nil {
		p.add("spec.cidr", "%v", err)
	} else {
		v6 = pfx.Addr().Is6()
		if m := pfx.Masked(); m != pfx {
			p.add("spec.cidr", "%s is not strictly masked (host bits are set; did you mean %s?)", s.CIDR, m)
		}
		if why := PoolRangeProblem(pfx); why != "" {
			p.add("spec.cidr", "%s %s", s.CIDR, why)
		}
		min, max, fam := MinBlockSizeV4, MaxBlockSizeV4, "IPv4"
		if v6 {
			min, max, fam = MinBlockSizeV6, MaxBlockSizeV6, "IPv6"
		}
		bs := s.BlockSize
		if bs != 0 && (bs < min || bs > max) {
			p.add("spec.blockSize", "must be between %d and %d for an %s pool, got %d", min, max, fam, bs)
		} else if bs = effectiveBlockSize(pool); !s.Disabled && pfx.Bits() > bs {
			p.add("spec.cidr", "the pool (/%d) is smaller than one block (/%d): use a larger pool or a larger blockSize", pfx.Bits(), bs)
		}
	}
	if s.BlockSize < 0 {
		p.add("spec.blockSize", "must not be negative, got %d", s.BlockSize)
	}
	for _, f := range []struct{ field, mode string }{{"spec.ipipMode", s.IPIPMode}, {"spec.vxlanMode", s.VXLANMode}} {
		if f.mode != "" && !oneOf(f.mode, EncapNever, EncapAlways, EncapCrossSubnet) {
			p.add(f.field, "must be Never, Always or CrossSubnet, got %q", f.mode)
		}
	}
	if v6 && encapEnabled(s.IPIPMode) {
		p.add("spec.ipipMode", "IPIP is not supported on an IPv6 pool (use vxlanMode)")
	}
	if encapEnabled(s.IPIPMode) && encapEnabled(s.VXLANMode) {
		p.add("spec.vxlanMode", "IPIP and VXLAN cannot both be enabled on one pool")
	}
	if s.NodeSelector != "" {
		validateSelector(p, "spec.nodeSelector", s.NodeSelector, false)
	}
	if s.NamespaceSelector != "" {
		validateSelector(p, "spec.namespaceSelector", s.NamespaceSelector, false)
	}
	seen := map[string]bool{}
	for i, u := range s.AllowedUses {
		f := fmt.Sprintf("spec.allowedUses[%d]", i)
		switch {
		case !oneOf(u, UseWorkload, UseTunnel, UseLoadBalancer):
			p.add(f, "must be Workload, Tunnel or LoadBalancer, got %q", u)
		case seen[u]:
			p.add(f, "%s is listed twice", u)
		}
		seen[u] = true
	}
	if hasUse(s.AllowedUses, UseLoadBalancer) {
		if hasUse(s.AllowedUses, UseWorkload) || hasUse(s.AllowedUses, UseTunnel) {
			p.add("spec.allowedUses", "LoadBalancer cannot be combined with Workload or Tunnel")
		}
		if encapEnabled(s.IPIPMode) || encapEnabled(s.VXLANMode) {
			p.add("spec.allowedUses", "a LoadBalancer pool cannot use IPIP or VXLAN")
		}
		if s.DisableBGPExport {
			p.add("spec.disableBGPExport", "cannot be set on a LoadBalancer pool")
		}
		if s.NodeSelector != "" && s.NodeSelector != "all()" {
			p.add("spec.nodeSelector", "must be all() on a LoadBalancer pool, got %q", s.NodeSelector)
		}
	}
	// An empty allowedUses defaults to [Workload, Tunnel].
	if s.NamespaceSelector != "" && (len(s.AllowedUses) == 0 || hasUse(s.AllowedUses, UseTunnel)) {
		p.add("spec.namespaceSelector", "cannot be set on a pool used for Tunnel addresses")
	}
	if s.AssignmentMode != "" && !oneOf(s.AssignmentMode, AssignmentAutomatic, AssignmentManual) {
		p.add("spec.assignmentMode", "must be Automatic or Manual, got %q", s.AssignmentMode)
	}
}

func validateIPReservation(p *problems, r *IPReservation) {
	for i, c := range r.Spec.ReservedCIDRs {
		if _, err := parsePrefixOrAddr(c); err != nil {
			p.add(fmt.Sprintf("spec.reservedCIDRs[%d]", i), "%v", err)
		}
	}
}

func validateIPAMConfiguration(p *problems, c *IPAMConfiguration) {
	s := &c.Spec
	if s.AutoAllocateBlocks != nil && !*s.AutoAllocateBlocks && !s.StrictAffinity {
		p.add("spec.autoAllocateBlocks", "cannot be false while strictAffinity is false")
	}
	switch {
	case s.MaxBlocksPerHost < 0:
		p.add("spec.maxBlocksPerHost", "must not be negative, got %d", s.MaxBlocksPerHost)
	case s.MaxBlocksPerHost > MaxMaxBlocksPerHost:
		p.add("spec.maxBlocksPerHost", "must be at most %d, got %d", MaxMaxBlocksPerHost, s.MaxBlocksPerHost)
	case s.MaxBlocksPerHost > 0 && !s.StrictAffinity:
		p.add("spec.maxBlocksPerHost", "can only be set when strictAffinity is true")
	}
	if s.IPCooldownSeconds < 0 || s.IPCooldownSeconds > MaxIPCooldownSeconds {
		p.add("spec.ipCooldownSeconds", "must be between 0 and %d, got %d", MaxIPCooldownSeconds, s.IPCooldownSeconds)
	}
}
