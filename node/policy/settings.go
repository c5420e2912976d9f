package policy

import (
	"net/netip"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// FelixOverrides applies the FelixConfiguration fields weft's policy
// honours on top of the node's base settings (from its config file):
// failsafeInboundHostPorts, failsafeOutboundHostPorts (unset keeps the
// base; an empty list disables) and defaultEndpointToHostAction. felix is
// the merged spec of the configurations that apply to the node (node.<node>
// over default, field by field: api.MergeFelixConfiguration).
func FelixOverrides(base dataplane.PolicySettings, felix api.FelixConfigurationSpec) dataplane.PolicySettings {
	out := base
	if felix.FailsafeInboundHostPorts != nil {
		out.FailsafeIn = ProtoPorts(*felix.FailsafeInboundHostPorts)
	}
	if felix.FailsafeOutboundHostPorts != nil {
		out.FailsafeOut = ProtoPorts(*felix.FailsafeOutboundHostPorts)
	}
	switch strings.ToLower(felix.DefaultEndpointToHostAction) {
	case "drop":
		out.EndpointToHost = dataplane.EndpointToHostDrop
	case "accept":
		out.EndpointToHost = dataplane.EndpointToHostAccept
	case "return":
		out.EndpointToHost = dataplane.EndpointToHostReturn
	}
	return out
}

// ProtoPorts converts Felix's failsafe entries (invalid ones, which the
// store refuses, are left out).
func ProtoPorts(in []api.ProtoPort) []dataplane.ProtoPort {
	out := []dataplane.ProtoPort{}
	for _, p := range in {
		proto := ProtoNumber(p.Protocol)
		if proto == 0 || p.Port == 0 {
			continue
		}
		pp := dataplane.ProtoPort{Proto: proto, Port: p.Port}
		if p.Net != "" {
			n, err := api.ParseCIDROrIP(p.Net)
			if err != nil {
				continue
			}
			pp.Net = n.Masked()
		}
		out = append(out, pp)
	}
	return out
}

// ProtoNumber is the number of tcp, udp or sctp (any case; "" is tcp,
// Felix's default for failsafe ports); 0 otherwise.
func ProtoNumber(name string) uint8 {
	switch strings.ToLower(name) {
	case "":
		return dataplane.ProtoTCP
	case "tcp":
		return dataplane.ProtoTCP
	case "udp":
		return dataplane.ProtoUDP
	case "sctp":
		return dataplane.ProtoSCTP
	}
	return 0
}

// FailsafePort is one config-file failsafe entry for [ConfigFailsafe].
type FailsafePort struct {
	Protocol string
	Port     uint16
	Net      netip.Prefix
}

// ConfigFailsafe converts the config file's failsafe entries.
func ConfigFailsafe(in []FailsafePort) []dataplane.ProtoPort {
	out := []dataplane.ProtoPort{}
	for _, p := range in {
		if n := ProtoNumber(p.Protocol); n != 0 && p.Port != 0 {
			out = append(out, dataplane.ProtoPort{Proto: n, Port: p.Port, Net: p.Net})
		}
	}
	return out
}
