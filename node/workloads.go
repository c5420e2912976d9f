package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/api/selector"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/links"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// cmdPutWorkload writes a WorkloadEndpoint, refusing a second workload of
// the same namespace and name on another node (inside the raft apply, so
// two nodes adding the same name at once cannot both win).
const cmdPutWorkload = "node.putWorkload"

func applyPutWorkload(tx store.Tx, payload []byte) ([]byte, error) {
	rs, err := api.Decode(payload)
	if err != nil || len(rs) != 1 {
		return nil, fmt.Errorf("%w: workload endpoint: %v", store.ErrInvalid, err)
	}
	w, ok := rs[0].(*api.WorkloadEndpoint)
	if !ok {
		return nil, fmt.Errorf("%w: not a WorkloadEndpoint", store.ErrInvalid)
	}
	api.Default(w)
	if err := api.Validate(w); err != nil {
		return nil, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	k := storeKey(w)
	for _, o := range tx.List(api.KindWorkloadEndpoint, k.Namespace) {
		if o.Key == k {
			continue
		}
		var other api.WorkloadEndpoint
		if json.Unmarshal(o.Value, &other) == nil && other.Spec.Workload == w.Spec.Workload {
			return nil, &store.KeyError{Key: k, Err: fmt.Errorf("%w: workload %s/%s already exists on node %s", store.ErrExists, k.Namespace, w.Spec.Workload, other.Spec.Node)}
		}
	}
	v, err := api.StoreValue(w)
	if err != nil {
		return nil, err
	}
	o, err := tx.Put(k, v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(o.Revision)
}

// workloadService attaches and detaches workloads (`weft workload ...` and
// the CNI plugin): IPAM, the veth plumbing and the WorkloadEndpoint.
type workloadService struct {
	a       *Agent
	plumber *links.Plumber
	log     *slog.Logger
	// locks serialises operations on one workload; different workloads
	// proceed in parallel.
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func newWorkloadService(a *Agent, p *links.Plumber) *workloadService {
	return &workloadService{a: a, plumber: p, log: a.log.With("component", "workloads"), locks: map[string]*sync.Mutex{}}
}

func (s *workloadService) register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.WorkloadAddRequest
		if err := localapi.ReadJSON(w, r, &req); err != nil {
			localapi.WriteError(w, err)
			return
		}
		res, err := s.add(r.Context(), req)
		reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/workloads/delete", func(w http.ResponseWriter, r *http.Request) {
		var ref localapi.WorkloadRef
		if err := localapi.ReadJSON(w, r, &ref); err != nil {
			localapi.WriteError(w, err)
			return
		}
		res, err := s.del(r.Context(), ref)
		reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/workloads/check", func(w http.ResponseWriter, r *http.Request) {
		var ref localapi.WorkloadRef
		if err := localapi.ReadJSON(w, r, &ref); err != nil {
			localapi.WriteError(w, err)
			return
		}
		res, err := s.check(r.Context(), ref)
		reply(w, res, err)
	})
	mux.HandleFunc("GET /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ns := q.Get("namespace")
		if q.Get("allNamespaces") == "true" {
			ns = ""
		} else if ns == "" {
			ns = api.DefaultNamespace
		}
		if err := readReady(s.a.store); err != nil {
			localapi.WriteError(w, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, localapi.WorkloadList{Items: s.list(ns)})
	})
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, v)
}

