package calc

import (
	"net"
	"net/netip"
	"sort"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// workloads is the resolver of this node's workloads: the plumbing of each
// local WorkloadEndpoint (its veth, addresses and MTU) and its host routes.
// The MTU follows the encapsulations (calico.md §5.5): the underlay MTU
// (as the node observes it, FelixConfiguration mtuIfacePattern applied),
// or the smallest MTU of the encapsulations in use (VXLAN: vxlanMTU or
// underlay − 50; IP-in-IP: ipipMTU or underlay − 20; WireGuard, when it
// is enabled, whatever the pools: wireguardMTU or underlay − 60, − 80 on
// an IPv6-only underlay); network.mtu overrides.
type workloads struct{ env Env }

func newWorkloads(env Env) Resolver { return &workloads{env: env} }

func (r *workloads) Name() string { return "workloads" }

func (r *workloads) Kinds() []string {
	return []string{api.KindWorkloadEndpoint, api.KindIPPool, api.KindFelixConfiguration, LocalKindLinks}
}

func (r *workloads) OnUpdate(Update) {}

// MTU is the workload MTU the current pools call for (0: kernel default),
// and a problem with the underlay MTU's detection ("" if none).
func (r *workloads) MTU() (int, string) {
	cfg, topo := r.env.Config, r.env.Topology
	underlay, problem := topo.UnderlayMTU(cfg.UnderlayMTU)
	if cfg.MTU > 0 {
		return cfg.MTU, problem
	}
	if underlay <= 0 {
		return 0, problem
	}
	enc := dataplane.Encaps{
		VXLANv4: topo.VXLANWanted(), IPIP: topo.IPIPWanted(),
		VXLANMTU: deref(topo.Felix.VXLANMTU), IPIPMTU: deref(topo.Felix.IPIPMTU),
	}
	if cfg.WireGuard.Enabled {
		// Whatever the pools' VXLAN mode: traffic to WireGuard nodes
		// carries WireGuard's overhead.
		v6 := cfg.WireGuardOverhead() == dataplane.OverheadWireGuardV6
		enc.WireGuardV4, enc.WireGuardV6 = !v6, v6
		enc.WireGuardMTU = deref(topo.Felix.WireguardMTU)
	}
	return dataplane.WorkloadMTU(underlay, enc, 0), problem
}

func (r *workloads) Contribute(out *Output) {
	me := r.env.Config.NodeName
	mtu, problem := r.MTU()
	if problem != "" {
		out.problem("%s", problem)
	}
	var local []*EndpointView
	for _, e := range r.env.Topology.Endpoints {
		if e.Spec.Node == me {
			local = append(local, e)
		}
	}
	// Oldest first: if two endpoints ever conflicted, sanitize keeps the
	// one that was there first.
	sort.Slice(local, func(i, j int) bool {
		if local[i].CreateRevision != local[j].CreateRevision {
			return local[i].CreateRevision < local[j].CreateRevision
		}
		a, b := local[i].Metadata, local[j].Metadata
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	for _, e := range local {
		w, ok := ToDataplane(e.WorkloadEndpoint)
		if !ok {
			continue // not weft's to plumb (or not complete)
		}
		w.MTU = mtu
		out.Desired.Workloads = append(out.Desired.Workloads, w)
		out.Desired.Routes = append(out.Desired.Routes, w.HostRoutes()...)
	}
}

// ToDataplane is the plumbing a WorkloadEndpoint asks for (without the
// MTU, which the pools decide); ok is false for an endpoint weft does not
// plumb (no network namespace, address or host interface).
func ToDataplane(w *api.WorkloadEndpoint) (dataplane.Workload, bool) {
	dw := dataplane.Workload{
		Namespace: w.Metadata.Namespace,
		Name:      w.Spec.Workload,
		HostIface: w.Spec.InterfaceName,
		NetNS:     w.Metadata.Annotations[AnnotationNetNS],
		Iface:     w.Spec.Endpoint,
	}
	for _, s := range w.Spec.IPNetworks {
		if p, err := netip.ParsePrefix(s); err == nil {
			dw.IPs = append(dw.IPs, p)
		}
	}
	if mac, err := net.ParseMAC(w.Spec.MAC); err == nil {
		dw.MAC = mac
	}
	return dw, dw.NetNS != "" && len(dw.IPs) > 0 && dw.HostIface != ""
}
