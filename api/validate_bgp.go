package api

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// BGP limits.
const (
	maxCommunities          = 500
	maxPrefixAdvertisements = 500
)

func validLogSeverity(s string) bool {
	return oneOf(strings.ToLower(s), "trace", "debug", "info", "warning", "error", "fatal")
}

func validateBGPConfiguration(p *problems, c *BGPConfiguration) {
	s := &c.Spec
	if s.LogSeverityScreen != "" && !validLogSeverity(s.LogSeverityScreen) {
		p.add("spec.logSeverityScreen", "must be Trace, Debug, Info, Warning, Error or Fatal, got %q", s.LogSeverityScreen)
	}
	if c.Metadata.Name != "default" {
		// These describe the whole cluster (clientv3/bgpconfig.go).
		if s.NodeToNodeMeshEnabled != nil {
			p.add("spec.nodeToNodeMeshEnabled", "can only be set in the default BGPConfiguration")
		}
		if s.ASNumber != nil {
			p.add("spec.asNumber", "can only be set in the default BGPConfiguration (set a node's AS in its Node spec.bgp.asNumber)")
		}
		if s.NodeMeshMaxRestartTime != nil {
			p.add("spec.nodeMeshMaxRestartTime", "can only be set in the default BGPConfiguration")
		}
	}
	if s.ASNumber != nil && *s.ASNumber == 0 {
		p.add("spec.asNumber", "must not be 0")
	}
	if s.BindMode != "" && !oneOf(s.BindMode, BindModeNone, BindModeNodeIP) {
		p.add("spec.bindMode", "must be None or NodeIP, got %q", s.BindMode)
	}
	if d := s.NodeMeshMaxRestartTime; d != nil {
		if d.Duration < 0 {
			p.add("spec.nodeMeshMaxRestartTime", "must not be negative")
		}
		if s.NodeToNodeMeshEnabled != nil && !*s.NodeToNodeMeshEnabled {
			p.add("spec.nodeMeshMaxRestartTime", "cannot be set when nodeToNodeMeshEnabled is false")
		}
	}
	validateBGPTimers(p, "spec", s.KeepaliveTime, s.HoldTime)
	if len(s.Communities) > maxCommunities {
		p.add("spec.communities", "has %d entries, the limit is %d", len(s.Communities), maxCommunities)
	}
	defined := map[string]bool{}
	for i, cm := range s.Communities {
		f := fmt.Sprintf("spec.communities[%d]", i)
		if cm.Name == "" {
			p.add(f+".name", "is required")
		} else if !IsDNSSubdomain(cm.Name) {
			p.add(f+".name", "%q is not a valid name", cm.Name)
		}
		if err := checkCommunity(cm.Value); err != nil {
			p.add(f+".value", "%v", err)
		}
		defined[cm.Name] = true
	}
	if len(s.Communities) > 0 && len(s.PrefixAdvertisements) == 0 {
		p.add("spec.communities", "communities are defined but no prefixAdvertisement uses them")
	}
	if len(s.PrefixAdvertisements) > maxPrefixAdvertisements {
		p.add("spec.prefixAdvertisements", "has %d entries, the limit is %d", len(s.PrefixAdvertisements), maxPrefixAdvertisements)
	}
	for i, pa := range s.PrefixAdvertisements {
		f := fmt.Sprintf("spec.prefixAdvertisements[%d]", i)
		if pa.CIDR == "" {
			p.add(f+".cidr", "is required")
		} else if _, err := parsePrefixOrAddr(pa.CIDR); err != nil {
			p.add(f+".cidr", "%v", err)
		}
		for j, v := range pa.Communities {
			if defined[v] {
				continue
			}
			if err := checkCommunity(v); err != nil {
				p.add(fmt.Sprintf("%s.communities[%d]", f, j), "%q is neither a community defined in spec.communities nor a community value aa:nn or aa:nn:mm", v)
			}
		}
	}
}

