// Package resources serves the resource calls of the local API (`weft
// apply, create, replace, get, delete`, and watches) over the replicated
// store.
package resources

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/apierr"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// DeleteHook takes over the deletion of one kind whose lifecycle belongs
// to another subsystem (IPAM owns IPPool deletion).
type DeleteHook func(ctx context.Context, k store.Key, rev uint64, force bool) (store.Object, error)

// Warner says what in a written resource this node cannot honour (one
// line each, naming the resource); the write goes ahead and the warnings
// go back to the caller (WriteResponse.Warnings).
type Warner func(r api.Resource) []string

// Service serves the resource calls. Every request is decoded, defaulted
// and validated completely before anything is written, and all of a
// request's writes commit in one transaction: nothing is ever
// half-applied.
type Service struct {
	st          store.Store
	deleteHooks map[string]DeleteHook
	warners     []Warner
}

// AddWarner adds a source of write warnings (call before Register).
func (s *Service) AddWarner(w Warner) *Service {
	s.warners = append(s.warners, w)
	return s
}

// New returns the service; hooks maps kinds to their delete hooks.
func New(st store.Store, hooks map[string]DeleteHook) *Service {
	if hooks == nil {
		hooks = map[string]DeleteHook{}
	}
	return &Service{st: st, deleteHooks: hooks}
}

// Register adds the service's calls to the local API.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/resources", s.handleWrite)
	mux.HandleFunc("GET /v1/resources/{kind}", s.handleList)
	mux.HandleFunc("POST /v1/resources/delete", s.handleDelete)
	mux.HandleFunc("GET /v1/watch", s.handleWatch)
}

// StoreKey maps a resource to its store key.
func StoreKey(r api.Resource) store.Key {
	kind, ns, name := api.Key(r)
	return store.Key{Kind: kind, Namespace: ns, Name: name}
}

// prepare decodes, defaults and validates every resource of a request, and
// rejects what users may not write.
func prepare(data []byte) ([]api.Resource, error) {
	rs, err := api.Decode(data)
	if err != nil {
		return nil, localapi.Errorf(localapi.CodeInvalid, "%v", err)
	}
	if len(rs) == 0 {
		return nil, localapi.Errorf(localapi.CodeInvalid, "no resources in the input")
	}
	seen := map[store.Key]bool{}
	for i, r := range rs {
		info, _ := api.LookupKind(r.Kind())
		if info.ReadOnly {
			return nil, localapi.Errorf(localapi.CodeInvalid, "resource %d: %s is read-only: it is made by `weft workload add` or the CNI plugin", i+1, api.Describe(r))
		}
		api.Default(r)
		if err := api.Validate(r); err != nil {
			return nil, localapi.Errorf(localapi.CodeInvalid, "resource %d: %v", i+1, err)
		}
		if _, err := api.ParseRevision(r.GetMeta().ResourceVersion); err != nil {
			return nil, localapi.Errorf(localapi.CodeInvalid, "resource %d: %s: %v", i+1, api.Describe(r), err)
		}
		k := StoreKey(r)
		if seen[k] {
			return nil, localapi.Errorf(localapi.CodeInvalid, "resource %d: %s appears twice in the input", i+1, api.Describe(r))
		}
		seen[k] = true
	}
	return rs, nil
}

func (s *Service) handleWrite(w http.ResponseWriter, r *http.Request) {
	var req localapi.WriteRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		localapi.WriteError(w, err)
		return
	}
	res, warnings, err := s.writeWarn(r.Context(), req.Mode, []byte(req.Data))
	if err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, localapi.WriteResponse{Results: res, Warnings: warnings})
}

// write applies, creates or replaces resources atomically.
func (s *Service) write(ctx context.Context, mode string, data []byte) ([]localapi.ResourceResult, error) {
	res, _, err := s.writeWarn(ctx, mode, data)
	return res, err
}

