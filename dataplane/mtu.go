package dataplane

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
}

// WorkloadMTU is the MTU for workload interfaces: override when positive;
// otherwise the underlay MTU minus the largest overhead of the enabled
// encapsulations (the smallest resulting MTU), or the underlay MTU when
// traffic is never encapsulated. Each overhead is subtracted once, from
// the underlay, never from another tunnel's MTU.
func WorkloadMTU(underlay int, enc Encaps, override int) int {
	if override > 0 {
		return override
	}
	overhead := 0
	for _, o := range []struct {
		on bool
		n  int
	}{
		{enc.VXLANv4, OverheadVXLANv4}, {enc.VXLANv6, OverheadVXLANv6},
		{enc.WireGuardV4, OverheadWireGuardV4}, {enc.WireGuardV6, OverheadWireGuardV6},
		{enc.IPIP, OverheadIPIP},
	} {
		if o.on {
			overhead = max(overhead, o.n)
		}
	}
	return underlay - overhead
}

// VXLANDeviceMTU is the MTU of a VXLAN device over the given underlay.
func VXLANDeviceMTU(underlay int, v6Underlay bool) int {
	if v6Underlay {
		return underlay - OverheadVXLANv6
	}
	return underlay - OverheadVXLANv4
}

