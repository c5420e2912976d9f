package dataplane

import (
	"fmt"
	"regexp"
)

// Encapsulation overheads in bytes (calico.md §5.5).
const (
	OverheadVXLANv4     = 50
	OverheadVXLANv6     = 70
	OverheadWireGuardV4 = 60
	OverheadWireGuardV6 = 80
	OverheadIPIP        = 20
)

// Encaps says which encapsulations workload traffic may take.
type Encaps struct {
	VXLANv4, VXLANv6         bool
	WireGuardV4, WireGuardV6 bool
	IPIP                     bool
	// VXLANMTU, IPIPMTU and WireGuardMTU are the configured MTUs of the
	// VXLAN (IPv4), IP-in-IP and WireGuard devices (FelixConfiguration
	// vxlanMTU, ipipMTU, wireguardMTU); 0 means the underlay MTU minus the
	// encapsulation's overhead.
	VXLANMTU, IPIPMTU, WireGuardMTU int
}

// WorkloadMTU is the MTU for workload interfaces: override when positive;
// otherwise the smallest MTU of the enabled encapsulations (each the
// configured device MTU, or the underlay MTU minus its overhead), or the
// underlay MTU when traffic is never encapsulated (calico.md §5.5). Each
// overhead is subtracted once, from the underlay, never from another
// tunnel's MTU.
func WorkloadMTU(underlay int, enc Encaps, override int) int {
	if override > 0 {
		return override
	}
	mtu := underlay
	for _, o := range []struct {
		on         bool
		overhead   int
		configured int
	}{
		{enc.VXLANv4, OverheadVXLANv4, enc.VXLANMTU}, {enc.VXLANv6, OverheadVXLANv6, 0},
		{enc.WireGuardV4, OverheadWireGuardV4, enc.WireGuardMTU}, {enc.WireGuardV6, OverheadWireGuardV6, enc.WireGuardMTU},
		{enc.IPIP, OverheadIPIP, enc.IPIPMTU},
	} {
		if !o.on {
			continue
		}
		m := underlay - o.overhead
		if o.configured > 0 {
			m = o.configured
		}
		mtu = min(mtu, m)
	}
	return mtu
}

// VXLANDeviceMTU is the MTU of a VXLAN device over the given underlay.
func VXLANDeviceMTU(underlay int, v6Underlay bool) int {
	if v6Underlay {
		return underlay - OverheadVXLANv6
	}
	return underlay - OverheadVXLANv4
}

// IPIPDeviceMTU is the MTU of an IP-in-IP device over the given underlay.
func IPIPDeviceMTU(underlay int) int { return underlay - OverheadIPIP }

// Underlay MTU detection (calico.md §5.5).
const (
	// FallbackUnderlayMTU is assumed when no interface qualifies, as
	// Calico does.
	FallbackUnderlayMTU = 1460
	// MinUnderlayMTU is the smallest underlay MTU that can carry
	// workloads.
	MinUnderlayMTU = 576
	// DefaultMTUIfacePattern matches interface names that look physical:
	// Calico's default mtuIfacePattern.
	DefaultMTUIfacePattern = `^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)`
)

// defaultMTUIfaceRE is DefaultMTUIfacePattern compiled.
var defaultMTUIfaceRE = regexp.MustCompile(DefaultMTUIfacePattern)

// Link is what underlay MTU detection needs to know of one interface.
type Link struct {
	Name     string
	MTU      int
	Up       bool
	Loopback bool
	// HoldsNodeAddr: one of the node's underlay addresses is on it.
	HoldsNodeAddr bool
}

// Underlay is a detected underlay MTU and where it came from.
type Underlay struct {
	MTU int
	// Iface is the interface it was read from; "" for the fallback.
	Iface string
	// How: "address" (the interface holding a node address), "pattern"
	// (the smallest interface matching the pattern) or "fallback".
	How string
}

// SelectUnderlay picks the underlay MTU among links. With no pattern
// (FelixConfiguration mtuIfacePattern unset): the MTU of the interface
// holding a node address (the smallest, if several do), else the smallest
// MTU among up interfaces matching [DefaultMTUIfacePattern]. With a
// pattern: the smallest MTU among up interfaces matching it, as Calico
// does. Loopback interfaces never count; with none qualifying the result
// is [FallbackUnderlayMTU]. An MTU below [MinUnderlayMTU] is returned with
// an error.
func SelectUnderlay(links []Link, pattern *regexp.Regexp) (Underlay, error) {
	var best *Underlay
	consider := func(l Link, how string) {
		if best == nil || l.MTU < best.MTU {
			best = &Underlay{MTU: l.MTU, Iface: l.Name, How: how}
		}
	}
	if pattern == nil {
		for _, l := range links {
			if l.HoldsNodeAddr && !l.Loopback {
				consider(l, "address")
			}
		}
		pattern = defaultMTUIfaceRE
	}
	if best == nil {
		for _, l := range links {
			if l.Up && !l.Loopback && pattern.MatchString(l.Name) {
				consider(l, "pattern")
			}
		}
	}
	if best == nil {
		return Underlay{MTU: FallbackUnderlayMTU, How: "fallback"}, nil
	}
	if best.MTU < MinUnderlayMTU {
		return *best, fmt.Errorf("underlay MTU %d on %s is too small to carry workloads", best.MTU, best.Iface)
	}
	return *best, nil
}
