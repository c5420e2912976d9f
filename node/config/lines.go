package config

import (
	"strconv"
	"strings"
)

// The TOML library reports no position for a decoded key (its MetaData keeps
// positions privately, keyed without array indexes, so the second
// [[network.pool]] cannot be told from the first). lineIndex is a small scan of
// the document that records the line on which every table, key and array
// element starts. It runs only on documents the library has already parsed,
// so it may be lenient, but it must never panic or loop on any input.

// lineIndex maps keyPath.String() to a 1-based line number.
type lineIndex map[string]int

// lineOf returns the line of p, or of its nearest ancestor written in the
// document (a missing key is reported on its table's line), or 0.
func (idx lineIndex) lineOf(p keyPath) int {
	for {
		if l, ok := idx[p.String()]; ok {
			return l
		}
		if len(p) == 0 {
			return 0
		}
		p = p.Parent()
	}
}

type lineScanner struct {
	s    string
	i    int
	line int
	idx  lineIndex
	// arrayTables counts the [[x]] headers seen per resolved table path, to
	// give each element its index (nested arrays of tables count per parent
	// element because the parent's index is part of the resolved path).
	arrayTables map[string]int
}

func indexLines(doc string) lineIndex {
	sc := &lineScanner{s: doc, line: 1, idx: lineIndex{}, arrayTables: map[string]int{}}
	sc.document()
	return sc.idx
}

func (sc *lineScanner) eof() bool { return sc.i >= len(sc.s) }

func (sc *lineScanner) peek() byte {
	if sc.eof() {
		return 0
	}
	return sc.s[sc.i]
}

func (sc *lineScanner) advance() {
	if sc.eof() {
		return
	}
	if sc.s[sc.i] == '\n' {
		sc.line++
	}
	sc.i++
}

func (sc *lineScanner) hasPrefix(p string) bool {
	return len(sc.s)-sc.i >= len(p) && sc.s[sc.i:sc.i+len(p)] == p
}

// maxIndexedDepth bounds the paths the index records. weft's keys are at
// most four deep (network.pool[0].cidr); without a bound, deeply nested
// arrays would make the scan quadratic.
const maxIndexedDepth = 8

// child extends p by e, or returns p unchanged once it is maxIndexedDepth
// deep (so everything deeper is attributed to that ancestor).
func child(p keyPath, e pathElem) keyPath {
	if len(p) >= maxIndexedDepth {
		return p
	}
	return append(p[:len(p):len(p)], e)
}

// record keeps the first line a path appears on (a table implied by a dotted
// key is "defined" where it is first used).
func (sc *lineScanner) record(p keyPath, line int) {
	k := p.String()
	if _, ok := sc.idx[k]; !ok {
		sc.idx[k] = line
	}
}

func (sc *lineScanner) skipSpaces() {
	for c := sc.peek(); c == ' ' || c == '\t'; c = sc.peek() {
		sc.advance()
	}
}

func (sc *lineScanner) skipComment() {
	if sc.peek() != '#' {
		return
	}
	for !sc.eof() && sc.peek() != '\n' {
		sc.advance()
	}
}

// skipBlank skips whitespace, newlines and comments.
func (sc *lineScanner) skipBlank() {
	for !sc.eof() {
		switch sc.peek() {
		case ' ', '\t', '\r', '\n':
			sc.advance()
		case '#':
			sc.skipComment()
		default:
			return
		}
	}
}

func (sc *lineScanner) skipLine() {
	for !sc.eof() && sc.peek() != '\n' {
		sc.advance()
	}
}

func (sc *lineScanner) document() {
	var table keyPath
	for {
		sc.skipBlank()
		if sc.eof() {
			return
		}
		start := sc.i
		if sc.peek() == '[' {
			table = sc.header()
		} else {
			sc.keyValue(table)
		}
		sc.skipLine()
		if sc.i == start { // defensive: never loop without progress
			sc.advance()
		}
	}
}

// header scans [a.b] or [[a.b]] and returns the resolved table path.
func (sc *lineScanner) header() keyPath {
	line := sc.line
	sc.advance()
	isArray := sc.peek() == '['
	if isArray {
		sc.advance()
	}
	names := sc.key()
	var p keyPath
	for n, name := range names {
		p = child(p, pathElem{key: name})
		count, seen := sc.arrayTables[p.String()]
		switch {
		case isArray && n == len(names)-1:
			sc.arrayTables[p.String()] = count + 1
			sc.record(p, line)
			p = child(p, pathElem{index: count, isIndex: true})
		case seen:
			p = child(p, pathElem{index: count - 1, isIndex: true})
		}
	}
	sc.record(p, line)
	return p
}

// key scans a possibly dotted key and returns its parts.
func (sc *lineScanner) key() []string {
	var parts []string
	for {
		sc.skipSpaces()
		start := sc.i
		switch sc.peek() {
		case '"':
			parts = append(parts, unescapeBasic(sc.basicString()))
		case '\'':
			parts = append(parts, sc.literalString())
		default:
			for !sc.eof() && isBareKeyChar(rune(sc.peek())) {
				sc.advance()
			}
			parts = append(parts, sc.s[start:sc.i])
		}
		sc.skipSpaces()
		if sc.peek() != '.' || sc.i == start {
			return parts
		}
		sc.advance()
	}
}