func (s *workloadService) lock(ns, name string) func() {
	key := ns + "/" + name
	s.mu.Lock()
	l, ok := s.locks[key]
	if !ok {
		l = &sync.Mutex{}
		s.locks[key] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// handleFor is the IPAM handle of a workload on this node.
func handleFor(ns, wepName string) string { return "weft." + ns + "." + wepName }

// endpointFor builds the WorkloadEndpoint of a workload.
func (s *workloadService) endpointFor(req localapi.WorkloadAddRequest, hostIface string) *api.WorkloadEndpoint {
	w := &api.WorkloadEndpoint{}
	w.Metadata.Namespace = req.Namespace
	w.Metadata.Labels = map[string]string{}
	for k, v := range req.Labels {
		w.Metadata.Labels[k] = v
	}
	w.Metadata.Annotations = map[string]string{calc.AnnotationNetNS: req.NetNS}
	w.Spec = api.WorkloadEndpointSpec{
		Orchestrator:  req.Orchestrator,
		Workload:      req.Name,
		Node:          s.a.cfg.Node.Name,
		ContainerID:   req.ContainerID,
		Endpoint:      req.Interface,
		InterfaceName: hostIface,
		Profiles:      []string{api.NamespaceProfileName(req.Namespace)},
	}
	api.Default(w)
	return w
}

// validateAdd checks a request completely before anything changes.
func (s *workloadService) validateAdd(req *localapi.WorkloadAddRequest) (hostIface string, ip4, ip6 string, err error) {
	bad := func(format string, args ...any) error { return localapi.Errorf(localapi.CodeInvalid, format, args...) }
	if req.Namespace == "" {
		req.Namespace = api.DefaultNamespace
	}
	if req.Interface == "" {
		req.Interface = dataplane.DefaultWorkloadIface
	}
	if req.Orchestrator == "" {
		req.Orchestrator = api.OrchestratorWeft
	}
	switch {
	case !api.IsDNSLabel(req.Name):
		return "", "", "", bad("workload name %q must be a DNS label (lower-case letters, digits and '-', at most 63)", req.Name)
	case !api.IsDNSLabel(req.Namespace):
		return "", "", "", bad("namespace %q must be a DNS label", req.Namespace)
	case !dataplane.ValidIfaceName(req.Interface):
		return "", "", "", bad("interface name %q is not valid (1-15 of [a-zA-Z0-9_.-])", req.Interface)
	case req.NetNS == "":
		return "", "", "", bad("--netns is required: the path of the workload's network namespace")
	case req.Orchestrator != api.OrchestratorWeft && req.Orchestrator != api.OrchestratorCNI:
		return "", "", "", bad("unknown orchestrator %q", req.Orchestrator)
	case req.Orchestrator == api.OrchestratorCNI && req.ContainerID == "":
		return "", "", "", bad("a CNI workload needs its container ID")
	}
	if fi, err := os.Stat(req.NetNS); err != nil {
		return "", "", "", bad("network namespace %s: %v", req.NetNS, errors.Unwrap(err))
	} else if fi.IsDir() {
		return "", "", "", bad("network namespace %s is a directory, not a namespace", req.NetNS)
	}
	for _, s := range req.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			p, perr := netip.ParsePrefix(s)
			if perr != nil || p.Bits() != p.Addr().BitLen() {
				return "", "", "", bad("--ip %q is not an address", s)
			}
			a = p.Addr()
		}
		switch {
		case a.Is4() && ip4 == "":
			ip4 = a.String()
		case a.Is6() && !a.Is4In6() && ip6 == "":
			ip6 = a.String()
		default:
			return "", "", "", bad("at most one IPv4 and one IPv6 address may be given (got %v)", req.IPs)
		}
	}
	for _, p := range req.Pools {
		if _, ok := s.a.store.Get(store.Key{Kind: api.KindIPPool, Name: p}); !ok {
			return "", "", "", bad("IP pool %q does not exist", p)
		}
	}
	hostIface, err = dataplane.WorkloadIfaceName(s.plumber.Prefix(), req.Namespace, req.Name)
	if err != nil {
		return "", "", "", bad("%v", err)
	}
	// Labels are checked by validating the endpoint as it will be written.
	wep := s.endpointFor(*req, hostIface)
	wep.Spec.IPNetworks = []string{"192.0.2.1/32"} // placeholder: addresses come from IPAM
	if err := api.Validate(wep); err != nil {
		return "", "", "", bad("%v", err)
	}
	return hostIface, ip4, ip6, nil
}

