package api

import (
	"fmt"
	"regexp"
	"unicode/utf8"
)

// Error messages repeat the input they complain about, but whatever the
// input they stay one readable line: a 500 KB label value must not come
// back as a 500 KB error (which the CLI could not even read).
const (
	// maxName is the longest valid name (a DNS-1123 subdomain): a name in
	// a message is cut only when it is invalid anyway.
	maxName = 253
	// maxMessage is the longest message left as it is.
	maxMessage = 512
	// maxQuoted is how much of a quoted value a longer message keeps.
	maxQuoted = 64
)

// clipTo shortens s to at most n bytes, cut on a character boundary and
// before a dangling escape, and says how long it was.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (!utf8.RuneStart(s[cut]) || s[cut-1] == '\\') {
		cut--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}

// clipName shortens a resource name for a message.
func clipName(s string) string { return clipTo(s, maxName) }

var quotedValue = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// clipMessage keeps a message short: in one over maxMessage bytes every
// quoted value (input is always quoted, %q) longer than maxQuoted is cut,
// then the message itself if it is still too long.
func clipMessage(msg string) string {
	if len(msg) <= maxMessage {
		return msg
	}
	msg = quotedValue.ReplaceAllStringFunc(msg, func(q string) string {
		if len(q) <= maxQuoted+2 {
			return q
		}
		return `"` + clipTo(q[1:len(q)-1], maxQuoted) + `"`
	})
	return clipTo(msg, 2*maxMessage)
}
