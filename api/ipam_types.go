package api

// Encapsulation modes of an IPPool (ipipMode, vxlanMode).
const (
	EncapNever       = "Never"
	EncapAlways      = "Always"
	EncapCrossSubnet = "CrossSubnet"
)

// IPPool uses.
const (
	UseWorkload     = "Workload"
	UseTunnel       = "Tunnel"
	UseLoadBalancer = "LoadBalancer"
)

// IPPool assignment modes.
const (
	AssignmentAutomatic = "Automatic"
	AssignmentManual    = "Manual"
)

// IPPool is a range of workload addresses cut into blocks (calico.md §1.8).
type IPPool struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     IPPoolSpec `json:"spec"`
}

// IPPoolSpec is the spec of an IPPool.
type IPPoolSpec struct {
	CIDR              string   `json:"cidr"`
	BlockSize         int      `json:"blockSize,omitempty"`
	IPIPMode          string   `json:"ipipMode,omitempty"`
	VXLANMode         string   `json:"vxlanMode,omitempty"`
	NATOutgoing       bool     `json:"natOutgoing,omitempty"`
	Disabled          bool     `json:"disabled,omitempty"`
	DisableBGPExport  bool     `json:"disableBGPExport,omitempty"`
	NodeSelector      string   `json:"nodeSelector,omitempty"`
	NamespaceSelector string   `json:"namespaceSelector,omitempty"`
	AllowedUses       []string `json:"allowedUses,omitempty"`
	AssignmentMode    string   `json:"assignmentMode,omitempty"`
}

// IPReservation lists ranges IPAM never hands out (calico.md §1.9).
type IPReservation struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta        `json:"metadata"`
	Spec     IPReservationSpec `json:"spec"`
}

// IPReservationSpec is the spec of an IPReservation.
type IPReservationSpec struct {
	ReservedCIDRs []string `json:"reservedCIDRs"`
}

// IPAMConfiguration is the singleton (name "default") IPAM configuration.
type IPAMConfiguration struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta            `json:"metadata"`
	Spec     IPAMConfigurationSpec `json:"spec"`
}

// IPAMConfigurationSpec is the spec of IPAMConfiguration. Pointers keep
// "unset" distinct from false/0 so defaults apply on read.
type IPAMConfigurationSpec struct {
	StrictAffinity     bool  `json:"strictAffinity"`
	AutoAllocateBlocks *bool `json:"autoAllocateBlocks,omitempty"` // default true
	MaxBlocksPerHost   int32 `json:"maxBlocksPerHost,omitempty"`   // 0 = 20
	IPCooldownSeconds  int32 `json:"ipCooldownSeconds,omitempty"`
}
