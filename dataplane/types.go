package dataplane

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Desired is this node's whole desired dataplane state, as the calculation
// emits it. A value handed to the loop must not be modified afterwards.
// Order inside the slices does not matter.
type Desired struct {
	// Revision is the store revision this state was computed from. It is
	// not part of the state ([Desired.Equal] ignores it): the loop reports
	// it back in [Report] so that a writer can wait until the dataplane
	// has caught up with its write.
	Revision uint64
	// Workloads are the local workloads whose plumbing must exist.
	Workloads []Workload
	// Routes are every route weft owns, in any table: the /32 (/128) host
	// route of each workload ([RouteClassWorkload]), this node's
	// blackholes and the other nodes' blocks, and later routes learned
	// over BGP or through WireGuard. At most one per (table, destination).
	Routes []Route
	// Rules are the policy-routing rules weft owns.
	Rules []Rule
	// VXLAN is the node's VXLAN device; nil means none (an existing one is
	// removed).
	VXLAN *VXLANDevice
	// VXLANPeers are the other nodes reachable over VXLAN: a permanent
	// neighbour and FDB entry each on the VXLAN device.
	VXLANPeers []VXLANPeer
	// NAT is the outgoing NAT configuration.
	NAT NATConfig
	// Policy is the network policy of this node's endpoints (policy.go);
	// nil means no policy is enforced.
	Policy *PolicyState
	// IPIP is the node's IP-in-IP device; nil means none (an existing one
	// is removed).
	IPIP *IPIPDevice
	// Loop are the settings of the apply loop itself.
	Loop LoopSettings
	// HoldBGPRoutes keeps the routes of [RouteClassBGP] that the kernel
	// holds but Routes no longer lists (they are not removed; listed ones
	// are still written): graceful restart after this agent restarted,
	// while its BGP speaker has not relearned the routes yet.
	HoldBGPRoutes bool
	// WireGuard is the node's WireGuard device and its peers; nil means
	// none (an existing one is removed). Its routes are in Routes
	// ([RouteClassWireGuard], [TableWireGuard]) and its rules in Rules.
	WireGuard *WireGuardDevice
}

// Workload is one local workload: a network namespace attached with a veth
// pair (calico.md §5.1).
type Workload struct {
	Namespace string
	Name      string
	// HostIface is the host side of the veth, see [WorkloadIfaceName].
	HostIface string
	// NetNS is the path of the workload's network namespace
	// (/proc/PID/ns/net, /run/netns/NAME, ...).
	NetNS string
	// Iface is the interface name inside the namespace; "" means
	// [DefaultWorkloadIface].
	Iface string
	// IPs are the workload's addresses, each a full-length prefix (/32 or
	// /128).
	IPs []netip.Prefix
	// MAC is the workload-side MAC; nil lets the kernel choose.
	MAC net.HardwareAddr
	// MTU of both ends of the veth; 0 leaves the kernel default.
	MTU int
}

// IfaceOrDefault is Iface, or [DefaultWorkloadIface] when it is empty.
func (w Workload) IfaceOrDefault() string {
	if w.Iface == "" {
		return DefaultWorkloadIface
	}
	return w.Iface
}

// Equal reports whether two workloads want the same plumbing.
func (w Workload) Equal(o Workload) bool {
	return w.Namespace == o.Namespace && w.Name == o.Name && w.HostIface == o.HostIface &&
		w.NetNS == o.NetNS && w.IfaceOrDefault() == o.IfaceOrDefault() &&
		bytes.Equal(w.MAC, o.MAC) && w.MTU == o.MTU && samePrefixSet(w.IPs, o.IPs)
}

