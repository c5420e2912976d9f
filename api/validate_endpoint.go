package api

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
)

func validateHostEndpoint(p *problems, h *HostEndpoint) {
	s := &h.Spec
	if s.Node == "" {
		p.add("spec.node", "is required")
	} else if !IsDNSSubdomain(s.Node) {
		p.add("spec.node", "%q is not a valid node name", s.Node)
	}
	if s.InterfaceName == "" && len(s.ExpectedIPs) == 0 {
		p.add("spec", "at least one of interfaceName or expectedIPs is required")
	}
	if s.InterfaceName != "" && s.InterfaceName != "*" && !IsInterfaceName(s.InterfaceName) {
		p.add("spec.interfaceName", "%q is not a valid interface name (1-15 characters of letters, digits, '_', '.', '-'; or \"*\")", s.InterfaceName)
	}
	for i, ip := range s.ExpectedIPs {
		if _, err := parseAddr(ip); err != nil {
			p.add(fmt.Sprintf("spec.expectedIPs[%d]", i), "%v", err)
		}
	}
	validateProfileNames(p, "spec.profiles", s.Profiles)
	for i, port := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if !isPortName(port.Name) {
			p.add(f+".name", "%q is not a valid port name (1-15 lower case letters, digits and '-', with a letter)", port.Name)
		}
		validateEndpointProtocol(p, f+".protocol", port.Protocol)
		if port.Port == 0 {
			p.add(f+".port", "must be between 1 and 65535")
		}
	}
}

func validateEndpointProtocol(p *problems, field string, pr Protocol) {
	if pr.Name == "" && pr.Number == 0 {
		p.add(field, "is required (TCP, UDP or SCTP)")
		return
	}
	if !pr.SupportsPorts() {
		p.add(field, "must be TCP, UDP or SCTP (a protocol with ports), got %s", pr)
	}
}

