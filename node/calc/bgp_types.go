package calc

import (
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/dataplane"
)

// This file is the contract between the calculation and the BGP speaker
// (node/bgp): the speaker's whole desired configuration, computed by the
// bgp resolver ([BGPConfig], in [Output.BGP]), and what the speaker tells
// the calculation back ([BGPSpeakerState], the local input
// [LocalKindBGP]): the best paths it learned, the peers
// it found dead, whether it is still relearning after a restart, and what
// it advertises.

// BGP defaults (SPEC §2 and calico.md §6.1).
const (
	DefaultBGPKeepalive   = time.Second
	DefaultBGPHoldTime    = 3 * time.Second
	DefaultBGPRestartTime = 120 * time.Second
	DefaultBGPMaxPrefixes = 20000
	DefaultBGPPort        = 179
)

// BGPPeerType is where a session comes from, in calicoctl's words.
type BGPPeerType string

// The peer types `weft node status` shows.
const (
	PeerTypeMesh         BGPPeerType = "node-to-node mesh"
	PeerTypeGlobal       BGPPeerType = "global"
	PeerTypeNodeSpecific BGPPeerType = "node specific"
	// PeerTypeRRClient: this node is a route reflector and the peer is
	// one of its clients.
	PeerTypeRRClient BGPPeerType = "route reflector client"
)

// NextHop modes of a session (BGPPeer nextHopMode).
const (
	NextHopAuto = ""
	NextHopSelf = "self"
	NextHopKeep = "unchanged"
)

// BGPConfig is the speaker's whole desired configuration. A nil *BGPConfig
// means no speaker on this node.
type BGPConfig struct {
	// AS is this node's AS number and RouterID its BGP identifier.
	AS       uint32
	RouterID netip.Addr
	// ListenPort is the TCP port the speaker listens on; ListenAddrs the
	// addresses (empty: all of them; bindMode NodeIP: the node's).
	ListenPort  uint16
	ListenAddrs []netip.Addr
	// LogLevel is BGPConfiguration logSeverityScreen, lower-cased (trace,
	// debug, info, warning, error, fatal).
	LogLevel string
	// RRClusterID makes this node a route reflector (zero: it is not).
	RRClusterID netip.Addr
	// Peers are the sessions, sorted by address and port.
	Peers []BGPPeerConfig
	// Paths are what this node originates, sorted by prefix: its blocks
	// and the addresses it borrowed. The speaker advertises a path only
	// while the route it Needs is in the kernel.
	Paths []BGPPath
	// ExportPrefixes are the pools whose routes a route reflector passes
	// on (calico.md §6.3: routes inside enabled pools), sorted.
	ExportPrefixes []netip.Prefix
}

// BGPPeerConfig is one session.
type BGPPeerConfig struct {
	Address netip.Addr
	// Port is the peer's port (0: 179).
	Port uint16
	// AS is the peer's AS; LocalAS the AS this node presents to it (0:
	// the node's).
	AS, LocalAS uint32
	Type        BGPPeerType
	// Node is the weft node this peer is, "" for a router.
	Node string
	// Sources are the BGPPeer resources that ask for this session (none
	// for a mesh session).
	Sources []string
	// Passive: wait for the peer to connect (mesh sessions toward a
	// higher address, as Calico, so two nodes do not race).
	Passive bool
	// RRClient: this node reflects routes to the peer.
	RRClient bool
	// Keepalive, HoldTime and RestartTime (graceful restart) of the
	// session.
	Keepalive, HoldTime, RestartTime time.Duration
	// Multihop lets an eBGP session cross routers (TTL 255); without it
	// eBGP packets leave with TTL 1.
	Multihop bool
	// TTLSecurity is GTSM's hop count (0: off).
	TTLSecurity uint8
	// SourceAddr is the local address of the session (zero: the kernel
	// chooses).
	SourceAddr netip.Addr
	// Password names the file holding the TCP MD5 password (zero: none).
	Password SecretRef
	// AllowOwnAS accepts paths carrying this node's AS that many times.
	AllowOwnAS uint8
	// MaxPrefixes is the most prefixes accepted per address family.
	MaxPrefixes uint32
	// NextHop is NextHopAuto, NextHopSelf or NextHopKeep.
	NextHop string
}