// findWorkload returns this cluster's WorkloadEndpoint of a workload.
func (s *workloadService) findWorkload(ns, name string) (*api.WorkloadEndpoint, store.Object, bool) {
	objs, _ := s.a.store.List(api.KindWorkloadEndpoint, ns)
	for _, o := range objs {
		r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
		if err != nil {
			continue
		}
		w := r.(*api.WorkloadEndpoint)
		if w.Spec.Workload == name {
			return w, o, true
		}
	}
	return nil, store.Object{}, false
}

func (s *workloadService) add(ctx context.Context, req localapi.WorkloadAddRequest) (localapi.Workload, error) {
	hostIface, ip4, ip6, err := s.validateAdd(&req)
	if err != nil {
		return localapi.Workload{}, err
	}
	defer s.lock(req.Namespace, req.Name)()
	me := s.a.cfg.Node.Name
	if w, _, ok := s.findWorkload(req.Namespace, req.Name); ok {
		if w.Spec.Node != me {
			return localapi.Workload{}, localapi.Errorf(localapi.CodeExists, "workload %s/%s already exists on node %s", req.Namespace, req.Name, w.Spec.Node)
		}
		if w.Metadata.Annotations[calc.AnnotationNetNS] != req.NetNS || w.Spec.ContainerID != req.ContainerID {
			return localapi.Workload{}, localapi.Errorf(localapi.CodeExists, "workload %s/%s already exists with network namespace %s", req.Namespace, req.Name, w.Metadata.Annotations[calc.AnnotationNetNS])
		}
		if w.Spec.Endpoint != req.Interface {
			return localapi.Workload{}, localapi.Errorf(localapi.CodeExists, "workload %s/%s already exists with interface %s (one interface per workload)", req.Namespace, req.Name, w.Spec.Endpoint)
		}
		// The same request again: make sure the plumbing is there and
		// answer as the first time (idempotent).
		dw := toDataplane(w)
		res, err := s.plumber.Add(ctx, dw)
		if err != nil {
			return localapi.Workload{}, plumbError(err)
		}
		return s.describe(w, res.MAC.String()), nil
	}

	wep := s.endpointFor(req, hostIface)
	handle := handleFor(req.Namespace, wep.Metadata.Name)
	assign := ipam.AssignRequest{
		Handle: handle,
		Node:   me,
		Attrs: ipam.Attributes{
			Node: me, Namespace: req.Namespace, Workload: req.Name,
			WorkloadEndpoint: req.Namespace + "/" + wep.Metadata.Name, Type: ipam.TypeWorkload,
		},
		NodeLabels: s.a.cfg.Node.Labels,
		IP4:        ip4, IP6: ip6,
		Pools: req.Pools,
		Use:   api.UseWorkload,
	}
	if ip4 == "" && ip6 == "" {
		// One address of each family some usable pool offers: dual stack
		// when the cluster has IPv4 and IPv6 pools.
		want4, want6 := s.families(req.Pools)
		if !want4 && !want6 {
			return localapi.Workload{}, localapi.Errorf(localapi.CodeInvalid, "no enabled IP pool for workloads matches node %s (check the pools' nodeSelector, allowedUses and disabled)", me)
		}
		if want4 {
			assign.Num4 = 1
		}
		if want6 {
			assign.Num6 = 1
		}
	}
	var got ipam.AssignResponse
	if err := s.a.ipam.command(ctx, ipam.CmdAssign, assign, &got); err != nil {
		return localapi.Workload{}, err
	}
	release := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.a.ipam.command(cctx, ipam.CmdReleaseHandle, ipam.ReleaseHandleRequest{Handle: handle}, nil); err != nil {
			s.log.Error("releasing addresses of a failed workload add", "handle", handle, "err", err)
		}
	}
	for _, a := range got.Addresses {
		wep.Spec.IPNetworks = append(wep.Spec.IPNetworks, a.HostCIDR)
	}
	dw := toDataplane(wep)
	res, err := s.plumber.Add(ctx, dw)
	if err != nil {
		release()
		return localapi.Workload{}, plumbError(err)
	}
	wep.Spec.MAC = res.MAC.String()
	if err := s.ensureNamespaceProfile(ctx, req.Namespace); err != nil {
		s.undo(dw, release)
		return localapi.Workload{}, err
	}
	payload, err := api.Encode("json", []api.Resource{wep})
	if err == nil {
		_, err = s.a.store.Command(ctx, cmdPutWorkload, payload)
	}
	if err != nil && errors.Is(err, store.ErrIndeterminate) {
		// The leader was lost as it answered: ask the cluster whether the
		// endpoint was written before undoing anything, or undoing could
		// free addresses a committed endpoint uses.
		switch exists, known := s.committed(storeKey(wep)); {
		case known && exists:
			err = nil // the add succeeded
		case !known:
			// No quorum to ask: leave everything. A retry of the same add
			// completes it; if the endpoint never appears, the GC reclaims
			// the addresses and the links manager the veth.
			return localapi.Workload{}, storeError(err)
		}
	}
	if err != nil {
		s.undo(dw, release)
		return localapi.Workload{}, storeError(err)
	}
	s.log.Info("workload added", "namespace", req.Namespace, "name", req.Name, "ips", wep.Spec.IPNetworks, "iface", hostIface)
	return s.describe(wep, res.MAC.String()), nil
}

