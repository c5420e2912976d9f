package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Name rules shared with Calico (calico.md §0). The compiled expressions are
// read-only.
var (
	dns1123Label  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelNamePart = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	interfaceName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)
)

// checkDNS1123Subdomain returns why s is not a DNS-1123 subdomain (the rule
// for Calico resource and node names), or nil.
func checkDNS1123Subdomain(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(s) > 253 {
		return fmt.Errorf("must be at most 253 characters, got %d", len(s))
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) > 63 {
			return fmt.Errorf("must be a DNS-1123 subdomain: %q has a part longer than 63 characters", s)
		}
		if !dns1123Label.MatchString(label) {
			return fmt.Errorf("must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.'; starting and ending with a letter or digit), got %q", s)
		}
	}
	return nil
}

// checkLabelKey applies the Kubernetes qualified-name rule: an optional DNS
// subdomain prefix and '/', then a name of at most 63 characters.
func checkLabelKey(k string) error {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if err := checkDNS1123Subdomain(prefix); err != nil {
			return fmt.Errorf("label key %q: prefix %v", k, err)
		}
		name = rest
	}
	if len(name) > 63 {
		return fmt.Errorf("label key %q: name part must be at most 63 characters", k)
	}
	if !labelNamePart.MatchString(name) {
		return fmt.Errorf("label key %q: name part must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k)
	}
	return nil
}

// checkLabelValue applies the Kubernetes label-value rule (empty is allowed).
func checkLabelValue(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > 63 {
		return fmt.Errorf("label value %q must be at most 63 characters", v)
	}
	if !labelNamePart.MatchString(v) {
		return fmt.Errorf("label value %q must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v)
	}
	return nil
}

// checkInterfaceName applies the Linux/Calico interface-name rule.
func checkInterfaceName(s string, maxLen int) error {
	if !interfaceName.MatchString(s) || len(s) > maxLen {
		return fmt.Errorf("must be 1-%d characters of letters, digits, '_', '.' or '-', got %q", maxLen, s)
	}
	return nil
}
