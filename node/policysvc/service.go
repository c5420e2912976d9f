// Package policysvc serves the policy calls of the local API: `weft label`
// (kubectl's label semantics on a workload's endpoint or a namespace's
// profile), `weft policy trace` (the policy model evaluated for one
// packet) and this node's per-rule counters; and it registers the policy
// invariants the store enforces (validators.go).
package policysvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/node/apierr"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/node/policy"
	"github.com/weftnet/weft/store"
)

// CounterSource reads this node's per-rule counters (the firewall
// manager).
type CounterSource interface {
	Counters(ctx context.Context) ([]firewall.RuleCounter, error)
}

// Config configures the service.
type Config struct {
	Node string
	// Settings are the node's policy settings from its config file (the
	// failsafe ports a trace to a host endpoint honours).
	Settings dataplane.PolicySettings
	Logger   *slog.Logger
}

// Service serves the calls.
type Service struct {
	cfg      Config
	st       store.Store
	counters CounterSource
	log      *slog.Logger
}

// New returns the service; counters may be nil (no local dataplane).
func New(cfg Config, st store.Store, counters CounterSource) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, st: st, counters: counters, log: cfg.Logger.With("component", "policy")}
}

// Register adds the calls to the local API.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/label", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.LabelRequest
		if err := localapi.ReadJSON(w, r, &req); err != nil {
			localapi.WriteError(w, err)
			return
		}
		resp, err := s.Label(r.Context(), req)
		reply(w, resp, err)
	})
	mux.HandleFunc("POST /v1/policy/trace", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.TraceRequest
		if err := localapi.ReadJSON(w, r, &req); err != nil {
			localapi.WriteError(w, err)
			return
		}
		resp, err := s.Trace(req)
		reply(w, resp, err)
	})
	mux.HandleFunc("GET /v1/policy/counters", func(w http.ResponseWriter, r *http.Request) {
		resp, err := s.Counters(r.Context())
		reply(w, resp, err)
	})
}

func reply[T any](w http.ResponseWriter, v T, err error) {
	if err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, v)
}

func invalid(format string, args ...any) error {
	return localapi.Errorf(localapi.CodeInvalid, format, args...)
}

// ---- label ---------------------------------------------------------------

// Label changes the labels of a workload (its WorkloadEndpoint: the veth
// and addresses stay), of a namespace (its profile kns.<ns>, created
// allowing all when missing) or of a node (nodeSelector, peerSelector), with kubectl's semantics: setting a key that
// has another value needs Overwrite; removing a missing key is a note, not
// an error. The write is compare-and-swap on the object's revision,
// retried when another writer got there first.
func (s *Service) Label(ctx context.Context, req localapi.LabelRequest) (localapi.LabelResponse, error) {
	if req.Name == "" {
		return localapi.LabelResponse{}, invalid("label needs a name")
	}
	if len(req.Set) == 0 && len(req.Remove) == 0 {
		return localapi.LabelResponse{}, invalid("label needs at least one key=value or key-")
	}
	for _, k := range slices.Concat(slices.Collect(maps.Keys(req.Set)), req.Remove) {
		if strings.HasPrefix(k, "projectcalico.org/") {
			return localapi.LabelResponse{}, invalid("label %q: projectcalico.org/ labels are kept by weft itself", k)
		}
	}
	for _, k := range req.Remove {
		if _, ok := req.Set[k]; ok {
			return localapi.LabelResponse{}, invalid("label %q is both set and removed", k)
		}
	}
	if _, err := s.st.ConsistentRevision(ctx); err != nil {
		return localapi.LabelResponse{}, apierr.FromStore(err)
	}
	for attempt := 0; ; attempt++ {
		resp, err := s.labelOnce(ctx, req)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return localapi.LabelResponse{}, apierr.FromStore(err)
		}
		return resp, nil
	}
}

