package selector

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCanonical(t *testing.T) {
	cases := []struct {
		in, want string
	}{
		{"", "all()"},
		{"   \t ", "all()"},
		{"all()", "all()"},
		{"all( )", "all()"},
		{"global()", "global()"},
		{"global(\t)", "global()"},
		{"has(a)", "has(a)"},
		{"has( a/b.c-d_e )", "has(a/b.c-d_e)"},
		{"!has(a)", "!has(a)"},
		{"!!has(a)", "has(a)"},
		{"!!!has(a)", "!has(a)"},
		{"a == 'b'", `a == "b"`},
		{`a=="b"`, `a == "b"`},
		{`a != "b"`, `a != "b"`},
		{`a == 'say "hi"'`, `a == 'say "hi"'`},
		{`a == ""`, `a == ""`},
		{`a contains "x"`, `a contains "x"`},
		{`a contains"x"`, `a contains "x"`},
		{`a starts with "x"`, `a starts with "x"`},
		{"a starts \t with 'x'", `a starts with "x"`},
		{`a ends with "x"`, `a ends with "x"`},
		{`a in {"b", "a", "b"}`, `a in {"a", "b"}`},
		{`a in{}`, `a in {}`},
		{`a in {"x",}`, `a in {"x"}`},
		{`a not in {"x"}`, `a not in {"x"}`},
		{"a not\t in {'x'}", `a not in {"x"}`},
		{`a == "1" && b == "2"`, `(a == "1" && b == "2")`},
		{`a == "1" || b == "2"`, `(a == "1" || b == "2")`},
		{`a == "1" || b == "2" && c == "3"`, `(a == "1" || (b == "2" && c == "3"))`},
		{`(a == "1" || b == "2") && c == "3"`, `((a == "1" || b == "2") && c == "3")`},
		{`!(a == "1" && b == "2")`, `!(a == "1" && b == "2")`},
		{`((has(x)))`, `has(x)`},
		{`projectcalico.org/namespace == "default" && role in {"db"}`, `(projectcalico.org/namespace == "default" && role in {"db"})`},
		{`all() && global()`, `(all() && global())`},
		{`a==""&&b!=''||!has(c)`, `((a == "" && b != "") || !has(c))`},
	}
	for _, c := range cases {
		s, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got := s.String(); got != c.want {
			t.Errorf("Parse(%q).String() = %q, want %q", c.in, got, c.want)
		}
		again, err := Parse(s.String())
		if err != nil || again.String() != s.String() {
			t.Errorf("canonical form %q does not re-parse to itself: %v", s.String(), err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		in      string
		wantMsg string
	}{
		{`a = "b"`, `single "="`},
		{`a == b`, "expected a quoted string"},
		{`a == "b`, "unterminated string"},
		{`a == 'b"`, "unterminated string"},
		{`has(a) & has(b)`, `single "&"`},
		{`has(a) | has(b)`, `single "|"`},
		{`has (a)`, "expected an operator"},
		{`has()`, "expected a label inside has()"},
		{`has(a`, `expected ")" to close has(`},
		{`all(x)`, `expected ")" to close all(`},
		{`global(`, `expected ")" to close global(`},
		{`a`, "expected an operator"},
		{`a b`, "expected an operator"},
		{`a containsx "b"`, "expected an operator"},
		{`a inx {"b"}`, "expected an operator"},
		{`a not {"b"}`, "expected an operator"},
		{`a starts "b"`, "expected an operator"},
		{`a in "b"`, `expected "{"`},
		{`a in {"b" "c"}`, `expected "}"`},
		{`a in {,}`, `expected "}"`},
		{`a in {b}`, `expected "}"`},
		{`(has(a)`, `expected ")"`},
		{`has(a))`, `unexpected ")"`},
		{`has(a) has(b)`, "unexpected has()"},
		{`&& has(a)`, `unexpected "&&"`},
		{`has(a) &&`, "unexpected end of selector"},
		{`!`, "unexpected end of selector"},
		{`a == "b" c`, "unexpected label"},
		{`#`, "unexpected character"},
		{"has(a)\n&& has(b)", "unexpected character"}, // only space and tab are whitespace
		{`a == "b" == "c"`, `unexpected "=="`},
		{strings.Repeat("x", 513) + ` == "a"`, "label longer than 512"},
	}
	for _, c := range cases {
		_, err := Parse(c.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error containing %q", c.in, c.wantMsg)
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) error %v is not a *SyntaxError", c.in, err)
		}
		if !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("Parse(%q) error %q does not contain %q", c.in, err, c.wantMsg)
		}
	}
	if _, err := Parse(strings.Repeat("x", 512) + ` == "a"`); err != nil {
		t.Errorf("a 512-character label must be accepted: %v", err)
	}
}

