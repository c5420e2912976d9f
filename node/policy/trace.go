package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

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
// holding Src, if any; when the packet is forwarded between nodes (or out
// of its node), the applyOnForward policy of the all-interfaces host
// endpoints ("*") of the nodes it leaves and enters; then the ingress of
// the workload or host endpoint holding Dst, if any. A packet between two
// addresses weft does not know is allowed by policy (nothing applies to
// it). Host endpoints on named interfaces are not evaluated for forwarded
// traffic: which interface a forwarded packet uses is the kernel's choice
// (a tunnel or the uplink), which the model does not know.
func (t *Tracer) Trace(pkt Packet) Trace {
	out := Trace{Packet: pkt, Verdict: Allowed}
	srcOwner, srcOK := t.byAddr[pkt.Src.Unmap()]
	dstOwner, dstOK := t.byAddr[pkt.Dst.Unmap()]
	srcNode, dstNode := t.nodeOf(srcOwner), t.nodeOf(dstOwner)
	var hops []func() (Hop, bool)
	if srcOK {
		hops = append(hops, func() (Hop, bool) { return t.hop(srcOwner, dataplane.Egress, pkt) })
	}
	// Forwarded between two nodes (or to or from outside): the "*" host
	// endpoints' forward policy on the way.
	if srcOK && strings.HasPrefix(srcOwner, "wl:") && srcNode != dstNode {
		hops = append(hops, func() (Hop, bool) { return t.forwardHop(srcNode, dataplane.Egress, pkt) })
	}
	if dstOK && strings.HasPrefix(dstOwner, "wl:") && srcNode != dstNode {
		hops = append(hops, func() (Hop, bool) { return t.forwardHop(dstNode, dataplane.Ingress, pkt) })
	}
	if dstOK {
		hops = append(hops, func() (Hop, bool) { return t.hop(dstOwner, dataplane.Ingress, pkt) })
	}
	for _, h := range hops {
		hop, ok := h()
		if !ok {
			continue
		}
		out.Hops = append(out.Hops, hop)
		if hop.Verdict == Denied {
			out.Verdict = Denied
			return out
		}
	}
	return out
}

// nodeOf is the node of an address's owner ("" when unknown).
func (t *Tracer) nodeOf(owner string) string {
	switch {
	case strings.HasPrefix(owner, "wl:"):
		ns, name := splitNS(owner[3:])
		return t.workloads[[2]string{ns, name}].Spec.Node
	case strings.HasPrefix(owner, "hep:"):
		return t.hosts[owner[4:]].Spec.Node
	}
	return ""
}

// forwardHop is the applyOnForward policy of a node's all-interfaces host
// endpoint for a packet it forwards (nothing when there is none).
func (t *Tracer) forwardHop(node string, dir dataplane.Direction, pkt Packet) (Hop, bool) {
	if node == "" {
		return Hop{}, false
	}
	for name, h := range t.hosts {
		if h.Spec.Node != node || h.Spec.InterfaceName != dataplane.HostIfaceAll {
			continue
		}
		hp := t.c.Host(name)
		if hp == nil {
			continue
		}
		d := hp.ForwardIngress
		if dir == dataplane.Egress {
			d = hp.ForwardEgress
		}
		if d == nil {
			return Hop{}, false // no applyOnForward policy: forwarded traffic passes
		}
		return Hop{
			Endpoint:  fmt.Sprintf("host endpoint %s (node %s, all interfaces, forwarded traffic)", name, node),
			Direction: dir.String(),
			Result:    Evaluate(t.st, d, dir, dataplane.StageNormal, pkt),
		}, true
	}
	return Hop{}, false
}

func (t *Tracer) hop(owner string, dir dataplane.Direction, pkt Packet) (Hop, bool) {
	if ref, ok := strings.CutPrefix(owner, "wl:"); ok {
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
	ref := strings.TrimPrefix(owner, "hep:")
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
