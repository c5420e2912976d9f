// Package workloads attaches and detaches workloads (`weft workload ...`
// and the CNI plugin): IPAM, the WorkloadEndpoint, and waiting until the
// dataplane has applied it.
//
// # Who writes what
//
// This service writes only to the store. The dataplane loop is the one
// writer of the kernel objects (the veth, the host routes, later the
// policy): an add records the endpoint and then waits until a report of
// the loop shows the workload applied with no problem; a delete removes the
// endpoint and waits until the workload is gone from the reports. Before
// recording anything, an add runs the dataplane's read-only precheck (the
// namespace, the interface names, no foreign route to the addresses), so a
// bad request changes nothing; a problem the dataplane finds later (a
// permanent one, or none solved within the wait) undoes the add.
package workloads

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/apierr"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// Plumbing is the dataplane's read-only view of workload plumbing.
type Plumbing interface {
	// Precheck reports whether w could be plumbed, changing nothing.
	Precheck(w dataplane.Workload) error
	// Check reports how w's plumbing differs from the desired one.
	Check(ctx context.Context, w dataplane.Workload) error
}

// Config configures the service.
type Config struct {
	Node string
	// NodeLabels are matched against pools' nodeSelector.
	NodeLabels map[string]string
	// IfacePrefix of host-side interfaces (network.interface_prefix).
	IfacePrefix string
	Logger      *slog.Logger
	// ApplyTimeout bounds how long an add or delete waits for the
	// dataplane (default 30 s; a caller's earlier deadline wins).
	ApplyTimeout time.Duration
	// RetryTimeout bounds how long a store write whose outcome is unknown
	// (the leader changed as it answered) is retried (default 10 s).
	RetryTimeout time.Duration
}

// Service is the workload service.
type Service struct {
	cfg   Config
	st    store.Store
	ipam  *ipam.Client
	plumb Plumbing
	dp    dataplane.Reports
	log   *slog.Logger

	// locks serialises operations on one workload; different workloads
	// proceed in parallel.
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// New returns the service.
func New(cfg Config, st store.Store, plumb Plumbing, dp dataplane.Reports) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IfacePrefix == "" {
		cfg.IfacePrefix = dataplane.DefaultIfacePrefix
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 30 * time.Second
	}
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = 10 * time.Second
	}
	return &Service{
		cfg: cfg, st: st, ipam: ipam.NewClient(st), plumb: plumb, dp: dp,
		log: cfg.Logger.With("component", "workloads"), locks: map[string]*sync.Mutex{},
	}
}

// Register adds the service's calls to the local API. Every failed call is
// logged by the agent too, not only shown to the caller.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.WorkloadAddRequest
		if err := localapi.ReadJSON(w, r, &req); err != nil {
			localapi.WriteError(w, err)
			return
		}
		res, err := s.Add(r.Context(), req)
		s.reply(w, "add", req.Namespace, req.Name, res, err)
	})
	mux.HandleFunc("POST /v1/workloads/delete", func(w http.ResponseWriter, r *http.Request) {
		var ref localapi.WorkloadRef
		if err := localapi.ReadJSON(w, r, &ref); err != nil {
			localapi.WriteError(w, err)
			return
		}
		res, err := s.Delete(r.Context(), ref)
		s.reply(w, "delete", ref.Namespace, ref.Name, res, err)
	})
	mux.HandleFunc("POST /v1/workloads/check", func(w http.ResponseWriter, r *http.Request) {
		var ref localapi.WorkloadRef
		if err := localapi.ReadJSON(w, r, &ref); err != nil {
			localapi.WriteError(w, err)
			return
		}
		res, err := s.Check(r.Context(), ref)
		s.reply(w, "check", ref.Namespace, ref.Name, res, err)
	})
	mux.HandleFunc("GET /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ns := q.Get("namespace")
		if q.Get("allNamespaces") == "true" {
			ns = ""
		} else if ns == "" {
			ns = api.DefaultNamespace
		}
		if err := apierr.ReadReady(s.st); err != nil {
			localapi.WriteError(w, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, localapi.WorkloadList{Items: s.List(ns)})
	})
}

func (s *Service) reply(w http.ResponseWriter, op, ns, name string, v any, err error) {
	if err != nil {
		s.log.Warn("workload "+op+" failed", "namespace", ns, "name", name, "err", err)
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, v)
}

