package policy

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// Tracer evaluates the policy model for one packet and explains the
// verdict: `weft policy trace`. It holds the whole cluster's model with
// every endpoint treated as local, so a trace from a workload on one node
// to a workload on another evaluates the source's egress as its node does
// and the destination's ingress as the other node does.
type Tracer struct {
	c         *Calculator
	st        *dataplane.PolicyState
	workloads map[[2]string]*api.WorkloadEndpoint // (namespace, workload name)
	hosts     map[string]*api.HostEndpoint
	byAddr    map[netip.Addr]string // address → "wl:ns/name" or "hep:name"
	settings  dataplane.PolicySettings
}

// NewTracer builds the model from every object of the kinds in [Kinds].
// settings gives the failsafe ports (a trace to a host endpoint).
func NewTracer(objects []api.Resource, settings dataplane.PolicySettings) *Tracer {
	t := &Tracer{
		c:         New(Config{AllLocal: true, Settings: settings}),
		workloads: map[[2]string]*api.WorkloadEndpoint{},
		hosts:     map[string]*api.HostEndpoint{},
		byAddr:    map[netip.Addr]string{},
		settings:  settings,
	}
	for _, r := range objects {
		t.c.Put(r)
		switch r := r.(type) {
		case *api.WorkloadEndpoint:
			t.workloads[[2]string{r.Metadata.Namespace, r.Spec.Workload}] = r
			for _, n := range r.Spec.IPNetworks {
				if p, err := api.ParseCIDROrIP(n); err == nil {
					t.byAddr[p.Addr().Unmap()] = "wl:" + r.Metadata.Namespace + "/" + r.Spec.Workload
				}
			}
		case *api.HostEndpoint:
			t.hosts[r.Metadata.Name] = r
			for _, s := range r.Spec.ExpectedIPs {
				if a, err := netip.ParseAddr(s); err == nil {
					if _, taken := t.byAddr[a.Unmap()]; !taken {
						t.byAddr[a.Unmap()] = "hep:" + r.Metadata.Name
					}
				}
			}
		}
	}
	t.st = t.c.State()
	return t
}

// Hop is the evaluation at one end of the path.
type Hop struct {
	// Endpoint describes the end: "workload prod/db (node n2)".
	Endpoint string
	// Direction is egress (leaving the source) or ingress (reaching the
	// destination).
	Direction string
	Result
}

// Trace is the answer for one packet.
type Trace struct {
	Packet Packet
	// Hops are the ends that have policy: the source's egress (when the
	// source is a workload), then the destination's ingress (a workload or
	// a host endpoint). Evaluation stops at the first end that denies.
	Hops    []Hop
	Verdict Verdict
}

// Workload returns the workload endpoint of a workload, if there is one.
func (t *Tracer) Workload(namespace, name string) (*api.WorkloadEndpoint, bool) {
	w, ok := t.workloads[[2]string{namespace, name}]
	return w, ok
}

// Addresses returns a workload's addresses.
func Addresses(w *api.WorkloadEndpoint) []netip.Addr {
	var out []netip.Addr
	for _, n := range w.Spec.IPNetworks {
		if p, err := api.ParseCIDROrIP(n); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// Trace evaluates pkt (its Src and Dst set): the egress of the workload
// holding Src, if any, then the ingress of the workload or host endpoint
// holding Dst, if any. A packet between two addresses weft does not know
// is allowed by policy (nothing applies to it).
func (t *Tracer) Trace(pkt Packet) Trace {
	out := Trace{Packet: pkt, Verdict: Allowed}
	if owner, ok := t.byAddr[pkt.Src.Unmap()]; ok {
		if hop, ok := t.hop(owner, dataplane.Egress, pkt); ok {
			out.Hops = append(out.Hops, hop)
			if hop.Verdict != Allowed {
				out.Verdict = hop.Verdict
				return out
			}
		}
	}
	if owner, ok := t.byAddr[pkt.Dst.Unmap()]; ok {
		if hop, ok := t.hop(owner, dataplane.Ingress, pkt); ok {
			out.Hops = append(out.Hops, hop)
			out.Verdict = hop.Verdict
		}
	}
	return out
}

func (t *Tracer) hop(owner string, dir dataplane.Direction, pkt Packet) (Hop, bool) {
	kind, ref := owner[:3], owner[3:]
	if kind == "wl:" {
		ns, name := splitNS(ref)
		w := t.workloads[[2]string{ns, name}]
		ep := t.c.Workload(ns, w.Metadata.Name)
		if ep == nil {
			return Hop{}, false
		}
		d := &ep.Ingress
		if dir == dataplane.Egress {
			d = &ep.Egress
		}
		return Hop{
			Endpoint:  fmt.Sprintf("workload %s/%s (node %s)", ns, name, w.Spec.Node),
			Direction: dir.String(),
			Result:    Evaluate(t.st, d, dir, dataplane.StageNormal, pkt),
		}, true
	}
	// A host endpoint: the failsafe ports first, then its (normal) policy.
	h := t.hosts[ref]
	hp := t.c.Host(ref)
	if hp == nil || h.Spec.InterfaceName == "" {
		return Hop{}, false
	}
	hop := Hop{Endpoint: fmt.Sprintf("host endpoint %s (node %s, interface %s)", ref, h.Spec.Node, h.Spec.InterfaceName), Direction: dir.String()}
	if t.failsafe(dir, pkt) {
		hop.Verdict = Allowed
		hop.Steps = []Step{{Rule: -1, Action: "failsafe port: Allow"}}
		return hop, true
	}
	d := &hp.Ingress
	if dir == dataplane.Egress {
		d = &hp.Egress
	}
	hop.Result = Evaluate(t.st, d, dir, dataplane.StageNormal, pkt)
	return hop, true
}

// failsafe reports whether the packet uses a failsafe port of the host
// in that direction: inbound to a FailsafeIn port (or from a FailsafeOut
// port: a reply), outbound likewise.
func (t *Tracer) failsafe(dir dataplane.Direction, pkt Packet) bool {
	in, out := t.settings.FailsafeIn, t.settings.FailsafeOut
	remote := pkt.Src
	if dir == dataplane.Egress {
		in, out = out, in
		remote = pkt.Dst
	}
	for _, pp := range in {
		if pp.Proto == pkt.Proto && pp.Port == pkt.DstPort && (!pp.Net.IsValid() || pp.Net.Contains(remote)) {
			return true
		}
	}
	for _, pp := range out {
		if pp.Proto == pkt.Proto && pp.Port == pkt.SrcPort && (!pp.Net.IsValid() || pp.Net.Contains(remote)) {
			return true
		}
	}
	return false
}

func splitNS(ref string) (string, string) {
	for i := range ref {
		if ref[i] == '/' {
			return ref[:i], ref[i+1:]
		}
	}
	return "", ref
}

// FamilyAddr picks the address of a workload of the family of want (the
// first when want is invalid).
func FamilyAddr(addrs []netip.Addr, want netip.Addr) (netip.Addr, bool) {
	i := slices.IndexFunc(addrs, func(a netip.Addr) bool { return !want.IsValid() || a.Is4() == want.Is4() })
	if i < 0 {
		return netip.Addr{}, false
	}
	return addrs[i], true
}
