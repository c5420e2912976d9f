package config

import (
	"strconv"
	"strings"
)

// keyPath is the full name of a value in the configuration document: table
// and key names plus array indexes, rendered as `network.pool[1].cidr`. Both
// the decoder and the line index build paths with the same methods, so a path
// is also the lookup key for the line a value is written on.
type keyPath []pathElem

type pathElem struct {
	key     string
	index   int
	isIndex bool
}

// Key returns the path of the named child. The receiver is never modified.
func (p keyPath) Key(name string) keyPath {
	return append(p[:len(p):len(p)], pathElem{key: name})
}

// Index returns the path of the i-th element of the array at p.
func (p keyPath) Index(i int) keyPath {
	return append(p[:len(p):len(p)], pathElem{index: i, isIndex: true})
}

// Parent returns the path one level up; the root's parent is the root.
func (p keyPath) Parent() keyPath {
	if len(p) == 0 {
		return p
	}
	return p[: len(p)-1 : len(p)-1]
}

// String renders the path as TOML would name it, quoting key parts that are
// not bare keys (label keys such as "example.com/zone").
func (p keyPath) String() string {
	var b strings.Builder
	for i, e := range p {
		if e.isIndex {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tomlKey(e.key))
	}
	return b.String()
}

// tomlKey renders one key part: bare when TOML allows it, quoted otherwise.
func tomlKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !isBareKeyChar(r) {
			return tomlString(k)
		}
	}
	return k
}

func isBareKeyChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

// tomlString quotes s as a TOML basic string. Go's strconv.Quote is not
// usable: it emits escapes (\x, \a, \v) that TOML does not define.
func tomlString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				b.WriteString(`\u00`)
				b.WriteByte("0123456789abcdef"[r>>4])
				b.WriteByte("0123456789abcdef"[r&0xf])
				continue
			}
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
