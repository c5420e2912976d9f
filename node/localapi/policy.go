package localapi

import (
	"context"
	"time"
)

// LabelRequest is the body of POST /v1/label (`weft label`): kubectl's
// label semantics on a workload's endpoint or a namespace's profile.
type LabelRequest struct {
	// Kind is "workload" or "namespace".
	Kind string `json:"kind"`
	// Namespace of a workload; Name is the workload's or the namespace's
	// name.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Set are key=value pairs to set; Remove are keys to remove.
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
	// Overwrite allows changing the value of an existing key.
	Overwrite bool `json:"overwrite,omitempty"`
}

// LabelResponse is the labels after the change (without the system labels
// weft keeps itself) and notes such as a removed key that was not there.
type LabelResponse struct {
	Labels  map[string]string `json:"labels"`
	Changed bool              `json:"changed"`
	Notes   []string          `json:"notes,omitempty"`
}

// TraceRequest is the body of POST /v1/policy/trace.
type TraceRequest struct {
	// From and To are a workload name (in Namespace, or "ns/name") or an
	// IP address.
	From      string `json:"from"`
	To        string `json:"to"`
	Namespace string `json:"namespace,omitempty"`
	// Protocol is tcp, udp, sctp, icmp, icmpv6 or a number (default tcp).
	Protocol string `json:"protocol,omitempty"`
	// Port is the destination port (TCP, UDP, SCTP); SourcePort defaults
	// to an ephemeral one.
	Port       uint16 `json:"port,omitempty"`
	SourcePort uint16 `json:"sourcePort,omitempty"`
	// ICMPType and ICMPCode for ICMP (default 8/128: echo request).
	ICMPType *uint8 `json:"icmpType,omitempty"`
	ICMPCode uint8  `json:"icmpCode,omitempty"`
	// IPVersion picks the family when both ends have both (default 4).
	IPVersion int `json:"ipVersion,omitempty"`
}

// TraceStep is one step of a trace.
type TraceStep struct {
	Tier   string `json:"tier,omitempty"`
	Policy string `json:"policy,omitempty"`
	// Rule is the rule's index in its policy's list for the direction; -1
	// when no rule is involved.
	Rule   int    `json:"rule"`
	Action string `json:"action"`
}

// TraceHop is the evaluation at one end.
type TraceHop struct {
	Endpoint  string      `json:"endpoint"`
	Direction string      `json:"direction"`
	Verdict   string      `json:"verdict"`
	Steps     []TraceStep `json:"steps"`
}

// TraceResponse answers POST /v1/policy/trace.
type TraceResponse struct {
	Packet  string     `json:"packet"`
	Verdict string     `json:"verdict"` // allow|deny
	Hops    []TraceHop `json:"hops"`
	// Revision of the datastore the trace was evaluated at.
	Revision uint64 `json:"revision"`
}

// RuleCounter is one rule's counters on this node.
type RuleCounter struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Direction string `json:"direction"`
	Rule      int    `json:"rule"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

// CountersResponse answers GET /v1/policy/counters.
type CountersResponse struct {
	Counters []RuleCounter `json:"counters"`
}

// PolicyStatus is the policy dataplane's state in NodeStatus.
type PolicyStatus struct {
	Backend   string    `json:"backend"`
	InSync    bool      `json:"inSync"`
	LastApply time.Time `json:"lastApply,omitzero"`
	LastError string    `json:"lastError,omitempty"`
	// AppliedRevision is the datastore revision whose policy the kernel
	// holds (0 while not in sync).
	AppliedRevision uint64 `json:"appliedRevision,omitempty"`
	Chains          int    `json:"chains"`
	Rules           int    `json:"rules"`
	Sets            int    `json:"sets"`
	SetMembers      int    `json:"setMembers"`
}

// Label is POST /v1/label.
func (c *Client) Label(ctx context.Context, req LabelRequest) (LabelResponse, error) {
	var resp LabelResponse
	return resp, c.do(ctx, "POST", "/v1/label", req, &resp)
}

// Trace is POST /v1/policy/trace.
func (c *Client) Trace(ctx context.Context, req TraceRequest) (TraceResponse, error) {
	var resp TraceResponse
	return resp, c.do(ctx, "POST", "/v1/policy/trace", req, &resp)
}

// PolicyCounters is GET /v1/policy/counters.
func (c *Client) PolicyCounters(ctx context.Context) (CountersResponse, error) {
	var resp CountersResponse
	return resp, c.do(ctx, "GET", "/v1/policy/counters", nil, &resp)
}
