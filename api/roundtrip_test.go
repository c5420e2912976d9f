package api

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// defaultsAdded lists, per testdata file and document, the paths Default
// adds. Anything else added or changed by decode/encode/Default fails the
// round-trip test.
var defaultsAdded = map[string][][]string{
	"ippool.yaml":              {nil, {"spec.ipipMode"}},
	"networkpolicy.yaml":       {{"metadata.labels"}},
	"globalnetworkpolicy.yaml": {{"metadata.labels"}, {"metadata.labels", "spec.tier"}, {"metadata.labels", "spec.tier", "spec.types"}},
}

func readTestdata(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/roundtrip/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// generic re-reads JSON as a tree with json.Number leaves.
func generic(t *testing.T, b []byte) any {
	t.Helper()
	v, err := decodeGeneric(b)
	if err != nil {
		t.Fatalf("generic: %v\n%s", err, b)
	}
	return v
}

// treeDiff lists paths present in b but not a (added) and paths whose
// values differ or that b lacks (changed).
func treeDiff(a, b any, path string) (added, changed []string) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		for k, bv := range bm {
			av, ok := am[k]
			p := joinPath(path, k)
			if !ok {
				added = append(added, p)
				continue
			}
			ad, ch := treeDiff(av, bv, p)
			added, changed = append(added, ad...), append(changed, ch...)
		}
		for k, av := range am {
			// A zero value in the input is the same as no value: Calico's
			// omitempty drops it too.
			if _, ok := bm[k]; !ok && !isZeroJSON(av) {
				changed = append(changed, joinPath(path, k)+" (dropped)")
			}
		}
		return added, changed
	}
	if !reflect.DeepEqual(a, b) {
		return nil, []string{path}
	}
	return nil, nil
}

func isZeroJSON(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return x == ""
	case json.Number:
		return x == "0"
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func TestRoundTripTestdata(t *testing.T) {
	kinds := map[string]bool{}
	for file, data := range readTestdata(t) {
		t.Run(file, func(t *testing.T) {
			rs, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			docs, err := splitDocuments(data)
			if err != nil || len(docs) != len(rs) {
				t.Fatalf("split: %d docs, %d resources, %v", len(docs), len(rs), err)
			}
			for i, r := range rs {
				kinds[r.Kind()] = true
				in := docs[i].value

				// decode -> encode (JSON and YAML) -> decode is the identity.
				for _, format := range []string{"json", "yaml"} {
					out, err := Encode(format, []Resource{r})
					if err != nil {
						t.Fatalf("Encode %s: %v", format, err)
					}
					again, err := Decode(out)
					if err != nil || len(again) != 1 {
						t.Fatalf("re-Decode %s: %v\n%s", format, err, out)
					}
					if !reflect.DeepEqual(again[0], r) {
						t.Errorf("doc %d: %s round trip changed the resource:\n%#v\n%#v", i+1, format, r, again[0])
					}
				}

				// The emitted JSON has exactly the input's fields.
				out, _ := Encode("json", []Resource{r})
				if added, changed := treeDiff(in, generic(t, out), ""); len(added)+len(changed) > 0 {
					t.Errorf("doc %d: encode added %v, changed %v\n%s", i+1, added, changed, out)
				}

				// Default adds only the documented defaults, changes nothing.
				d := DeepCopy(r)
				Default(d)
				if err := Validate(d); err != nil {
					t.Errorf("doc %d: testdata does not validate: %v", i+1, err)
				}
				out, _ = Encode("json", []Resource{d})
				added, changed := treeDiff(in, generic(t, out), "")
				sort.Strings(added)
				var want []string
				if exp := defaultsAdded[file]; i < len(exp) {
					want = exp[i]
				}
				if len(changed) > 0 || !slices.Equal(added, want) {
					t.Errorf("doc %d: Default added %v (want %v), changed %v", i+1, added, want, changed)
				}
				// Default is idempotent.
				d2 := DeepCopy(d)
				Default(d2)
				if !reflect.DeepEqual(d, d2) {
					t.Errorf("doc %d: Default is not idempotent", i+1)
				}
			}
		})
	}
	for _, k := range Kinds() {
		if !kinds[k.Kind] {
			t.Errorf("no round-trip testdata for %s", k.Kind)
		}
	}
}

func TestEncodeListsAndFormats(t *testing.T) {
	all := readTestdata(t)
	pools, err := Decode(all["ippool.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	peers, err := Decode(all["bgppeer.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	out, err := Encode("yaml", pools)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "kind: IPPoolList") || !strings.Contains(string(out), "apiVersion: projectcalico.org/v3") {
		t.Errorf("two pools should encode as an IPPoolList:\n%s", out)
	}
	mixed := append(slices.Clone(pools), peers...)
	for _, format := range []string{"yaml", "json"} {
		out, err := Encode(format, mixed)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), `List`) {
			t.Errorf("%s: mixed kinds should encode as a List:\n%s", format, out)
		}
		back, err := Decode(out)
		if err != nil {
			t.Fatalf("%s: decode List: %v\n%s", format, err, out)
		}
		if !reflect.DeepEqual(back, mixed) {
			t.Errorf("%s: List round trip differs", format)
		}
	}
	empty, err := EncodeList("json", KindIPPool, nil)
	if err != nil {
		t.Fatal(err)
	}
	var l map[string]any
	if err := json.Unmarshal(empty, &l); err != nil || l["kind"] != "IPPoolList" || l["items"] == nil {
		t.Errorf("empty IPPoolList: %s (%v)", empty, err)
	}
	if _, err := Encode("xml", pools); err == nil {
		t.Error("unknown format should fail")
	}
	// Encode fills apiVersion/kind without touching the caller's resource.
	p := &IPPool{Metadata: ObjectMeta{Name: "x"}, Spec: IPPoolSpec{CIDR: "10.0.0.0/16"}}
	out, _ = Encode("yaml", []Resource{p})
	if !strings.HasPrefix(string(out), "apiVersion: projectcalico.org/v3\nkind: IPPool\n") {
		t.Errorf("YAML should start with apiVersion and kind (sorted keys):\n%s", out)
	}
	if p.TypeMeta != (TypeMeta{}) {
		t.Error("Encode modified its input")
	}
}