func (sc *lineScanner) keyValue(table keyPath) {
	line := sc.line
	p := table
	for _, name := range sc.key() {
		p = child(p, pathElem{key: name})
		sc.record(p, line)
	}
	sc.skipSpaces()
	if sc.peek() != '=' {
		return
	}
	sc.advance()
	sc.skipSpaces()
	sc.value(p)
}

func (sc *lineScanner) value(p keyPath) {
	switch {
	case sc.hasPrefix(`"""`):
		sc.multiline(`"""`, true)
	case sc.peek() == '"':
		sc.basicString()
	case sc.hasPrefix(`'''`):
		sc.multiline(`'''`, false)
	case sc.peek() == '\'':
		sc.literalString()
	case sc.peek() == '[':
		sc.array(p)
	case sc.peek() == '{':
		sc.inlineTable(p)
	default:
		// Numbers, booleans and date-times (which may contain a space):
		// everything up to the next delimiter.
		for !sc.eof() {
			switch sc.peek() {
			case ',', ']', '}', '\n', '\r', '#':
				return
			}
			sc.advance()
		}
	}
}

func (sc *lineScanner) array(p keyPath) {
	sc.advance() // [
	for n := 0; ; n++ {
		sc.skipBlank()
		if sc.eof() {
			return
		}
		if sc.peek() == ']' {
			sc.advance()
			return
		}
		start := sc.i
		elem := child(p, pathElem{index: n, isIndex: true})
		sc.record(elem, sc.line)
		sc.value(elem)
		sc.skipBlank()
		if sc.peek() == ',' {
			sc.advance()
		} else if sc.i == start {
			sc.advance() // unexpected byte: skip it rather than spin
		}
	}
}

func (sc *lineScanner) inlineTable(p keyPath) {
	sc.advance() // {
	for {
		sc.skipBlank() // TOML 1.1 allows newlines inside inline tables
		if sc.eof() {
			return
		}
		if sc.peek() == '}' {
			sc.advance()
			return
		}
		start := sc.i
		sc.keyValue(p)
		sc.skipBlank()
		if sc.peek() == ',' {
			sc.advance()
		} else if sc.i == start {
			sc.advance()
		}
	}
}

// basicString scans "..." and returns its raw (still escaped) content.
func (sc *lineScanner) basicString() string {
	sc.advance() // "
	start := sc.i
	for !sc.eof() {
		switch sc.peek() {
		case '\\':
			sc.advance()
		case '"':
			raw := sc.s[start:sc.i]
			sc.advance()
			return raw
		case '\n':
			return sc.s[start:sc.i]
		}
		sc.advance()
	}
	return sc.s[start:sc.i]
}

func (sc *lineScanner) literalString() string {
	sc.advance() // '
	start := sc.i
	for !sc.eof() {
		switch sc.peek() {
		case '\'':
			raw := sc.s[start:sc.i]
			sc.advance()
			return raw
		case '\n':
			return sc.s[start:sc.i]
		}
		sc.advance()
	}
	return sc.s[start:sc.i]
}

// multiline scans a triple-quoted string (basic or literal), which may end
// in up to two extra quote characters that belong to its content.
func (sc *lineScanner) multiline(delim string, escapes bool) {
	for range delim {
		sc.advance()
	}
	for !sc.eof() {
		if escapes && sc.peek() == '\\' {
			sc.advance()
			sc.advance()
			continue
		}
		if sc.hasPrefix(delim) {
			for range delim {
				sc.advance()
			}
			for extra := 0; extra < 2 && sc.peek() == delim[0]; extra++ {
				sc.advance()
			}
			return
		}
		sc.advance()
	}
}

// unescapeBasic resolves the escapes of a quoted key. Keys with escapes are
// rare; an escape this does not know leaves the raw text, which only costs
// the line number of that one key.
func unescapeBasic(raw string) string {
	if !strings.Contains(raw, `\`) {
		return raw
	}
	simple := map[byte]string{'b': "\b", 't': "\t", 'n': "\n", 'f': "\f", 'r': "\r", 'e': "\x1b", '"': `"`, '\\': `\`}
	hexLen := map[byte]int{'x': 2, 'u': 4, 'U': 8}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			b.WriteByte(raw[i])
			continue
		}
		if i+1 >= len(raw) {
			return raw
		}
		i++
		if s, ok := simple[raw[i]]; ok {
			b.WriteString(s)
			continue
		}
		n, ok := hexLen[raw[i]]
		if !ok || i+n >= len(raw) {
			return raw
		}
		r, err := strconv.ParseUint(raw[i+1:i+1+n], 16, 32)
		if err != nil {
			return raw
		}
		b.WriteRune(rune(r))
		i += n
	}
	return b.String()
}
