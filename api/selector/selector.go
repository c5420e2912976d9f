// Package selector parses and evaluates Calico label selectors with the
// exact grammar and semantics of calico.md §3:
//
//	sel  := "" | or
//	or   := and ( "||" and )*
//	and  := op ( "&&" op )*
//	op   := "!"* ( has(L) | all() | global() | L == S | L != S
//	            | L contains S | L starts with S | L ends with S
//	            | L in {S,...} | L not in {S,...} | "(" or ")" )
//
// A parsed Selector is immutable and safe for concurrent use; Evaluate does
// not allocate.
package selector

import (
	"fmt"
	"slices"
	"strings"
)

// Labels gives the selector access to an endpoint's labels without
// materialising a map (e.g. endpoint labels merged with profile labels).
type Labels interface {
	Get(name string) (value string, ok bool)
}

// mapLabels adapts a plain map; converting a map to an interface does not
// allocate because maps are pointer-shaped.
type mapLabels map[string]string

func (m mapLabels) Get(name string) (string, bool) {
	v, ok := m[name]
	return v, ok
}

// Selector is a parsed selector expression.
type Selector struct {
	root      node
	canonical string
	global    bool
}

// Parse parses a selector. The empty string (or only whitespace) selects
// everything, like all().
func Parse(s string) (*Selector, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p := parser{input: s, toks: toks}
	var root node
	if p.peek().kind == tokEOF {
		root = allNode{}
	} else {
		root, err = p.parseOr()
		if err != nil {
			return nil, err
		}
		if t := p.peek(); t.kind != tokEOF {
			return nil, p.errorf(t, "unexpected %s", t.kind)
		}
	}
	var b strings.Builder
	root.write(&b)
	return &Selector{root: root, canonical: b.String(), global: usesGlobal(root)}, nil
}

// MustParse is Parse for selectors known to be valid (constants, tests).
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// Validate reports whether s is a syntactically valid selector.
func Validate(s string) error {
	_, err := Parse(s)
	return err
}

// Evaluate reports whether labels match the selector.
func (s *Selector) Evaluate(labels map[string]string) bool {
	return s.root.eval(mapLabels(labels))
}

// EvaluateLabels is Evaluate over any label source.
func (s *Selector) EvaluateLabels(labels Labels) bool {
	return s.root.eval(labels)
}

// String returns the canonical form: binary operators parenthesised,
// string literals double-quoted (single-quoted when they contain a double
// quote), set members sorted and de-duplicated. Parsing the canonical form
// yields the same canonical form.
func (s *Selector) String() string { return s.canonical }

// UsesGlobal reports whether global() appears anywhere in the selector.
func (s *Selector) UsesGlobal() bool { return s.global }

// IsGlobal reports whether the selector is exactly global(), the only form
// in which global() is legal (an EntityRule namespaceSelector).
func (s *Selector) IsGlobal() bool {
	_, ok := s.root.(globalNode)
	return ok
}

// IsAll reports whether the selector is all() (or empty).
func (s *Selector) IsAll() bool {
	_, ok := s.root.(allNode)
	return ok
}

func usesGlobal(n node) bool {
	switch n := n.(type) {
	case globalNode:
		return true
	case *notNode:
		return usesGlobal(n.operand)
	case *andNode:
		return slices.ContainsFunc(n.operands, usesGlobal)
	case *orNode:
		return slices.ContainsFunc(n.operands, usesGlobal)
	}
	return false
}

type parser struct {
	input string
	toks  []token
	pos   int
}

func (p *parser) peek() token { return p.toks[p.pos] }

func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tokEOF {
		p.pos++
	}
	return t
}

func (p *parser) errorf(t token, msg string, args ...any) error {
	if len(args) > 0 {
		msg = fmt.Sprintf(msg, args...)
	}
	return &SyntaxError{Selector: p.input, Offset: t.pos, Msg: msg}
}

func (p *parser) parseOr() (node, error) {
	first, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	operands := []node{first}
	for p.peek().kind == tokOr {
		p.next()
		n, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		operands = append(operands, n)
	}
	if len(operands) == 1 {
		return first, nil
	}
	return &orNode{operands: operands}, nil
}

func (p *parser) parseAnd() (node, error) {
	first, err := p.parseOp()
	if err != nil {
		return nil, err
	}
	operands := []node{first}
	for p.peek().kind == tokAnd {
		p.next()
		n, err := p.parseOp()
		if err != nil {
			return nil, err
		}
		operands = append(operands, n)
	}
	if len(operands) == 1 {
		return first, nil
	}
	return &andNode{operands: operands}, nil
}

func (p *parser) parseOp() (node, error) {
	// An odd number of leading "!" negates; an even number cancels out.
	negated := false
	for p.peek().kind == tokNot {
		p.next()
		negated = !negated
	}
	n, err := p.parseTerm()
	if err != nil {
		return nil, err
	}
	if negated {
		// "!(!x)" is x: collapsing it keeps the canonical form a fixed
		// point ("!!x" would re-parse as x).
		if inner, ok := n.(*notNode); ok {
			return inner.operand, nil
		}
		return &notNode{operand: n}, nil
	}
	return n, nil
}

func (p *parser) parseTerm() (node, error) {
	t := p.next()
	switch t.kind {
	case tokHas:
		return &hasNode{label: t.value}, nil
	case tokAll:
		return allNode{}, nil
	case tokGlobal:
		return globalNode{}, nil
	case tokLParen:
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tokRParen {
			return nil, p.errorf(c, `expected ")", found %s`, c.kind)
		}
		return n, nil
	case tokLabel:
		return p.parseComparison(t.value)
	case tokEOF:
		return nil, p.errorf(t, "unexpected end of selector, expected an expression")
	default:
		return nil, p.errorf(t, "unexpected %s, expected an expression", t.kind)
	}
}

func (p *parser) parseComparison(label string) (node, error) {
	op := p.next()
	switch op.kind {
	case tokEq, tokNe, tokContains, tokStartsWith, tokEndsWith:
		v := p.next()
		if v.kind != tokString {
			return nil, p.errorf(v, "expected a quoted string after %s, found %s", op.kind, v.kind)
		}
		return &compareNode{label: label, op: op.kind, value: v.value}, nil
	case tokIn, tokNotIn:
		if b := p.next(); b.kind != tokLBrace {
			return nil, p.errorf(b, `expected "{" after %s, found %s`, op.kind, b.kind)
		}
		var values []string
		// A trailing comma before "}" is accepted, as in Calico's parser.
		for p.peek().kind == tokString {
			values = append(values, p.next().value)
			if p.peek().kind != tokComma {
				break
			}
			p.next()
		}
		if c := p.next(); c.kind != tokRBrace {
			return nil, p.errorf(c, `expected "}" or a quoted string in set, found %s`, c.kind)
		}
		slices.Sort(values)
		values = slices.Compact(values)
		return &setNode{label: label, negated: op.kind == tokNotIn, values: values}, nil
	default:
		return nil, p.errorf(op, "expected an operator after label %q, found %s", label, op.kind)
	}
}