func (s *Service) labelOnce(ctx context.Context, req localapi.LabelRequest) (localapi.LabelResponse, error) {
	var (
		r   api.Resource
		obj store.Object
		ok  bool
	)
	switch req.Kind {
	case "workload":
		ns := req.Namespace
		if ns == "" {
			ns = api.DefaultNamespace
		}
		r, obj, ok = s.findWorkload(ns, req.Name)
		if !ok {
			return localapi.LabelResponse{}, localapi.Errorf(localapi.CodeNotFound, "workload %s/%s not found", ns, req.Name)
		}
	case "namespace":
		if !api.IsDNSLabel(req.Name) {
			return localapi.LabelResponse{}, invalid("namespace %q must be a DNS label", req.Name)
		}
		k := store.Key{Kind: api.KindProfile, Name: api.NamespaceProfileName(req.Name)}
		obj, ok = s.st.Get(k)
		if ok {
			var err error
			if r, err = api.FromStore(obj.Kind, obj.Value, obj.UID, obj.Revision, obj.Created); err != nil {
				return localapi.LabelResponse{}, err
			}
		} else {
			// As weft creates it with a namespace's first workload.
			p := &api.Profile{}
			p.Metadata.Name = k.Name
			p.Spec.Ingress = []api.Rule{{Action: api.ActionAllow}}
			p.Spec.Egress = []api.Rule{{Action: api.ActionAllow}}
			r = p
		}
	case "node":
		obj, ok = s.st.Get(store.Key{Kind: api.KindNode, Name: req.Name})
		if !ok {
			return localapi.LabelResponse{}, localapi.Errorf(localapi.CodeNotFound, "node %s not found", req.Name)
		}
		var err error
		if r, err = api.FromStore(obj.Kind, obj.Value, obj.UID, obj.Revision, obj.Created); err != nil {
			return localapi.LabelResponse{}, err
		}
	default:
		return localapi.LabelResponse{}, invalid("label kind %q: want workload, namespace or node", req.Kind)
	}
	m := r.GetMeta()
	labels := maps.Clone(m.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	var notes []string
	changed := false
	for _, k := range slices.Sorted(maps.Keys(req.Set)) {
		v := req.Set[k]
		if old, has := labels[k]; has && old != v && !req.Overwrite {
			return localapi.LabelResponse{}, invalid("%s %s already has a value (%s) for label %q, and --overwrite is false", req.Kind, req.Name, old, k)
		}
		if labels[k] != v || !has(labels, k) {
			labels[k] = v
			changed = true
		}
	}
	for _, k := range req.Remove {
		if _, has := labels[k]; !has {
			notes = append(notes, fmt.Sprintf("label %q not found", k))
			continue
		}
		delete(labels, k)
		changed = true
	}
	if !changed {
		return localapi.LabelResponse{Labels: userLabels(labels), Notes: notes}, nil
	}
	m.Labels = labels
	api.Default(r)
	if err := api.Validate(r); err != nil {
		return localapi.LabelResponse{}, invalid("%v", err)
	}
	v, err := api.StoreValue(r)
	if err != nil {
		return localapi.LabelResponse{}, err
	}
	kind, ns, name := api.Key(r)
	op := store.Op{Type: store.OpCreate, Key: store.Key{Kind: kind, Namespace: ns, Name: name}, Value: v}
	if obj.Revision != 0 {
		op.Type, op.Revision = store.OpUpdate, obj.Revision
	}
	if _, err := s.st.Txn(ctx, []store.Op{op}); err != nil {
		if errors.Is(err, store.ErrExists) {
			return localapi.LabelResponse{}, fmt.Errorf("%w: created meanwhile", store.ErrConflict)
		}
		return localapi.LabelResponse{}, err
	}
	s.log.Info("labels changed", "kind", req.Kind, "namespace", req.Namespace, "name", req.Name, "labels", userLabels(labels))
	return localapi.LabelResponse{Labels: userLabels(labels), Changed: true, Notes: notes}, nil
}

func has(m map[string]string, k string) bool { _, ok := m[k]; return ok }

// findWorkload finds a workload's endpoint by namespace and workload name
// (on any node).
func (s *Service) findWorkload(ns, name string) (*api.WorkloadEndpoint, store.Object, bool) {
	objs, _ := s.st.List(api.KindWorkloadEndpoint, ns)
	for _, o := range objs {
		r, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
		if err != nil {
			continue
		}
		if w := r.(*api.WorkloadEndpoint); w.Spec.Workload == name {
			return w, o, true
		}
	}
	return nil, store.Object{}, false
}

// userLabels drops the labels weft keeps itself.
func userLabels(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		if !strings.HasPrefix(k, "projectcalico.org/") {
			out[k] = v
		}
	}
	return out
}

