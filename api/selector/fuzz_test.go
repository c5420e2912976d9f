package selector

import (
	"testing"
)

// FuzzParse checks that parsing never panics and that the canonical form
// is a fixed point that evaluates exactly like the original.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"", "all()", "global()", "has(a)", "!has(a)", `a == "b"`, `a != 'b'`,
		`a in {"x", "y"}`, `a not in {}`, `a contains "c"`, `a starts with "s"`,
		`a ends with "e"`, `(a == "1" || b == "2") && !c in {"3"}`,
		`a == 'say "hi"'`, `a == "it's"`, "a\t==\t'b'", `!!!(has(x) && has(y))`,
		`a in {"x",}`, `a = "b"`, `has(`, `"unterminated`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		canon := s.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", canon, in, err)
		}
		if again.String() != canon {
			t.Fatalf("canonical form not a fixed point: %q -> %q", canon, again.String())
		}
		if again.UsesGlobal() != s.UsesGlobal() {
			t.Fatalf("UsesGlobal differs after re-parse of %q", canon)
		}
		for _, labels := range labelSetsFor(s) {
			if s.Evaluate(labels) != again.Evaluate(labels) {
				t.Fatalf("%q and its canonical form %q disagree on %v", in, canon, labels)
			}
		}
	})
}

// labelSetsFor builds label sets that exercise every label and literal the
// selector mentions: absent, present with each literal, and present with
// a value no literal matches.
func labelSetsFor(s *Selector) []map[string]string {
	var names, values []string
	var walk func(n node)
	walk = func(n node) {
		switch n := n.(type) {
		case *hasNode:
			names = append(names, n.label)
		case *compareNode:
			names = append(names, n.label)
			values = append(values, n.value)
		case *setNode:
			names = append(names, n.label)
			values = append(values, n.values...)
		case *notNode:
			walk(n.operand)
		case *andNode:
			for _, o := range n.operands {
				walk(o)
			}
		case *orNode:
			for _, o := range n.operands {
				walk(o)
			}
		}
	}
	walk(s.root)
	values = append(values, "", "zz-unmatched")
	sets := []map[string]string{nil}
	for _, v := range values {
		m := map[string]string{}
		for _, n := range names {
			m[n] = v
		}
		sets = append(sets, m)
		// Also the variants with every other label absent.
		half := map[string]string{}
		for i, n := range names {
			if i%2 == 0 {
				half[n] = v
			}
		}
		sets = append(sets, half)
	}
	return sets
}