// writeWarn is write, and says what of the resources this node cannot
// honour.
func (s *Service) writeWarn(ctx context.Context, mode string, data []byte) ([]localapi.ResourceResult, []string, error) {
	switch mode {
	case localapi.ModeApply, localapi.ModeCreate, localapi.ModeReplace:
	default:
		return nil, nil, localapi.Errorf(localapi.CodeInvalid, "unknown write mode %q", mode)
	}
	rs, err := prepare(data)
	if err != nil {
		return nil, nil, err
	}
	res, err := s.writePrepared(ctx, mode, rs)
	if err != nil {
		return nil, nil, err
	}
	var warnings []string
	for _, r := range rs {
		for _, w := range s.warners {
			warnings = append(warnings, w(r)...)
		}
	}
	return res, warnings, nil
}

func (s *Service) writePrepared(ctx context.Context, mode string, rs []api.Resource) ([]localapi.ResourceResult, error) {
	// Compare against the cluster's current state, not a replica that may
	// lag or be cut off: otherwise "unchanged" could be reported for a
	// write the cluster never saw.
	if _, err := s.st.ConsistentRevision(ctx); err != nil {
		return nil, apierr.FromStore(err)
	}
	var ops []store.Op
	results := make([]localapi.ResourceResult, len(rs))
	opIndex := make([]int, len(rs)) // result index -> op index, -1 when unchanged
	for i, r := range rs {
		k := StoreKey(r)
		rev, _ := api.ParseRevision(r.GetMeta().ResourceVersion)
		value, err := api.StoreValue(r)
		if err != nil {
			return nil, localapi.Errorf(localapi.CodeInvalid, "%v", err)
		}
		results[i] = localapi.ResourceResult{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name}
		old, exists := s.st.Get(k)
		if exists {
			prev, err := api.FromStore(k.Kind, old.Value, old.UID, old.Revision, old.Created)
			if err != nil {
				return nil, fmt.Errorf("reading stored %s: %w", k, err)
			}
			if err := api.ValidateUpdate(prev, r); err != nil {
				return nil, localapi.Errorf(localapi.CodeInvalid, "resource %d: %v", i+1, err)
			}
		}
		op := store.Op{Key: k, Value: value, Revision: rev}
		switch mode {
		case localapi.ModeCreate:
			op.Type = store.OpCreate
			op.Revision = 0
			results[i].Action = "created"
		case localapi.ModeReplace:
			op.Type = store.OpUpdate
			results[i].Action = "replaced"
		case localapi.ModeApply:
			op.Type = store.OpPut
			results[i].Action = "created"
			if exists {
				results[i].Action = "configured"
				if rev == 0 && bytes.Equal(old.Value, value) {
					results[i].Action = "unchanged"
					results[i].ResourceVersion = api.FormatRevision(old.Revision)
					opIndex[i] = -1
					continue
				}
			}
		}
		opIndex[i] = len(ops)
		ops = append(ops, op)
	}
	if len(ops) == 0 {
		return results, nil
	}
	tr, err := s.st.Txn(ctx, ops)
	if err != nil {
		return nil, apierr.FromStore(err)
	}
	for i := range results {
		if j := opIndex[i]; j >= 0 && j < len(tr.Objects) {
			results[i].ResourceVersion = api.FormatRevision(tr.Objects[j].Revision)
		}
	}
	return results, nil
}

