package selector

import (
	"slices"
	"strings"
)

// node is one expression in the parsed tree. eval must not allocate.
type node interface {
	eval(l Labels) bool
	write(b *strings.Builder)
}

type allNode struct{}

func (allNode) eval(Labels) bool         { return true }
func (allNode) write(b *strings.Builder) { b.WriteString("all()") }

// globalNode always matches; validation restricts where it may appear.
type globalNode struct{}

func (globalNode) eval(Labels) bool         { return true }
func (globalNode) write(b *strings.Builder) { b.WriteString("global()") }

type hasNode struct{ label string }

func (n *hasNode) eval(l Labels) bool {
	_, ok := l.Get(n.label)
	return ok
}

func (n *hasNode) write(b *strings.Builder) {
	b.WriteString("has(")
	b.WriteString(n.label)
	b.WriteString(")")
}

// compareNode is ==, !=, contains, starts with, ends with. A missing label
// makes every comparison false except != (calico.md §3.3).
type compareNode struct {
	label string
	op    tokenKind
	value string
}

func (n *compareNode) eval(l Labels) bool {
	v, ok := l.Get(n.label)
	if !ok {
		return n.op == tokNe
	}
	switch n.op {
	case tokEq:
		return v == n.value
	case tokNe:
		return v != n.value
	case tokContains:
		return strings.Contains(v, n.value)
	case tokStartsWith:
		return strings.HasPrefix(v, n.value)
	case tokEndsWith:
		return strings.HasSuffix(v, n.value)
	}
	return false
}

func (n *compareNode) write(b *strings.Builder) {
	b.WriteString(n.label)
	switch n.op {
	case tokEq:
		b.WriteString(" == ")
	case tokNe:
		b.WriteString(" != ")
	case tokContains:
		b.WriteString(" contains ")
	case tokStartsWith:
		b.WriteString(" starts with ")
	case tokEndsWith:
		b.WriteString(" ends with ")
	}
	writeQuoted(b, n.value)
}

// setNode is "in" / "not in"; values are sorted and unique so membership
// is a binary search. A missing label matches only "not in".
type setNode struct {
	label   string
	negated bool
	values  []string
}

func (n *setNode) eval(l Labels) bool {
	v, ok := l.Get(n.label)
	if !ok {
		return n.negated
	}
	_, found := slices.BinarySearch(n.values, v)
	return found != n.negated
}

func (n *setNode) write(b *strings.Builder) {
	b.WriteString(n.label)
	if n.negated {
		b.WriteString(" not in {")
	} else {
		b.WriteString(" in {")
	}
	for i, v := range n.values {
		if i > 0 {
			b.WriteString(", ")
		}
		writeQuoted(b, v)
	}
	b.WriteString("}")
}

type notNode struct{ operand node }

func (n *notNode) eval(l Labels) bool { return !n.operand.eval(l) }

func (n *notNode) write(b *strings.Builder) {
	b.WriteString("!")
	n.operand.write(b)
}

type andNode struct{ operands []node }

func (n *andNode) eval(l Labels) bool {
	for _, o := range n.operands {
		if !o.eval(l) {
			return false
		}
	}
	return true
}

func (n *andNode) write(b *strings.Builder) { writeJoined(b, n.operands, " && ") }

type orNode struct{ operands []node }

func (n *orNode) eval(l Labels) bool {
	for _, o := range n.operands {
		if o.eval(l) {
			return true
		}
	}
	return false
}

func (n *orNode) write(b *strings.Builder) { writeJoined(b, n.operands, " || ") }

func writeJoined(b *strings.Builder, operands []node, sep string) {
	b.WriteString("(")
	for i, o := range operands {
		if i > 0 {
			b.WriteString(sep)
		}
		o.write(b)
	}
	b.WriteString(")")
}

// writeQuoted quotes with double quotes unless the value contains one (the
// grammar has no escapes, and a literal can never hold both quote kinds).
func writeQuoted(b *strings.Builder, v string) {
	q := `"`
	if strings.Contains(v, `"`) {
		q = `'`
	}
	b.WriteString(q)
	b.WriteString(v)
	b.WriteString(q)
}