// families reports which address families this node can get workload
// addresses from: the enabled pools that allow workloads and whose node
// selector matches this node (Automatic ones, or the pools named).
func (s *workloadService) families(named []string) (v4, v6 bool) {
	// The labels IPAM matches pools' nodeSelector against (the request's
	// NodeLabels below).
	labels := s.a.cfg.Node.Labels
	objs, _ := s.a.store.List(api.KindIPPool, "")
	for _, o := range objs {
		var p api.IPPool
		if json.Unmarshal(o.Value, &p) != nil || p.Spec.Disabled {
			continue
		}
		if len(named) > 0 && !slices.Contains(named, o.Name) {
			continue
		}
		if len(named) == 0 && p.Spec.AssignmentMode == api.AssignmentManual {
			continue
		}
		if len(p.Spec.AllowedUses) > 0 && !slices.Contains(p.Spec.AllowedUses, api.UseWorkload) {
			continue
		}
		if p.Spec.NodeSelector != "" {
			sel, err := selector.Parse(p.Spec.NodeSelector)
			if err != nil || !sel.Evaluate(labels) {
				continue
			}
		}
		cidr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil {
			continue
		}
		if cidr.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// committed reports whether k exists after a linearizable barrier; known
// is false when the cluster cannot confirm either way.
func (s *workloadService) committed(k store.Key) (exists, known bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.a.store.ConsistentRevision(ctx); err != nil {
		return false, false
	}
	_, exists = s.a.store.Get(k)
	return exists, true
}

func (s *workloadService) undo(dw dataplane.Workload, release func()) {
	if err := s.plumber.Del(context.Background(), dw); err != nil {
		s.log.Error("removing the plumbing of a failed workload add", "iface", dw.HostIface, "err", err)
	}
	release()
}

// ensureNamespaceProfile creates the namespace's profile kns.<ns> when it
// is missing: as in Calico on Kubernetes, a namespace's profile allows all
// traffic until changed, and carries the namespace's labels.
func (s *workloadService) ensureNamespaceProfile(ctx context.Context, ns string) error {
	name := api.NamespaceProfileName(ns)
	k := store.Key{Kind: api.KindProfile, Name: name}
	if _, ok := s.a.store.Get(k); ok {
		return nil
	}
	p := &api.Profile{}
	p.Metadata.Name = name
	p.Spec.LabelsToApply = map[string]string{"projectcalico.org/name": ns}
	p.Spec.Ingress = []api.Rule{{Action: "Allow"}}
	p.Spec.Egress = []api.Rule{{Action: "Allow"}}
	api.Default(p)
	v, err := api.StoreValue(p)
	if err != nil {
		return err
	}
	if _, err := s.a.store.Txn(ctx, []store.Op{{Type: store.OpCreate, Key: k, Value: v}}); err != nil && !errors.Is(err, store.ErrExists) {
		return storeError(err)
	}
	return nil
}

func (s *workloadService) del(ctx context.Context, ref localapi.WorkloadRef) (localapi.Workload, error) {
	if ref.Namespace == "" {
		ref.Namespace = api.DefaultNamespace
	}
	if ref.Name == "" {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeInvalid, "workload del needs a name")
	}
	defer s.lock(ref.Namespace, ref.Name)()
	w, o, ok := s.findWorkload(ref.Namespace, ref.Name)
	if !ok {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeNotFound, "workload %s/%s not found", ref.Namespace, ref.Name)
	}
	// The container first: a CNI DEL for a container whose workload name
	// now belongs to another container (here or on another node) must be
	// told "not yours", which it treats as already deleted.
	if ref.ContainerID != "" && ref.ContainerID != w.Spec.ContainerID {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeConflict, "workload %s/%s belongs to container %s, not %s", ref.Namespace, ref.Name, w.Spec.ContainerID, ref.ContainerID)
	}
	if w.Spec.Node != s.a.cfg.Node.Name {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeInvalid, "workload %s/%s is on node %s: delete it there", ref.Namespace, ref.Name, w.Spec.Node)
	}
	if err := s.remove(ctx, w, o); err != nil {
		return localapi.Workload{}, err
	}
	return s.describe(w, ""), nil
}