func validateWorkloadEndpoint(p *problems, w *WorkloadEndpoint) {
	s := &w.Spec
	for _, id := range []struct{ field, value string }{
		{"spec.node", s.Node}, {"spec.orchestrator", s.Orchestrator}, {"spec.endpoint", s.Endpoint},
	} {
		if id.value == "" {
			p.add(id.field, "is required")
		} else if !IsDNSSubdomain(id.value) {
			p.add(id.field, "%q is not a valid name", id.value)
		}
	}
	for _, id := range []struct{ field, value string }{
		{"spec.workload", s.Workload}, {"spec.pod", s.Pod}, {"spec.serviceAccountName", s.ServiceAccountName},
	} {
		if id.value != "" && !IsDNSSubdomain(id.value) {
			p.add(id.field, "%q is not a valid name", id.value)
		}
	}
	if s.ContainerID != "" && !isContainerID(s.ContainerID) {
		p.add("spec.containerID", "%q is not a valid container ID (letters, digits and '-')", s.ContainerID)
	}
	if wl := workloadEndpointWorkload(s); wl == "" {
		p.add("spec.workload", "is required")
	} else if s.Node != "" && s.Orchestrator != "" && s.Endpoint != "" && w.Metadata.Name != "" {
		if want := WorkloadEndpointName(s.Node, s.Orchestrator, wl, s.Endpoint); w.Metadata.Name != want {
			p.add("metadata.name", "%q does not match the endpoint's identifiers (expected %q)", w.Metadata.Name, want)
		}
	}
	if s.InterfaceName == "" {
		p.add("spec.interfaceName", "is required")
	} else if !IsInterfaceName(s.InterfaceName) {
		p.add("spec.interfaceName", "%q is not a valid interface name (1-15 characters of letters, digits, '_', '.', '-')", s.InterfaceName)
	}
	var nets []netip.Prefix
	for i, n := range s.IPNetworks {
		f := fmt.Sprintf("spec.ipNetworks[%d]", i)
		pfx, err := parseNet(n)
		if err != nil {
			p.add(f, "%v", err)
			continue
		}
		if pfx.Bits() != pfx.Addr().BitLen() {
			p.add(f, "%s holds more than one address: each network must be a /32 (IPv4) or /128 (IPv6)", n)
			continue
		}
		nets = append(nets, pfx)
	}
	for i, nat := range s.IPNATs {
		f := fmt.Sprintf("spec.ipNATs[%d]", i)
		in, err1 := parseAddr(nat.InternalIP)
		if err1 != nil {
			p.add(f+".internalIP", "%v", err1)
		}
		ex, err2 := parseAddr(nat.ExternalIP)
		if err2 != nil {
			p.add(f+".externalIP", "%v", err2)
		}
		if err1 != nil || err2 != nil {
			continue
		}
		if in.Is4() != ex.Is4() {
			p.add(f, "internal and external IPs must be of the same family")
		}
		inside := false
		for _, n := range nets {
			inside = inside || n.Contains(in)
		}
		if !inside {
			p.add(f+".internalIP", "%s is not one of the endpoint's ipNetworks", nat.InternalIP)
		}
	}
	for _, gw := range []struct {
		field, value string
		want4        bool
	}{{"spec.ipv4Gateway", s.IPv4Gateway, true}, {"spec.ipv6Gateway", s.IPv6Gateway, false}} {
		if gw.value == "" {
			continue
		}
		a, err := parseAddr(gw.value)
		if err != nil {
			p.add(gw.field, "%v", err)
		} else if a.Is4() != gw.want4 {
			p.add(gw.field, "%s is an %s address", gw.value, family(a))
		}
	}
	validateProfileNames(p, "spec.profiles", s.Profiles)
	if s.MAC != "" {
		if _, err := net.ParseMAC(s.MAC); err != nil {
			p.add("spec.mac", "%q is not a valid MAC address", s.MAC)
		}
	}
	for i, port := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if port.Name == "" && port.HostPort == 0 {
			p.add(f+".name", "is required unless hostPort is set")
		} else if port.Name != "" && !isPortName(port.Name) {
			p.add(f+".name", "%q is not a valid port name (1-15 lower case letters, digits and '-', with a letter)", port.Name)
		}
		validateEndpointProtocol(p, f+".protocol", port.Protocol)
		if port.Port == 0 {
			p.add(f+".port", "must be between 1 and 65535")
		}
		if port.HostIP != "" {
			if _, err := parseNet(port.HostIP); err != nil {
				p.add(f+".hostIP", "%v", err)
			}
		}
	}
	validateNets(p, "spec.allowSpoofedSourcePrefixes", s.AllowSpoofedSourcePrefixes)
}

