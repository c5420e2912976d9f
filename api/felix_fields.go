package api

import (
	"reflect"
	"strings"
)

// FelixFields is the one table of what weft does with each field of a
// FelixConfiguration spec: applied (it takes effect, live, on every node it
// applies to) or refused with a reason (SPEC §4: never stored and silently
// ignored). A subsystem that starts honouring a field flips its row to
// [FelixApplied]; a test keeps this table and the struct in step.
// docs/resources.md describes every field. It returns a new slice each time.
func FelixFields() []FelixField {
	return []FelixField{
		{Name: "logSeverityScreen", State: FelixApplied},

		{Name: "failsafeInboundHostPorts", State: FelixApplied},
		{Name: "failsafeOutboundHostPorts", State: FelixApplied},
		{Name: "defaultEndpointToHostAction", State: FelixApplied},
		{Name: "iptablesFilterAllowAction", State: FelixRefused, Reason: reasonFelixIptables},
		{Name: "iptablesFilterDenyAction", State: FelixRefused, Reason: reasonFelixIptables},
		{Name: "chainInsertMode", State: FelixRefused, Reason: reasonFelixIptables},

		{Name: "wireguardEnabled", State: FelixRefused, Reason: reasonFelixWireGuardSwitch},
		{Name: "wireguardEnabledV6", State: FelixRefused, Reason: reasonFelixWireGuardOneDevice},
		{Name: "wireguardListeningPort", State: FelixApplied},
		{Name: "wireguardListeningPortV6", State: FelixRefused, Reason: reasonFelixWireGuardOneDevice},
		{Name: "wireguardInterfaceName", State: FelixRefused,
			Reason: "the device is named at start by the config file's [wireguard] interface (its device process and UAPI socket are found by that name across agent restarts)"},
		{Name: "wireguardInterfaceNameV6", State: FelixRefused, Reason: reasonFelixWireGuardOneDevice},
		{Name: "wireguardMTU", State: FelixApplied},
		{Name: "wireguardMTUV6", State: FelixRefused, Reason: reasonFelixWireGuardOneDevice},
		{Name: "wireguardRoutingRulePriority", State: FelixApplied},
		{Name: "wireguardHostEncryptionEnabled", State: FelixApplied},
		{Name: "wireguardKeepAlive", State: FelixApplied},

		{Name: "vxlanEnabled", State: FelixApplied},
		{Name: "vxlanPort", State: FelixApplied},
		{Name: "vxlanVNI", State: FelixApplied},
		{Name: "vxlanMTU", State: FelixApplied},
		{Name: "vxlanMTUV6", State: FelixRefused, Reason: "weft builds no IPv6 VXLAN device (IPv6 blocks are routed natively)"},
		{Name: "ipipEnabled", State: FelixApplied},
		{Name: "ipipMTU", State: FelixApplied},

		{Name: "allowVXLANPacketsFromWorkloads", State: FelixApplied},
		{Name: "allowIPIPPacketsFromWorkloads", State: FelixApplied},

		{Name: "natOutgoingAddress", State: FelixApplied},
		{Name: "natPortRange", State: FelixApplied},
		{Name: "natOutgoingExclusions", State: FelixApplied},

		{Name: "mtuIfacePattern", State: FelixApplied},

		{Name: "routeRefreshInterval", State: FelixApplied},
		{Name: "iptablesRefreshInterval", State: FelixRefused, Reason: reasonFelixIptables},
		{Name: "nftablesRefreshInterval", State: FelixRefused, Reason: "weft re-reads its nftables table at every full resync, whose period is routeRefreshInterval"},
		{Name: "ipsetsRefreshInterval", State: FelixRefused, Reason: reasonFelixIptables},
		{Name: "removeExternalRoutes", State: FelixApplied, refuseTrue: true,
			Reason: "true is not supported: weft never removes routes it did not add (false is what weft does)"},
		{Name: "maxIpsetSize", State: FelixRefused, Reason: "weft's nftables sets have no fixed size to cap"},
	}
}

const (
	reasonFelixIptables = "weft's policy accepts and drops in chains of its own, jumped to from the top of the built-in chains, with either backend; it re-reads them at every full resync (routeRefreshInterval)"
	// WireGuard's key and device are set up at the agent's start.
	reasonFelixWireGuardSwitch = "WireGuard is switched on per node by the config file's [wireguard] enabled (the node's key and device are set up at the agent's start)"
	// weft has one WireGuard device; Calico has one per family.
	reasonFelixWireGuardOneDevice = "weft runs one WireGuard device for IPv4 and IPv6 alike: the IPv4 field (wireguardListeningPort, wireguardMTU) sets it"
)

// FelixFieldState says what weft does with a set FelixConfiguration field.
type FelixFieldState uint8

const (
	// FelixApplied: the field takes effect.
	FelixApplied FelixFieldState = iota + 1
	// FelixRefused: a write that sets the field is refused with Reason.
	FelixRefused
)

func (s FelixFieldState) String() string {
	switch s {
	case FelixApplied:
		return "applied"
	case FelixRefused:
		return "refused"
	}
	return "unknown"
}

// FelixField is one row of [FelixFields].
type FelixField struct {
	// Name is the field's JSON name.
	Name  string
	State FelixFieldState
	// Reason says why a set value is refused.
	Reason string
	// refuseTrue: an applied boolean of which only false is supported.
	refuseTrue bool
}

// refuses reports whether v, the field's value, is refused.
func (f FelixField) refuses(v reflect.Value) bool {
	if v.IsZero() {
		return false // unset
	}
	if f.refuseTrue {
		return v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Bool && v.Elem().Bool()
	}
	return f.State != FelixApplied
}

// LookupFelixField returns the row of the field with that JSON name.
func LookupFelixField(name string) (FelixField, bool) {
	for _, f := range FelixFields() {
		if f.Name == name {
			return f, true
		}
	}
	return FelixField{}, false
}

// felixSpecFields lists the spec's struct fields with their JSON names.
func felixSpecFields() []struct {
	index int
	name  string
} {
	t := reflect.TypeFor[FelixConfigurationSpec]()
	out := make([]struct {
		index int
		name  string
	}, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out = append(out, struct {
			index int
			name  string
		}{i, name})
	}
	return out
}

// validateFelixFields refuses every set field weft does not apply, naming
// it. A field missing from the table is refused too (a new struct field
// must be decided on; a unit test catches it first).
func validateFelixFields(p *problems, s *FelixConfigurationSpec) {
	v := reflect.ValueOf(s).Elem()
	for _, sf := range felixSpecFields() {
		fv := v.Field(sf.index)
		row, ok := LookupFelixField(sf.name)
		switch {
		case !ok && !fv.IsZero():
			p.add("spec."+sf.name, "is not applied by weft")
		case ok && row.refuses(fv):
			p.add("spec."+sf.name, "is not applied by weft: %s", row.Reason)
		}
	}
}

// MergeFelixConfiguration returns base with every field that over sets
// replacing base's: how "node.<name>" overrides "default" for one node
// (calico.md §1.14). Unset means nil or empty.
func MergeFelixConfiguration(base, over FelixConfigurationSpec) FelixConfigurationSpec {
	out := base
	ov, dst := reflect.ValueOf(over), reflect.ValueOf(&out).Elem()
	for i := range ov.NumField() {
		if f := ov.Field(i); !f.IsZero() {
			dst.Field(i).Set(f)
		}
	}
	return out
}
