package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"
)

// DecodeError locates a problem in the input of Decode.
type DecodeError struct {
	// Document is the 1-based position of the document among the non-empty
	// documents of the input.
	Document int
	// Item is the 1-based position inside a List, 0 outside lists.
	Item int
	// Line is the first line of the document in the input (YAML only; 0
	// when unknown).
	Line int
	// Kind, Namespace and Name identify the resource when they could be read.
	Kind, Namespace, Name string
	// Problems are the individual messages, e.g. `unknown field "spec.x"`.
	Problems []string
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "document %d", e.Document)
	if e.Item > 0 {
		fmt.Fprintf(&b, ", item %d", e.Item)
	}
	switch {
	case e.Kind != "":
		name := clipName(e.Name)
		if name == "" {
			name = "<no name>"
		}
		if e.Namespace != "" {
			name = clipName(e.Namespace) + "/" + name
		}
		fmt.Fprintf(&b, " (%s %s)", clipName(e.Kind), name)
	case e.Line > 0:
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	b.WriteString(": ")
	b.WriteString(strings.Join(e.Problems, "; "))
	return b.String()
}

// rawDocument is one document of the input as a generic JSON tree.
type rawDocument struct {
	line  int
	value any
}

// Decode reads resources from YAML (one or more documents separated by
// "---") or JSON (one or more concatenated values). A document may be a
// single resource, a List (kind "List" or "<Kind>List" with items), or a
// YAML/JSON sequence of resources. Decoding is strict: apiVersion must be
// projectcalico.org/v3, and an unknown, misspelt or unsupported field is an
// error naming the document and the field's JSON path. Decode neither
// defaults nor validates (see Default, Validate). An input with no
// documents yields no resources and no error.
func Decode(data []byte) ([]Resource, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, err
	}
	var out []Resource
	for i, d := range docs {
		rs, err := decodeDocument(i+1, d)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

func splitDocuments(data []byte) ([]rawDocument, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return splitJSON(data)
	}
	var docs []rawDocument
	for _, y := range splitYAML(data) {
		j, err := yaml.YAMLToJSONStrict(y.text)
		if err != nil {
			return nil, &DecodeError{Document: len(docs) + 1, Line: y.line, Problems: []string{"invalid YAML: " + yamlProblem(err)}}
		}
		v, err := decodeGeneric(j)
		if err != nil {
			return nil, &DecodeError{Document: len(docs) + 1, Line: y.line, Problems: []string{err.Error()}}
		}
		if v == nil { // "null", "~"
			continue
		}
		docs = append(docs, rawDocument{line: y.line, value: v})
	}
	return docs, nil
}

// yamlProblem is the parser's message on one line: the YAML library puts
// the detail of some errors (a duplicate key) on lines of their own
// ("yaml: unmarshal errors:\n  line 3: key \"kind\" already set in map"),
// which a one-line error would drop.
func yamlProblem(err error) string {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	msg = strings.Replace(msg, "yaml: unmarshal errors:\n", "yaml: ", 1)
	var parts []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

func splitJSON(data []byte) ([]rawDocument, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var docs []rawDocument
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, &DecodeError{Document: len(docs) + 1, Problems: []string{"invalid JSON: " + err.Error()}}
		}
		if err := checkDuplicateKeys(raw); err != nil {
			return nil, &DecodeError{Document: len(docs) + 1, Problems: []string{err.Error()}}
		}
		v, err := decodeGeneric(raw)
		if err != nil {
			return nil, &DecodeError{Document: len(docs) + 1, Problems: []string{err.Error()}}
		}
		if v != nil {
			docs = append(docs, rawDocument{value: v})
		}
	}
}

func decodeGeneric(j []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return v, nil
}

type yamlDocument struct {
	text []byte
	line int // 1-based first line
}

