package resources

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/apierr"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// handlePatch applies a JSON merge patch (RFC 7386) to one resource: the
// stored resource is read, patched, then written as a replace carrying
// the version read (or the patch's own metadata.resourceVersion), so the
// patch is validated like any write and never overwrites a change made in
// between.
func (s *Service) handlePatch(w http.ResponseWriter, r *http.Request) {
	var req localapi.PatchRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		localapi.WriteError(w, err)
		return
	}
	res, err := s.patch(r.Context(), req)
	if err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, localapi.WriteResponse{Results: res})
}

func (s *Service) patch(ctx context.Context, req localapi.PatchRequest) ([]localapi.ResourceResult, error) {
	info, ok := api.LookupKind(req.Kind)
	if !ok {
		return nil, localapi.Errorf(localapi.CodeInvalid, "unknown resource kind %q", req.Kind)
	}
	if req.Name == "" {
		return nil, localapi.Errorf(localapi.CodeInvalid, "patch needs a resource name")
	}
	var patch map[string]any
	if err := json.Unmarshal(req.Patch, &patch); err != nil {
		return nil, localapi.Errorf(localapi.CodeInvalid, "the patch is not a JSON object: %v", err)
	}
	ns := ""
	if info.Namespaced {
		ns = req.Namespace
		if ns == "" {
			ns = api.DefaultNamespace
		}
	}
	if _, err := s.st.ConsistentRevision(ctx); err != nil {
		return nil, apierr.FromStore(err)
	}
	k := store.Key{Kind: info.Kind, Namespace: ns, Name: req.Name}
	o, found := s.st.Get(k)
	if !found {
		return nil, localapi.Errorf(localapi.CodeNotFound, "%s not found", describeKey(info.Kind, ns, req.Name))
	}
	cur, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
	if err != nil {
		return nil, err
	}
	doc, err := api.Encode("json", []api.Resource{cur})
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := json.Unmarshal(doc, &obj); err != nil {
		return nil, err
	}
	merged := mergePatch(obj, patch).(map[string]any)
	// Identity is not patchable: the patch applies to the resource named.
	meta, _ := merged["metadata"].(map[string]any)
	if meta == nil || meta["name"] != req.Name || merged["kind"] != info.Kind || (info.Namespaced && meta["namespace"] != ns) {
		return nil, localapi.Errorf(localapi.CodeInvalid, "a patch cannot change a resource's kind, name or namespace")
	}
	for _, f := range []string{"uid", "creationTimestamp"} {
		delete(meta, f)
	}
	pm, _ := patch["metadata"].(map[string]any)
	if _, pinned := pm["resourceVersion"]; !pinned {
		meta["resourceVersion"] = api.FormatRevision(o.Revision)
	}
	out, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	if rs, err := api.Decode(out); err == nil && len(rs) == 1 {
		api.Default(rs[0])
		if v, err := api.StoreValue(rs[0]); err == nil && bytes.Equal(v, o.Value) {
			return []localapi.ResourceResult{{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name, Action: "unchanged", ResourceVersion: api.FormatRevision(o.Revision)}}, nil
		}
	}
	res, err := s.write(ctx, localapi.ModeReplace, out)
	for i := range res {
		res[i].Action = "patched"
	}
	return res, err
}

// mergePatch applies an RFC 7386 merge patch to target.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}
