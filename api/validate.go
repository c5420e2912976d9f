package api

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/weftnet/weft/api/selector"
)

// FieldError is one problem with one field.
type FieldError struct {
	// Field is the JSON path, e.g. "spec.ingress[0].destination.ports".
	Field   string
	Message string
}

func (e FieldError) String() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// ValidationError lists every problem found in one resource. Its message
// reads `IPPool "p1": spec.blockSize: must be between 20 and 32 for an IPv4
// pool, got 33`.
type ValidationError struct {
	Kind, Namespace, Name string
	Errors                []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.String()
	}
	return describe(e.Kind, e.Namespace, e.Name) + ": " + strings.Join(parts, "; ")
}

// problems collects FieldErrors while validating one resource.
type problems struct{ list []FieldError }

func (p *problems) add(field, format string, args ...any) {
	p.list = append(p.list, FieldError{Field: clipMessage(field), Message: clipMessage(fmt.Sprintf(format, args...))})
}

func (p *problems) result(r Resource) error {
	if len(p.list) == 0 {
		return nil
	}
	m := r.GetMeta()
	return &ValidationError{Kind: r.Kind(), Namespace: m.Namespace, Name: m.Name, Errors: p.list}
}

// Validate checks a resource against Calico's rules (calico.md §0-§3: the
// CEL rules of the v3 types and libcalico-go's validator) and weft's own
// limits. It accepts a resource before or after Default: fields Default
// fills may be unset. Cross-object rules (overlapping pools, an existing
// tier) are not checked here. The error is a *ValidationError.
func Validate(r Resource) error {
	var p problems
	validateMeta(&p, r)
	switch r := r.(type) {
	case *IPPool:
		validateIPPool(&p, r)
	case *IPReservation:
		validateIPReservation(&p, r)
	case *IPAMConfiguration:
		validateIPAMConfiguration(&p, r)
	case *Node:
		validateNode(&p, r)
	case *WorkloadEndpoint:
		validateWorkloadEndpoint(&p, r)
	case *HostEndpoint:
		validateHostEndpoint(&p, r)
	case *NetworkPolicy:
		validateNetworkPolicy(&p, r)
	case *GlobalNetworkPolicy:
		validateGlobalNetworkPolicy(&p, r)
	case *NetworkSet:
		validateNets(&p, "spec.nets", r.Spec.Nets)
	case *GlobalNetworkSet:
		validateNets(&p, "spec.nets", r.Spec.Nets)
	case *Profile:
		validateProfile(&p, r)
	case *Tier:
		validateTier(&p, r)
	case *BGPConfiguration:
		validateBGPConfiguration(&p, r)
	case *BGPPeer:
		validateBGPPeer(&p, r)
	case *FelixConfiguration:
		validateFelixConfiguration(&p, r)
	default:
		return fmt.Errorf("validate: unsupported resource type %T", r)
	}
	return p.result(r)
}

// maxAnnotationBytes caps the total size of a resource's annotations.
const maxAnnotationBytes = 256 << 10

func validateMeta(p *problems, r Resource) {
	m := r.GetMeta()
	kind := r.Kind()
	if tm := r.GetTypeMeta(); tm.Kind != "" && tm.Kind != kind {
		p.add("kind", "is %q but the resource is a %s", tm.Kind, kind)
	}
	if tm := r.GetTypeMeta(); tm.APIVersion != "" && tm.APIVersion != Group {
		p.add("apiVersion", "must be %s, got %q", Group, tm.APIVersion)
	}
	switch {
	case m.Name == "":
		p.add("metadata.name", "is required")
	default:
		validateName(p, kind, m.Name)
	}
	if IsNamespaced(kind) {
		switch {
		case m.Namespace == "":
			p.add("metadata.namespace", "is required for a %s", kind)
		case !IsDNSLabel(m.Namespace):
			p.add("metadata.namespace", "%q is not a valid namespace name (a DNS label: at most 63 lower case alphanumerics or '-')", m.Namespace)
		}
	} else if m.Namespace != "" {
		p.add("metadata.namespace", "must be empty: %s is not namespaced", kind)
	}
	if m.ResourceVersion != "" {
		if _, err := ParseRevision(m.ResourceVersion); err != nil {
			p.add("metadata.resourceVersion", "%v", err)
		}
	}
	validateLabels(p, "metadata.labels", m.Labels)
	if kind == KindNetworkSet || kind == KindGlobalNetworkSet {
		if _, ok := m.Labels[LabelNamespace]; ok {
			p.add("metadata.labels", "%s is reserved and may not be set on a %s", LabelNamespace, kind)
		}
	}
	validateAnnotations(p, "metadata.annotations", m.Annotations)
}