// splitYAML cuts a YAML stream at "---" (and "...") lines, dropping
// documents that hold only blanks and comments.
func splitYAML(data []byte) []yamlDocument {
	var docs []yamlDocument
	var cur []byte
	start := 1
	flush := func() {
		if hasContent(cur) {
			docs = append(docs, yamlDocument{text: cur, line: start})
		}
		cur = nil
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	for i, l := range lines {
		bare := bytes.TrimRight(l, "\r\n")
		switch {
		case bytes.Equal(bare, []byte("---")) || bytes.Equal(bare, []byte("...")):
			flush()
			start = i + 2
		case bytes.HasPrefix(bare, []byte("--- ")) || bytes.HasPrefix(bare, []byte("---\t")):
			flush()
			start = i + 1
			cur = append(cur, bytes.TrimLeft(l[3:], " \t")...)
		default:
			cur = append(cur, l...)
		}
	}
	flush()
	return docs
}

func hasContent(doc []byte) bool {
	for _, l := range bytes.Split(doc, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] != '#' {
			return true
		}
	}
	return false
}

// checkDuplicateKeys rejects a JSON object with a repeated key (YAML input
// gets the same check from the YAML parser).
func checkDuplicateKeys(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		object bool
		keys   map[string]bool
		expect bool // next string token in an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if k, ok := tok.(string); ok {
				if top.keys[k] {
					return fmt.Errorf("duplicate key %q", k)
				}
				top.keys[k] = true
				top.expect = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, expect: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value just ended; in an object the next token is a key.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true
		}
	}
}

func decodeDocument(index int, d rawDocument) ([]Resource, error) {
	docErr := func(item int, problems ...string) error {
		return &DecodeError{Document: index, Item: item, Line: d.line, Problems: problems}
	}
	switch v := d.value.(type) {
	case []any:
		return decodeItems(index, d.line, v, "")
	case map[string]any:
		kind, _ := v["kind"].(string)
		if strings.HasSuffix(kind, "List") {
			return decodeList(index, d.line, v)
		}
		r, err := decodeResource(v, "")
		if err != nil {
			err.Document, err.Line = index, d.line
			return nil, err
		}
		return []Resource{r}, nil
	default:
		return nil, docErr(0, fmt.Sprintf("expected a resource (an object with apiVersion, kind, metadata and spec), got %s", describeJSON(v)))
	}
}

func decodeList(index, line int, v map[string]any) ([]Resource, error) {
	kind := v["kind"].(string)
	itemKind := ""
	if kind != "List" {
		itemKind = strings.TrimSuffix(kind, "List")
	}
	fail := func(problem string) error {
		return &DecodeError{Document: index, Line: line, Kind: kind, Problems: []string{problem}}
	}
	apiVersion, _ := v["apiVersion"].(string)
	switch {
	case apiVersion == "" || apiVersion == Group:
	case kind == "List" && apiVersion == "v1":
	default:
		return nil, fail(clipMessage(fmt.Sprintf("unsupported apiVersion %q (weft accepts %s)", apiVersion, Group)))
	}
	for k := range v {
		switch k {
		case "apiVersion", "kind", "metadata", "items":
		default:
			return nil, fail(clipMessage(fmt.Sprintf("unknown field %q", k)))
		}
	}
	if itemKind != "" {
		if _, err := New(itemKind); err != nil {
			return nil, fail(err.Error())
		}
	}
	items, ok := v["items"].([]any)
	if !ok && v["items"] != nil {
		return nil, fail("items: expected a list")
	}
	return decodeItems(index, line, items, itemKind)
}