// remove detaches a local workload: plumbing first (so no traffic uses an
// address about to be released), then the endpoint, then the addresses.
func (s *workloadService) remove(ctx context.Context, w *api.WorkloadEndpoint, o store.Object) error {
	if err := s.plumber.Del(ctx, toDataplane(w)); err != nil {
		return plumbError(err)
	}
	if _, err := s.a.store.Txn(ctx, []store.Op{{Type: store.OpDelete, Key: o.Key, Revision: o.Revision}}); err != nil && !errors.Is(err, store.ErrNotFound) {
		return storeError(err)
	}
	handle := handleFor(w.Metadata.Namespace, w.Metadata.Name)
	if err := s.a.ipam.command(ctx, ipam.CmdReleaseHandle, ipam.ReleaseHandleRequest{Handle: handle}, nil); err != nil {
		var le *localapi.Error
		if !(errors.As(err, &le) && le.Code == localapi.CodeNotFound) {
			// The endpoint is gone; the GC reclaims the addresses if this
			// release never lands.
			s.log.Warn("releasing workload addresses", "handle", handle, "err", err)
		}
	}
	s.log.Info("workload deleted", "namespace", w.Metadata.Namespace, "name", w.Spec.Workload)
	return nil
}

func (s *workloadService) check(ctx context.Context, ref localapi.WorkloadRef) (localapi.Workload, error) {
	if ref.Namespace == "" {
		ref.Namespace = api.DefaultNamespace
	}
	w, _, ok := s.findWorkload(ref.Namespace, ref.Name)
	if !ok || w.Spec.Node != s.a.cfg.Node.Name {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeNotFound, "workload %s/%s not found on this node", ref.Namespace, ref.Name)
	}
	if ref.ContainerID != "" && ref.ContainerID != w.Spec.ContainerID {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeConflict, "workload %s/%s belongs to container %s", ref.Namespace, ref.Name, w.Spec.ContainerID)
	}
	if err := s.plumber.Check(ctx, toDataplane(w)); err != nil {
		return localapi.Workload{}, plumbError(err)
	}
	return s.describe(w, w.Spec.MAC), nil
}

