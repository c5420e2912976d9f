package ipam

import (
	"time"

	"github.com/weftnet/weft/store"
)

// Kinds this package reads and writes. The first three are internal: they
// are only ever written by the ipam commands.
const (
	KindBlock         = "IPAMBlock"
	KindBlockAffinity = "BlockAffinity"
	KindHandle        = "IPAMHandle"

	KindIPPool            = "IPPool"
	KindIPReservation     = "IPReservation"
	KindIPAMConfiguration = "IPAMConfiguration"
	KindWorkloadEndpoint  = "WorkloadEndpoint"
	KindNode              = "Node"

	// ConfigName is the name of the singleton IPAMConfiguration.
	ConfigName = "default"
)

// Allocation types (the "type" attribute), as Calico names them.
const (
	TypeWorkload          = "workload"
	TypeIPIPTunnel        = "ipipTunnelAddress"
	TypeVXLANTunnel       = "vxlanTunnelAddress"
	TypeVXLANV6Tunnel     = "vxlanV6TunnelAddress"
	TypeWireguardTunnel   = "wireguardTunnelAddress"
	TypeWireguardV6Tunnel = "wireguardV6TunnelAddress"
)

// isTunnelType reports whether an allocation type belongs to a node's
// tunnel device rather than to a workload.
func isTunnelType(t string) bool {
	switch t {
	case TypeIPIPTunnel, TypeVXLANTunnel, TypeVXLANV6Tunnel, TypeWireguardTunnel, TypeWireguardV6Tunnel:
		return true
	}
	return false
}

// affinityPrefix is prepended to a node name in Block.Affinity, as Calico
// does ("host:<node>").
const affinityPrefix = "host:"

// Block is one contiguous slice of a pool: Calico's AllocationBlock. It is
// stored as Key{Kind: KindBlock, Name: BlockName(cidr)}.
//
// Every ordinal (offset of an address in the block) is in exactly one of
// three states: allocated (Allocations[o] != nil), free (listed in
// Unallocated, a FIFO: allocation takes from the head, release appends to
// the tail, so the address free longest is reused first) or cooling down
// after a release (listed in Released until ipCooldownSeconds have passed).
type Block struct {
	CIDR string `json:"cidr"`
	// Affinity is "host:<node>" for a block claimed by a node, empty for a
	// block whose node gave it up while addresses were still in use.
	Affinity          string     `json:"affinity,omitempty"`
	AffinityClaimTime *time.Time `json:"affinityClaimTime,omitempty"`
	// Allocations maps an ordinal to an index into Attributes (nil = not
	// allocated).
	Allocations []*int                `json:"allocations"`
	Unallocated []int                 `json:"unallocated"`
	Attributes  []AllocationAttribute `json:"attributes"`
	// SequenceNumber is the raft index of the last write to the block.
	SequenceNumber uint64 `json:"sequenceNumber"`
	// SequenceNumberForAllocation is, for each allocated ordinal, the raft
	// index at which it was allocated: strictly increasing, so a release
	// that names it cannot free a later reuse of the same address (ABA).
	SequenceNumberForAllocation map[int]uint64 `json:"sequenceNumberForAllocation,omitempty"`
	// Released lists ordinals in cooldown, oldest release first.
	Released []ReleasedOrdinal `json:"released,omitempty"`
	// EmptySince is when the block last became empty (no allocation); nil
	// while it holds addresses. ipam.reclaimEmpty uses it for its grace
	// period.
	EmptySince *time.Time `json:"emptySince,omitempty"`
}

// ReleasedOrdinal is an ordinal in cooldown.
type ReleasedOrdinal struct {
	Ordinal    int       `json:"ordinal"`
	ReleasedAt time.Time `json:"releasedAt"`
}

// AllocationAttribute describes who holds an allocation: the handle plus
// Calico's secondary attributes.
type AllocationAttribute struct {
	Handle           string    `json:"handle"`
	Node             string    `json:"node,omitempty"`
	Namespace        string    `json:"namespace,omitempty"`
	Workload         string    `json:"workload,omitempty"`
	WorkloadEndpoint string    `json:"workloadEndpoint,omitempty"` // "<namespace>/<name>"
	Type             string    `json:"type,omitempty"`
	Timestamp        time.Time `json:"timestamp"`
}

// BlockAffinity records that a node holds a block. It is stored as
// Key{Kind: KindBlockAffinity, Namespace: node, Name: BlockName(cidr)} so
// that a node's blocks are one List away. Calico's pending/confirmed/
// pendingDeletion states exist to survive a crash between the separate
// writes of a claim; here a claim is one atomic raft apply, so an affinity
// that exists is confirmed.
type BlockAffinity struct {
	Node string `json:"node"`
	CIDR string `json:"cidr"`
}

// Handle is the secondary index handle → blocks holding its addresses, so
// that releasing a workload touches only its blocks. It is stored as
// Key{Kind: KindHandle, Name: handle ID}.
type Handle struct {
	HandleID string `json:"handleID"`
	// Blocks counts the handle's addresses per block name.
	Blocks map[string]int `json:"blocks"`
	// LeakedSince is set by ipam.gc when every address of the handle was
	// found leaked; cleared when one is in use again.
	LeakedSince *time.Time `json:"leakedSince,omitempty"`
}

// BlockKey is the store key of the block with the given CIDR.
func BlockKey(cidr string) store.Key {
	return store.Key{Kind: KindBlock, Name: BlockName(cidr)}
}

// AffinityKey is the store key of a node's affinity for a block.
func AffinityKey(node, blockCIDR string) store.Key {
	return store.Key{Kind: KindBlockAffinity, Namespace: node, Name: BlockName(blockCIDR)}
}

// HandleKey is the store key of a handle.
func HandleKey(handleID string) store.Key {
	return store.Key{Kind: KindHandle, Name: handleID}
}

// ConfigKey is the store key of the IPAM configuration singleton.
func ConfigKey() store.Key {
	return store.Key{Kind: KindIPAMConfiguration, Name: ConfigName}
}
