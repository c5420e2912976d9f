// Package api holds weft's resource types: Calico projectcalico.org/v3
// shapes, their defaults, validation and the YAML/JSON codec. It imports
// nothing else of weft's.
package api

import "time"

// Group is the API group and version of every resource.
const Group = "projectcalico.org/v3"

// TypeMeta is the apiVersion/kind header of a document.
type TypeMeta struct {
	Kind       string `json:"kind,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
}

// ObjectMeta is the subset of Kubernetes object metadata Calico resources use.
type ObjectMeta struct {
	Name              string            `json:"name,omitempty"`
	Namespace         string            `json:"namespace,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	UID               string            `json:"uid,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// Labels and names weft stamps on resources, as Calico does
// (api/pkg/apis/projectcalico/v3/constants.go).
const (
	// LabelNamespace is set on every WorkloadEndpoint to its namespace.
	LabelNamespace = "projectcalico.org/namespace"
	// LabelOrchestrator is set on every WorkloadEndpoint to its orchestrator.
	LabelOrchestrator = "projectcalico.org/orchestrator"
	// LabelServiceAccount is set on a WorkloadEndpoint with a service account.
	LabelServiceAccount = "projectcalico.org/serviceaccount"
	// LabelName carries an object's own name (namespaces' profiles carry it).
	LabelName = "projectcalico.org/name"
	// LabelTier is stamped on every policy with the name of its tier.
	LabelTier = "projectcalico.org/tier"

	// NamespaceProfilePrefix prefixes the profile that carries a namespace's
	// labels ("kns.<namespace>").
	NamespaceProfilePrefix = "kns."
	// DefaultNamespace is the namespace of a namespaced resource that names none.
	DefaultNamespace = "default"
)

// NamespaceProfileName is the name of the profile that carries the labels of
// namespace ns.
func NamespaceProfileName(ns string) string { return NamespaceProfilePrefix + ns }
