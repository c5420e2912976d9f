package selector

import (
	"fmt"
	"strings"
)

// maxLabelLen is the longest label (identifier) the grammar accepts
// (calico.md §3.1).
const maxLabelLen = 512

type tokenKind int

const (
	tokEOF tokenKind = iota
	tokLabel
	tokString
	tokLBrace
	tokRBrace
	tokComma
	tokEq
	tokNe
	tokIn
	tokNotIn
	tokContains
	tokStartsWith
	tokEndsWith
	tokNot
	tokAnd
	tokOr
	tokLParen
	tokRParen
	tokHas // value: the label inside has(...)
	tokAll
	tokGlobal
)

func (k tokenKind) String() string {
	switch k {
	case tokEOF:
		return "end of selector"
	case tokLabel:
		return "label"
	case tokString:
		return "string literal"
	case tokLBrace:
		return `"{"`
	case tokRBrace:
		return `"}"`
	case tokComma:
		return `","`
	case tokEq:
		return `"=="`
	case tokNe:
		return `"!="`
	case tokIn:
		return `"in"`
	case tokNotIn:
		return `"not in"`
	case tokContains:
		return `"contains"`
	case tokStartsWith:
		return `"starts with"`
	case tokEndsWith:
		return `"ends with"`
	case tokNot:
		return `"!"`
	case tokAnd:
		return `"&&"`
	case tokOr:
		return `"||"`
	case tokLParen:
		return `"("`
	case tokRParen:
		return `")"`
	case tokHas:
		return "has()"
	case tokAll:
		return "all()"
	case tokGlobal:
		return "global()"
	}
	return "unknown token"
}

type token struct {
	kind  tokenKind
	value string
	pos   int // byte offset in the input, for error messages
}

// SyntaxError reports where and why a selector failed to parse.
type SyntaxError struct {
	Selector string
	Offset   int // byte offset of the problem
	Msg      string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid selector %q: %s at offset %d", e.Selector, e.Msg, e.Offset)
}

func isLabelChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == '-'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// tokenize splits a selector into tokens following the exact rules of
// calico.md §3.1: only spaces and tabs are whitespace, string literals have
// no escapes, keyword operators are recognised only right after a label and
// must end at a word boundary, and function names must be followed
// directly by "(".
func tokenize(in string) ([]token, error) {
	var toks []token
	i := 0
	errAt := func(pos int, format string, args ...any) error {
		return &SyntaxError{Selector: in, Offset: pos, Msg: fmt.Sprintf(format, args...)}
	}
	skipSpace := func(j int) int {
		for j < len(in) && isSpace(in[j]) {
			j++
		}
		return j
	}
	// keyword reports whether word starts at j and ends at a word boundary;
	// it returns the offset after the word.
	keyword := func(j int, word string) (int, bool) {
		if !strings.HasPrefix(in[j:], word) {
			return j, false
		}
		end := j + len(word)
		if end < len(in) && isLabelChar(in[end]) {
			return j, false
		}
		return end, true
	}
	for {
		i = skipSpace(i)
		if i >= len(in) {
			toks = append(toks, token{kind: tokEOF, pos: i})
			return toks, nil
		}
		start := i
		afterLabel := len(toks) > 0 && toks[len(toks)-1].kind == tokLabel
		switch c := in[i]; c {
		case '(':
			toks = append(toks, token{kind: tokLParen, pos: start})
			i++
		case ')':
			toks = append(toks, token{kind: tokRParen, pos: start})
			i++
		case '{':
			toks = append(toks, token{kind: tokLBrace, pos: start})
			i++
		case '}':
			toks = append(toks, token{kind: tokRBrace, pos: start})
			i++
		case ',':
			toks = append(toks, token{kind: tokComma, pos: start})
			i++
		case '"', '\'':
			end := strings.IndexByte(in[i+1:], c)
			if end < 0 {
				return nil, errAt(start, "unterminated string literal")
			}
			toks = append(toks, token{kind: tokString, value: in[i+1 : i+1+end], pos: start})
			i += end + 2
		case '=':
			if i+1 < len(in) && in[i+1] == '=' {
				toks = append(toks, token{kind: tokEq, pos: start})
				i += 2
			} else {
				return nil, errAt(start, `expected "==", found a single "="`)
			}
		case '!':
			if i+1 < len(in) && in[i+1] == '=' {
				toks = append(toks, token{kind: tokNe, pos: start})
				i += 2
			} else {
				toks = append(toks, token{kind: tokNot, pos: start})
				i++
			}
		case '&':
			if i+1 < len(in) && in[i+1] == '&' {
				toks = append(toks, token{kind: tokAnd, pos: start})
				i += 2
			} else {
				return nil, errAt(start, `expected "&&", found a single "&"`)
			}
		case '|':
			if i+1 < len(in) && in[i+1] == '|' {
				toks = append(toks, token{kind: tokOr, pos: start})
				i += 2
			} else {
				return nil, errAt(start, `expected "||", found a single "|"`)
			}
		default:
			if afterLabel {
				// Right after a label only an operator may follow.
				if end, ok := keyword(i, "contains"); ok {
					toks = append(toks, token{kind: tokContains, pos: start})
					i = end
					continue
				}
				if end, ok := keyword(i, "in"); ok {
					toks = append(toks, token{kind: tokIn, pos: start})
					i = end
					continue
				}
				if two, kind, ok := twoWordOperator(in, i); ok {
					end, ok := keyword(skipSpace(i+len(two[0])), two[1])
					if ok {
						toks = append(toks, token{kind: kind, pos: start})
						i = end
						continue
					}
				}
				return nil, errAt(start, "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label %q",
					toks[len(toks)-1].value)
			}
			if tok, end, ok, err := function(in, i); ok || err != nil {
				if err != nil {
					return nil, err
				}
				toks = append(toks, tok)
				i = end
				continue
			}
			j := i
			for j < len(in) && isLabelChar(in[j]) {
				j++
			}
			if j == i {
				return nil, errAt(start, "unexpected character %q", in[i])
			}
			if j-i > maxLabelLen {
				return nil, errAt(start, "label longer than %d characters", maxLabelLen)
			}
			toks = append(toks, token{kind: tokLabel, value: in[i:j], pos: start})
			i = j
		}
	}
}