func (s *Service) lock(ns, name string) func() {
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

// HandleFor is the IPAM handle of a workload endpoint.
func HandleFor(ns, wepName string) string { return "weft." + ns + "." + wepName }

// endpointFor builds the WorkloadEndpoint of a workload.
func (s *Service) endpointFor(req localapi.WorkloadAddRequest, hostIface string) *api.WorkloadEndpoint {
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
		Node:          s.cfg.Node,
		ContainerID:   req.ContainerID,
		Endpoint:      req.Interface,
		InterfaceName: hostIface,
		Profiles:      []string{api.NamespaceProfileName(req.Namespace)},
	}
	api.Default(w)
	return w
}

// validateAdd checks a request completely before anything changes.
func (s *Service) validateAdd(req *localapi.WorkloadAddRequest) (hostIface string, ip4, ip6 string, err error) {
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
		if _, ok := s.st.Get(store.Key{Kind: api.KindIPPool, Name: p}); !ok {
			return "", "", "", bad("IP pool %q does not exist", p)
		}
	}
	hostIface, err = dataplane.WorkloadIfaceName(s.cfg.IfacePrefix, req.Namespace, req.Name)
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

// find returns this cluster's WorkloadEndpoint of a workload.
func (s *Service) find(ns, name string) (*api.WorkloadEndpoint, store.Object, bool) {
	objs, _ := s.st.List(api.KindWorkloadEndpoint, ns)
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

// Add attaches a workload: validate, precheck the plumbing, allocate its
// addresses, record its endpoint, wait until the dataplane has applied it.
// Adding the same workload again (same namespace path and interface) is
// idempotent.
func (s *Service) Add(ctx context.Context, req localapi.WorkloadAddRequest) (localapi.Workload, error) {
	hostIface, ip4, ip6, err := s.validateAdd(&req)
	if err != nil {
		return localapi.Workload{}, err
	}
	defer s.lock(req.Namespace, req.Name)()
	me := s.cfg.Node
	if w, _, ok := s.find(req.Namespace, req.Name); ok {
		if w.Spec.Node != me {
			return localapi.Workload{}, localapi.Errorf(localapi.CodeExists, "workload %s/%s already exists on node %s", req.Namespace, req.Name, w.Spec.Node)
		}
		if w.Metadata.Annotations[calc.AnnotationNetNS] != req.NetNS || w.Spec.ContainerID != req.ContainerID {
			return localapi.Workload{}, localapi.Errorf(localapi.CodeExists, "workload %s/%s already exists with network namespace %s", req.Namespace, req.Name, w.Metadata.Annotations[calc.AnnotationNetNS])
		}
		if w.Spec.Endpoint != req.Interface {
			return localapi.Workload{}, localapi.Errorf(localapi.CodeExists, "workload %s/%s already exists with interface %s (one interface per workload)", req.Namespace, req.Name, w.Spec.Endpoint)
		}
		// The same request again: answer as the first time, once the
		// dataplane has it.
		dw, _ := calc.ToDataplane(w)
		rep, err := s.waitApplied(ctx, dw, 0)
		if err != nil {
			return localapi.Workload{}, err
		}
		return s.describe(w, rep), nil
	}

	wep := s.endpointFor(req, hostIface)
	mac, err := randomMAC()
	if err != nil {
		return localapi.Workload{}, err
	}
	wep.Spec.MAC = mac.String()
	handle := HandleFor(req.Namespace, wep.Metadata.Name)
	assign := ipam.AssignRequest{
		Handle: handle,
		Node:   me,
		Attrs: ipam.Attributes{
			Node: me, Namespace: req.Namespace, Workload: req.Name,
			WorkloadEndpoint: req.Namespace + "/" + wep.Metadata.Name, Type: ipam.TypeWorkload,
		},
		NodeLabels: s.cfg.NodeLabels,
		IP4:        ip4, IP6: ip6,
		Pools:      req.Pools,
		Use:        api.UseWorkload,
		EachFamily: ip4 == "" && ip6 == "",
	}
	got, err := s.assign(ctx, assign)
	if err != nil {
		return localapi.Workload{}, err
	}
	for _, a := range got.Addresses {
		wep.Spec.IPNetworks = append(wep.Spec.IPNetworks, a.HostCIDR)
	}
	dw, _ := calc.ToDataplane(wep)
	undo := func(why string) {
		s.undo(wep, handle, why)
	}
	if err := s.plumb.Precheck(dw); err != nil {
		undo("the dataplane refused it")
		return localapi.Workload{}, plumbError(err)
	}
	if err := s.ensureNamespaceProfile(ctx, req.Namespace); err != nil {
		undo("its namespace profile could not be written")
		return localapi.Workload{}, err
	}
	rev, err := s.putEndpoint(ctx, wep)
	if err != nil {
		if errors.Is(err, store.ErrIndeterminate) {
			// Still unknown after retrying: no quorum. Leave everything;
			// a retry of the same add completes it, and if the endpoint
			// never appears the GC reclaims the addresses.
			s.log.Error("workload add: outcome unknown; leaving it for a retry or the IPAM GC", "namespace", req.Namespace, "name", req.Name, "handle", handle, "err", err)
			return localapi.Workload{}, apierr.FromStore(err)
		}
		undo("its endpoint could not be recorded")
		return localapi.Workload{}, apierr.FromStore(err)
	}
	rep, err := s.waitApplied(ctx, dw, rev)
	if err != nil {
		undo("the dataplane did not apply it")
		return localapi.Workload{}, err
	}
	s.log.Info("workload added", "namespace", req.Namespace, "name", req.Name, "ips", wep.Spec.IPNetworks, "iface", hostIface)
	return s.describe(wep, rep), nil
}

// assign allocates the addresses. An outcome the store cannot tell (the
// leader changed as it answered) is retried with the same handle, which
// returns the same addresses if the first attempt was applied: an add
// never leaves an allocation nobody knows about.
func (s *Service) assign(ctx context.Context, req ipam.AssignRequest) (ipam.AssignResponse, error) {
	var got ipam.AssignResponse
	err := s.retryIndeterminate(ctx, "assign addresses", func(ctx context.Context) error {
		var err error
		got, err = s.ipam.Assign(ctx, req)
		return err
	})
	if errors.Is(err, store.ErrIndeterminate) {
		// Never known: release whatever the handle may hold.
		s.release(req.Handle)
	}
	if err != nil {
		return got, apierr.FromIPAM(err)
	}
	return got, nil
}

// putEndpoint records the endpoint and returns the revision it committed
// at. An unknown outcome is retried: the put is idempotent (same key, same
// content).
func (s *Service) putEndpoint(ctx context.Context, wep *api.WorkloadEndpoint) (uint64, error) {
	payload, err := api.Encode("json", []api.Resource{wep})
	if err != nil {
		return 0, err
	}
	var rev uint64
	err = s.retryIndeterminate(ctx, "record the endpoint", func(ctx context.Context) error {
		out, err := s.st.Command(ctx, cmdPutWorkload, payload)
		if err == nil {
			_, err = fmt.Sscan(string(out), &rev)
		}
		return err
	})
	return rev, err
}

// retryIndeterminate runs f until its outcome is known (not
// store.ErrIndeterminate), for at most RetryTimeout.
func (s *Service) retryIndeterminate(ctx context.Context, what string, f func(context.Context) error) error {
	deadline := time.Now().Add(s.cfg.RetryTimeout)
	backoff := 100 * time.Millisecond
	for {
		err := f(ctx)
		if !errors.Is(err, store.ErrIndeterminate) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		s.log.Warn("workload: outcome unknown (the datastore leader changed); retrying", "op", what, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// waitApplied waits until a dataplane report at or after store revision
// rev shows w applied with no problem. A permanent problem (bad namespace,
// an interface or address held by something weft does not own) fails at
// once; others are retried by the dataplane until the wait ends.
func (s *Service) waitApplied(parent context.Context, w dataplane.Workload, rev uint64) (*dataplane.Report, error) {
	ctx, cancel := context.WithTimeout(parent, s.cfg.ApplyTimeout)
	defer cancel()
	var last error
	rep, err := dataplane.WaitReport(ctx, s.dp, func(r *dataplane.Report) (bool, error) {
		if r.Revision < rev {
			return false, nil
		}
		applied, ok := r.Workload(w.HostIface)
		if perr := r.Problems[w.HostIface]; perr != nil {
			last = perr
			if dataplane.Permanent(perr) {
				return false, perr
			}
			return false, nil
		}
		if !ok {
			if rev > 0 && r.Revision >= rev && r.Applied != nil {
				// The dataplane has a state at or after our write without
				// the workload: the calculation left it out.
				last = errors.New("the calculation left it out of the dataplane's state (see the agent's log)")
			}
			return false, nil
		}
		applied.MTU = w.MTU
		return applied.Equal(w), nil
	})
	switch {
	case err == nil:
		return rep, nil
	case parent.Err() != nil:
		return nil, localapi.Errorf(localapi.CodeUnavailable, "workload %s/%s: the request ended (the agent is stopping, or the caller gave up) before the dataplane applied it", w.Namespace, w.Name)
	case ctx.Err() != nil:
		if last != nil {
			return nil, localapi.Errorf(localapi.CodeUnavailable, "workload %s/%s: not in place after %s: %v", w.Namespace, w.Name, s.cfg.ApplyTimeout, last)
		}
		return nil, localapi.Errorf(localapi.CodeUnavailable, "workload %s/%s: the dataplane did not apply it within %s (is the agent in sync with the datastore?)", w.Namespace, w.Name, s.cfg.ApplyTimeout)
	default:
		return nil, plumbError(err)
	}
}

// undo removes what a failed add recorded: its endpoint (if it was
// written) and its addresses.
func (s *Service) undo(wep *api.WorkloadEndpoint, handle, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RetryTimeout)
	defer cancel()
	k := storeKey(wep)
	if _, ok := s.st.Get(k); ok {
		if _, err := s.st.Txn(ctx, []store.Op{{Type: store.OpDelete, Key: k}}); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("workload add failed and its endpoint could not be removed", "endpoint", k, "why", why, "err", err)
		}
	}
	s.release(handle)
	s.log.Info("workload add undone", "namespace", wep.Metadata.Namespace, "name", wep.Spec.Workload, "why", why)
}

// release gives a handle's addresses back; a failure is logged (the GC
// reclaims them later).
func (s *Service) release(handle string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RetryTimeout)
	defer cancel()
	err := s.retryIndeterminate(ctx, "release addresses", func(ctx context.Context) error {
		_, err := s.ipam.ReleaseHandle(ctx, handle)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("releasing workload addresses failed; the IPAM GC will reclaim them", "handle", handle, "err", err)
	}
}

// ensureNamespaceProfile creates the namespace's profile kns.<ns> when it
// is missing: as in Calico on Kubernetes, a namespace's profile allows all
// traffic until changed, and carries the namespace's labels.
func (s *Service) ensureNamespaceProfile(ctx context.Context, ns string) error {
	name := api.NamespaceProfileName(ns)
	k := store.Key{Kind: api.KindProfile, Name: name}
	if _, ok := s.st.Get(k); ok {
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
	if _, err := s.st.Txn(ctx, []store.Op{{Type: store.OpCreate, Key: k, Value: v}}); err != nil && !errors.Is(err, store.ErrExists) {
		return apierr.FromStore(err)
	}
	return nil
}

// Delete detaches a local workload: its endpoint first (the dataplane then
// removes its plumbing), then, once the dataplane no longer has it, its
// addresses.
func (s *Service) Delete(ctx context.Context, ref localapi.WorkloadRef) (localapi.Workload, error) {
	if ref.Namespace == "" {
		ref.Namespace = api.DefaultNamespace
	}
	if ref.Name == "" {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeInvalid, "workload del needs a name")
	}
	defer s.lock(ref.Namespace, ref.Name)()
	w, o, ok := s.find(ref.Namespace, ref.Name)
	if !ok {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeNotFound, "workload %s/%s not found", ref.Namespace, ref.Name)
	}
	// The container first: a CNI DEL for a container whose workload name
	// now belongs to another container (here or on another node) must be
	// told "not yours", which it treats as already deleted.
	if ref.ContainerID != "" && ref.ContainerID != w.Spec.ContainerID {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeConflict, "workload %s/%s belongs to container %s, not %s", ref.Namespace, ref.Name, w.Spec.ContainerID, ref.ContainerID)
	}
	if w.Spec.Node != s.cfg.Node {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeInvalid, "workload %s/%s is on node %s: delete it there", ref.Namespace, ref.Name, w.Spec.Node)
	}
	if err := s.remove(ctx, w, o); err != nil {
		return localapi.Workload{}, err
	}
	return s.describe(w, nil), nil
}