// listResources reads resources of a kind from the local replica (or
// after a linearizable barrier when consistent is set).
func (s *Service) listResources(ctx context.Context, kind, namespace, name string, consistent bool) ([]api.Resource, uint64, error) {
	info, ok := api.LookupKind(kind)
	if !ok {
		if _, err := api.New(kind); err != nil {
			return nil, 0, localapi.Errorf(localapi.CodeInvalid, "%v", err)
		}
		return nil, 0, localapi.Errorf(localapi.CodeInvalid, "unknown resource kind %q", kind)
	}
	if !info.Namespaced {
		namespace = ""
	}
	if consistent {
		if _, err := s.st.ConsistentRevision(ctx); err != nil {
			return nil, 0, apierr.FromStore(err)
		}
	} else if err := apierr.ReadReady(s.st); err != nil {
		return nil, 0, err
	}
	var objs []store.Object
	var rev uint64
	if name != "" {
		if !info.Namespaced || namespace != "" {
			o, ok := s.st.Get(store.Key{Kind: info.Kind, Namespace: namespace, Name: name})
			rev = s.st.Revision()
			if !ok {
				return nil, rev, localapi.Errorf(localapi.CodeNotFound, "%s not found", describeKey(info.Kind, namespace, name))
			}
			objs = []store.Object{o}
		} else {
			all, r := s.st.List(info.Kind, "")
			rev = r
			for _, o := range all {
				if o.Name == name {
					objs = append(objs, o)
				}
			}
			if len(objs) == 0 {
				return nil, rev, localapi.Errorf(localapi.CodeNotFound, "%s %q not found in any namespace", info.Kind, name)
			}
		}
	} else {
		objs, rev = s.st.List(info.Kind, namespace)
	}
	out := make([]api.Resource, 0, len(objs))
	for _, o := range objs {
		r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
		if err != nil {
			return nil, rev, fmt.Errorf("reading stored %s: %w", o.Key, err)
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].GetMeta(), out[j].GetMeta()
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out, rev, nil
}

func describeKey(kind, ns, name string) string {
	if ns != "" {
		return fmt.Sprintf("%s %q", kind, ns+"/"+name)
	}
	return fmt.Sprintf("%s %q", kind, name)
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ns := q.Get("namespace")
	if q.Get("allNamespaces") == "true" {
		ns = ""
	} else if ns == "" {
		if info, ok := api.LookupKind(r.PathValue("kind")); ok && info.Namespaced && q.Get("name") == "" {
			ns = api.DefaultNamespace
		}
	}
	rs, rev, err := s.listResources(r.Context(), r.PathValue("kind"), ns, q.Get("name"), q.Get("consistent") == "true")
	if err != nil {
		localapi.WriteError(w, err)
		return
	}
	items := make([]json.RawMessage, 0, len(rs))
	for _, res := range rs {
		b, err := api.Encode("json", []api.Resource{res})
		if err != nil {
			localapi.WriteError(w, err)
			return
		}
		items = append(items, b)
	}
	localapi.WriteJSON(w, http.StatusOK, localapi.ListResponse{Revision: rev, Items: items})
}

func (s *Service) handleDelete(w http.ResponseWriter, r *http.Request) {
	var req localapi.DeleteRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		localapi.WriteError(w, err)
		return
	}
	res, err := s.delete(r.Context(), req)
	if err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, localapi.WriteResponse{Results: res})
}

