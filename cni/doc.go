// Package cni is weft's CNI plugin: the weft binary run by a container
// runtime with CNI_COMMAND in its environment (spec 1.0.0; 0.3.x and 0.4.0
// results too). It does no networking itself: it turns the runtime's call
// (environment, CNI_ARGS, network configuration on stdin) into a request to
// the local agent over its socket (node/localapi: POST /v1/workloads,
// /v1/workloads/delete, /v1/workloads/check) and the agent's answer into a
// CNI result or a CNI error.
//
// Install writes the binary and a conflist for `weft install-cni`.
// docs/cni.md is the user's guide: the configuration keys, how names and
// namespaces are chosen, and which addresses are requested.
package cni
