package api

import (
	"fmt"
	"strings"
)

// Resource is any weft resource. Every kind's pointer type implements it.
// Kind() is the kind constant of the Go type, whatever TypeMeta holds.
type Resource interface {
	Kind() string
	GetMeta() *ObjectMeta
	GetTypeMeta() *TypeMeta
}

// Kind names.
const (
	KindIPPool              = "IPPool"
	KindIPReservation       = "IPReservation"
	KindIPAMConfiguration   = "IPAMConfiguration"
	KindNode                = "Node"
	KindWorkloadEndpoint    = "WorkloadEndpoint"
	KindHostEndpoint        = "HostEndpoint"
	KindNetworkPolicy       = "NetworkPolicy"
	KindGlobalNetworkPolicy = "GlobalNetworkPolicy"
	KindNetworkSet          = "NetworkSet"
	KindGlobalNetworkSet    = "GlobalNetworkSet"
	KindProfile             = "Profile"
	KindTier                = "Tier"
	KindBGPConfiguration    = "BGPConfiguration"
	KindBGPPeer             = "BGPPeer"
	KindFelixConfiguration  = "FelixConfiguration"
)

// KindInfo describes a kind for the CLI: how users may name it and whether
// it lives in a namespace.
type KindInfo struct {
	Kind     string // as written in YAML: "IPPool"
	Singular string // "ippool"
	Plural   string // "ippools"
	// ShortNames are calicoctl's other names for the kind.
	ShortNames []string
	Namespaced bool
	// ReadOnly kinds are made by weft itself; users only read them.
	ReadOnly bool
}

// Names lists every name the kind answers to, lower case, without
// repeats.
func (k KindInfo) Names() []string {
	names := []string{k.Singular, k.Plural}
	if lower := strings.ToLower(k.Kind); lower != k.Singular {
		names = append(names, lower)
	}
	return append(names, k.ShortNames...)
}

// Kinds lists every kind weft stores, in a stable order.
func Kinds() []KindInfo {
	return []KindInfo{
		{Kind: KindIPPool, Singular: "ippool", Plural: "ippools", ShortNames: []string{"ipp", "ipps", "pool", "pools"}},
		{Kind: KindIPReservation, Singular: "ipreservation", Plural: "ipreservations", ShortNames: []string{"reservation", "reservations"}},
		{Kind: KindIPAMConfiguration, Singular: "ipamconfiguration", Plural: "ipamconfigurations", ShortNames: []string{"ipamconfig", "ipamconfigs"}},
		{Kind: KindNode, Singular: "node", Plural: "nodes", ShortNames: []string{"no", "nos"}},
		{Kind: KindWorkloadEndpoint, Singular: "workloadendpoint", Plural: "workloadendpoints", ShortNames: []string{"wep", "weps"}, Namespaced: true, ReadOnly: true},
		{Kind: KindHostEndpoint, Singular: "hostendpoint", Plural: "hostendpoints", ShortNames: []string{"hep", "heps"}},
		{Kind: KindNetworkPolicy, Singular: "networkpolicy", Plural: "networkpolicies", ShortNames: []string{"policy", "policies", "np", "pol", "pols", "netpol", "netpols", "cnp"}, Namespaced: true},
		{Kind: KindGlobalNetworkPolicy, Singular: "globalnetworkpolicy", Plural: "globalnetworkpolicies", ShortNames: []string{"gnp", "gnps", "cgnp"}},
		{Kind: KindNetworkSet, Singular: "networkset", Plural: "networksets", ShortNames: []string{"netset", "netsets"}, Namespaced: true},
		{Kind: KindGlobalNetworkSet, Singular: "globalnetworkset", Plural: "globalnetworksets", ShortNames: []string{"gnetset", "gnetsets"}},
		{Kind: KindProfile, Singular: "profile", Plural: "profiles", ShortNames: []string{"pro", "pros"}},
		{Kind: KindTier, Singular: "tier", Plural: "tiers"},
		{Kind: KindBGPConfiguration, Singular: "bgpconfiguration", Plural: "bgpconfigurations", ShortNames: []string{"bgpconfig", "bgpconfigs"}},
		{Kind: KindBGPPeer, Singular: "bgppeer", Plural: "bgppeers", ShortNames: []string{"bgpp", "bgpps", "bp", "bps"}},
		{Kind: KindFelixConfiguration, Singular: "felixconfiguration", Plural: "felixconfigurations", ShortNames: []string{"felixconfig", "felixconfigs"}},
	}
}

