package dataplane

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// WireGuard's fixed points in the kernel (calico.md §5.4, with weft's
// numbers). The device's own encrypted packets carry [WireGuardMark]; the
// rule at [RulePriorityWireGuard] sends every packet without that mark to
// [TableWireGuard], which holds a route through the device for each
// address a WireGuard peer owns. The policy backends must leave the mark's
// bit alone.
const (
	// TableWireGuard is the routing table of the routes through the
	// WireGuard device (`ip route show table 87`: 0x57 like weft's route
	// protocol).
	TableWireGuard = 87
	// RulePriorityWireGuard is the priority of the rule "not fwmark
	// WireGuardMark lookup TableWireGuard" (Calico's 99).
	RulePriorityWireGuard = 99
	// WireGuardMark is the firewall mark of the device's UDP packets (one
	// bit, as Calico takes one bit of its mark mask).
	WireGuardMark uint32 = 0x00100000
)

// WireGuardKey is a Curve25519 key as WireGuard uses it: a public key in
// the desired state, a private key only inside the driver.
type WireGuardKey [32]byte

// ParseWireGuardKey decodes the base64 form (`wg genkey`, Node
// status.wireguardPublicKey).
func ParseWireGuardKey(s string) (WireGuardKey, error) {
	var k WireGuardKey
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("%q is not a base64-encoded 32-byte WireGuard key", s)
	}
	copy(k[:], b)
	return k, nil
}