// remove deletes the endpoint, waits (bounded) until the dataplane has
// removed the workload, then releases its addresses: no address is handed
// out again while the old workload may still use it.
func (s *Service) remove(ctx context.Context, w *api.WorkloadEndpoint, o store.Object) error {
	res, err := s.st.Txn(ctx, []store.Op{{Type: store.OpDelete, Key: o.Key, Revision: o.Revision}})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return apierr.FromStore(err)
	}
	if err == nil {
		if err := s.waitRemoved(ctx, w.Spec.InterfaceName, res.Revision); err != nil {
			s.log.Warn("workload deleted, but the dataplane has not confirmed removing its interface; releasing its addresses anyway",
				"namespace", w.Metadata.Namespace, "name", w.Spec.Workload, "err", err)
		}
	}
	s.release(HandleFor(w.Metadata.Namespace, w.Metadata.Name))
	s.log.Info("workload deleted", "namespace", w.Metadata.Namespace, "name", w.Spec.Workload)
	return nil
}

// waitRemoved waits until a report at or after rev no longer has the
// workload and no problem removing it.
func (s *Service) waitRemoved(ctx context.Context, hostIface string, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	_, err := dataplane.WaitReport(ctx, s.dp, func(r *dataplane.Report) (bool, error) {
		if r.Revision < rev || r.Applied == nil {
			return false, nil
		}
		_, present := r.Workload(hostIface)
		return !present && r.Problems[hostIface] == nil, nil
	})
	return err
}

