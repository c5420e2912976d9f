package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads and parses the configuration file at path; see Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes a TOML configuration onto Default() and validates it.
// filename is only used in error messages. Any problem — bad syntax, an
// unknown key, a wrong type, a bad value — gives an *Error listing every
// problem with its file, line and full key; its Error() is one line.
func Parse(data []byte, filename string) (*Config, error) {
	hostname, _ := os.Hostname()
	return parse(data, filename, defaults(hostname))
}

// maxFileSize bounds what Parse reads: a configuration is a few kilobytes,
// and the TOML parser is slow on huge, deeply nested input.
const maxFileSize = 1 << 20

func parse(data []byte, filename string, base Config) (*Config, error) {
	if len(data) > maxFileSize {
		return nil, &Error{Errors: []FieldError{{File: filename, Msg: fmt.Sprintf("file is larger than %d bytes", maxFileSize)}}}
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		fe := FieldError{File: filename, Msg: "invalid TOML: " + err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			fe.Line, fe.Msg = pe.Position.Line, "invalid TOML: "+pe.Message
			// The lexer reports an unexpected end of line after it has
			// counted that newline, one line too far.
			if strings.Contains(pe.Message, `'\n'`) && fe.Line > 1 {
				fe.Line--
			}
		}
		return nil, &Error{Errors: []FieldError{fe}}
	}

	lines := indexLines(string(data))
	d := &decoder{lines: lines, set: map[string]bool{}}
	cfg := base
	d.table(nil, raw, reflect.ValueOf(&cfg).Elem())

	if cfg.Node.Name == "" { // name = "" is how the example writes "the hostname"
		cfg.Node.Name = base.Node.Name
	}
	pools := keyPath{}.Key("network").Key("pool")
	if d.isSet(pools) {
		for i := range cfg.Network.Pools {
			pool := pools.Index(i)
			poolDefaults(&cfg.Network.Pools[i], func(key string) bool { return d.isSet(pool.Key(key)) })
		}
	}

	// A value that failed to decode kept its default, so what validation
	// says about it (or below it) is noise next to the decode problem.
	probs := d.problems
	for _, vp := range cfg.validate() {
		if !underAny(vp.key, d.problems) {
			probs = append(probs, vp)
		}
	}
	if len(probs) > 0 {
		return nil, newError(filename, lines, probs)
	}
	return &cfg, nil
}

func underAny(p keyPath, probs []problem) bool {
	s := p.String()
	for _, q := range probs {
		qs := q.key.String()
		if s == qs || strings.HasPrefix(s, qs+".") || strings.HasPrefix(s, qs+"[") {
			return true
		}
	}
	return false
}

// newError gives each problem its file and line and orders them top to
// bottom; problems about values not written in the file (line 0) go last.
func newError(filename string, lines lineIndex, probs []problem) *Error {
	errs := make([]FieldError, len(probs))
	for i, p := range probs {
		errs[i] = FieldError{File: filename, Line: lines.lineOf(p.key), Key: p.key.String(), Msg: p.msg}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		li, lj := errs[i].Line, errs[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
	return &Error{Errors: errs}
}