// checkCommunity checks a standard (aa:nn, 16-bit parts) or large
// (aa:nn:mm, 32-bit parts) BGP community.
func checkCommunity(v string) error {
	parts := strings.Split(v, ":")
	bits := 0
	switch len(parts) {
	case 2:
		bits = 16
	case 3:
		bits = 32
	default:
		return fmt.Errorf("%q is not a community value aa:nn or aa:nn:mm", v)
	}
	for _, part := range parts {
		if !isDigits(part) {
			return fmt.Errorf("%q is not a community value aa:nn or aa:nn:mm", v)
		}
		if _, err := strconv.ParseUint(part, 10, bits); err != nil {
			return fmt.Errorf("community %q: each part must fit in %d bits", v, bits)
		}
	}
	return nil
}

// splitPeerIP parses "IP", "IPv4:port" or "[IPv6]:port".
func splitPeerIP(s string) (ip net.IP, port int, err error) {
	host := s
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, portStr, err := net.SplitHostPort(s)
		if err != nil {
			return nil, 0, fmt.Errorf("%q is not an IP address, <IPv4>:<port> or [<IPv6>]:<port>", s)
		}
		n, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || n == 0 {
			return nil, 0, fmt.Errorf("%q: the port must be between 1 and 65535", s)
		}
		host, port = h, int(n)
		if strings.HasPrefix(s, "[") && net.ParseIP(h).To4() != nil {
			return nil, 0, fmt.Errorf("%q: only IPv6 addresses are written in brackets", s)
		}
	}
	ip = net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("%q is not an IP address, <IPv4>:<port> or [<IPv6>]:<port>", s)
	}
	return ip, port, nil
}

// validateBGPTimers checks a keepalive and hold time pair: whole seconds
// (the OPEN message carries seconds), a hold time of 0 (no keepalives) or
// 3..65535 s (RFC 4271 4.2), a keepalive of at least 1 s and below the
// hold time.
func validateBGPTimers(p *problems, prefix string, keepalive, hold *Duration) {
	if hold != nil {
		h := hold.Duration
		switch {
		case h%time.Second != 0:
			p.add(prefix+".holdTime", "must be whole seconds, got %s", h)
		case h != 0 && (h < 3*time.Second || h > 65535*time.Second):
			p.add(prefix+".holdTime", "must be 0 or between 3s and 65535s, got %s", h)
		}
	}
	if keepalive != nil {
		k := keepalive.Duration
		switch {
		case k%time.Second != 0:
			p.add(prefix+".keepaliveTime", "must be whole seconds, got %s", k)
		case k < time.Second || k > 65535*time.Second:
			p.add(prefix+".keepaliveTime", "must be between 1s and 65535s, got %s", k)
		case hold != nil && hold.Duration != 0 && k >= hold.Duration:
			p.add(prefix+".keepaliveTime", "must be shorter than holdTime %s, got %s", hold.Duration, k)
		}
	}
}

