package api

// Rule actions (calico.md §2.1).
const (
	ActionAllow = "Allow"
	ActionDeny  = "Deny"
	ActionLog   = "Log"
	ActionPass  = "Pass"
)

// Policy types.
const (
	PolicyTypeIngress = "Ingress"
	PolicyTypeEgress  = "Egress"
)

// PerfHintAssumeNeededOnEveryNode is the only policy performance hint.
const PerfHintAssumeNeededOnEveryNode = "AssumeNeededOnEveryNode"

// Built-in tiers (calico.md §1.3).
const (
	DefaultTierName      = "default"
	KubeAdminTierName    = "kube-admin"
	KubeBaselineTierName = "kube-baseline"

	DefaultTierOrder      = 1_000_000
	KubeAdminTierOrder    = 1_000
	KubeBaselineTierOrder = 10_000_000
)

// Rule is one match-and-action entry of a policy or profile.
type Rule struct {
	Action      string        `json:"action"`
	IPVersion   *int          `json:"ipVersion,omitempty"`
	Protocol    *Protocol     `json:"protocol,omitempty"`
	ICMP        *ICMPFields   `json:"icmp,omitempty"`
	NotProtocol *Protocol     `json:"notProtocol,omitempty"`
	NotICMP     *ICMPFields   `json:"notICMP,omitempty"`
	Source      EntityRule    `json:"source,omitzero"`
	Destination EntityRule    `json:"destination,omitzero"`
	Metadata    *RuleMetadata `json:"metadata,omitempty"`
}

// ICMPFields matches an ICMP type and, optionally, code.
type ICMPFields struct {
	Type *int `json:"type,omitempty"`
	Code *int `json:"code,omitempty"`
}

// RuleMetadata is free-form information about a rule.
type RuleMetadata struct {
	Annotations map[string]string `json:"annotations,omitempty"`
}

// EntityRule matches the source or destination of a packet.
type EntityRule struct {
	Nets              []string `json:"nets,omitempty"`
	Selector          string   `json:"selector,omitempty"`
	NamespaceSelector string   `json:"namespaceSelector,omitempty"`
	Ports             []Port   `json:"ports,omitempty"`
	NotNets           []string `json:"notNets,omitempty"`
	NotSelector       string   `json:"notSelector,omitempty"`
	NotPorts          []Port   `json:"notPorts,omitempty"`
}

// NetworkPolicy is a namespaced policy (calico.md §1.1).
type NetworkPolicy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta        `json:"metadata"`
	Spec     NetworkPolicySpec `json:"spec"`
}

// NetworkPolicySpec is the spec of a NetworkPolicy.
type NetworkPolicySpec struct {
	Tier             string   `json:"tier,omitempty"`
	Order            *float64 `json:"order,omitempty"`
	Ingress          []Rule   `json:"ingress,omitempty"`
	Egress           []Rule   `json:"egress,omitempty"`
	Selector         string   `json:"selector,omitempty"`
	Types            []string `json:"types,omitempty"`
	PerformanceHints []string `json:"performanceHints,omitempty"`
}

// GlobalNetworkPolicy is a cluster-wide policy (calico.md §1.2).
type GlobalNetworkPolicy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta              `json:"metadata"`
	Spec     GlobalNetworkPolicySpec `json:"spec"`
}

// GlobalNetworkPolicySpec is the spec of a GlobalNetworkPolicy.
type GlobalNetworkPolicySpec struct {
	Tier              string   `json:"tier,omitempty"`
	Order             *float64 `json:"order,omitempty"`
	Ingress           []Rule   `json:"ingress,omitempty"`
	Egress            []Rule   `json:"egress,omitempty"`
	Selector          string   `json:"selector,omitempty"`
	Types             []string `json:"types,omitempty"`
	DoNotTrack        bool     `json:"doNotTrack,omitempty"`
	PreDNAT           bool     `json:"preDNAT,omitempty"`
	ApplyOnForward    bool     `json:"applyOnForward,omitempty"`
	NamespaceSelector string   `json:"namespaceSelector,omitempty"`
	PerformanceHints  []string `json:"performanceHints,omitempty"`
}

// Tier groups policies; tiers are evaluated in order (calico.md §1.3).
type Tier struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     TierSpec   `json:"spec"`
}

// TierSpec is the spec of a Tier.
type TierSpec struct {
	// Order: unset means +Inf (last).
	Order *float64 `json:"order,omitempty"`
	// DefaultAction is Deny (default) or Pass.
	DefaultAction string `json:"defaultAction,omitempty"`
}

// Profile holds rules and labels shared by the endpoints that reference it
// (calico.md §1.7).
type Profile struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     ProfileSpec `json:"spec"`
}

// ProfileSpec is the spec of a Profile.
type ProfileSpec struct {
	Ingress       []Rule            `json:"ingress,omitempty"`
	Egress        []Rule            `json:"egress,omitempty"`
	LabelsToApply map[string]string `json:"labelsToApply,omitempty"`
}

// NetworkSet is a namespaced, labelled set of CIDRs (calico.md §1.4).
type NetworkSet struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta     `json:"metadata"`
	Spec     NetworkSetSpec `json:"spec"`
}

// NetworkSetSpec is the spec of a NetworkSet or GlobalNetworkSet.
type NetworkSetSpec struct {
	Nets []string `json:"nets,omitempty"`
}

// GlobalNetworkSet is a cluster-wide, labelled set of CIDRs.
type GlobalNetworkSet struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta     `json:"metadata"`
	Spec     NetworkSetSpec `json:"spec"`
}