func validateName(p *problems, kind, name string) {
	const f = "metadata.name"
	switch kind {
	case KindTier:
		if !IsDNSLabel(name) {
			p.add(f, "%q is not a valid tier name (at most 63 lower case alphanumerics or '-', no dots)", name)
		}
	case KindNetworkPolicy:
		if len(name) > 253 {
			p.add(f, "is %d characters long, the limit is 253", len(name))
			return
		}
		if strings.HasPrefix(name, "knp.default.") {
			p.add(f, "names starting with knp.default. are reserved for Kubernetes network policies")
			return
		}
		if !isPolicyName(name) && !(strings.HasPrefix(name, "ossg.default.") && IsDNSSubdomain(strings.TrimPrefix(name, "ossg.default."))) {
			p.add(f, "%q is not a valid policy name (lower case alphanumerics and '-', optionally one '.')", name)
		}
	case KindGlobalNetworkPolicy:
		if len(name) > 253 {
			p.add(f, "is %d characters long, the limit is 253", len(name))
			return
		}
		if !isPolicyName(name) {
			p.add(f, "%q is not a valid policy name (lower case alphanumerics and '-', optionally one '.')", name)
		}
	case KindIPAMConfiguration:
		if name != "default" {
			p.add(f, "must be \"default\" (IPAMConfiguration is a singleton), got %q", name)
		}
	case KindBGPConfiguration, KindFelixConfiguration:
		if node, ok := strings.CutPrefix(name, "node."); ok {
			if !IsDNSSubdomain(node) {
				p.add(f, "%q does not name a node: node.<node name>", name)
			}
		} else if name != "default" {
			p.add(f, "must be \"default\" or \"node.<node name>\", got %q", name)
		}
	default:
		if len(name) > 253 {
			p.add(f, "is %d characters long, the limit is 253", len(name))
		} else if !IsDNSSubdomain(name) {
			p.add(f, "%q is not a valid name (lower case alphanumerics, '-' and '.', starting and ending with an alphanumeric)", name)
		}
	}
}

// isPolicyName: one DNS label, or two joined by a single dot.
func isPolicyName(name string) bool {
	first, rest, dotted := strings.Cut(name, ".")
	if !isDNSLabelPart(first) {
		return false
	}
	return !dotted || isDNSLabelPart(rest)
}

func validateLabels(p *problems, field string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		if err := checkQualifiedName(k); err != nil {
			p.add(field, "%v", err)
		}
		if err := checkLabelValue(labels[k]); err != nil {
			p.add(field+"["+strconv.Quote(k)+"]", "%v", err)
		}
	}
}

func validateAnnotations(p *problems, field string, annotations map[string]string) {
	total := 0
	for _, k := range sortedKeys(annotations) {
		if err := checkQualifiedName(strings.ToLower(k)); err != nil {
			p.add(field, "%v", err)
		}
		total += len(k) + len(annotations[k])
	}
	if total > maxAnnotationBytes {
		p.add(field, "total size %d bytes exceeds the limit of %d bytes", total, maxAnnotationBytes)
	}
}

// maxSelectorLen is the CEL cap on selector fields.
const maxSelectorLen = 1024

// validateSelector checks that s parses and is not too long. global()
// is rejected unless allowGlobal; when allowed it must stand alone.
func validateSelector(p *problems, field, s string, allowGlobal bool) *selector.Selector {
	if len(s) > maxSelectorLen {
		p.add(field, "is %d characters long, the limit is %d", len(s), maxSelectorLen)
		return nil
	}
	sel, err := selector.Parse(s)
	if err != nil {
		p.add(field, "%v", err)
		return nil
	}
	if sel.UsesGlobal() {
		switch {
		case !allowGlobal:
			p.add(field, "global() can only be used in an EntityRule namespaceSelector")
		case !sel.IsGlobal():
			p.add(field, "global() cannot be combined with other selectors")
		}
	}
	return sel
}

// validateNets checks a list of CIDRs or addresses (host bits allowed, as
// in Calico's "cidr" fields).
func validateNets(p *problems, field string, nets []string) {
	if len(nets) > maxSetEntries {
		p.add(field, "has %d entries, the limit is %d", len(nets), maxSetEntries)
	}
	for i, n := range nets {
		if _, err := parsePrefixOrAddr(n); err != nil {
			p.add(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
}

// maxSetEntries is the largest IP set a rule can refer to (Felix's
// MaxIpsetSize, calico.md §1.4).
const maxSetEntries = 1 << 20

func validateProfileNames(p *problems, field string, names []string) {
	for i, n := range names {
		if !IsDNSSubdomain(n) {
			p.add(fmt.Sprintf("%s[%d]", field, i), "%q is not a valid profile name", n)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func oneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }

// ValidateUpdate checks new as Validate does, plus the rules that need the
// stored object: identity cannot change, an IPPool's cidr and blockSize
// are immutable, and a pool cannot move to or from LoadBalancer use. Both
// objects should have had Default applied.
func ValidateUpdate(old, new Resource) error {
	var p problems
	if old.Kind() != new.Kind() {
		return fmt.Errorf("cannot update a %s with a %s", old.Kind(), new.Kind())
	}
	om, nm := old.GetMeta(), new.GetMeta()
	if om.Name != nm.Name || om.Namespace != nm.Namespace {
		p.add("metadata.name", "cannot change (%s to %s)", describe(old.Kind(), om.Namespace, om.Name), describe(new.Kind(), nm.Namespace, nm.Name))
	}
	if op, ok := old.(*IPPool); ok {
		np := new.(*IPPool)
		if op.Spec.CIDR != np.Spec.CIDR {
			p.add("spec.cidr", "cannot change (was %s): delete the pool and create a new one", op.Spec.CIDR)
		}
		if effectiveBlockSize(op) != effectiveBlockSize(np) {
			p.add("spec.blockSize", "cannot change (was %d): delete the pool and create a new one", effectiveBlockSize(op))
		}
		if hasUse(op.Spec.AllowedUses, UseLoadBalancer) != hasUse(np.Spec.AllowedUses, UseLoadBalancer) {
			p.add("spec.allowedUses", "cannot change to or from LoadBalancer")
		}
	}
	if err := Validate(new); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			p.list = append(p.list, ve.Errors...)
		} else {
			return err
		}
	}
	return p.result(new)
}