// delete removes resources named either by kind/namespace/name or by the
// documents of a file; all in one transaction.
func (s *Service) delete(ctx context.Context, req localapi.DeleteRequest) ([]localapi.ResourceResult, error) {
	type target struct {
		key store.Key
		rev uint64
	}
	var targets []target
	if req.Data != "" {
		rs, err := api.Decode([]byte(req.Data))
		if err != nil {
			return nil, localapi.Errorf(localapi.CodeInvalid, "%v", err)
		}
		for _, r := range rs {
			api.Default(r) // fills the default namespace
			rev, err := api.ParseRevision(r.GetMeta().ResourceVersion)
			if err != nil {
				return nil, localapi.Errorf(localapi.CodeInvalid, "%s: %v", api.Describe(r), err)
			}
			targets = append(targets, target{StoreKey(r), rev})
		}
	} else {
		info, ok := api.LookupKind(req.Kind)
		if !ok {
			return nil, localapi.Errorf(localapi.CodeInvalid, "unknown resource kind %q", req.Kind)
		}
		if req.Name == "" {
			return nil, localapi.Errorf(localapi.CodeInvalid, "delete needs a name")
		}
		ns := req.Namespace
		if !info.Namespaced {
			ns = ""
		} else if ns == "" {
			ns = api.DefaultNamespace
		}
		rev, err := api.ParseRevision(req.ResourceVersion)
		if err != nil {
			return nil, localapi.Errorf(localapi.CodeInvalid, "%v", err)
		}
		targets = append(targets, target{store.Key{Kind: info.Kind, Namespace: ns, Name: req.Name}, rev})
	}
	if len(targets) == 0 {
		return nil, localapi.Errorf(localapi.CodeInvalid, "no resources to delete")
	}
	var ops []store.Op
	results := make([]localapi.ResourceResult, 0, len(targets))
	for _, t := range targets {
		if info, _ := api.LookupKind(t.key.Kind); info.ReadOnly {
			return nil, localapi.Errorf(localapi.CodeInvalid, "%s is read-only: remove it with `weft workload del`", describeKey(t.key.Kind, t.key.Namespace, t.key.Name))
		}
		if _, ok := s.deleteHooks[t.key.Kind]; ok && len(targets) > 1 {
			return nil, localapi.Errorf(localapi.CodeInvalid, "%s must be deleted on its own, not with other resources", t.key.Kind)
		}
		if _, ok := s.st.Get(t.key); !ok {
			return nil, localapi.Errorf(localapi.CodeNotFound, "%s not found", describeKey(t.key.Kind, t.key.Namespace, t.key.Name))
		}
		ops = append(ops, store.Op{Type: store.OpDelete, Key: t.key, Revision: t.rev})
		results = append(results, localapi.ResourceResult{Kind: t.key.Kind, Namespace: t.key.Namespace, Name: t.key.Name, Action: "deleted"})
	}
	if hook, ok := s.deleteHooks[targets[0].key.Kind]; ok {
		o, err := hook(ctx, targets[0].key, targets[0].rev, req.Force)
		if err != nil {
			return nil, apierr.FromStore(err)
		}
		results[0].ResourceVersion = api.FormatRevision(o.Revision)
		return results, nil
	}
	tr, err := s.st.Txn(ctx, ops)
	if err != nil {
		return nil, apierr.FromStore(err)
	}
	for i := range results {
		if i < len(tr.Objects) {
			results[i].ResourceVersion = api.FormatRevision(tr.Objects[i].Revision)
		}
	}
	return results, nil
}

// handleWatch streams changes as newline-delimited JSON WatchEvents.
func (s *Service) handleWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f store.WatchFilter
	for _, k := range strings.Split(q.Get("kinds"), ",") {
		if k == "" {
			continue
		}
		info, ok := api.LookupKind(k)
		if !ok {
			localapi.WriteError(w, localapi.Errorf(localapi.CodeInvalid, "unknown resource kind %q", k))
			return
		}
		f.Kinds = append(f.Kinds, info.Kind)
	}
	f.Namespace, f.Name = q.Get("namespace"), q.Get("name")
	var from uint64
	if v := q.Get("revision"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			localapi.WriteError(w, localapi.Errorf(localapi.CodeInvalid, "revision %q is not a number", v))
			return
		}
		from = n
	}
	events, err := s.st.Watch(r.Context(), from, f)
	if err != nil {
		localapi.WriteError(w, apierr.FromStore(err))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	for ev := range events {
		out := localapi.WatchEvent{Type: string(ev.Type), Revision: ev.Revision}
		if ev.Type == store.EventPut || ev.Type == store.EventDelete {
			res, err := api.FromStore(ev.Object.Kind, ev.Object.Value, ev.Object.UID, ev.Object.Revision, ev.Object.Created)
			if err != nil {
				// Internal kinds (IPAM state) are not resources: skip.
				continue
			}
			b, err := api.Encode("json", []api.Resource{res})
			if err != nil {
				continue
			}
			out.Object = b
		}
		if err := enc.Encode(out); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}