// list returns this node's workloads in a namespace ("" = all).
func (s *workloadService) list(ns string) []localapi.Workload {
	objs, _ := s.a.store.List(api.KindWorkloadEndpoint, ns)
	out := []localapi.Workload{}
	for _, o := range objs {
		r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
		if err != nil {
			continue
		}
		w := r.(*api.WorkloadEndpoint)
		if w.Spec.Node == s.a.cfg.Node.Name {
			out = append(out, s.describe(w, w.Spec.MAC))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// onNetNSGone cleans up a workload whose network namespace vanished (its
// container or process ended without a delete).
func (a *Agent) onNetNSGone(dw dataplane.Workload) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s := a.workloads
		if s == nil {
			return
		}
		defer s.lock(dw.Namespace, dw.Name)()
		w, o, ok := s.findWorkload(dw.Namespace, dw.Name)
		if !ok || w.Spec.Node != a.cfg.Node.Name || w.Metadata.Annotations[calc.AnnotationNetNS] != dw.NetNS {
			return
		}
		if _, err := os.Stat(dw.NetNS); err == nil {
			return // it came back (or was never gone): leave it
		}
		s.log.Info("cleaning up a workload whose network namespace is gone", "namespace", dw.Namespace, "name", dw.Name, "netns", dw.NetNS)
		if err := s.remove(ctx, w, o); err != nil {
			s.log.Warn("cleaning up a vanished workload", "err", err)
		}
	}()
}

// toDataplane is the plumbing a WorkloadEndpoint needs.
func toDataplane(w *api.WorkloadEndpoint) dataplane.Workload {
	dw := dataplane.Workload{
		Namespace: w.Metadata.Namespace,
		Name:      w.Spec.Workload,
		HostIface: w.Spec.InterfaceName,
		NetNS:     w.Metadata.Annotations[calc.AnnotationNetNS],
		Iface:     w.Spec.Endpoint,
	}
	for _, s := range w.Spec.IPNetworks {
		if p, err := netip.ParsePrefix(s); err == nil {
			dw.IPs = append(dw.IPs, p)
		}
	}
	return dw
}

// describe is the API view of a workload.
func (s *workloadService) describe(w *api.WorkloadEndpoint, mac string) localapi.Workload {
	out := localapi.Workload{
		Name: w.Spec.Workload, Namespace: w.Metadata.Namespace, Node: w.Spec.Node,
		NetNS: w.Metadata.Annotations[calc.AnnotationNetNS], Endpoint: w.Metadata.Name,
		HostIface: w.Spec.InterfaceName, Interface: w.Spec.Endpoint, MAC: mac,
		IPs: w.Spec.IPNetworks, MTU: s.plumber.MTU(), Labels: userLabels(w.Metadata.Labels),
		Orchestrator: w.Spec.Orchestrator, ContainerID: w.Spec.ContainerID,
	}
	for _, ip := range w.Spec.IPNetworks {
		if p, err := netip.ParsePrefix(ip); err == nil {
			if p.Addr().Is4() {
				out.Gateway4 = dataplane.WorkloadGatewayV4.String()
			} else {
				out.Gateway6 = dataplane.WorkloadGatewayV6.String()
			}
		}
	}
	return out
}

// userLabels drops the labels weft stamps itself (projectcalico.org/...).
func userLabels(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		if len(k) > len("projectcalico.org/") && k[:len("projectcalico.org/")] == "projectcalico.org/" {
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// plumbError maps dataplane errors onto local API errors.
func plumbError(err error) error {
	switch {
	case errors.Is(err, links.ErrBadNetNS), errors.Is(err, links.ErrIfaceTaken):
		return &localapi.Error{Code: localapi.CodeInvalid, Message: err.Error()}
	case errors.Is(err, dataplane.ErrForeignRoute):
		return &localapi.Error{Code: localapi.CodeConflict, Message: err.Error()}
	case errors.Is(err, links.ErrDrift):
		return &localapi.Error{Code: localapi.CodeConflict, Message: err.Error()}
	}
	return err
}
