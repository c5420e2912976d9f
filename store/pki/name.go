package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
)

// uriScheme and uriHost make up the node identity URI SAN:
// weft://node/<name>.
const (
	uriScheme = "weft"
	uriHost   = "node"
)

// maxNodeNameLen is the RFC 1123 subdomain limit (Kubernetes/Calico node
// names follow the same rule).
const maxNodeNameLen = 253

// ValidateNodeName checks that name is a lowercase RFC 1123 subdomain
// (labels of [a-z0-9-] separated by dots, each starting and ending with an
// alphanumeric, at most 63 characters per label and 253 in total), the rule
// Calico and Kubernetes apply to node names.
func ValidateNodeName(name string) error {
	if name == "" {
		return errors.New("node name is empty")
	}
	if len(name) > maxNodeNameLen {
		return fmt.Errorf("node name is %d characters long, at most %d allowed", len(name), maxNodeNameLen)
	}
	labelStart := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '.' {
			c := name[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("node name %q: character %q not allowed (lowercase letters, digits, '-' and '.' only)", name, c)
			}
			continue
		}
		label := name[labelStart:i]
		switch {
		case label == "":
			return fmt.Errorf("node name %q has an empty label", name)
		case len(label) > 63:
			return fmt.Errorf("node name %q: label %q is longer than 63 characters", name, label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("node name %q: label %q must start and end with a letter or digit", name, label)
		}
		labelStart = i + 1
	}
	return nil
}

// NodeURI is the identity URI SAN of a node: weft://node/<name>.
func NodeURI(name string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: uriHost, Path: "/" + name}
}

// NodeName returns the node name from a certificate's weft://node/<name>
// URI SAN. A certificate with none, or with more than one, is not a node
// certificate.
func NodeName(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("no certificate")
	}
	var names []string
	for _, u := range cert.URIs {
		if u.Scheme != uriScheme || u.Host != uriHost {
			continue
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || len(u.Path) < 2 || u.Path[0] != '/' {
			return "", fmt.Errorf("malformed node URI %q", u.String())
		}
		names = append(names, u.Path[1:])
	}
	switch len(names) {
	case 0:
		return "", fmt.Errorf("certificate %q has no %s://%s/<name> URI", cert.Subject.CommonName, uriScheme, uriHost)
	case 1:
	default:
		return "", fmt.Errorf("certificate %q has %d node URIs, want one", cert.Subject.CommonName, len(names))
	}
	if err := ValidateNodeName(names[0]); err != nil {
		return "", fmt.Errorf("certificate node URI: %w", err)
	}
	return names[0], nil
}
