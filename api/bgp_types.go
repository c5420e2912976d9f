package api

// DefaultASNumber is the AS of nodes when BGPConfiguration sets none.
const DefaultASNumber ASNumber = 64512

// BGP defaults (calico.md §1.10).
const (
	DefaultBGPListenPort  = 179
	DefaultBGPRestartTime = 120 // seconds, BIRD's graceful-restart default
)

// BGPConfiguration "default" is global; "node.<name>" overrides one node
// (calico.md §1.10).
type BGPConfiguration struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta           `json:"metadata"`
	Spec     BGPConfigurationSpec `json:"spec"`
}

// BGPConfigurationSpec is the spec of a BGPConfiguration.
type BGPConfigurationSpec struct {
	// LogSeverityScreen is the log level of the BGP speaker: Trace, Debug,
	// Info (default), Warning, Error or Fatal.
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// NodeToNodeMeshEnabled: unset means true.
	NodeToNodeMeshEnabled *bool `json:"nodeToNodeMeshEnabled,omitempty"`
	// ASNumber: unset means 64512.
	ASNumber *ASNumber `json:"asNumber,omitempty"`
	// ListenPort: 0 means 179.
	ListenPort uint16 `json:"listenPort,omitempty"`
	// BindMode is None (listen on every address) or NodeIP.
	BindMode string `json:"bindMode,omitempty"`
	// NodeMeshMaxRestartTime is the graceful-restart time of mesh sessions
	// (unset: 120s).
	NodeMeshMaxRestartTime *Duration             `json:"nodeMeshMaxRestartTime,omitempty"`
	Communities            []Community           `json:"communities,omitempty"`
	PrefixAdvertisements   []PrefixAdvertisement `json:"prefixAdvertisements,omitempty"`
	// KeepaliveTime and HoldTime are weft extensions: the timers every
	// session offers unless its BGPPeer sets its own (defaults 1s and 3s:
	// a node that dies silently loses its routes within the hold time;
	// an agent that restarts closes its sessions and graceful restart
	// keeps its routes). A hold time is 0 (no keepalives) or at least 3s.
	KeepaliveTime *Duration `json:"keepaliveTime,omitempty"`
	HoldTime      *Duration `json:"holdTime,omitempty"`
}

// Community names a BGP community value "aa:nn" or "aa:nn:mm".
type Community struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// PrefixAdvertisement attaches communities (names or literal values) to a
// CIDR.
type PrefixAdvertisement struct {
	CIDR        string   `json:"cidr,omitempty"`
	Communities []string `json:"communities,omitempty"`
}

// BGP peer options.
const (
	SourceAddressUseNodeIP = "UseNodeIP"
	SourceAddressNone      = "None"

	NextHopModeAuto = "Auto"
	NextHopModeSelf = "Self"
	NextHopModeKeep = "Keep"

	ReversePeeringAuto   = "Auto"
	ReversePeeringManual = "Manual"

	BindModeNone   = "None"
	BindModeNodeIP = "NodeIP"
)

// BGPPeer is a BGP session to set up from some nodes (calico.md §1.11).
type BGPPeer struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec is the spec of a BGPPeer.
type BGPPeerSpec struct {
	// Node limits the peering to one node (excludes NodeSelector). Neither
	// set: every node.
	Node         string `json:"node,omitempty"`
	NodeSelector string `json:"nodeSelector,omitempty"`
	// PeerIP is "IP", "IPv4:port" or "[IPv6]:port" (excludes PeerSelector).
	PeerIP string `json:"peerIP,omitempty"`
	// ASNumber is the remote AS (0 = unset; must be unset with PeerSelector).
	ASNumber ASNumber `json:"asNumber,omitempty"`
	// PeerSelector peers with the weft nodes it selects.
	PeerSelector string `json:"peerSelector,omitempty"`
	// KeepOriginalNextHop is deprecated in favour of NextHopMode.
	KeepOriginalNextHop bool   `json:"keepOriginalNextHop,omitempty"`
	NextHopMode         string `json:"nextHopMode,omitempty"`
	// SourceAddress is UseNodeIP (default) or None.
	SourceAddress            string    `json:"sourceAddress,omitempty"`
	MaxRestartTime           *Duration `json:"maxRestartTime,omitempty"`
	KeepaliveTime            *Duration `json:"keepaliveTime,omitempty"`
	NumAllowedLocalASNumbers *int32    `json:"numAllowedLocalASNumbers,omitempty"`
	TTLSecurity              *uint8    `json:"ttlSecurity,omitempty"`
	LocalASNumber            *ASNumber `json:"localASNumber,omitempty"`
	// ReachableBy is a gateway; a /32 (/128) route to PeerIP through it is
	// installed.
	ReachableBy string `json:"reachableBy,omitempty"`
	// ReversePeering (Auto, Manual) applies to PeerSelector peerings.
	ReversePeering string `json:"reversePeering,omitempty"`
	// Password is the TCP MD5 password of the session (RFC 2385). Its
	// secretKeyRef names a file on each node:
	// <bgp.secrets_dir>/<name>/<key> (docs/bgp.md).
	Password *BGPPassword `json:"password,omitempty"`
	// HoldTime is a weft extension: the hold time this session offers
	// (default: the BGPConfiguration's, 3s); 0 or at least 3s.
	HoldTime *Duration `json:"holdTime,omitempty"`
	// MaxPrefixes is a weft extension: the most prefixes accepted from
	// the peer per address family (default 20000); a peer that sends more
	// is shut down for a while and the log says why.
	MaxPrefixes *uint32 `json:"maxPrefixes,omitempty"`
}

// BGPPassword is where a session's password comes from.
type BGPPassword struct {
	SecretKeyRef *SecretKeySelector `json:"secretKeyRef,omitempty"`
}

// SecretKeySelector names one key of a secret (Kubernetes' shape; in weft
// a file per key, see [BGPPassword]).
type SecretKeySelector struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}
