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