func TestEvaluate(t *testing.T) {
	labels := map[string]string{"a": "apple", "b": "", "ns": "prod", "x/y": "1"}
	cases := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"all()", true},
		{"global()", true},
		{"has(a)", true},
		{"has(b)", true}, // present with an empty value
		{"has(zz)", false},
		{"!has(zz)", true},
		{`a == "apple"`, true},
		{`a == "pear"`, false},
		{`zz == "x"`, false},
		{`zz == ""`, false}, // absent is not equal to the empty string
		{`b == ""`, true},
		{`a != "pear"`, true},
		{`a != "apple"`, false},
		{`zz != "x"`, true}, // != matches when the label is absent
		{`a in {"apple", "pear"}`, true},
		{`a in {"pear"}`, false},
		{`a in {}`, false},
		{`zz in {"x"}`, false},
		{`a not in {"pear"}`, true},
		{`a not in {"apple"}`, false},
		{`zz not in {"x"}`, true},
		{`zz not in {}`, true},
		{`a contains "ppl"`, true},
		{`a contains "zz"`, false},
		{`zz contains ""`, false},
		{`a starts with "app"`, true},
		{`a starts with "pp"`, false},
		{`zz starts with ""`, false},
		{`a ends with "ple"`, true},
		{`a ends with "app"`, false},
		{`zz ends with ""`, false},
		{`x/y == "1"`, true},
		{`a == "apple" && ns == "prod"`, true},
		{`a == "apple" && ns == "dev"`, false},
		{`a == "pear" || ns == "prod"`, true},
		{`a == "pear" || ns == "dev"`, false},
		{`!(a == "pear" || ns == "dev")`, true},
		{`!a == "apple"`, false},
		{`a == "pear" || ns == "prod" && has(zz)`, false}, // && binds tighter
		{`(a == "pear" || ns == "prod") && !has(zz)`, true},
	}
	for _, c := range cases {
		s := MustParse(c.sel)
		if got := s.Evaluate(labels); got != c.want {
			t.Errorf("%q on %v = %v, want %v", c.sel, labels, got, c.want)
		}
		if got := s.EvaluateLabels(mapLabels(labels)); got != c.want {
			t.Errorf("EvaluateLabels %q = %v, want %v", c.sel, got, c.want)
		}
	}
	if !MustParse(`a != "x"`).Evaluate(nil) {
		t.Error("!= on nil labels must match")
	}
}

func TestGlobalAndAll(t *testing.T) {
	cases := []struct {
		sel                   string
		uses, isGlobal, isAll bool
	}{
		{"global()", true, true, false},
		{" global( ) ", true, true, false},
		{"(global())", true, true, false},
		{"!global()", true, false, false},
		{`global() && a == "b"`, true, false, false},
		{`a == "b" || (c == "d" && global())`, true, false, false},
		{"all()", false, false, true},
		{"", false, false, true},
		{`a == "global()"`, false, false, false},
	}
	for _, c := range cases {
		s := MustParse(c.sel)
		if s.UsesGlobal() != c.uses || s.IsGlobal() != c.isGlobal || s.IsAll() != c.isAll {
			t.Errorf("%q: UsesGlobal=%v IsGlobal=%v IsAll=%v, want %v %v %v",
				c.sel, s.UsesGlobal(), s.IsGlobal(), s.IsAll(), c.uses, c.isGlobal, c.isAll)
		}
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	s := MustParse(`(a == "x" || b in {"1", "2", "3"}) && !has(c) && d not in {"q"} && e starts with "p" && f != "z"`)
	labels := map[string]string{"a": "x", "b": "2", "e": "pre"}
	if !s.Evaluate(labels) {
		t.Fatal("selector should match")
	}
	allocs := testing.AllocsPerRun(1000, func() { s.Evaluate(labels) })
	if allocs != 0 {
		t.Errorf("Evaluate allocates %v times per call, want 0", allocs)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	s := MustParse(`(a == "x" || b in {"1", "2", "3"}) && !has(c) && d not in {"q"}`)
	labels := map[string]string{"a": "x", "b": "2", "e": "pre"}
	b.ReportAllocs()
	for b.Loop() {
		s.Evaluate(labels)
	}
}