// ---- trace ---------------------------------------------------------------

// Trace evaluates the policy model of the local replica for one packet.
func (s *Service) Trace(req localapi.TraceRequest) (localapi.TraceResponse, error) {
	if err := apierr.ReadReady(s.st); err != nil {
		return localapi.TraceResponse{}, err
	}
	if req.From == "" || req.To == "" {
		return localapi.TraceResponse{}, invalid("trace needs --from and --to (a workload name or an IP address)")
	}
	proto, err := parseProto(req.Protocol)
	if err != nil {
		return localapi.TraceResponse{}, err
	}
	objs, rev, err := s.policyObjects()
	if err != nil {
		return localapi.TraceResponse{}, err
	}
	var felixDefault, felixNode api.FelixConfigurationSpec
	for _, r := range objs {
		if fc, ok := r.(*api.FelixConfiguration); ok {
			switch fc.Metadata.Name {
			case "default":
				felixDefault = fc.Spec
			case "node." + s.cfg.Node:
				felixNode = fc.Spec
			}
		}
	}
	felix := api.MergeFelixConfiguration(felixDefault, felixNode)
	tr := policy.NewTracer(objs, policy.FelixOverrides(s.cfg.Settings, felix))
	want := netip.Addr{}
	switch req.IPVersion {
	case 0, 4:
		want = netip.IPv4Unspecified()
	case 6:
		want = netip.IPv6Unspecified()
	default:
		return localapi.TraceResponse{}, invalid("ipVersion %d: want 4 or 6", req.IPVersion)
	}
	// An IP address on either side fixes the family.
	for _, e := range []string{req.From, req.To} {
		if a, err := netip.ParseAddr(e); err == nil {
			want = a.Unmap()
		}
	}
	src, err := s.endpointAddr(tr, req.From, req.Namespace, want)
	if err != nil {
		return localapi.TraceResponse{}, fmt.Errorf("--from: %w", err)
	}
	dst, err := s.endpointAddr(tr, req.To, req.Namespace, want)
	if err != nil {
		return localapi.TraceResponse{}, fmt.Errorf("--to: %w", err)
	}
	pkt := policy.Packet{Src: src, Dst: dst, Proto: proto, DstPort: req.Port, SrcPort: req.SourcePort}
	switch proto {
	case dataplane.ProtoTCP, dataplane.ProtoUDP, dataplane.ProtoSCTP:
		if req.Port == 0 {
			return localapi.TraceResponse{}, invalid("--port is required for %s", req.Protocol)
		}
		if pkt.SrcPort == 0 {
			pkt.SrcPort = 40000
		}
	case dataplane.ProtoICMP, dataplane.ProtoICMPv6:
		pkt.ICMPType, pkt.ICMPCode = 8, req.ICMPCode
		if proto == dataplane.ProtoICMPv6 {
			pkt.ICMPType = 128
		}
		if req.ICMPType != nil {
			pkt.ICMPType = *req.ICMPType
		}
	}
	if (proto == dataplane.ProtoICMP && !src.Is4()) || (proto == dataplane.ProtoICMPv6 && src.Is4()) {
		return localapi.TraceResponse{}, invalid("protocol %s does not match the IPv%d addresses %s, %s", req.Protocol, map[bool]int{true: 4, false: 6}[src.Is4()], src, dst)
	}
	t := tr.Trace(pkt)
	out := localapi.TraceResponse{Packet: pkt.String(), Verdict: t.Verdict.String(), Revision: rev}
	for _, h := range t.Hops {
		hop := localapi.TraceHop{Endpoint: h.Endpoint, Direction: h.Direction, Verdict: h.Verdict.String()}
		for _, st := range h.Steps {
			hop.Steps = append(hop.Steps, localapi.TraceStep{Tier: st.Tier, Policy: st.Policy, Rule: st.Rule, Action: st.Action})
		}
		out.Hops = append(out.Hops, hop)
	}
	return out, nil
}

