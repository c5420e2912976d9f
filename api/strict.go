package api

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// strictChecker walks a generic JSON tree (decoded with UseNumber) against
// the Go type it is meant for, before the real decode. encoding/json can
// reject unknown fields but cannot say where they are, and it matches
// field names case-insensitively; this walk names the exact JSON path of
// every unknown or mistyped field, and reports Calico fields weft knows
// but does not implement with the reason.
//
// It also mirrors sigs.k8s.io/yaml's target-aware decoding as used by
// calicoctl: a YAML number or boolean written where a string is expected
// (a label value `version: 1`) becomes that string.
type strictChecker struct {
	kind     string
	problems []string
}

const maxProblems = 20

func (c *strictChecker) report(path, format string, args ...any) {
	if len(c.problems) >= maxProblems {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	msg = clipMessage(msg)
	c.problems = append(c.problems, msg)
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// check validates v against t and returns v with string coercions applied.
func (c *strictChecker) check(t reflect.Type, v any, path string) any {
	if v == nil {
		return nil // null leaves the zero value, as encoding/json does
	}
	if t.Kind() == reflect.Pointer {
		return c.check(t.Elem(), v, path)
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		raw, err := json.Marshal(v)
		if err == nil {
			err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw)
		}
		if err != nil {
			c.report(path, "%v", err)
		}
		return v
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			c.report(path, "expected an object, got %s", describeJSON(v))
			return v
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := joinPath(path, k)
			ft, ok := fields[k]
			if !ok {
				if reason, known := unsupportedReason(c.kind, p); known {
					c.report("", "field %q is not supported by weft: %s", p, reason)
				} else {
					c.report("", "unknown field %q", p)
				}
				continue
			}
			obj[k] = c.check(ft, obj[k], p)
		}
		return obj
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			c.report(path, "expected a list, got %s", describeJSON(v))
			return v
		}
		for i := range arr {
			arr[i] = c.check(t.Elem(), arr[i], fmt.Sprintf("%s[%d]", path, i))
		}
		return arr
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			c.report(path, "expected an object, got %s", describeJSON(v))
			return v
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			obj[k] = c.check(t.Elem(), obj[k], path+"["+strconv.Quote(k)+"]")
		}
		return obj
	case reflect.String:
		switch x := v.(type) {
		case string:
			return x
		case json.Number:
			return x.String()
		case bool:
			return strconv.FormatBool(x)
		}
		c.report(path, "expected a string, got %s", describeJSON(v))
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.report(path, "expected true or false, got %s", describeJSON(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		min, max := int64(math.MinInt64)>>(64-t.Bits()), int64(math.MaxInt64)>>(64-t.Bits())
		if !ok {
			c.report(path, "expected an integer, got %s", describeJSON(v))
		} else if i, err := strconv.ParseInt(n.String(), 10, t.Bits()); err != nil || i < min || i > max {
			c.report(path, "expected an integer between %d and %d, got %s", min, max, n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		max := uint64(math.MaxUint64) >> (64 - t.Bits())
		if !ok {
			c.report(path, "expected an integer, got %s", describeJSON(v))
		} else if _, err := strconv.ParseUint(n.String(), 10, t.Bits()); err != nil {
			c.report(path, "expected an integer between 0 and %d, got %s", max, n)
		}
	case reflect.Float32, reflect.Float64:
		if n, ok := v.(json.Number); !ok {
			c.report(path, "expected a number, got %s", describeJSON(v))
		} else if _, err := n.Float64(); err != nil {
			c.report(path, "expected a number, got %s", n)
		}
	case reflect.Interface:
		return v
	default:
		c.report(path, "cannot decode into %s", t)
	}
	return v
}

// jsonFields maps the JSON names of a struct's fields (with anonymous
// embedded structs inlined) to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func describeJSON(v any) string {
	switch x := v.(type) {
	case string:
		return "string " + strconv.Quote(clipTo(x, 40))
	case json.Number:
		return "number " + x.String()
	case bool:
		return "boolean " + strconv.FormatBool(x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