// Check verifies a local workload's plumbing against the kernel (CNI
// CHECK); it only reads.
func (s *Service) Check(ctx context.Context, ref localapi.WorkloadRef) (localapi.Workload, error) {
	if ref.Namespace == "" {
		ref.Namespace = api.DefaultNamespace
	}
	w, _, ok := s.find(ref.Namespace, ref.Name)
	if !ok || w.Spec.Node != s.cfg.Node {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeNotFound, "workload %s/%s not found on this node", ref.Namespace, ref.Name)
	}
	if ref.ContainerID != "" && ref.ContainerID != w.Spec.ContainerID {
		return localapi.Workload{}, localapi.Errorf(localapi.CodeConflict, "workload %s/%s belongs to container %s", ref.Namespace, ref.Name, w.Spec.ContainerID)
	}
	dw, _ := calc.ToDataplane(w)
	rep, _ := s.dp.LatestReport()
	if applied, ok := rep.Workload(dw.HostIface); ok {
		dw.MTU = applied.MTU
	}
	if err := s.plumb.Check(ctx, dw); err != nil {
		return localapi.Workload{}, plumbError(err)
	}
	return s.describe(w, rep), nil
}

// List returns this node's workloads in a namespace ("" = all).
func (s *Service) List(ns string) []localapi.Workload {
	objs, _ := s.st.List(api.KindWorkloadEndpoint, ns)
	rep, _ := s.dp.LatestReport()
	out := []localapi.Workload{}
	for _, o := range objs {
		r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
		if err != nil {
			continue
		}
		w := r.(*api.WorkloadEndpoint)
		if w.Spec.Node == s.cfg.Node {
			out = append(out, s.describe(w, rep))
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

// describe is the API view of a workload; rep (may be nil) gives its MTU
// as applied.
func (s *Service) describe(w *api.WorkloadEndpoint, rep *dataplane.Report) localapi.Workload {
	out := localapi.Workload{
		Name: w.Spec.Workload, Namespace: w.Metadata.Namespace, Node: w.Spec.Node,
		NetNS: w.Metadata.Annotations[calc.AnnotationNetNS], Endpoint: w.Metadata.Name,
		HostIface: w.Spec.InterfaceName, Interface: w.Spec.Endpoint, MAC: w.Spec.MAC,
		IPs: w.Spec.IPNetworks, Labels: userLabels(w.Metadata.Labels),
		Orchestrator: w.Spec.Orchestrator, ContainerID: w.Spec.ContainerID,
	}
	if applied, ok := rep.Workload(w.Spec.InterfaceName); ok {
		out.MTU = applied.MTU
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
		if strings.HasPrefix(k, "projectcalico.org/") {
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// randomMAC is a random locally administered unicast MAC for a workload's
// interface, chosen before the endpoint is recorded so that the endpoint
// is complete when written and the dataplane programs exactly it.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("choosing a MAC: %w", err)
	}
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac, nil
}

// plumbError maps dataplane errors onto local API errors.
func plumbError(err error) error {
	var le *localapi.Error
	switch {
	case errors.As(err, &le):
		return err
	case errors.Is(err, dataplane.ErrBadNetNS), errors.Is(err, dataplane.ErrIfaceTaken):
		return &localapi.Error{Code: localapi.CodeInvalid, Message: err.Error()}
	case errors.Is(err, dataplane.ErrForeignRoute), errors.Is(err, dataplane.ErrDrift):
		return &localapi.Error{Code: localapi.CodeConflict, Message: err.Error()}
	}
	return err
}
