package api

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Bounds of routeRefreshInterval: the dataplane's periodic resync repairs
// drift within at most 90 s (the same bounds as network.resync_period).
const (
	MinRouteRefreshInterval = time.Second
	MaxRouteRefreshInterval = 90 * time.Second
)

func validateFelixConfiguration(p *problems, c *FelixConfiguration) {
	s := &c.Spec
	// Last: the format of a refused field is still checked first, so the
	// error stays right when its subsystem starts applying it.
	defer validateFelixFields(p, s)
	if s.LogSeverityScreen != "" && !validLogSeverity(s.LogSeverityScreen) {
		p.add("spec.logSeverityScreen", "must be Trace, Debug, Info, Warning, Error or Fatal, got %q", s.LogSeverityScreen)
	}
	for _, fp := range []struct {
		field string
		ports *[]ProtoPort
	}{{"spec.failsafeInboundHostPorts", s.FailsafeInboundHostPorts}, {"spec.failsafeOutboundHostPorts", s.FailsafeOutboundHostPorts}} {
		if fp.ports == nil {
			continue
		}
		for i, pp := range *fp.ports {
			f := fmt.Sprintf("%s[%d]", fp.field, i)
			if pp.Protocol != "" && !oneOf(pp.Protocol, ProtocolTCP, ProtocolUDP, ProtocolSCTP) {
				p.add(f+".protocol", "must be TCP, UDP or SCTP, got %q", pp.Protocol)
			}
			if pp.Port == 0 {
				p.add(f+".port", "must be between 1 and 65535")
			}
			if pp.Net != "" {
				if _, err := parsePrefixOrAddr(pp.Net); err != nil {
					p.add(f+".net", "%v", err)
				}
			}
		}
	}
	enums := []struct {
		field, value string
		allowed      []string
	}{
		{"spec.defaultEndpointToHostAction", s.DefaultEndpointToHostAction, []string{EndpointToHostDrop, EndpointToHostAccept, EndpointToHostReturn}},
		{"spec.iptablesFilterAllowAction", s.IptablesFilterAllowAction, []string{"Accept", "Return"}},
		{"spec.iptablesFilterDenyAction", s.IptablesFilterDenyAction, []string{"Drop", "Reject"}},
		{"spec.chainInsertMode", s.ChainInsertMode, []string{"Insert", "Append"}},
		{"spec.natOutgoingExclusions", s.NATOutgoingExclusions, []string{NATOutgoingExclusionsIPPoolsOnly, NATOutgoingExclusionsIPPoolsAndHostIPs}},
	}
	for _, e := range enums {
		if e.value != "" && !oneOf(e.value, e.allowed...) {
			p.add(e.field, "must be one of %s, got %q", strings.Join(e.allowed, ", "), e.value)
		}
	}
	ints := []struct {
		field    string
		v        *int
		min, max int
	}{
		{"spec.wireguardListeningPort", s.WireguardListeningPort, 1, 65535},
		{"spec.wireguardListeningPortV6", s.WireguardListeningPortV6, 1, 65535},
		{"spec.wireguardMTU", s.WireguardMTU, 0, 65535},
		{"spec.wireguardMTUV6", s.WireguardMTUV6, 0, 65535},
		{"spec.wireguardRoutingRulePriority", s.WireguardRoutingRulePriority, 1, 32765},
		{"spec.vxlanPort", s.VXLANPort, 1, 65535},
		{"spec.vxlanVNI", s.VXLANVNI, 1, 1<<24 - 1},
		{"spec.vxlanMTU", s.VXLANMTU, 0, 65535},
		{"spec.vxlanMTUV6", s.VXLANMTUV6, 0, 65535},
		{"spec.ipipMTU", s.IPIPMTU, 0, 65535},
		{"spec.maxIpsetSize", s.MaxIpsetSize, 1, 1 << 30},
	}
	for _, n := range ints {
		if n.v != nil && (*n.v < n.min || *n.v > n.max) {
			p.add(n.field, "must be between %d and %d, got %d", n.min, n.max, *n.v)
		}
	}
	for _, ifc := range []struct{ field, value string }{
		{"spec.wireguardInterfaceName", s.WireguardInterfaceName}, {"spec.wireguardInterfaceNameV6", s.WireguardInterfaceNameV6},
	} {
		if ifc.value != "" && !IsInterfaceName(ifc.value) {
			p.add(ifc.field, "%q is not a valid interface name", ifc.value)
		}
	}
	for _, d := range []struct {
		field string
		d     *Duration
	}{
		{"spec.wireguardKeepAlive", s.WireguardKeepAlive},
		{"spec.routeRefreshInterval", s.RouteRefreshInterval},
		{"spec.iptablesRefreshInterval", s.IptablesRefreshInterval},
		{"spec.nftablesRefreshInterval", s.NftablesRefreshInterval},
		{"spec.ipsetsRefreshInterval", s.IpsetsRefreshInterval},
	} {
		if d.d != nil && d.d.Duration < 0 {
			p.add(d.field, "must not be negative")
		}
	}
	if d := s.WireguardKeepAlive; d != nil && d.Duration >= 0 &&
		(d.Duration%time.Second != 0 || d.Duration > 65535*time.Second) {
		p.add("spec.wireguardKeepAlive", "must be whole seconds, at most 65535s (WireGuard's persistent keepalive), got %s", d.Duration)
	}
	if w, x := s.WireguardListeningPort, s.VXLANPort; w != nil && x != nil && *w == *x {
		p.add("spec.wireguardListeningPort", "UDP port %d is already vxlanPort", *w)
	}
	if d := s.RouteRefreshInterval; d != nil && d.Duration >= 0 &&
		(d.Duration < MinRouteRefreshInterval || d.Duration > MaxRouteRefreshInterval) {
		p.add("spec.routeRefreshInterval", "must be between %s and %s (weft repairs drift within 90 s), got %s",
			MinRouteRefreshInterval, MaxRouteRefreshInterval, d.Duration)
	}
	if s.NATOutgoingAddress != "" {
		if a, err := parseAddr(s.NATOutgoingAddress); err != nil || !a.Is4() {
			p.add("spec.natOutgoingAddress", "%q is not a valid IPv4 address", s.NATOutgoingAddress)
		}
	}
	if pr := s.NATPortRange; pr != nil {
		if pr.IsNamed() {
			p.add("spec.natPortRange", "must be a port or a range \"min:max\", not a name")
		} else {
			validatePortRange(p, "spec.natPortRange", *pr)
		}
	}
	if s.MTUIfacePattern != "" {
		if _, err := regexp.Compile(s.MTUIfacePattern); err != nil {
			p.add("spec.mtuIfacePattern", "is not a valid regular expression: %v", err)
		}
	}
}
