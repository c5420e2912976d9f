package config

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Effective renders c as TOML with every key written out, defaults
// included: what `weft config check` prints. Parse of the output gives a
// Config equal to c.
func (c *Config) Effective() ([]byte, error) {
	var b bytes.Buffer
	rv := reflect.ValueOf(*c)
	for i := 0; i < rv.NumField(); i++ {
		name := tomlName(rv.Type().Field(i))
		if name == "" {
			continue
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		if err := writeTable(&b, keyPath{}.Key(name), rv.Field(i)); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// writeTable writes the struct v as [p] with its plain keys first, then its
// non-empty arrays of tables as [[p.key]] (TOML allows no plain key of [p]
// after them).
func writeTable(b *bytes.Buffer, p keyPath, v reflect.Value) error {
	fmt.Fprintf(b, "[%s]\n", p)
	type arrayTable struct {
		name  string
		value reflect.Value
	}
	var arrays []arrayTable
	for i := 0; i < v.NumField(); i++ {
		name := tomlName(v.Type().Field(i))
		if name == "" {
			continue
		}
		f := v.Field(i)
		if f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct && f.Len() > 0 {
			arrays = append(arrays, arrayTable{name, f})
			continue
		}
		lit, err := literal(f)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Key(name), err)
		}
		fmt.Fprintf(b, "%s = %s\n", tomlKey(name), lit)
	}
	for _, a := range arrays {
		for j := 0; j < a.value.Len(); j++ {
			elem := a.value.Index(j)
			fmt.Fprintf(b, "\n[[%s]]\n", p.Key(a.name))
			for k := 0; k < elem.NumField(); k++ {
				name := tomlName(elem.Type().Field(k))
				if name == "" {
					continue
				}
				lit, err := literal(elem.Field(k))
				if err != nil {
					return fmt.Errorf("%s: %w", p.Key(a.name).Index(j).Key(name), err)
				}
				fmt.Fprintf(b, "%s = %s\n", tomlKey(name), lit)
			}
		}
	}
	return nil
}

// literal renders one value as a TOML literal (inline for arrays and tables).
func literal(v reflect.Value) (string, error) {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		text, err := m.MarshalText()
		if err != nil {
			return "", err
		}
		return tomlString(string(text)), nil
	}
	switch v.Kind() {
	case reflect.String:
		return tomlString(v.String()), nil
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), nil
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			lit, err := literal(v.Index(i))
			if err != nil {
				return "", err
			}
			items[i] = lit
		}
		return "[" + strings.Join(items, ", ") + "]", nil
	case reflect.Map:
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		items := make([]string, len(keys))
		for i, k := range keys {
			lit, err := literal(v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())))
			if err != nil {
				return "", err
			}
			items[i] = tomlKey(k) + " = " + lit
		}
		if len(items) == 0 {
			return "{}", nil
		}
		return "{ " + strings.Join(items, ", ") + " }", nil
	case reflect.Struct:
		var items []string
		for i := 0; i < v.NumField(); i++ {
			name := tomlName(v.Type().Field(i))
			if name == "" {
				continue
			}
			lit, err := literal(v.Field(i))
			if err != nil {
				return "", err
			}
			items = append(items, tomlKey(name)+" = "+lit)
		}
		return "{ " + strings.Join(items, ", ") + " }", nil
	}
	return "", fmt.Errorf("cannot write a %s as TOML", v.Type())
}