// LookupKind finds a kind by any of its names, case-insensitively
// ("IPPool", "ippools", "pool", "gnp", ...).
func LookupKind(name string) (KindInfo, bool) {
	lower := strings.ToLower(name)
	for _, k := range Kinds() {
		for _, n := range k.Names() {
			if n == lower {
				return k, true
			}
		}
	}
	return KindInfo{}, false
}

// IsNamespaced reports whether kind (exact Kind name) is namespaced.
func IsNamespaced(kind string) bool {
	for _, k := range Kinds() {
		if k.Kind == kind {
			return k.Namespaced
		}
	}
	return false
}

// New returns an empty resource of the kind (exact Kind name, e.g.
// "IPPool") with its TypeMeta filled in.
func New(kind string) (Resource, error) {
	var r Resource
	switch kind {
	case KindIPPool:
		r = &IPPool{}
	case KindIPReservation:
		r = &IPReservation{}
	case KindIPAMConfiguration:
		r = &IPAMConfiguration{}
	case KindNode:
		r = &Node{}
	case KindWorkloadEndpoint:
		r = &WorkloadEndpoint{}
	case KindHostEndpoint:
		r = &HostEndpoint{}
	case KindNetworkPolicy:
		r = &NetworkPolicy{}
	case KindGlobalNetworkPolicy:
		r = &GlobalNetworkPolicy{}
	case KindNetworkSet:
		r = &NetworkSet{}
	case KindGlobalNetworkSet:
		r = &GlobalNetworkSet{}
	case KindProfile:
		r = &Profile{}
	case KindTier:
		r = &Tier{}
	case KindBGPConfiguration:
		r = &BGPConfiguration{}
	case KindBGPPeer:
		r = &BGPPeer{}
	case KindFelixConfiguration:
		r = &FelixConfiguration{}
	default:
		if reason, ok := unsupportedKind(kind); ok {
			return nil, fmt.Errorf("kind %s is not supported by weft (%s)", kind, reason)
		}
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	*r.GetTypeMeta() = TypeMeta{Kind: kind, APIVersion: Group}
	return r, nil
}

// unsupportedKind explains why a projectcalico.org/v3 kind is not stored.
func unsupportedKind(kind string) (reason string, ok bool) {
	switch kind {
	case "BGPFilter":
		return "BGP filters are not implemented", true
	case "CalicoNodeStatus":
		return "use `weft node status`", true
	case "ClusterInformation":
		return "weft has no cluster information object", true
	case "KubeControllersConfiguration":
		return "there are no Kubernetes controllers", true
	case "StagedNetworkPolicy", "StagedGlobalNetworkPolicy":
		return "staged policies are not implemented", true
	case "StagedKubernetesNetworkPolicy":
		return "Kubernetes only", true
	case "IPAMBlock", "BlockAffinity", "IPAMHandle":
		return "IPAM state is internal; see `weft ipam show`", true
	case "QoSPolicy":
		return "QoS is not implemented", true
	}
	return "", false
}

// Key returns the identity of a resource: kind, namespace, name.
func Key(r Resource) (kind, namespace, name string) {
	m := r.GetMeta()
	return r.Kind(), m.Namespace, m.Name
}

// Describe names a resource for messages: `IPPool "p1"`,
// `NetworkPolicy "default/allow-web"`.
func Describe(r Resource) string {
	return describe(r.Kind(), r.GetMeta().Namespace, r.GetMeta().Name)
}

func describe(kind, ns, name string) string {
	if ns != "" {
		return fmt.Sprintf("%s %q", kind, clipName(ns)+"/"+clipName(name))
	}
	return fmt.Sprintf("%s %q", kind, clipName(name))
}

func (r *IPPool) Kind() string                { return KindIPPool }
func (r *IPPool) GetMeta() *ObjectMeta        { return &r.Metadata }
func (r *IPPool) GetTypeMeta() *TypeMeta      { return &r.TypeMeta }
func (r *IPReservation) Kind() string         { return KindIPReservation }
func (r *IPReservation) GetMeta() *ObjectMeta { return &r.Metadata }
func (r *IPReservation) GetTypeMeta() *TypeMeta {
	return &r.TypeMeta
}
func (r *IPAMConfiguration) Kind() string           { return KindIPAMConfiguration }
func (r *IPAMConfiguration) GetMeta() *ObjectMeta   { return &r.Metadata }
func (r *IPAMConfiguration) GetTypeMeta() *TypeMeta { return &r.TypeMeta }
func (r *Node) Kind() string                        { return KindNode }
func (r *Node) GetMeta() *ObjectMeta                { return &r.Metadata }
func (r *Node) GetTypeMeta() *TypeMeta              { return &r.TypeMeta }
func (r *WorkloadEndpoint) Kind() string            { return KindWorkloadEndpoint }
func (r *WorkloadEndpoint) GetMeta() *ObjectMeta    { return &r.Metadata }
func (r *WorkloadEndpoint) GetTypeMeta() *TypeMeta  { return &r.TypeMeta }
func (r *HostEndpoint) Kind() string                { return KindHostEndpoint }
func (r *HostEndpoint) GetMeta() *ObjectMeta        { return &r.Metadata }
func (r *HostEndpoint) GetTypeMeta() *TypeMeta      { return &r.TypeMeta }
func (r *NetworkPolicy) Kind() string               { return KindNetworkPolicy }
func (r *NetworkPolicy) GetMeta() *ObjectMeta       { return &r.Metadata }
func (r *NetworkPolicy) GetTypeMeta() *TypeMeta     { return &r.TypeMeta }
func (r *GlobalNetworkPolicy) Kind() string         { return KindGlobalNetworkPolicy }
func (r *GlobalNetworkPolicy) GetMeta() *ObjectMeta { return &r.Metadata }
func (r *GlobalNetworkPolicy) GetTypeMeta() *TypeMeta {
	return &r.TypeMeta
}
func (r *NetworkSet) Kind() string                 { return KindNetworkSet }
func (r *NetworkSet) GetMeta() *ObjectMeta         { return &r.Metadata }
func (r *NetworkSet) GetTypeMeta() *TypeMeta       { return &r.TypeMeta }
func (r *GlobalNetworkSet) Kind() string           { return KindGlobalNetworkSet }
func (r *GlobalNetworkSet) GetMeta() *ObjectMeta   { return &r.Metadata }
func (r *GlobalNetworkSet) GetTypeMeta() *TypeMeta { return &r.TypeMeta }
func (r *Profile) Kind() string                    { return KindProfile }
func (r *Profile) GetMeta() *ObjectMeta            { return &r.Metadata }
func (r *Profile) GetTypeMeta() *TypeMeta          { return &r.TypeMeta }
func (r *Tier) Kind() string                       { return KindTier }
func (r *Tier) GetMeta() *ObjectMeta               { return &r.Metadata }
func (r *Tier) GetTypeMeta() *TypeMeta             { return &r.TypeMeta }
func (r *BGPConfiguration) Kind() string           { return KindBGPConfiguration }
func (r *BGPConfiguration) GetMeta() *ObjectMeta   { return &r.Metadata }
func (r *BGPConfiguration) GetTypeMeta() *TypeMeta { return &r.TypeMeta }
func (r *BGPPeer) Kind() string                    { return KindBGPPeer }
func (r *BGPPeer) GetMeta() *ObjectMeta            { return &r.Metadata }
func (r *BGPPeer) GetTypeMeta() *TypeMeta          { return &r.TypeMeta }
func (r *FelixConfiguration) Kind() string         { return KindFelixConfiguration }
func (r *FelixConfiguration) GetMeta() *ObjectMeta { return &r.Metadata }
func (r *FelixConfiguration) GetTypeMeta() *TypeMeta {
	return &r.TypeMeta
}
