package localapi

import (
	"encoding/json"
	"time"
)

// Subsystem states reported in NodeStatus.
const (
	StateRunning  = "running"
	StateStarting = "starting"
	StateDisabled = "disabled"
	StateNotBuilt = "not built"
	StateFailed   = "failed"
	// StateUnavailable: the kernel lacks what the subsystem needs (no
	// ipip module); the rest of the node works.
	StateUnavailable = "unavailable"
)

// NodeStatus is the answer of GET /v1/status (`weft node status`).
type NodeStatus struct {
	Name       string            `json:"name"`
	Version    string            `json:"version"`
	Commit     string            `json:"commit"`
	Address    string            `json:"address"`
	AddressV6  string            `json:"addressV6,omitempty"`
	DataDir    string            `json:"dataDir"`
	PID        int               `json:"pid"`
	Started    time.Time         `json:"started"`
	Ready      bool              `json:"ready"`
	Live       bool              `json:"live"`
	Datastore  *DatastoreStatus  `json:"datastore,omitempty"` // nil until the datastore is open
	Components []ComponentStatus `json:"components"`
	// Problems are objects and items the calculation had to leave out of
	// this node's desired state (a conflicting address, a bad Node), one
	// line each.
	Problems []string `json:"problems,omitempty"`
	// Policy is the policy dataplane's sync state.
	Policy *PolicyStatus `json:"policy,omitempty"`
	// BGP is the BGP speaker's state (nil until the datastore is open).
	BGP *BGPStatus `json:"bgp,omitempty"`
	// WireGuard is the WireGuard device (nil when there is none).
	WireGuard *WireGuardStatus `json:"wireguard,omitempty"`
}

// DatastoreStatus is this node's place in the replicated datastore.
type DatastoreStatus struct {
	Role     string `json:"role"`   // leader|voter|nonvoter
	Leader   string `json:"leader"` // "" when none is known
	Revision uint64 `json:"revision"`
	InSync   bool   `json:"inSync"`
}

// ComponentStatus is one subsystem's health.
type ComponentStatus struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Live   bool   `json:"live"`
	Ready  bool   `json:"ready"`
	Detail string `json:"detail,omitempty"`
}

// Write modes of POST /v1/resources.
const (
	ModeApply   = "apply"
	ModeCreate  = "create"
	ModeReplace = "replace"
)

// WriteRequest is the body of POST /v1/resources: resource documents (YAML
// or JSON, one or many, or a List) and what to do with them.
type WriteRequest struct {
	Mode string `json:"mode"`
	Data string `json:"data"`
}

