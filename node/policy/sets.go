package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/api/selector"
	"github.com/weftnet/weft/dataplane"
)

// scopeKind limits which objects a rule selector can match.
type scopeKind uint8

const (
	// scopeAny: every endpoint and network set, namespaced or not.
	scopeAny scopeKind = iota
	// scopeNamespace: the objects of one namespace.
	scopeNamespace
	// scopeNamespaces: the objects of the namespaces a namespace selector
	// matches.
	scopeNamespaces
	// scopeGlobal: the non-namespaced objects (namespaceSelector global()).
	scopeGlobal
)

type scope struct {
	kind  scopeKind
	ns    string             // scopeNamespace
	nsSel *selector.Selector // scopeNamespaces
}

func (s scope) String() string {
	switch s.kind {
	case scopeNamespace:
		return "namespace " + s.ns
	case scopeNamespaces:
		return "namespaces " + s.nsSel.String()
	case scopeGlobal:
		return "global()"
	}
	return "any"
}

// setDef defines a selector set: the addresses (or, with port, the named
// ports) of the objects sel matches within scope.
type setDef struct {
	sel   *selector.Selector // nil: all()
	scope scope
	port  string // "" for an address set
}

// key is the canonical text of the definition: equal definitions share
// one set.
func (d setDef) key() string {
	var b strings.Builder
	if d.port != "" {
		b.WriteString("port ")
		b.WriteString(d.port)
		b.WriteString(" of ")
	}
	if d.sel == nil {
		b.WriteString("all()")
	} else {
		b.WriteString(d.sel.String())
	}
	if d.scope.kind != scopeAny {
		b.WriteString(" in ")
		b.WriteString(d.scope.String())
	}
	return b.String()
}

// setID names a set after the hash of its definition: the same on every
// node and across restarts, so a restarted agent finds the sets it made.
func setID(prefix, key string) string {
	sum := sha256.Sum256([]byte(key))
	return prefix + hex.EncodeToString(sum[:8])
}

func (d setDef) id() string {
	if d.port != "" {
		return setID("p-", d.key())
	}
	return setID("s-", d.key())
}

// matches reports whether e belongs to the set; nsLabels gives a
// namespace's labels.
func (d setDef) matches(e *endpoint, nsLabels func(string) map[string]string) bool {
	if d.port != "" && (e.isSet() || !hasPort(e, d.port)) {
		return false
	}
	switch d.scope.kind {
	case scopeNamespace:
		if e.namespace != d.scope.ns {
			return false
		}
	case scopeNamespaces:
		if e.namespace == "" || !d.scope.nsSel.Evaluate(nsLabels(e.namespace)) {
			return false
		}
	case scopeGlobal:
		if e.namespace != "" {
			return false
		}
	}
	return d.sel == nil || d.sel.Evaluate(e.labels)
}

// selSet is one selector set with its members.
type selSet struct {
	id  string
	def setDef
	// refs counts the rendered chains that name the set (active or not):
	// while positive the members are kept up to date. activeRefs counts
	// the chains in the output: while positive the set is in it.
	refs, activeRefs int
	matched          map[EndpointKey]bool
	addrs            memberSet[netip.Prefix]
	ports            memberSet[dataplane.NamedPort]
}

// netSet is a rule's nets: a set whose members never change.
type netSet struct {
	id               string
	members          []netip.Prefix
	refs, activeRefs int
}

// memberSet is a sorted, counted multiset: several objects may put the
// same member in (overlapping network sets), and it stays until the last
// one goes.
type memberSet[T comparable] struct {
	count  map[T]int
	sorted []T
	cmp    func(a, b T) int
}

func newMemberSet[T comparable](cmp func(a, b T) int) memberSet[T] {
	return memberSet[T]{count: map[T]int{}, cmp: cmp}
}

// add counts m in; it reports whether m is new.
func (s *memberSet[T]) add(m T) bool {
	s.count[m]++
	if s.count[m] > 1 {
		return false
	}
	i, _ := slices.BinarySearchFunc(s.sorted, m, s.cmp)
	s.sorted = slices.Insert(s.sorted, i, m)
	return true
}

// remove counts m out; it reports whether m is gone.
func (s *memberSet[T]) remove(m T) bool {
	n, ok := s.count[m]
	if !ok {
		return false
	}
	if n > 1 {
		s.count[m] = n - 1
		return false
	}
	delete(s.count, m)
	if i, found := slices.BinarySearchFunc(s.sorted, m, s.cmp); found {
		s.sorted = slices.Delete(s.sorted, i, i+1)
	}
	return true
}

// snapshot is a copy of the members (the output must not share the
// slice that later changes modify).
func (s *memberSet[T]) snapshot() []T {
	if len(s.sorted) == 0 {
		return nil
	}
	return slices.Clone(s.sorted)
}