func decodeItems(index, line int, items []any, itemKind string) ([]Resource, error) {
	var out []Resource
	for i, it := range items {
		obj, ok := it.(map[string]any)
		if !ok {
			return nil, &DecodeError{Document: index, Item: i + 1, Line: line,
				Problems: []string{fmt.Sprintf("expected a resource, got %s", describeJSON(it))}}
		}
		r, err := decodeResource(obj, itemKind)
		if err != nil {
			err.Document, err.Item, err.Line = index, i+1, line
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// decodeResource strictly decodes one resource object. listKind, when set,
// is the kind items of a typed list default to and must have.
func decodeResource(obj map[string]any, listKind string) (Resource, *DecodeError) {
	e := &DecodeError{}
	e.Kind, _ = obj["kind"].(string)
	if md, ok := obj["metadata"].(map[string]any); ok {
		e.Name, _ = md["name"].(string)
		e.Namespace, _ = md["namespace"].(string)
	}
	fail := func(format string, args ...any) (Resource, *DecodeError) {
		e.Problems = append(e.Problems, clipMessage(fmt.Sprintf(format, args...)))
		return nil, e
	}
	if listKind != "" {
		if e.Kind == "" {
			e.Kind = listKind
			obj["kind"] = listKind
		} else if e.Kind != listKind {
			return fail("kind %s in a %sList", e.Kind, listKind)
		}
		if _, ok := obj["apiVersion"]; !ok {
			obj["apiVersion"] = Group
		}
	}
	switch av := obj["apiVersion"].(type) {
	case nil:
		return fail("apiVersion is missing (weft accepts %s)", Group)
	case string:
		if av != Group {
			return fail("unsupported apiVersion %q (weft accepts %s)", av, Group)
		}
	default:
		return fail("apiVersion: expected a string, got %s", describeJSON(av))
	}
	if _, ok := obj["kind"].(string); !ok {
		return fail("kind is missing")
	}
	r, err := New(e.Kind)
	if err != nil {
		return fail("%v", err)
	}
	if ignoredStatus(e.Kind) {
		delete(obj, "status")
	}
	c := strictChecker{kind: e.Kind}
	checked := c.check(reflect.TypeOf(r).Elem(), obj, "")
	if len(c.problems) > 0 {
		e.Problems = c.problems
		return nil, e
	}
	raw, err := json.Marshal(checked)
	if err == nil {
		err = json.Unmarshal(raw, r)
	}
	if err != nil {
		return fail("%v", err)
	}
	return r, nil
}

// Encode renders resources as "yaml" or "json": one resource as itself,
// several as a List ("<Kind>List" when they share a kind). apiVersion and
// kind are always filled in; the resources are not modified. YAML keys are
// sorted, as calicoctl prints them.
func Encode(format string, rs []Resource) ([]byte, error) {
	if len(rs) == 1 {
		return marshal(format, withTypeMeta(rs[0]))
	}
	kind := ""
	for i, r := range rs {
		if i == 0 {
			kind = r.Kind()
		} else if r.Kind() != kind {
			kind = ""
			break
		}
	}
	return EncodeList(format, kind, rs)
}

// EncodeList renders resources as a List even when there are fewer than
// two: "<kind>List" (apiVersion projectcalico.org/v3) when kind is set,
// otherwise a generic "List" (apiVersion v1).
func EncodeList(format, kind string, rs []Resource) ([]byte, error) {
	type list struct {
		APIVersion string     `json:"apiVersion"`
		Kind       string     `json:"kind"`
		Items      []Resource `json:"items"`
	}
	l := list{APIVersion: "v1", Kind: "List", Items: make([]Resource, 0, len(rs))}
	if kind != "" {
		l.APIVersion, l.Kind = Group, kind+"List"
	}
	for _, r := range rs {
		l.Items = append(l.Items, withTypeMeta(r))
	}
	return marshal(format, l)
}

func marshal(format string, v any) ([]byte, error) {
	switch strings.ToLower(format) {
	case "yaml", "yml":
		out, err := yaml.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding YAML: %w", err)
		}
		return out, nil
	case "json":
		out, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encoding JSON: %w", err)
		}
		return append(out, '\n'), nil
	}
	return nil, fmt.Errorf("unknown output format %q (want yaml or json)", format)
}

// withTypeMeta returns a shallow copy of r with apiVersion and kind set.
func withTypeMeta(r Resource) Resource {
	v := reflect.ValueOf(r).Elem()
	c := reflect.New(v.Type())
	c.Elem().Set(v)
	cr := c.Interface().(Resource)
	*cr.GetTypeMeta() = TypeMeta{Kind: r.Kind(), APIVersion: Group}
	return cr
}
