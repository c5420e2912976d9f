package api

// HostEndpoint is an interface (or the addresses) of a node that policy
// protects (calico.md §1.5).
type HostEndpoint struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta       `json:"metadata"`
	Spec     HostEndpointSpec `json:"spec"`
}

// HostEndpointSpec is the spec of a HostEndpoint.
type HostEndpointSpec struct {
	Node string `json:"node,omitempty"`
	// InterfaceName is the interface, "*" for every interface of the host,
	// or empty to find it by ExpectedIPs.
	InterfaceName string         `json:"interfaceName,omitempty"`
	ExpectedIPs   []string       `json:"expectedIPs,omitempty"`
	Profiles      []string       `json:"profiles,omitempty"`
	Ports         []EndpointPort `json:"ports,omitempty"`
}

// EndpointPort is a named port of a host endpoint.
type EndpointPort struct {
	Name     string   `json:"name"`
	Protocol Protocol `json:"protocol"`
	Port     uint16   `json:"port"`
}

// Orchestrator names weft uses for workload endpoints.
const (
	// OrchestratorWeft marks workloads attached with `weft workload add`.
	OrchestratorWeft = "weft"
	// OrchestratorCNI marks workloads attached through the CNI plugin.
	OrchestratorCNI = "cni"
	// OrchestratorKubernetes is Calico's orchestrator for pods; its name
	// scheme differs (node-k8s-pod-endpoint).
	OrchestratorKubernetes = "k8s"
)

// WorkloadEndpoint is a workload's interface (calico.md §1.6). weft creates
// them itself (workload add, CNI); users only read them.
type WorkloadEndpoint struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta           `json:"metadata"`
	Spec     WorkloadEndpointSpec `json:"spec"`
}

// WorkloadEndpointSpec is the spec of a WorkloadEndpoint.
type WorkloadEndpointSpec struct {
	Orchestrator       string `json:"orchestrator,omitempty"`
	Workload           string `json:"workload,omitempty"`
	Node               string `json:"node,omitempty"`
	ContainerID        string `json:"containerID,omitempty"`
	Pod                string `json:"pod,omitempty"`
	Endpoint           string `json:"endpoint,omitempty"`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// IPNetworks are the endpoint's addresses, each a /32 or /128.
	IPNetworks []string `json:"ipNetworks,omitempty"`
	// IPNATs are 1:1 floating IPs; each internal IP is in IPNetworks.
	IPNATs        []IPNAT                `json:"ipNATs,omitempty"`
	IPv4Gateway   string                 `json:"ipv4Gateway,omitempty"`
	IPv6Gateway   string                 `json:"ipv6Gateway,omitempty"`
	Profiles      []string               `json:"profiles,omitempty"`
	InterfaceName string                 `json:"interfaceName,omitempty"`
	MAC           string                 `json:"mac,omitempty"`
	Ports         []WorkloadEndpointPort `json:"ports,omitempty"`
	// AllowSpoofedSourcePrefixes relaxes the anti-spoofing check.
	AllowSpoofedSourcePrefixes []string `json:"allowSpoofedSourcePrefixes,omitempty"`
}

// WorkloadEndpointPort is a named or host-mapped port of a workload.
type WorkloadEndpointPort struct {
	Name     string   `json:"name"`
	Protocol Protocol `json:"protocol"`
	Port     uint16   `json:"port"`
	HostPort uint16   `json:"hostPort"`
	HostIP   string   `json:"hostIP"`
}

// IPNAT maps an external (floating) IP to an internal one.
type IPNAT struct {
	InternalIP string `json:"internalIP"`
	ExternalIP string `json:"externalIP"`
}