// Validate checks one workload on its own.
func (w Workload) Validate() error {
	var errs []error
	if w.Name == "" {
		errs = append(errs, errors.New("empty name"))
	}
	if !ValidIfaceName(w.HostIface) {
		errs = append(errs, fmt.Errorf("host interface %q is not a valid interface name", w.HostIface))
	}
	if !ValidIfaceName(w.IfaceOrDefault()) {
		errs = append(errs, fmt.Errorf("interface %q is not a valid interface name", w.Iface))
	}
	if w.NetNS == "" {
		errs = append(errs, errors.New("empty network namespace path"))
	}
	if len(w.IPs) == 0 {
		errs = append(errs, errors.New("no addresses"))
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range w.IPs {
		switch {
		case !p.IsValid():
			errs = append(errs, errors.New("invalid address"))
		case !p.Addr().Is4() && !p.Addr().Is6() || p.Addr().Is4In6():
			errs = append(errs, fmt.Errorf("address %s: not plain IPv4 or IPv6", p))
		case p.Bits() != p.Addr().BitLen():
			errs = append(errs, fmt.Errorf("address %s: want a /%d", p, p.Addr().BitLen()))
		case seen[p]:
			errs = append(errs, fmt.Errorf("address %s listed twice", p))
		}
		seen[p] = true
	}
	if w.MAC != nil && !validUnicastMAC(w.MAC) {
		errs = append(errs, fmt.Errorf("MAC %s is not a unicast Ethernet address", w.MAC))
	}
	if w.MTU != 0 && (w.MTU < MinMTU || w.MTU > MaxMTU) {
		errs = append(errs, fmt.Errorf("MTU %d out of range %d..%d", w.MTU, MinMTU, MaxMTU))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	return nil
}

// RouteType is the kind of a route.
type RouteType uint8

const (
	// RouteUnicast forwards through a device, optionally via a gateway.
	RouteUnicast RouteType = iota
	// RouteBlackhole silently drops (used for this node's own blocks, so
	// traffic to unused addresses in them is not sent back out).
	RouteBlackhole
	// RouteThrow ends the lookup in its table: the next rule's table
	// decides (an address the WireGuard table must not take because it
	// lies inside a peer's block but belongs elsewhere).
	RouteThrow
)

func (t RouteType) String() string {
	switch t {
	case RouteUnicast:
		return "unicast"
	case RouteBlackhole:
		return "blackhole"
	case RouteThrow:
		return "throw"
	}
	return fmt.Sprintf("RouteType(%d)", uint8(t))
}

// RouteClass is the source that contributes a route. When two sources want
// the same (table, destination), the calculation keeps the route of the
// lower class: a workload's host route beats a block route, and a block
// route (tunnel or native) beats a route learned over BGP, so blocks of
// VXLAN or WireGuard pools keep their tunnel routes whatever a router says.
type RouteClass uint8

const (
	// RouteClassWorkload: a local workload's /32 (/128) to its veth.
	RouteClassWorkload RouteClass = iota + 1
	// RouteClassBlock: this node's blackholes, other nodes' blocks and
	// borrowed addresses, over a tunnel or natively.
	RouteClassBlock
	// RouteClassWireGuard: routes through the WireGuard device.
	RouteClassWireGuard
	// RouteClassBGP: routes learned from BGP peers.
	RouteClassBGP
)

func (c RouteClass) String() string {
	switch c {
	case RouteClassWorkload:
		return "workload"
	case RouteClassBlock:
		return "block"
	case RouteClassWireGuard:
		return "wireguard"
	case RouteClassBGP:
		return "bgp"
	}
	return fmt.Sprintf("RouteClass(%d)", uint8(c))
}

// Routing tables: weft's own tables must lie in 1..MaxOwnTable (253-255
// are the kernel's default, main and local tables).
const (
	TableMain   = 254
	MaxOwnTable = 252
)

// Limits of interface MTUs and rule priorities (priority 0 and 32766+ are
// the kernel's local, main and default rules).
const (
	MinMTU      = 68
	MaxMTU      = 65535
	MinRulePrio = 1
	MaxRulePrio = 32765
)

const (
	ipFamilyV4 = 4
	ipFamilyV6 = 6
)

// RouteKey identifies a route: at most one per table and destination.
type RouteKey struct {
	Table int
	Dst   netip.Prefix
}

// compareRouteKeys orders keys by table, then destination.
func compareRouteKeys(a, b RouteKey) int {
	return cmp.Or(cmp.Compare(a.Table, b.Table), a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()))
}

func (k RouteKey) String() string {
	if k.Table == TableMain {
		return k.Dst.String()
	}
	return fmt.Sprintf("%s table %d", k.Dst, k.Table)
}

// Route is one route weft owns. (table, Dst) identifies it.
type Route struct {
	Dst netip.Prefix
	// Table is the routing table; 0 means the main table.
	Table int
	// Class says which source wants the route (see [RouteClass]); it
	// decides between two sources wanting one destination and groups
	// routes for status reports. It is not programmed into the kernel.
	Class RouteClass
	Type  RouteType
	// Dev is the output device (unicast only). It may be empty for a route
	// via a gateway that is not onlink: the kernel then picks the device
	// holding the gateway's subnet (native routing to a peer on the same
	// L2 subnet, where the calculation knows addresses, not interfaces).
	Dev string
	// Via is the gateway; the zero Addr means directly connected (scope
	// link).
	Via netip.Addr
	// OnLink tells the kernel Via is reachable on Dev even though no
	// connected route says so (VXLAN: via the peer's tunnel address).
	OnLink bool
	// Src is the preferred source address; zero means none.
	Src netip.Addr
	// Recursive says Via may lie beyond the connected subnets (an iBGP
	// next hop; BIRD's "gateway recursive"): the route driver resolves it
	// through the kernel's routing table to the first hop and its device.
	// It needs Via and no Dev or OnLink.
	Recursive bool
}

// Protocol is the rtnetlink protocol the route is programmed with.
func (r Route) Protocol() int {
	if r.Class == RouteClassBGP {
		return RouteProtocolBGP
	}
	return RouteProtocol
}

// Metric is the metric the kernel keeps for the route: the kernel's
// default (0 for IPv4, 1024 for IPv6) except for learned routes.
func (r Route) Metric() int {
	v4 := r.Dst.Addr().Is4()
	switch {
	case r.Class == RouteClassBGP && v4:
		return RouteMetricBGP4
	case r.Class == RouteClassBGP:
		return RouteMetricBGP6
	case v4:
		return 0
	}
	return 1024
}

// TableID is the routing table the route goes into (0 means main).
func (r Route) TableID() int {
	if r.Table == 0 {
		return TableMain
	}
	return r.Table
}

// Key identifies the route.
func (r Route) Key() RouteKey { return RouteKey{Table: r.TableID(), Dst: r.Dst} }

// Validate checks one route on its own.
func (r Route) Validate() error {
	var errs []error
	if !r.Dst.IsValid() {
		return errors.New("route: invalid destination")
	}
	if r.Dst != r.Dst.Masked() {
		errs = append(errs, errors.New("destination has host bits set"))
	}
	if t := r.TableID(); t != TableMain && (t < 1 || t > MaxOwnTable) {
		errs = append(errs, fmt.Errorf("table %d: want the main table or one of 1..%d", t, MaxOwnTable))
	}
	if r.Class < RouteClassWorkload || r.Class > RouteClassBGP {
		errs = append(errs, fmt.Errorf("unknown class %d", r.Class))
	}
	switch r.Type {
	case RouteBlackhole, RouteThrow:
		if r.Dev != "" || r.Via.IsValid() || r.OnLink || r.Src.IsValid() || r.Recursive {
			errs = append(errs, fmt.Errorf("a %s route has no device, gateway or source", r.Type))
		}
	case RouteUnicast:
		switch {
		case r.Dev == "" && (!r.Via.IsValid() || r.OnLink):
			errs = append(errs, errors.New("a route without a gateway, or onlink, needs a device"))
		case r.Dev != "" && !ValidIfaceName(r.Dev):
			errs = append(errs, fmt.Errorf("device %q is not a valid interface name", r.Dev))
		}
		if r.Via.IsValid() && r.Via.Is4() != r.Dst.Addr().Is4() {
			errs = append(errs, fmt.Errorf("gateway %s is not of the destination's family", r.Via))
		}
		if r.OnLink && !r.Via.IsValid() {
			errs = append(errs, errors.New("onlink needs a gateway"))
		}
		if r.Recursive && (!r.Via.IsValid() || r.Dev != "" || r.OnLink) {
			errs = append(errs, errors.New("a recursive route needs a gateway and no device or onlink"))
		}
		if r.Src.IsValid() && r.Src.Is4() != r.Dst.Addr().Is4() {
			errs = append(errs, fmt.Errorf("source %s is not of the destination's family", r.Src))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown type %d", r.Type))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("route %s: %w", r.Key(), err)
	}
	return nil
}

func (r Route) String() string {
	table := ""
	if r.TableID() != TableMain {
		table = fmt.Sprintf(" table %d", r.Table)
	}
	if r.Type == RouteBlackhole || r.Type == RouteThrow {
		return r.Type.String() + " " + r.Dst.String() + table
	}
	s := r.Dst.String()
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	s += " dev " + r.Dev
	if r.OnLink {
		s += " onlink"
	}
	if r.Src.IsValid() {
		s += " src " + r.Src.String()
	}
	if r.Recursive {
		s += " recursive"
	}
	return s + table
}

// Rule is one policy-routing rule weft owns (`ip rule`): packets of
// Family, unless (Invert) or if their firewall mark matches Mark/Mask,
// look up Table. A zero Mask means no mark match. The rules manager marks
// weft's rules with [RouteProtocol] and touches no other rule.
type Rule struct {
	// Family is 4 or 6.
	Family   int
	Priority int
	Table    int
	Mark     uint32
	Mask     uint32
	// Invert negates the match ("not fwmark", Calico's WireGuard rule).
	Invert bool
}

// Validate checks one rule.
func (r Rule) Validate() error {
	var errs []error
	if r.Family != ipFamilyV4 && r.Family != ipFamilyV6 {
		errs = append(errs, fmt.Errorf("family %d: want 4 or 6", r.Family))
	}
	if r.Priority < MinRulePrio || r.Priority > MaxRulePrio {
		errs = append(errs, fmt.Errorf("priority %d out of range %d..%d", r.Priority, MinRulePrio, MaxRulePrio))
	}
	if r.Table != TableMain && (r.Table < 1 || r.Table > MaxOwnTable) {
		errs = append(errs, fmt.Errorf("table %d: want the main table or one of 1..%d", r.Table, MaxOwnTable))
	}
	if r.Mark&^r.Mask != 0 {
		errs = append(errs, fmt.Errorf("mark %#x has bits outside mask %#x", r.Mark, r.Mask))
	}
	if r.Invert && r.Mask == 0 {
		errs = append(errs, errors.New("an inverted rule needs a mark match"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rule %s: %w", r, err)
	}
	return nil
}

func (r Rule) String() string {
	s := fmt.Sprintf("ipv%d %d:", r.Family, r.Priority)
	if r.Mask != 0 {
		if r.Invert {
			s += " not"
		}
		s += fmt.Sprintf(" fwmark %#x/%#x", r.Mark, r.Mask)
	} else {
		s += " from all"
	}
	return s + fmt.Sprintf(" lookup %d", r.Table)
}

// VXLANDevice is the desired state of the node's VXLAN device. Its name is
// static configuration of the VXLAN driver.
type VXLANDevice struct {
	// VNI and Port are the device's VXLAN network identifier and UDP
	// port; 0 means the driver's configured default. A change recreates
	// the device.
	VNI, Port int
	// TunnelAddr is the node's tunnel address, put on the device as a /32
	// (/128); the zero Addr means none.
	TunnelAddr netip.Addr
	// MAC is the device's MAC, normally [VXLANMAC] of the node name.
	MAC net.HardwareAddr
	// Source is the underlay address VXLAN packets leave from.
	Source netip.Addr
	// Parent is the underlay interface the device is bound to; "" means
	// the interface holding Source.
	Parent string
	// MTU is the device MTU; 0 means the parent's MTU minus the VXLAN
	// overhead (50 for IPv4, 70 for IPv6).
	MTU int
}

// Equal reports whether two device descriptions are the same.
func (v *VXLANDevice) Equal(o *VXLANDevice) bool {
	if v == nil || o == nil {
		return v == o
	}
	return v.TunnelAddr == o.TunnelAddr && bytes.Equal(v.MAC, o.MAC) && v.Source == o.Source &&
		v.Parent == o.Parent && v.MTU == o.MTU && v.VNI == o.VNI && v.Port == o.Port
}

// Validate checks the device description.
func (v *VXLANDevice) Validate() error {
	var errs []error
	if !validUnicastMAC(v.MAC) {
		errs = append(errs, fmt.Errorf("MAC %q is not a unicast Ethernet address", v.MAC))
	}
	if !v.Source.IsValid() || v.Source.Is4In6() || v.Source.IsUnspecified() {
		errs = append(errs, errors.New("no underlay source address"))
	}
	if v.Parent != "" && !ValidIfaceName(v.Parent) {
		errs = append(errs, fmt.Errorf("parent %q is not a valid interface name", v.Parent))
	}
	if v.MTU != 0 && (v.MTU < 68 || v.MTU > 65535) {
		errs = append(errs, fmt.Errorf("MTU %d out of range 68..65535", v.MTU))
	}
	if v.VNI < 0 || v.VNI > 1<<24-1 {
		errs = append(errs, fmt.Errorf("VNI %d out of range 1..16777215", v.VNI))
	}
	if v.Port < 0 || v.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d out of range 1..65535", v.Port))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vxlan device: %w", err)
	}
	return nil
}

// VXLANPeer is another node reachable over VXLAN.
type VXLANPeer struct {
	Node string
	// TunnelIP is the peer's tunnel address: routes go "via TunnelIP onlink"
	// and a permanent neighbour entry maps it to VTEPMAC.
	TunnelIP netip.Addr
	// VTEPMAC is the MAC of the peer's VXLAN device; a permanent FDB entry
	// maps it to UnderlayIP.
	VTEPMAC net.HardwareAddr
	// UnderlayIP is the peer's underlay address (its VXLAN source).
	UnderlayIP netip.Addr
}

// Equal reports whether two peers are the same.
func (p VXLANPeer) Equal(o VXLANPeer) bool {
	return p.Node == o.Node && p.TunnelIP == o.TunnelIP && bytes.Equal(p.VTEPMAC, o.VTEPMAC) &&
		p.UnderlayIP == o.UnderlayIP
}

// NATConfig is the outgoing NAT configuration (calico.md §5.6): traffic
// whose source is in MasqPools and whose destination is in none of
// AllPools and ExcludeDests leaves with the node's address.
type NATConfig struct {
	// MasqPools are the pools with natOutgoing.
	MasqPools []netip.Prefix
	// AllPools are all pools: traffic between them is never masqueraded.
	AllPools []netip.Prefix
	// ExcludeDests are further destinations never masqueraded, e.g. the
	// nodes' own addresses.
	ExcludeDests []netip.Prefix
	// SNATAddress, when valid, replaces MASQUERADE for IPv4 with SNAT to
	// it (FelixConfiguration natOutgoingAddress).
	SNATAddress netip.Addr
	// PortMin..PortMax, when set, is the source port range of the TCP and
	// UDP traffic SNATed to SNATAddress (natPortRange); 0..0 leaves the
	// ports to the kernel. It needs SNATAddress (the NAT driver cannot
	// give a masquerade a port range).
	PortMin, PortMax uint16
}

// Equal reports whether two NAT configurations are the same.
func (n NATConfig) Equal(o NATConfig) bool {
	return samePrefixSet(n.MasqPools, o.MasqPools) && samePrefixSet(n.AllPools, o.AllPools) &&
		samePrefixSet(n.ExcludeDests, o.ExcludeDests) && n.SNATAddress == o.SNATAddress &&
		n.PortMin == o.PortMin && n.PortMax == o.PortMax
}

// Validate checks the prefixes.
func (n NATConfig) Validate() error {
	var errs []error
	for _, set := range [][]netip.Prefix{n.MasqPools, n.AllPools, n.ExcludeDests} {
		for _, p := range set {
			if !p.IsValid() || p.Addr().Is4In6() {
				errs = append(errs, fmt.Errorf("nat: invalid prefix %s", p))
			}
		}
	}
	if n.SNATAddress.IsValid() && (!n.SNATAddress.Is4() || n.SNATAddress.IsUnspecified()) {
		errs = append(errs, fmt.Errorf("nat: SNAT address %s is not a usable IPv4 address", n.SNATAddress))
	}
	if (n.PortMin == 0) != (n.PortMax == 0) || n.PortMin > n.PortMax {
		errs = append(errs, fmt.Errorf("nat: port range %d-%d: want 1 <= min <= max, or none", n.PortMin, n.PortMax))
	}
	if n.PortMin != 0 && !n.SNATAddress.IsValid() {
		errs = append(errs, errors.New("nat: a port range needs an SNAT address"))
	}
	return errors.Join(errs...)
}

// Validate checks the whole state, including uniqueness across items
// (one workload per host interface, one owner per address, one route per
// destination, one peer per tunnel address and per MAC).
func (d *Desired) Validate() error { return d.ValidateSince(nil) }

// ValidateSince is Validate, except that the policy section is checked
// only where it differs from prevPolicy, the policy section of a state
// that passed (see PolicyState.ValidateChanges): the calculation validates
// every state it hands over at a cost in proportion to the change.
func (d *Desired) ValidateSince(prevPolicy *PolicyState) error {
	var errs []error
	ifaces := map[string]bool{}
	owners := map[netip.Addr]string{}
	for _, w := range d.Workloads {
		if err := w.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if ifaces[w.HostIface] {
			errs = append(errs, fmt.Errorf("host interface %s used by two workloads", w.HostIface))
		}
		ifaces[w.HostIface] = true
		for _, p := range w.IPs {
			if o, ok := owners[p.Addr()]; ok {
				errs = append(errs, fmt.Errorf("address %s used by workloads %s and %s/%s", p.Addr(), o, w.Namespace, w.Name))
			}
			owners[p.Addr()] = w.Namespace + "/" + w.Name
		}
	}
	// Routes sorted by key (the calculation's are; thousands with learned
	// routes) have their duplicates side by side: no map needed.
	sorted := slices.IsSortedFunc(d.Routes, func(a, b Route) int { return compareRouteKeys(a.Key(), b.Key()) })
	var keys map[RouteKey]bool
	if !sorted {
		keys = make(map[RouteKey]bool, len(d.Routes))
	}
	var prev RouteKey
	for _, r := range d.Routes {
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		k := r.Key()
		if (sorted && k == prev) || keys[k] {
			errs = append(errs, fmt.Errorf("two routes to %s", k))
		}
		if sorted {
			prev = k
		} else {
			keys[k] = true
		}
	}
	rules := map[Rule]bool{}
	for _, r := range d.Rules {
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if rules[r] {
			errs = append(errs, fmt.Errorf("%s listed twice", r))
		}
		rules[r] = true
	}
	if d.VXLAN != nil {
		if err := d.VXLAN.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	tunnels := map[netip.Addr]bool{}
	macs := map[string]bool{}
	for _, p := range d.VXLANPeers {
		var perr []error
		if !p.TunnelIP.IsValid() || p.TunnelIP.Is4In6() {
			perr = append(perr, errors.New("invalid tunnel address"))
		} else if tunnels[p.TunnelIP] {
			perr = append(perr, fmt.Errorf("tunnel address %s used twice", p.TunnelIP))
		}
		if !validUnicastMAC(p.VTEPMAC) {
			perr = append(perr, fmt.Errorf("MAC %q is not a unicast Ethernet address", p.VTEPMAC))
		} else if macs[p.VTEPMAC.String()] {
			perr = append(perr, fmt.Errorf("MAC %s used twice", p.VTEPMAC))
		}
		if !p.UnderlayIP.IsValid() || p.UnderlayIP.Is4In6() {
			perr = append(perr, errors.New("invalid underlay address"))
		}
		tunnels[p.TunnelIP] = true
		macs[p.VTEPMAC.String()] = true
		if err := errors.Join(perr...); err != nil {
			errs = append(errs, fmt.Errorf("vxlan peer %s: %w", p.Node, err))
		}
	}
	if err := d.NAT.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := d.Policy.ValidateChanges(prevPolicy); err != nil {
		errs = append(errs, err)
	}
	if d.IPIP != nil {
		if err := d.IPIP.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.Loop.Validate(); err != nil {
		errs = append(errs, err)
	}
	if d.WireGuard != nil {
		if err := d.WireGuard.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// HostRoutes are the host routes of one workload: each address as a /32
// (/128) scope-link route to its host-side interface, in the main table.
func (w Workload) HostRoutes() []Route {
	rs := make([]Route, 0, len(w.IPs))
	for _, p := range w.IPs {
		rs = append(rs, Route{Dst: netip.PrefixFrom(p.Addr(), p.Addr().BitLen()), Class: RouteClassWorkload, Type: RouteUnicast, Dev: w.HostIface})
	}
	return rs
}

// Equal reports whether two desired states are the same, ignoring order
// and Revision.
func (d *Desired) Equal(o *Desired) bool {
	if d == nil || o == nil {
		return d == o
	}
	return sameSet(d.Workloads, o.Workloads, func(w Workload) string { return w.HostIface }, Workload.Equal) &&
		sameSet(d.Routes, o.Routes, Route.Key, func(a, b Route) bool { return a == b }) &&
		sameSet(d.Rules, o.Rules, func(r Rule) Rule { return r }, func(a, b Rule) bool { return a == b }) &&
		d.VXLAN.Equal(o.VXLAN) &&
		sameSet(d.VXLANPeers, o.VXLANPeers, func(p VXLANPeer) netip.Addr { return p.TunnelIP }, VXLANPeer.Equal) &&
		d.NAT.Equal(o.NAT) && d.IPIP.Equal(o.IPIP) && d.Loop == o.Loop && d.Policy.Equal(o.Policy) &&
		d.HoldBGPRoutes == o.HoldBGPRoutes && d.WireGuard.Equal(o.WireGuard)
}

// sameSet compares two slices as sets of items identified by key. Slices
// with duplicate keys compare by multiset of keys and pairwise item
// equality after sorting, which is exact for valid states.
func sameSet[T any, K comparable](a, b []T, key func(T) K, eq func(T, T) bool) bool {
	if len(a) != len(b) {
		return false
	}
	index := make(map[K][]T, len(a))
	for _, x := range a {
		index[key(x)] = append(index[key(x)], x)
	}
	for _, y := range b {
		xs := index[key(y)]
		i := slices.IndexFunc(xs, func(x T) bool { return eq(x, y) })
		if i < 0 {
			return false
		}
		index[key(y)] = slices.Delete(xs, i, i+1)
	}
	return true
}

func samePrefixSet(a, b []netip.Prefix) bool {
	return sameSet(a, b, func(p netip.Prefix) netip.Prefix { return p }, func(x, y netip.Prefix) bool { return x == y })
}

func validUnicastMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && !bytes.Equal(mac, make(net.HardwareAddr, 6))
}