// String is the base64 form.
func (k WireGuardKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether the key is unset.
func (k WireGuardKey) IsZero() bool { return k == WireGuardKey{} }

// WireGuardDevice is the desired state of the node's WireGuard device (its
// name is static configuration of the driver, like the VXLAN device's).
type WireGuardDevice struct {
	// ListenPort is the UDP port the device listens on.
	ListenPort int
	// Mark is the firewall mark of the device's own packets.
	Mark uint32
	// MTU of the device; 0 leaves the driver's default.
	MTU int
	// Addresses are the node's WireGuard tunnel addresses, each a /32
	// (/128): host-originated traffic through the device leaves from one.
	Addresses []netip.Prefix
	// PublicKey selects the private key the device uses (the driver holds
	// the node's keys and finds the one with this public key); zero means
	// the node's current key. During a key rotation it is the new key
	// before the other nodes are told.
	PublicKey WireGuardKey
	// Peers are the other nodes reached through the device.
	Peers []WireGuardPeer
	// Blocked are the nodes this node does not reach at all (wireguard.require
	// is set and they have no usable key): their addresses are
	// blackholed. Informational, for the driver's status and metrics.
	Blocked []string
}

// WireGuardPeer is another node reached through the WireGuard device.
type WireGuardPeer struct {
	Node      string
	PublicKey WireGuardKey
	// Endpoint is the node's underlay address and listen port; the zero
	// value means none is known (the peer can still reach this node).
	Endpoint netip.AddrPort
	// AllowedIPs are the addresses the peer owns (its blocks, borrowed
	// addresses, tunnel addresses): routed to it, and accepted from it.
	AllowedIPs []netip.Prefix
	// PersistentKeepalive is 0 (off) or the keepalive interval.
	PersistentKeepalive time.Duration
}

// Equal reports whether two peers are the same (allowed IPs as a set).
func (p WireGuardPeer) Equal(o WireGuardPeer) bool {
	return p.Node == o.Node && p.PublicKey == o.PublicKey && p.Endpoint == o.Endpoint &&
		p.PersistentKeepalive == o.PersistentKeepalive && samePrefixSet(p.AllowedIPs, o.AllowedIPs)
}

// Equal reports whether two device descriptions are the same, ignoring
// order.
func (w *WireGuardDevice) Equal(o *WireGuardDevice) bool {
	if w == nil || o == nil {
		return w == o
	}
	return w.ListenPort == o.ListenPort && w.Mark == o.Mark && w.MTU == o.MTU && w.PublicKey == o.PublicKey &&
		samePrefixSet(w.Addresses, o.Addresses) &&
		sameSet(w.Peers, o.Peers, func(p WireGuardPeer) WireGuardKey { return p.PublicKey }, WireGuardPeer.Equal) &&
		sameSet(w.Blocked, o.Blocked, func(s string) string { return s }, func(a, b string) bool { return a == b })
}

// Peer returns the peer for node, if any.
func (w *WireGuardDevice) Peer(node string) (WireGuardPeer, bool) {
	if w == nil {
		return WireGuardPeer{}, false
	}
	i := slices.IndexFunc(w.Peers, func(p WireGuardPeer) bool { return p.Node == node })
	if i < 0 {
		return WireGuardPeer{}, false
	}
	return w.Peers[i], true
}

// Validate checks one peer on its own.
func (p WireGuardPeer) Validate() error {
	var errs []error
	if p.Node == "" {
		errs = append(errs, errors.New("empty node name"))
	}
	if p.PublicKey.IsZero() {
		errs = append(errs, errors.New("no public key"))
	}
	if p.Endpoint.IsValid() && (p.Endpoint.Port() == 0 || p.Endpoint.Addr().IsUnspecified() || p.Endpoint.Addr().Is4In6() || p.Endpoint.Addr().Zone() != "") {
		errs = append(errs, fmt.Errorf("endpoint %s: want a plain unicast address and a port", p.Endpoint))
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535*time.Second || p.PersistentKeepalive%time.Second != 0 {
		errs = append(errs, fmt.Errorf("persistent keepalive %s: want whole seconds 0..65535", p.PersistentKeepalive))
	}
	seen := map[netip.Prefix]bool{}
	for _, a := range p.AllowedIPs {
		switch {
		case !a.IsValid() || a.Addr().Is4In6() || a.Addr().Zone() != "":
			errs = append(errs, fmt.Errorf("allowed IP %s is not a plain prefix", a))
		case a != a.Masked():
			errs = append(errs, fmt.Errorf("allowed IP %s has host bits set", a))
		case seen[a]:
			errs = append(errs, fmt.Errorf("allowed IP %s listed twice", a))
		}
		seen[a] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wireguard peer %s: %w", p.Node, err)
	}
	return nil
}

// Validate checks the device and its peers, including uniqueness across
// peers: one peer per node and per key, no peer with the device's own key,
// and no allowed IP given to two peers.
func (w *WireGuardDevice) Validate() error {
	var errs []error
	if w.ListenPort < 1 || w.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("listen port %d out of range 1..65535", w.ListenPort))
	}
	if w.MTU != 0 && (w.MTU < MinMTU || w.MTU > MaxMTU) {
		errs = append(errs, fmt.Errorf("MTU %d out of range %d..%d", w.MTU, MinMTU, MaxMTU))
	}
	for _, a := range w.Addresses {
		if !a.IsValid() || a.Addr().Is4In6() || a.Bits() != a.Addr().BitLen() {
			errs = append(errs, fmt.Errorf("address %s: want a /32 or /128", a))
		}
	}
	nodes := map[string]bool{}
	keys := map[WireGuardKey]bool{}
	owner := map[netip.Prefix]string{}
	for _, p := range w.Peers {
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if nodes[p.Node] {
			errs = append(errs, fmt.Errorf("wireguard peer %s listed twice", p.Node))
		}
		if keys[p.PublicKey] || (!w.PublicKey.IsZero() && p.PublicKey == w.PublicKey) {
			errs = append(errs, fmt.Errorf("wireguard peer %s: public key %s used twice", p.Node, p.PublicKey))
		}
		nodes[p.Node], keys[p.PublicKey] = true, true
		for _, a := range p.AllowedIPs {
			if o, ok := owner[a]; ok {
				errs = append(errs, fmt.Errorf("wireguard allowed IP %s given to peers %s and %s", a, o, p.Node))
			}
			owner[a] = p.Node
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wireguard device: %w", err)
	}
	return nil
}