// policyObjects lists every object the policy model reads.
func (s *Service) policyObjects() ([]api.Resource, uint64, error) {
	var out []api.Resource
	var rev uint64
	for _, kind := range append(slices.Clone(policy.Kinds), api.KindFelixConfiguration) {
		objs, r := s.st.List(kind, "")
		rev = max(rev, r)
		for _, o := range objs {
			res, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
			if err != nil {
				return nil, 0, fmt.Errorf("reading stored %s: %w", o.Key, err)
			}
			out = append(out, res)
		}
	}
	return out, rev, nil
}

// endpointAddr resolves a trace end: an IP address, or a workload
// ("name" in namespace, or "namespace/name") and its address of the
// wanted family.
func (s *Service) endpointAddr(tr *policy.Tracer, ref, namespace string, want netip.Addr) (netip.Addr, error) {
	if a, err := netip.ParseAddr(ref); err == nil {
		return a.Unmap(), nil
	}
	ns, name := namespace, ref
	if before, after, ok := strings.Cut(ref, "/"); ok {
		ns, name = before, after
	}
	if ns == "" {
		ns = api.DefaultNamespace
	}
	w, ok := tr.Workload(ns, name)
	if !ok {
		return netip.Addr{}, localapi.Errorf(localapi.CodeNotFound, "workload %s/%s not found (and %q is not an IP address)", ns, name, ref)
	}
	a, ok := policy.FamilyAddr(policy.Addresses(w), want)
	if !ok {
		return netip.Addr{}, invalid("workload %s/%s has no IPv%d address", ns, name, map[bool]int{true: 4, false: 6}[want.Is4()])
	}
	return a, nil
}

func parseProto(s string) (uint8, error) {
	switch strings.ToLower(s) {
	case "", "tcp":
		return dataplane.ProtoTCP, nil
	case "udp":
		return dataplane.ProtoUDP, nil
	case "sctp":
		return dataplane.ProtoSCTP, nil
	case "icmp":
		return dataplane.ProtoICMP, nil
	case "icmpv6":
		return dataplane.ProtoICMPv6, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n == 0 {
		return 0, invalid("protocol %q: want tcp, udp, sctp, icmp, icmpv6 or a number 1-255", s)
	}
	return uint8(n), nil
}

// ---- counters ------------------------------------------------------------

// Counters reads this node's per-rule counters.
func (s *Service) Counters(ctx context.Context) (localapi.CountersResponse, error) {
	if s.counters == nil {
		return localapi.CountersResponse{Counters: []localapi.RuleCounter{}}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rcs, err := s.counters.Counters(ctx)
	if err != nil {
		return localapi.CountersResponse{}, localapi.Errorf(localapi.CodeUnavailable, "reading the policy counters: %v", err)
	}
	out := make([]localapi.RuleCounter, 0, len(rcs))
	for _, rc := range rcs {
		out = append(out, localapi.RuleCounter{
			Kind: rc.Policy.Kind, Namespace: rc.Policy.Namespace, Name: rc.Policy.Name,
			Direction: rc.Direction.String(), Rule: rc.Rule, Packets: rc.Packets, Bytes: rc.Bytes,
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Direction != b.Direction {
			return a.Direction < b.Direction
		}
		return a.Rule < b.Rule
	})
	return localapi.CountersResponse{Counters: out}, nil
}