// EBGP reports whether the session is external.
func (p BGPPeerConfig) EBGP(localAS uint32) bool {
	local := p.LocalAS
	if local == 0 {
		local = localAS
	}
	return p.AS != local
}

// Equal compares two sessions.
func (p BGPPeerConfig) Equal(o BGPPeerConfig) bool {
	return p.Address == o.Address && p.Port == o.Port && p.AS == o.AS && p.LocalAS == o.LocalAS &&
		p.Type == o.Type && p.Node == o.Node && slices.Equal(p.Sources, o.Sources) && p.Passive == o.Passive &&
		p.RRClient == o.RRClient && p.Keepalive == o.Keepalive && p.HoldTime == o.HoldTime &&
		p.RestartTime == o.RestartTime && p.Multihop == o.Multihop && p.TTLSecurity == o.TTLSecurity &&
		p.SourceAddr == o.SourceAddr && p.Password == o.Password && p.AllowOwnAS == o.AllowOwnAS &&
		p.MaxPrefixes == o.MaxPrefixes && p.NextHop == o.NextHop
}

// SecretRef names one key of a secret (a file on the node).
type SecretRef struct{ Name, Key string }

// IsZero reports whether no secret is named.
func (s SecretRef) IsZero() bool { return s == SecretRef{} }

// BGPPath is one prefix this node originates.
type BGPPath struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Communities (standard, aa:nn packed as aa<<16|nn) and large
	// communities (aa:nn:mm) from BGPConfiguration prefixAdvertisements.
	Communities      []uint32
	LargeCommunities [][3]uint32
	// Needs is the route that must be in the kernel before the path is
	// advertised (the block's blackhole, the borrowed address's host
	// route): ARCHITECTURE rule 2.
	Needs dataplane.RouteKey
}

// Equal compares two paths.
func (p BGPPath) Equal(o BGPPath) bool {
	return p.Prefix == o.Prefix && p.NextHop == o.NextHop && slices.Equal(p.Communities, o.Communities) &&
		slices.Equal(p.LargeCommunities, o.LargeCommunities) && p.Needs == o.Needs
}

// Equal compares two configurations (nil is no speaker).
func (c *BGPConfig) Equal(o *BGPConfig) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.AS == o.AS && c.RouterID == o.RouterID && c.ListenPort == o.ListenPort &&
		slices.Equal(c.ListenAddrs, o.ListenAddrs) && c.LogLevel == o.LogLevel && c.RRClusterID == o.RRClusterID &&
		slices.EqualFunc(c.Peers, o.Peers, BGPPeerConfig.Equal) && slices.EqualFunc(c.Paths, o.Paths, BGPPath.Equal) &&
		slices.Equal(c.ExportPrefixes, o.ExportPrefixes)
}

// BGPSpeakerState is what the speaker tells the calculation. It is
// immutable once handed over.
type BGPSpeakerState struct {
	// Learned are the best paths the speaker holds from its peers (stale
	// ones of a restarting peer included).
	Learned []LearnedRoute
	// Dead are the peers that went silent (hold timer expired, or their
	// graceful-restart time ran out) and have not come back: a weft node
	// among them is down, and the routes to its blocks go (a peer whose
	// agent restarts closes its session instead and keeps its routes).
	Dead []netip.Addr
	// Syncing is true after this agent restarted until its peers have
	// sent their routes again (End-of-RIB) or the wait ran out: learned
	// routes in the kernel stay meanwhile ([dataplane.Desired.HoldBGPRoutes]).
	Syncing bool
	// Advertised are the prefixes the speaker announces: a block no longer
	// desired keeps its blackhole until it is withdrawn.
	Advertised []netip.Prefix
}

// LearnedRoute is one best path.
type LearnedRoute struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Peer is the neighbour it came from.
	Peer netip.Addr
}
