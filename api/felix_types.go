package api

// FelixConfiguration "default" is global; "node.<name>" overrides one node
// (calico.md §1.14). weft takes the subset of Felix's fields that apply to
// it (docs/resources.md lists them); any other Felix field is rejected.
type FelixConfiguration struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta             `json:"metadata"`
	Spec     FelixConfigurationSpec `json:"spec"`
}

// FelixConfigurationSpec is the spec of a FelixConfiguration. Unset
// (nil/empty) fields take the defaults in the comments.
type FelixConfigurationSpec struct {
	// LogSeverityScreen is the log level of the dataplane: Trace, Debug,
	// Info, Warning, Error, Fatal (unset: the agent's level).
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`

	// FailsafeInboundHostPorts / FailsafeOutboundHostPorts: unset means
	// weft's defaults (the config file's dataplane.failsafe_*); an empty
	// list disables them.
	FailsafeInboundHostPorts  *[]ProtoPort `json:"failsafeInboundHostPorts,omitempty"`
	FailsafeOutboundHostPorts *[]ProtoPort `json:"failsafeOutboundHostPorts,omitempty"`

	// DefaultEndpointToHostAction (Drop, Accept, Return; default Drop)
	// applies to traffic from a workload to its host after egress policy.
	DefaultEndpointToHostAction string `json:"defaultEndpointToHostAction,omitempty"`
	// IptablesFilterAllowAction (Accept, Return; default Accept) and
	// IptablesFilterDenyAction (Drop, Reject; default Drop) apply to every
	// policy backend despite their names.
	IptablesFilterAllowAction string `json:"iptablesFilterAllowAction,omitempty"`
	IptablesFilterDenyAction  string `json:"iptablesFilterDenyAction,omitempty"`
	// ChainInsertMode is Insert (default) or Append.
	ChainInsertMode string `json:"chainInsertMode,omitempty"`

	WireguardEnabled               *bool     `json:"wireguardEnabled,omitempty"`
	WireguardEnabledV6             *bool     `json:"wireguardEnabledV6,omitempty"`
	WireguardListeningPort         *int      `json:"wireguardListeningPort,omitempty"`
	WireguardListeningPortV6       *int      `json:"wireguardListeningPortV6,omitempty"`
	WireguardInterfaceName         string    `json:"wireguardInterfaceName,omitempty"`
	WireguardInterfaceNameV6       string    `json:"wireguardInterfaceNameV6,omitempty"`
	WireguardMTU                   *int      `json:"wireguardMTU,omitempty"`
	WireguardMTUV6                 *int      `json:"wireguardMTUV6,omitempty"`
	WireguardRoutingRulePriority   *int      `json:"wireguardRoutingRulePriority,omitempty"`
	WireguardHostEncryptionEnabled *bool     `json:"wireguardHostEncryptionEnabled,omitempty"`
	WireguardKeepAlive             *Duration `json:"wireguardKeepAlive,omitempty"`

	// VXLANEnabled: unset means derived from the pools.
	VXLANEnabled *bool `json:"vxlanEnabled,omitempty"`
	VXLANPort    *int  `json:"vxlanPort,omitempty"`
	VXLANVNI     *int  `json:"vxlanVNI,omitempty"`
	VXLANMTU     *int  `json:"vxlanMTU,omitempty"`
	VXLANMTUV6   *int  `json:"vxlanMTUV6,omitempty"`
	// IPIPEnabled: unset means derived from the pools.
	IPIPEnabled *bool `json:"ipipEnabled,omitempty"`
	IPIPMTU     *int  `json:"ipipMTU,omitempty"`

	AllowVXLANPacketsFromWorkloads *bool `json:"allowVXLANPacketsFromWorkloads,omitempty"`
	AllowIPIPPacketsFromWorkloads  *bool `json:"allowIPIPPacketsFromWorkloads,omitempty"`

	// NATOutgoingAddress (IPv4) replaces MASQUERADE with SNAT to it.
	NATOutgoingAddress string `json:"natOutgoingAddress,omitempty"`
	NATPortRange       *Port  `json:"natPortRange,omitempty"`
	// NATOutgoingExclusions is IPPoolsOnly (default) or IPPoolsAndHostIPs.
	NATOutgoingExclusions string `json:"natOutgoingExclusions,omitempty"`

	// MTUIfacePattern is the regexp of the underlay interfaces whose MTU is
	// used for auto-detection.
	MTUIfacePattern string `json:"mtuIfacePattern,omitempty"`

	RouteRefreshInterval    *Duration `json:"routeRefreshInterval,omitempty"`
	IptablesRefreshInterval *Duration `json:"iptablesRefreshInterval,omitempty"`
	NftablesRefreshInterval *Duration `json:"nftablesRefreshInterval,omitempty"`
	IpsetsRefreshInterval   *Duration `json:"ipsetsRefreshInterval,omitempty"`
	// RemoveExternalRoutes (default true) removes routes to workload
	// interfaces that weft did not add.
	RemoveExternalRoutes *bool `json:"removeExternalRoutes,omitempty"`
	// MaxIpsetSize caps every IP set (default 1048576).
	MaxIpsetSize *int `json:"maxIpsetSize,omitempty"`
}

// ProtoPort is a failsafe port: protocol (TCP, UDP, SCTP; default TCP),
// port, and an optional CIDR it is limited to.
type ProtoPort struct {
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
	Net      string `json:"net,omitempty"`
}

// FelixConfiguration enumerations.
const (
	EndpointToHostDrop   = "Drop"
	EndpointToHostAccept = "Accept"
	EndpointToHostReturn = "Return"

	NATOutgoingExclusionsIPPoolsOnly       = "IPPoolsOnly"
	NATOutgoingExclusionsIPPoolsAndHostIPs = "IPPoolsAndHostIPs"
)
