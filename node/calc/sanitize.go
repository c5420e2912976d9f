package calc

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"

	"github.com/weftnet/weft/dataplane"
)

// sanitize makes out.Desired valid: it drops, deterministically, the items
// that are invalid or conflict with an item kept before them, and records
// each drop in out.Problems. Workloads are kept in the order the workloads
// resolver gives (oldest first); of two routes to one (table, destination)
// the lower class wins ([dataplane.RouteClass]), and within a class the
// first in destination order; a route through a dropped VXLAN peer goes
// too. The slices come out sorted, so equal states compare equal.
func sanitize(out *Output) {
	d := &out.Desired
	ifaces := map[string]bool{}
	owners := map[netip.Addr]bool{}
	var ws []dataplane.Workload
	for _, w := range d.Workloads {
		err := w.Validate()
		conflict := ifaces[w.HostIface]
		for _, p := range w.IPs {
			conflict = conflict || owners[p.Addr()]
		}
		if err != nil || conflict {
			out.problem("workload %s/%s: left out: invalid or its interface or an address is another's (%v)", w.Namespace, w.Name, err)
			continue
		}
		ifaces[w.HostIface] = true
		for _, p := range w.IPs {
			owners[p.Addr()] = true
		}
		ws = append(ws, w)
	}
	d.Workloads = ws
	sort.Slice(d.Workloads, func(i, j int) bool { return d.Workloads[i].HostIface < d.Workloads[j].HostIface })

	if d.VXLAN != nil {
		if err := d.VXLAN.Validate(); err != nil {
			out.problem("%v: left out with its peers", err)
			d.VXLAN, d.VXLANPeers = nil, nil
		}
	}
	tunnels := map[netip.Addr]bool{}
	macs := map[string]bool{}
	if d.VXLAN != nil {
		tunnels[d.VXLAN.TunnelAddr] = true
		macs[d.VXLAN.MAC.String()] = true
	}
	badVia := map[netip.Addr]bool{}
	var peers []dataplane.VXLANPeer
	sort.Slice(d.VXLANPeers, func(i, j int) bool { return d.VXLANPeers[i].Node < d.VXLANPeers[j].Node })
	for _, p := range d.VXLANPeers {
		if tunnels[p.TunnelIP] || macs[p.VTEPMAC.String()] || !p.UnderlayIP.IsValid() {
			out.problem("vxlan peer %s: left out: tunnel address %s or MAC %s already used (or no underlay address)", p.Node, p.TunnelIP, p.VTEPMAC)
			badVia[p.TunnelIP] = true
			continue
		}
		tunnels[p.TunnelIP], macs[p.VTEPMAC.String()] = true, true
		peers = append(peers, p)
	}
	d.VXLANPeers = peers

	// Routes of dropped workloads go with them.
	hostIfaces := map[string]bool{}
	for _, w := range d.Workloads {
		hostIfaces[w.HostIface] = true
	}
	// Sorted by (table, destination, class), the routes to one destination
	// are adjacent, the lowest class first: the first valid one of each
	// stays (no map: learned routes can number thousands).
	d.Routes = sortRoutes(d.Routes)
	var routes []dataplane.Route
	if len(d.Routes) > 0 {
		routes = make([]dataplane.Route, 0, len(d.Routes))
	}
	for _, r := range d.Routes {
		if r.Class == dataplane.RouteClassWorkload && !hostIfaces[r.Dev] {
			continue
		}
		err := r.Validate()
		switch {
		case err != nil:
			out.problem("route %s: left out: %v", r, err)
			continue
		case r.OnLink && badVia[r.Via]:
			out.problem("route %s: left out: via a dropped VXLAN peer", r)
			continue
		}
		if n := len(routes); n > 0 && routes[n-1].Key() == r.Key() {
			if routes[n-1].Class == r.Class {
				out.problem("route %s: left out: another %s route has that destination", r, r.Class)
			}
			continue // a lower class holds it: the normal case, not a problem
		}
		routes = append(routes, r)
	}
	d.Routes = routes

	seen := map[dataplane.Rule]bool{}
	var rules []dataplane.Rule
	for _, r := range d.Rules {
		if err := r.Validate(); err != nil {
			out.problem("%v: left out", err)
			continue
		}
		if !seen[r] {
			seen[r] = true
			rules = append(rules, r)
		}
	}
	sort.Slice(rules, func(i, j int) bool {
		a, b := rules[i], rules[j]
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		return a.String() < b.String()
	})
	d.Rules = rules

	if err := d.NAT.Validate(); err != nil {
		out.problem("%v: outgoing NAT left out", err)
		d.NAT = dataplane.NATConfig{}
	}
	sanitizeWireGuard(out)
}

// compareRoutes orders routes by (table, destination, class).
func compareRoutes(a, b dataplane.Route) int {
	if a.TableID() != b.TableID() {
		return cmp.Compare(a.TableID(), b.TableID())
	}
	return cmp.Or(comparePrefix(a.Dst, b.Dst), cmp.Compare(a.Class, b.Class))
}

// sortRoutes sorts routes stably by [compareRoutes]. The learned routes,
// thousands of them and recomputed on every change of the speaker's state,
// usually arrive already in order (the speaker lists them sorted): they
// are sorted apart from the few others, only when out of order, and the
// two runs merged. The result is the one a stable sort of the whole list
// gives: a learned and another route never compare equal (their classes
// differ), and each part keeps its own order.
func sortRoutes(routes []dataplane.Route) []dataplane.Route {
	var learned, others []dataplane.Route
	for i, r := range routes {
		if r.Class == dataplane.RouteClassBGP {
			if learned == nil {
				learned = make([]dataplane.Route, 0, len(routes)-i)
			}
			learned = append(learned, r)
		} else {
			others = append(others, r)
		}
	}
	if len(learned) == 0 || len(others) == 0 {
		if !slices.IsSortedFunc(routes, compareRoutes) {
			slices.SortStableFunc(routes, compareRoutes)
		}
		return routes
	}
	if !slices.IsSortedFunc(learned, compareRoutes) {
		slices.SortStableFunc(learned, compareRoutes)
	}
	slices.SortStableFunc(others, compareRoutes)
	out := routes[:0]
	for len(learned) > 0 && len(others) > 0 {
		if compareRoutes(others[0], learned[0]) <= 0 {
			out, others = append(out, others[0]), others[1:]
		} else {
			out, learned = append(out, learned[0]), learned[1:]
		}
	}
	out = append(out, others...)
	return append(out, learned...)
}