func validateNode(p *problems, n *Node) {
	s := &n.Spec
	if b := s.BGP; b != nil {
		if *b == (NodeBGPSpec{}) {
			p.add("spec.bgp", "must not be empty: omit it or set at least one field")
		}
		if b.ASNumber != nil && *b.ASNumber == 0 {
			p.add("spec.bgp.asNumber", "must not be 0")
		}
		checkCIDROfFamily(p, "spec.bgp.ipv4Address", b.IPv4Address, true)
		checkCIDROfFamily(p, "spec.bgp.ipv6Address", b.IPv6Address, false)
		checkAddrOfFamily(p, "spec.bgp.ipv4IPIPTunnelAddr", b.IPv4IPIPTunnelAddr, true)
		checkAddrOfFamily(p, "spec.bgp.routeReflectorClusterID", b.RouteReflectorClusterID, true)
	}
	checkAddrOfFamily(p, "spec.ipv4VXLANTunnelAddr", s.IPv4VXLANTunnelAddr, true)
	checkAddrOfFamily(p, "spec.ipv6VXLANTunnelAddr", s.IPv6VXLANTunnelAddr, false)
	for _, m := range []struct{ field, value string }{
		{"spec.vxlanTunnelMACAddr", s.VXLANTunnelMACAddr}, {"spec.vxlanTunnelMACAddrV6", s.VXLANTunnelMACAddrV6},
	} {
		if m.value != "" {
			checkTunnelMAC(p, m.field, m.value)
		}
	}
	if w := s.Wireguard; w != nil {
		checkAddrOfFamily(p, "spec.wireguard.interfaceIPv4Address", w.InterfaceIPv4Address, true)
		checkAddrOfFamily(p, "spec.wireguard.interfaceIPv6Address", w.InterfaceIPv6Address, false)
	}
	for i, a := range s.Addresses {
		f := fmt.Sprintf("spec.addresses[%d]", i)
		if _, err := parsePrefixOrAddr(a.Address); err != nil {
			p.add(f+".address", "%v", err)
		}
		if a.Type != "" && !oneOf(a.Type, NodeAddressCalicoNodeIP, NodeAddressInternalIP, NodeAddressExternalIP) {
			p.add(f+".type", "must be CalicoNodeIP, InternalIP or ExternalIP, got %q", a.Type)
		}
	}
	for i, ifc := range s.Interfaces {
		f := fmt.Sprintf("spec.interfaces[%d]", i)
		if ifc.Name != "" && !IsInterfaceName(ifc.Name) {
			p.add(f+".name", "%q is not a valid interface name", ifc.Name)
		}
		for j, a := range ifc.Addresses {
			if _, err := parsePrefixOrAddr(a); err != nil {
				p.add(fmt.Sprintf("%s.addresses[%d]", f, j), "%v", err)
			}
		}
	}
	for i, o := range s.OrchRefs {
		if o.Orchestrator == "" {
			p.add(fmt.Sprintf("spec.orchRefs[%d].orchestrator", i), "is required")
		}
	}
	for _, k := range []struct{ field, value string }{
		{"status.wireguardPublicKey", n.Status.WireguardPublicKey}, {"status.wireguardPublicKeyV6", n.Status.WireguardPublicKeyV6},
	} {
		if k.value == "" {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(k.value); err != nil || len(b) != 32 {
			p.add(k.field, "is not a base64-encoded 32-byte WireGuard key")
		}
	}
	validateNets(p, "status.podCIDRs", n.Status.PodCIDRs)
}

// checkCIDROfFamily accepts an address or an address/prefix (host bits
// allowed: a node's address with its subnet) of the wanted family.
func checkCIDROfFamily(p *problems, field, v string, want4 bool) {
	if v == "" {
		return
	}
	pfx, err := parsePrefixOrAddr(v)
	switch {
	case err != nil:
		p.add(field, "%v", err)
	case pfx.Addr().Is4() != want4:
		p.add(field, "%s is an %s address", v, family(pfx.Addr()))
	}
}

func checkAddrOfFamily(p *problems, field, v string, want4 bool) {
	if v == "" {
		return
	}
	a, err := parseAddr(v)
	switch {
	case err != nil:
		p.add(field, "%v", err)
	case a.Is4() != want4:
		p.add(field, "%s is an %s address", v, family(a))
	}
}

// checkTunnelMAC accepts the MAC address of a VXLAN device: a unicast
// EUI-48 address (the kernel refuses a multicast or all-zero one, and
// peers would put it in their FDB and neighbour tables).
func checkTunnelMAC(p *problems, field, value string) {
	mac, err := net.ParseMAC(value)
	switch {
	case err != nil:
		p.add(field, "%q is not a valid MAC address", value)
	case len(mac) != 6:
		p.add(field, "%q is not a 6-byte (EUI-48) MAC address", value)
	case mac[0]&1 == 1:
		p.add(field, "%q is a multicast MAC address (a VXLAN device needs a unicast one)", value)
	case [6]byte(mac) == [6]byte{}:
		p.add(field, "%q is the all-zero MAC address (a VXLAN device needs a unicast one)", value)
	}
}