// DeleteRequest is the body of POST /v1/resources/delete: either documents
// naming the resources (Data), or one kind/namespace/name.
type DeleteRequest struct {
	Data            string `json:"data,omitempty"`
	Kind            string `json:"kind,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	Force           bool   `json:"force,omitempty"`
}

// ResourceResult says what a write did to one resource.
type ResourceResult struct {
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name"`
	Action          string `json:"action"` // created|configured|unchanged|replaced|deleted
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// WriteResponse answers writes and deletes.
type WriteResponse struct {
	Results []ResourceResult `json:"results"`
	// Warnings are things the written resources ask for that this node
	// (or the cluster) cannot honour, one line each: the write is done,
	// but the CLI prints them (an ipipMode pool on a node without IP-in-IP).
	Warnings []string `json:"warnings,omitempty"`
}

// ListResponse answers GET /v1/resources/{kind}: each item is a resource
// in its projectcalico.org/v3 JSON form.
type ListResponse struct {
	Revision uint64            `json:"revision"`
	Items    []json.RawMessage `json:"items"`
}

// WatchEvent is one line of GET /v1/watch (newline-delimited JSON).
type WatchEvent struct {
	Type     string          `json:"type"` // PUT|DELETE|SYNC|RESET
	Revision uint64          `json:"revision"`
	Object   json.RawMessage `json:"object,omitempty"`
}

// Member is one datastore member (`weft cluster members`).
type Member struct {
	Name               string  `json:"name"`
	Address            string  `json:"address"`
	Role               string  `json:"role"` // leader|voter|nonvoter
	Healthy            bool    `json:"healthy"`
	LastContactSeconds float64 `json:"lastContactSeconds"` // -1: unknown
}

// MembersResponse answers GET /v1/cluster/members.
type MembersResponse struct {
	Members []Member `json:"members"`
	// Warning is set when the answer is this node's own view because no
	// leader could be reached.
	Warning string `json:"warning,omitempty"`
}

// RemoveMemberRequest is the body of POST /v1/cluster/remove.
type RemoveMemberRequest struct {
	Name string `json:"name"`
}

// RemoveMemberResponse says what removing a node did.
type RemoveMemberResponse struct {
	RemovedFromRaft bool            `json:"removedFromRaft"`
	IPAM            json.RawMessage `json:"ipam,omitempty"`
	Deleted         []string        `json:"deleted,omitempty"`
}

// TokenResponse answers GET /v1/token.
type TokenResponse struct {
	Token string `json:"token"`
}

// Trailers of GET /v1/snapshot: known only once the backup is written.
const (
	TrailerSnapshotRevision   = "Weft-Snapshot-Revision"
	TrailerSnapshotConsistent = "Weft-Snapshot-Consistent"
)

// BGPStatus is the BGP speaker's part of NodeStatus (`weft node status`:
// calicoctl's IPv4 / IPv6 BGP status tables).
type BGPStatus struct {
	// State is running, disabled (bgp.enabled = false) or starting.
	State    string `json:"state"`
	ASNumber uint32 `json:"asNumber,omitempty"`
	RouterID string `json:"routerID,omitempty"`
	// Syncing: this agent restarted and waits for its peers' routes
	// (graceful restart); the kernel keeps its learned routes meanwhile.
	Syncing bool            `json:"syncing,omitempty"`
	Peers   []BGPPeerStatus `json:"peers"`
}

// BGPPeerStatus is one session, as a row of calicoctl's table.
type BGPPeerStatus struct {
	// PeerAddress is the peer's IP; Port is set when not 179.
	PeerAddress string `json:"peerAddress"`
	Port        int    `json:"port,omitempty"`
	// Family is IPv4 or IPv6.
	Family string `json:"family"`
	// PeerType: node-to-node mesh, global, node specific or route
	// reflector client.
	PeerType string `json:"peerType"`
	// State is up, start or down (BIRD's protocol states).
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// Info is the BGP state (Established, Active, Connect, ...) and the
	// last error.
	Info     string `json:"info"`
	ASNumber uint32 `json:"asNumber"`
	// Node is the weft node the peer is ("" for a router).
	Node               string `json:"node,omitempty"`
	PrefixesReceived   uint64 `json:"prefixesReceived"`
	PrefixesAdvertised uint64 `json:"prefixesAdvertised"`
}

// BGPRoute is one path of the BGP table (`weft bgp routes`, like `birdc
// show route`).
type BGPRoute struct {
	Prefix  string `json:"prefix"`
	NextHop string `json:"nextHop"`
	// FromPeer is the peer's IP; "" for a path this node originates.
	FromPeer   string  `json:"fromPeer"`
	ASPath     string  `json:"asPath,omitempty"`
	AgeSeconds float64 `json:"ageSeconds"`
	Best       bool    `json:"best"`
	Stale      bool    `json:"stale"`
}

// BGPRoutesResponse answers GET /v1/bgp/routes.
type BGPRoutesResponse struct {
	Routes []BGPRoute `json:"routes"`
}

// PatchRequest is the body of POST /v1/resources/patch (`weft patch`,
// `weft label node`): a JSON merge patch (RFC 7386, calicoctl's patch) of
// one resource. A metadata.resourceVersion in the patch makes it a
// compare-and-swap against that version; without one the patch applies
// to the version read, atomically.
type PatchRequest struct {
	Kind      string          `json:"kind"`
	Namespace string          `json:"namespace,omitempty"`
	Name      string          `json:"name"`
	Patch     json.RawMessage `json:"patch"`
}
