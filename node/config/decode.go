package config

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
)

// problem is a FieldError before it is given its file and line.
type problem struct {
	key keyPath
	msg string
}

// decoder assigns a document parsed by BurntSushi/toml (as plain maps and
// slices) onto a Config, following the struct's toml tags.
//
// It replaces toml.Decode's own reflection because weft needs what that
// cannot give: every unknown key and wrong type in one pass (the library stops
// at the first, in map order), the index of the [[network.pool]] a problem is
// in, exact key matching (the library also accepts "Voters" for "voters"),
// arrays that replace a default instead of merging into its elements, and a
// record of which keys the file set (per-pool defaults depend on it).
type decoder struct {
	lines    lineIndex
	set      map[string]bool // keyPath.String() of every key the file sets
	problems []problem
}

func (d *decoder) fail(p keyPath, format string, args ...any) {
	d.problems = append(d.problems, problem{key: p, msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) isSet(p keyPath) bool { return d.set[p.String()] }

// table decodes the TOML table m at path p into the struct rv.
func (d *decoder) table(p keyPath, m map[string]any, rv reflect.Value) {
	fields := map[string]int{}
	var names []string
	for i := 0; i < rv.NumField(); i++ {
		if name := tomlName(rv.Type().Field(i)); name != "" {
			fields[name] = i
			names = append(names, name)
		}
	}
	for _, k := range d.inFileOrder(p, m) {
		kp := p.Key(k)
		i, ok := fields[k]
		if !ok {
			what := "key"
			if _, isTable := m[k].(map[string]any); isTable {
				what = "table"
			}
			d.fail(kp, "unknown %s%s", what, suggest(k, names))
			continue
		}
		d.set[kp.String()] = true
		d.value(kp, m[k], rv.Field(i))
	}
}

// inFileOrder returns the keys of m sorted by the line they are written on,
// so that problems are found, and reported, top to bottom.
func (d *decoder) inFileOrder(p keyPath, m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		li, lj := d.lines.lineOf(p.Key(keys[i])), d.lines.lineOf(p.Key(keys[j]))
		if li != lj {
			return li < lj
		}
		return keys[i] < keys[j]
	})
	return keys
}

// value decodes raw into rv (which is addressable); on a type mismatch it
// records a problem and leaves rv unchanged.
func (d *decoder) value(p keyPath, raw any, rv reflect.Value) {
	if u, ok := rv.Addr().Interface().(encoding.TextUnmarshaler); ok {
		s, ok := raw.(string)
		if !ok {
			want := "a string"
			if _, isDuration := u.(*Duration); isDuration {
				want = `a duration string such as "90s"`
			}
			d.fail(p, "must be %s, got %s", want, describe(raw))
			return
		}
		if err := u.UnmarshalText([]byte(s)); err != nil {
			d.fail(p, "%v", err)
		}
		return
	}
	switch rv.Kind() {
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			d.fail(p, "must be a table, got %s", describe(raw))
			return
		}
		d.table(p, m, rv)
	case reflect.String:
		s, ok := raw.(string)
		if !ok {
			d.fail(p, "must be a string, got %s", describe(raw))
			return
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			d.fail(p, "must be true or false, got %s", describe(raw))
			return
		}
		rv.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := raw.(int64)
		if !ok {
			d.fail(p, "must be an integer, got %s", describe(raw))
			return
		}
		if rv.OverflowInt(n) {
			d.fail(p, "%d is out of range", n)
			return
		}
		rv.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := raw.(int64)
		if !ok {
			d.fail(p, "must be an integer, got %s", describe(raw))
			return
		}
		if n < 0 || rv.OverflowUint(uint64(n)) {
			d.fail(p, "%d is out of range 0-%d", n, uint64(1)<<rv.Type().Bits()-1)
			return
		}
		rv.SetUint(uint64(n))
	case reflect.Slice:
		d.slice(p, raw, rv)
	case reflect.Map:
		d.stringMap(p, raw, rv)
	default:
		// Only reachable if a field of an unsupported kind is added to Config;
		// TestEveryFieldDecodes catches that.
		d.fail(p, "cannot decode into %s", rv.Type())
	}
}

func (d *decoder) slice(p keyPath, raw any, rv reflect.Value) {
	var elems []any
	switch a := raw.(type) {
	case []any:
		elems = a
	case []map[string]any: // an array of tables ([[x]] headers)
		for _, m := range a {
			elems = append(elems, m)
		}
	default:
		if _, isTable := raw.(map[string]any); isTable && rv.Type().Elem().Kind() == reflect.Struct {
			d.fail(p, "must be an array of tables: write [[%s]], not [%s]", p, p)
			return
		}
		want := "an array"
		if rv.Type().Elem().Kind() == reflect.String {
			want = `an array of strings (["a", "b"])`
		}
		d.fail(p, "must be %s, got %s", want, describe(raw))
		return
	}
	if len(elems) == 0 {
		// nil and empty mean the same to every user of Config; keeping one
		// form lets Effective output parse back to an equal Config.
		rv.SetZero()
		return
	}
	out := reflect.MakeSlice(rv.Type(), len(elems), len(elems))
	for i, e := range elems {
		d.value(p.Index(i), e, out.Index(i))
	}
	rv.Set(out)
}

func (d *decoder) stringMap(p keyPath, raw any, rv reflect.Value) {
	m, ok := raw.(map[string]any)
	if !ok {
		d.fail(p, "must be a table, got %s", describe(raw))
		return
	}
	if rv.Type().Key().Kind() != reflect.String {
		d.fail(p, "cannot decode into %s", rv.Type())
		return
	}
	if len(m) == 0 {
		rv.SetZero()
		return
	}
	out := reflect.MakeMapWithSize(rv.Type(), len(m))
	for _, k := range d.inFileOrder(p, m) {
		kp := p.Key(k)
		d.set[kp.String()] = true
		elem := reflect.New(rv.Type().Elem()).Elem()
		d.value(kp, m[k], elem)
		out.SetMapIndex(reflect.ValueOf(k).Convert(rv.Type().Key()), elem)
	}
	rv.Set(out)
}

// tomlName is the key a struct field is written as, "" for untagged fields.
func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name := f.Tag.Get("toml")
	for i := 0; i < len(name); i++ {
		if name[i] == ',' {
			name = name[:i]
			break
		}
	}
	if name == "-" {
		return ""
	}
	return name
}

// describe names the TOML type (and value, when short) of a decoded value.
func describe(raw any) string {
	switch v := raw.(type) {
	case string:
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	default: // time.Time and toml.LocalDate/LocalTime/LocalDateTime
		return "a date/time"
	}
}

// suggest returns ` (did you mean "x"?)` for the known name closest to an
// unknown key, when it is a likely typo.
func suggest(key string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if dist := editDistance(key, n); dist < bestDist {
			best, bestDist = n, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
