package localapi

// Orchestrator names recorded on WorkloadEndpoints.
const (
	OrchestratorCLI = "weft" // `weft workload add`
	OrchestratorCNI = "cni"  // the CNI plugin
)

// WorkloadAddRequest is the body of POST /v1/workloads (`weft workload
// add`, CNI ADD). The agent validates everything before changing anything,
// and an add of a workload that exists with the same netns is idempotent.
type WorkloadAddRequest struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"` // default "default"
	NetNS     string            `json:"netns"`               // path of the network namespace, e.g. /run/netns/x or /proc/123/ns/net
	Interface string            `json:"interface,omitempty"` // inside the workload; default eth0
	Labels    map[string]string `json:"labels,omitempty"`
	// IPs are specific addresses to assign (at most one IPv4 and one IPv6);
	// empty = automatic from IPAM.
	IPs []string `json:"ips,omitempty"`
	// Pools restricts automatic assignment to these IP pools (by name).
	Pools []string `json:"pools,omitempty"`
	// Orchestrator is OrchestratorCLI or OrchestratorCNI; ContainerID is set by CNI.
	Orchestrator string `json:"orchestrator,omitempty"`
	ContainerID  string `json:"containerID,omitempty"`
	// Ports are the workload's named ports (`--port NAME:PROTO:PORT`, CNI
	// args.cni.ports) and host port mappings (CNI portMappings), recorded
	// on its WorkloadEndpoint: policy rules match named ports against them.
	Ports []WorkloadPort `json:"ports,omitempty"`
}

// WorkloadPort is one port of a workload: a named port (Name set) or a
// host port mapping (HostPort set).
type WorkloadPort struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol"` // TCP, UDP or SCTP
	Port     uint16 `json:"port"`
	HostPort uint16 `json:"hostPort,omitempty"`
	HostIP   string `json:"hostIP,omitempty"`
}

// Workload describes an attached workload (answer of add, items of list).
type Workload struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Node      string            `json:"node"`
	NetNS     string            `json:"netns"`
	Endpoint  string            `json:"endpoint"`      // WorkloadEndpoint name
	HostIface string            `json:"hostInterface"` // host side of the veth
	Interface string            `json:"interface"`     // inside the workload
	MAC       string            `json:"mac"`           // of Interface, inside the workload
	IPs       []string          `json:"ips"`           // /32 and /128 prefixes
	Gateway4  string            `json:"gateway4,omitempty"`
	Gateway6  string            `json:"gateway6,omitempty"`
	MTU       int               `json:"mtu"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Orchestrator and ContainerID as given when it was added.
	Orchestrator string         `json:"orchestrator,omitempty"`
	ContainerID  string         `json:"containerID,omitempty"`
	Ports        []WorkloadPort `json:"ports,omitempty"`
}

// WorkloadRef names a workload for delete and check. For CNI DEL, NetNS
// may be empty or gone: delete must still release everything.
type WorkloadRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	NetNS     string `json:"netns,omitempty"`
	Interface string `json:"interface,omitempty"`
	// ContainerID, when set, must match the recorded one (CNI DEL/CHECK of
	// a container that has been replaced must not touch the new one).
	ContainerID string `json:"containerID,omitempty"`
}

// WorkloadList answers GET /v1/workloads.
type WorkloadList struct {
	Items []Workload `json:"items"`
}
