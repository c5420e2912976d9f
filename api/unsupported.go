package api

import "strings"

// This file lists the projectcalico.org/v3 fields weft knows but does not
// implement. They are rejected with a reason instead of being ignored
// (SPEC §4), and docs/resources.md lists them.

// unsupportedField is a field path pattern: "[]" stands for any list index
// and a trailing ".*" for any field below.
type unsupportedField struct {
	pattern string
	reason  string
}

const (
	reasonK8sMeta      = "Kubernetes-only metadata"
	reasonK8sSecret    = "Kubernetes secrets do not exist in weft"
	reasonK8sServices  = "Kubernetes Services do not exist in weft"
	reasonServiceAccts = "Kubernetes service accounts do not exist in weft"
	reasonHTTP         = "HTTP match needs an application-layer proxy, which weft does not have"
	reasonDomains      = "domain names in rules are a Calico Enterprise feature"
)

func unsupportedFields(kind string) []unsupportedField {
	fs := []unsupportedField{
		{"metadata.generation", reasonK8sMeta},
		{"metadata.generateName", reasonK8sMeta},
		{"metadata.finalizers", reasonK8sMeta},
		{"metadata.ownerReferences", reasonK8sMeta},
		{"metadata.managedFields", reasonK8sMeta},
		{"metadata.selfLink", reasonK8sMeta},
		{"metadata.deletionTimestamp", reasonK8sMeta},
		{"metadata.deletionGracePeriodSeconds", reasonK8sMeta},
	}
	rules := func() {
		for _, dir := range []string{"ingress", "egress"} {
			fs = append(fs, unsupportedField{"spec." + dir + "[].http", reasonHTTP})
			for _, side := range []string{"source", "destination"} {
				fs = append(fs,
					unsupportedField{"spec." + dir + "[]." + side + ".serviceAccounts", reasonServiceAccts},
					unsupportedField{"spec." + dir + "[]." + side + ".services", reasonK8sServices},
					unsupportedField{"spec." + dir + "[]." + side + ".domains", reasonDomains})
			}
		}
	}
	switch kind {
	case KindIPPool:
		fs = append(fs,
			unsupportedField{"spec.ipip", "a Calico API v1 field; use ipipMode"},
			unsupportedField{"spec.nat-outgoing", "a Calico API v1 field; use natOutgoing"})
	case KindIPAMConfiguration:
		fs = append(fs, unsupportedField{"spec.kubeVirtVMAddressPersistence", "KubeVirt runs only on Kubernetes"})
	case KindWorkloadEndpoint:
		fs = append(fs, unsupportedField{"spec.qosControls", "workload QoS controls are not implemented"})
	case KindNetworkPolicy, KindGlobalNetworkPolicy:
		fs = append(fs, unsupportedField{"spec.serviceAccountSelector", reasonServiceAccts})
		rules()
	case KindProfile:
		rules()
	case KindBGPConfiguration:
		fs = append(fs,
			unsupportedField{"spec.nodeMeshPassword", reasonK8sSecret},
			unsupportedField{"spec.serviceClusterIPs", reasonK8sServices},
			unsupportedField{"spec.serviceExternalIPs", reasonK8sServices},
			unsupportedField{"spec.serviceLoadBalancerIPs", reasonK8sServices},
			unsupportedField{"spec.serviceLoadBalancerAggregation", reasonK8sServices},
			unsupportedField{"spec.ignoredInterfaces", "weft's BGP speaker does not import device routes"},
			unsupportedField{"spec.localWorkloadPeeringIPV4", "peering with local workloads is not implemented"},
			unsupportedField{"spec.localWorkloadPeeringIPV6", "peering with local workloads is not implemented"},
			unsupportedField{"spec.programClusterRoutes", "weft always programs cluster routes itself"},
			unsupportedField{"spec.ipv4NormalRoutePriority", "weft's route priorities are fixed"},
			unsupportedField{"spec.ipv6NormalRoutePriority", "weft's route priorities are fixed"})
	case KindBGPPeer:
		fs = append(fs,
			unsupportedField{"spec.password.secretKeyRef.optional", "a missing password file is an error in weft"},
			unsupportedField{"spec.filters", "BGPFilter is not implemented"},
			unsupportedField{"spec.localWorkloadSelector", "peering with local workloads is not implemented"})
	case KindFelixConfiguration:
		fs = append(fs,
			unsupportedField{"spec.bpfEnabled", "choose the dataplane with [dataplane] backend in the config file"},
			unsupportedField{"spec.nftablesMode", "choose the dataplane with [dataplane] backend in the config file"},
			unsupportedField{"spec.iptablesBackend", "choose the dataplane with [dataplane] backend in the config file"},
			unsupportedField{"spec.prometheusMetricsEnabled", "set [metrics] listen in the config file"},
			unsupportedField{"spec.prometheusMetricsPort", "set [metrics] listen in the config file"},
			unsupportedField{"spec.prometheusMetricsHost", "set [metrics] listen in the config file"},
			unsupportedField{"spec.healthEnabled", "/livez and /readyz are served on [metrics] listen"},
			unsupportedField{"spec.healthPort", "/livez and /readyz are served on [metrics] listen"},
			unsupportedField{"spec.healthHost", "/livez and /readyz are served on [metrics] listen"},
			unsupportedField{"spec.interfacePrefix", "set [network] interface_prefix in the config file"},
			unsupportedField{"spec.nodeSelector", "selector-scoped FelixConfigurations are not implemented; use default or node.<name>"},
			// Every other Felix parameter: weft takes only the subset that
			// applies to it.
			unsupportedField{"spec.*", "this FelixConfiguration field does not apply to weft (docs/resources.md lists the supported ones)"})
	}
	return fs
}

// unsupportedReason returns why the field at path is rejected, if weft
// knows it as a Calico field it does not implement.
func unsupportedReason(kind, path string) (string, bool) {
	norm := stripIndexes(path)
	for _, f := range unsupportedFields(kind) {
		if prefix, ok := strings.CutSuffix(f.pattern, ".*"); ok {
			if strings.HasPrefix(norm, prefix+".") {
				return f.reason, true
			}
			continue
		}
		if norm == f.pattern {
			return f.reason, true
		}
	}
	return "", false
}

// ignoredStatus reports whether a top-level "status" of the kind is
// dropped on input: Calico keeps controller-written status on these kinds
// and, as in Kubernetes, status in a write request is not an input.
func ignoredStatus(kind string) bool {
	switch kind {
	case KindIPPool, KindTier, KindNetworkPolicy, KindGlobalNetworkPolicy:
		return true
	}
	return false
}

// stripIndexes turns "spec.ingress[3].http" into "spec.ingress[].http".
func stripIndexes(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		b.WriteByte(path[i])
		if path[i] == '[' {
			j := i + 1
			for j < len(path) && path[j] >= '0' && path[j] <= '9' {
				j++
			}
			if j > i+1 && j < len(path) && path[j] == ']' {
				i = j - 1
			}
		}
	}
	return b.String()
}