// twoWordOperator recognises the first word of "not in", "starts with" and
// "ends with" (the words may be separated by spaces or tabs).
func twoWordOperator(in string, i int) ([2]string, tokenKind, bool) {
	for _, op := range []struct {
		words [2]string
		kind  tokenKind
	}{
		{[2]string{"not", "in"}, tokNotIn},
		{[2]string{"starts", "with"}, tokStartsWith},
		{[2]string{"ends", "with"}, tokEndsWith},
	} {
		if strings.HasPrefix(in[i:], op.words[0]) {
			return op.words, op.kind, true
		}
	}
	return [2]string{}, 0, false
}

// function recognises has(label), all() and global(); whitespace is
// allowed inside the parentheses but the "(" must follow the name
// directly.
func function(in string, i int) (token, int, bool, error) {
	errAt := func(pos int, msg string) error {
		return &SyntaxError{Selector: in, Offset: pos, Msg: msg}
	}
	skip := func(j int) int {
		for j < len(in) && isSpace(in[j]) {
			j++
		}
		return j
	}
	switch {
	case strings.HasPrefix(in[i:], "has("):
		j := skip(i + len("has("))
		k := j
		for k < len(in) && isLabelChar(in[k]) {
			k++
		}
		if k == j {
			return token{}, 0, false, errAt(j, "expected a label inside has()")
		}
		if k-j > maxLabelLen {
			return token{}, 0, false, errAt(j, fmt.Sprintf("label longer than %d characters", maxLabelLen))
		}
		l := skip(k)
		if l >= len(in) || in[l] != ')' {
			return token{}, 0, false, errAt(l, `expected ")" to close has(`)
		}
		return token{kind: tokHas, value: in[j:k], pos: i}, l + 1, true, nil
	case strings.HasPrefix(in[i:], "all("), strings.HasPrefix(in[i:], "global("):
		kind, name := tokAll, "all("
		if in[i] == 'g' {
			kind, name = tokGlobal, "global("
		}
		j := skip(i + len(name))
		if j >= len(in) || in[j] != ')' {
			return token{}, 0, false, errAt(j, `expected ")" to close `+name)
		}
		return token{kind: kind, pos: i}, j + 1, true, nil
	}
	return token{}, 0, false, nil
}
