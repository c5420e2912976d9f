package resources

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

func getNode(t *testing.T, st store.Store, name string) *api.Node {
	t.Helper()
	o, ok := st.Get(store.Key{Kind: api.KindNode, Name: name})
	if !ok {
		t.Fatalf("no node %s", name)
	}
	r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*api.Node)
}

// calicoctl's recipes for route reflectors patch a Node; labels come and
// go with null; a patch is validated like any write and never overwrites
// a change made since the version it names.
func TestPatch(t *testing.T) {
	st := singleStore(t)
	s := New(st, nil)
	ctx := context.Background()
	node := "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1, labels: {zone: a, rack: r1}}\nspec: {bgp: {ipv4Address: 192.0.2.1/24}}\n"
	if _, err := s.write(ctx, localapi.ModeApply, []byte(node)); err != nil {
		t.Fatal(err)
	}
	patch := func(kind, name, p string) ([]localapi.ResourceResult, error) {
		return s.patch(ctx, localapi.PatchRequest{Kind: kind, Name: name, Patch: json.RawMessage(p)})
	}
	res, err := patch("node", "n1", `{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}`)
	if err != nil || res[0].Action != "patched" {
		t.Fatalf("patch: %+v %v", res, err)
	}
	n := getNode(t, st, "n1")
	if n.Spec.BGP.RouteReflectorClusterID != "244.0.0.1" || n.Spec.BGP.IPv4Address != "192.0.2.1/24" {
		t.Fatalf("patched node %+v", n.Spec.BGP)
	}
	if _, err := patch("nodes", "n1", `{"metadata":{"labels":{"route-reflector":"true","rack":null}}}`); err != nil {
		t.Fatal(err)
	}
	if l := getNode(t, st, "n1").Metadata.Labels; len(l) != 2 || l["route-reflector"] != "true" || l["zone"] != "a" {
		t.Fatalf("labels %v", l)
	}
	if res, err := patch("node", "n1", `{"metadata":{"labels":{"zone":"a"}}}`); err != nil || res[0].Action != "unchanged" {
		t.Fatalf("a no-op patch: %+v %v", res, err)
	}
	for _, bad := range []struct{ kind, name, patch, code, msg string }{
		{"node", "n1", `{"metadata":{"resourceVersion":"1"},"spec":{"bgp":{"asNumber":65001}}}`, localapi.CodeConflict, ""},
		{"node", "n1", `{"metadata":{"name":"n2"}}`, localapi.CodeInvalid, "cannot change"},
		{"node", "n1", `{"spec":{"bgp":{"routeReflectorClusterID":"not-an-ip"}}}`, localapi.CodeInvalid, "routeReflectorClusterID"},
		{"node", "n9", `{}`, localapi.CodeNotFound, "not found"},
		{"bgpfilter", "x", `{}`, localapi.CodeInvalid, "unknown resource kind"},
		{"node", "n1", `[1]`, localapi.CodeInvalid, "not a JSON object"},
	} {
		_, err := patch(bad.kind, bad.name, bad.patch)
		if code(err) != bad.code || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("patch %s %s %s: %v (code %q, want %q)", bad.kind, bad.name, bad.patch, err, code(err), bad.code)
		}
	}
	if n := getNode(t, st, "n1"); n.Spec.BGP.RouteReflectorClusterID != "244.0.0.1" || n.Spec.BGP.ASNumber != nil {
		t.Fatalf("a refused patch changed the node: %+v", n.Spec.BGP)
	}
}
