package api

import (
	"fmt"
	"strings"
)

// Syntax checks for names, labels and interfaces, restating the Kubernetes
// and Calico rules of calico.md §0 without regexps.

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

// isDNSLabelPart reports whether s matches [a-z0-9]([-a-z0-9]*[a-z0-9])?
// (no length limit; callers add one).
func isDNSLabelPart(s string) bool {
	if s == "" || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// IsDNSLabel reports whether s is a DNS-1123 label (at most 63 characters).
func IsDNSLabel(s string) bool { return len(s) <= 63 && isDNSLabelPart(s) }

// IsDNSSubdomain reports whether s is a DNS-1123 subdomain: labels joined by
// dots, at most 253 characters (Calico's resource name rule).
func IsDNSSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if !isDNSLabelPart(part) {
			return false
		}
	}
	return true
}

// isLabelNamePart matches ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], ≤63.
func isLabelNamePart(s string) bool {
	if s == "" || len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// checkQualifiedName checks a label or annotation key: an optional DNS
// subdomain prefix and "/", then a name of at most 63 characters.
func checkQualifiedName(key string) error {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && !IsDNSSubdomain(prefix) {
		return fmt.Errorf("key %q: the prefix must be a DNS subdomain (lower case alphanumerics, '-' and '.')", key)
	}
	if !isLabelNamePart(name) {
		return fmt.Errorf("key %q: the name must be 1-63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric", key)
	}
	return nil
}

// checkLabelValue checks a label value: empty, or at most 63 characters of
// alphanumerics, '-', '_' and '.' starting and ending with an alphanumeric.
func checkLabelValue(v string) error {
	if v == "" || isLabelNamePart(v) {
		return nil
	}
	return fmt.Errorf("value %q must be at most 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric", v)
}

// IsInterfaceName reports whether s is a Linux interface name as Calico
// accepts it: 1-15 characters of [a-zA-Z0-9_.-].
func IsInterfaceName(s string) bool {
	if s == "" || len(s) > 15 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// isPortName reports whether s is an IANA service name as Kubernetes
// accepts it for named ports: 1-15 lower-case alphanumerics or '-', with at
// least one letter, no leading, trailing or doubled '-'.
func isPortName(s string) bool {
	if s == "" || len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

// isContainerID matches [a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?.
func isContainerID(s string) bool {
	if s == "" || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// WorkloadEndpointName builds a WorkloadEndpoint name from its identifiers
// as Calico does (calico.md §0): segments joined by "-", with any "-"
// inside a segment doubled. Orchestrator "k8s" uses the pod name as
// workload and "cni" the container ID.
func WorkloadEndpointName(node, orchestrator, workload, endpoint string) string {
	esc := func(s string) string { return strings.ReplaceAll(s, "-", "--") }
	return esc(node) + "-" + esc(orchestrator) + "-" + esc(workload) + "-" + esc(endpoint)
}

// workloadEndpointWorkload is the workload segment of a WEP's name.
func workloadEndpointWorkload(s *WorkloadEndpointSpec) string {
	switch s.Orchestrator {
	case OrchestratorKubernetes:
		return s.Pod
	case OrchestratorCNI:
		return s.ContainerID
	}
	return s.Workload
}