// validSecretKey is Kubernetes' rule for a secret's data key, which weft
// uses as a file name.
func validSecretKey(k string) bool {
	if k == "" || k == "." || k == ".." || len(k) > 253 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validateBGPPeer(p *problems, b *BGPPeer) {
	s := &b.Spec
	if s.Node != "" && !IsDNSSubdomain(s.Node) {
		p.add("spec.node", "%q is not a valid node name", s.Node)
	}
	if s.NodeSelector != "" {
		validateSelector(p, "spec.nodeSelector", s.NodeSelector, false)
	}
	if s.PeerSelector != "" {
		validateSelector(p, "spec.peerSelector", s.PeerSelector, false)
	}
	if s.Node != "" && s.NodeSelector != "" {
		p.add("spec.nodeSelector", "node and nodeSelector cannot both be set")
	}
	var peerIP net.IP
	if s.PeerIP != "" {
		ip, _, err := splitPeerIP(s.PeerIP)
		if err != nil {
			p.add("spec.peerIP", "%v", err)
		}
		peerIP = ip
	}
	switch {
	case s.PeerIP != "" && s.PeerSelector != "":
		p.add("spec.peerSelector", "peerIP and peerSelector cannot both be set")
	case s.PeerIP == "" && s.PeerSelector == "":
		p.add("spec", "one of peerIP or peerSelector is required")
	case s.PeerSelector != "" && s.ASNumber != 0:
		p.add("spec.asNumber", "must be empty when peerSelector is set (the remote node's AS is used)")
	}
	// asNumber may be left out with a peerIP that is a weft node's address
	// (that node's AS is used, as in Calico); the calculation reports a
	// peerIP of no node without asNumber.
	if s.LocalASNumber != nil && *s.LocalASNumber == 0 {
		p.add("spec.localASNumber", "must not be 0")
	}
	if s.ReachableBy != "" {
		gw := net.ParseIP(s.ReachableBy)
		switch {
		case s.PeerIP == "":
			p.add("spec.reachableBy", "must be empty when peerIP is empty")
		case gw == nil:
			p.add("spec.reachableBy", "%q is not an IP address", s.ReachableBy)
		case peerIP != nil && (gw.To4() == nil) != (peerIP.To4() == nil):
			p.add("spec.reachableBy", "%s and peerIP %s are of different address families", s.ReachableBy, s.PeerIP)
		}
	}
	if s.KeepOriginalNextHop && s.NextHopMode != "" {
		p.add("spec.keepOriginalNextHop", "keepOriginalNextHop and nextHopMode cannot both be set; keepOriginalNextHop is deprecated, use nextHopMode")
	}
	if s.NextHopMode != "" && !oneOf(s.NextHopMode, NextHopModeAuto, NextHopModeSelf, NextHopModeKeep) {
		p.add("spec.nextHopMode", "must be Auto, Self or Keep, got %q", s.NextHopMode)
	}
	if s.SourceAddress != "" && !oneOf(s.SourceAddress, SourceAddressUseNodeIP, SourceAddressNone) {
		p.add("spec.sourceAddress", "must be UseNodeIP or None, got %q", s.SourceAddress)
	}
	if s.ReversePeering != "" && !oneOf(s.ReversePeering, ReversePeeringAuto, ReversePeeringManual) {
		p.add("spec.reversePeering", "must be Auto or Manual, got %q", s.ReversePeering)
	}
	if d := s.MaxRestartTime; d != nil {
		switch {
		case d.Duration < 0:
			p.add("spec.maxRestartTime", "must not be negative")
		case d.Duration%time.Second != 0 || d.Duration > 4095*time.Second:
			p.add("spec.maxRestartTime", "must be whole seconds up to 4095s (the graceful-restart capability's 12 bits), got %s", d.Duration)
		}
	}
	validateBGPTimers(p, "spec", s.KeepaliveTime, s.HoldTime)
	if m := s.MaxPrefixes; m != nil && *m == 0 {
		p.add("spec.maxPrefixes", "must be at least 1")
	}
	if pw := s.Password; pw != nil {
		switch ref := pw.SecretKeyRef; {
		case ref == nil:
			p.add("spec.password.secretKeyRef", "is required")
		default:
			if !IsDNSSubdomain(ref.Name) {
				p.add("spec.password.secretKeyRef.name", "%q is not a valid secret name", ref.Name)
			}
			if !validSecretKey(ref.Key) {
				p.add("spec.password.secretKeyRef.key", "%q is not a valid key (letters, digits, '-', '_' and '.', not \".\" or \"..\")", ref.Key)
			}
		}
	}
	if n := s.NumAllowedLocalASNumbers; n != nil && *n < 0 {
		p.add("spec.numAllowedLocalASNumbers", "must not be negative, got %d", *n)
	}
	if t := s.TTLSecurity; t != nil && *t == 0 {
		p.add("spec.ttlSecurity", "must be between 1 and 255 hops")
	}
}
