package firewall

import (
	"strconv"
	"strings"

	"github.com/weftnet/weft/dataplane"
)

// Visitor receives what differs between two states, item by item (see
// WalkChanges): in reports whether the item is in the new state (false:
// removed), inOld whether it was in the old one.
type Visitor struct {
	AddrSet  func(id string, s *dataplane.AddrSet, in bool)
	PortSet  func(id string, s *dataplane.PortSet, in bool)
	Chain    func(id string, old, c *dataplane.PolicyChain, inOld, in bool)
	Workload func(iface string, e *dataplane.EndpointPolicy, in bool)
	Host     func(old, h *dataplane.HostEndpointPolicy, inOld, in bool)
	// Endpoints is called once, after the workloads and hosts, when any
	// of them (or the settings) changed: the dispatch and base need
	// rendering again.
	Endpoints func()
	// NAT is called when outgoing NAT changed.
	NAT func()
}

var emptyPolicy = &dataplane.PolicyState{}

// WalkChanges calls v for what differs between prev and want; with full
// (no model of prev to build on), for everything in want. It is how both
// backends build their model incrementally: a change costs in proportion
// to what it touches. New settings re-render every endpoint.
func WalkChanges(want, prev *State, full bool, v Visitor) {
	wp, pp := want.Policy, emptyPolicy
	if wp == nil {
		wp = emptyPolicy
	}
	if !full && prev != nil && prev.Policy != nil {
		pp = prev.Policy
	}
	dataplane.DiffMaps(pp.AddrSets, wp.AddrSets, (*dataplane.AddrSet).Equal, func(id string, _, s *dataplane.AddrSet, _, in bool) bool {
		v.AddrSet(id, s, in)
		return true
	})
	dataplane.DiffMaps(pp.PortSets, wp.PortSets, (*dataplane.PortSet).Equal, func(id string, _, s *dataplane.PortSet, _, in bool) bool {
		v.PortSet(id, s, in)
		return true
	})
	dataplane.DiffMaps(pp.Chains, wp.Chains, (*dataplane.PolicyChain).Equal, func(id string, old, c *dataplane.PolicyChain, inOld, in bool) bool {
		v.Chain(id, old, c, inOld, in)
		return true
	})

	settingsChanged := !pp.Settings.Equal(wp.Settings)
	ppWl, ppHosts := pp.Workloads, pp.Hosts
	if settingsChanged {
		// Everything old goes and everything wanted comes back.
		ppWl, ppHosts = dataplane.Map[*dataplane.EndpointPolicy]{}, dataplane.Map[*dataplane.HostEndpointPolicy]{}
		pp.Workloads.Range(func(iface string, _ *dataplane.EndpointPolicy) bool {
			if _, ok := wp.Workloads.Get(iface); !ok {
				v.Workload(iface, nil, false)
			}
			return true
		})
		pp.Hosts.Range(func(_ string, h *dataplane.HostEndpointPolicy) bool {
			v.Host(h, nil, true, false)
			return true
		})
	}
	endpointsChanged := full || settingsChanged
	dataplane.DiffMaps(ppWl, wp.Workloads, (*dataplane.EndpointPolicy).Equal, func(iface string, _, e *dataplane.EndpointPolicy, _, in bool) bool {
		endpointsChanged = true
		v.Workload(iface, e, in)
		return true
	})
	dataplane.DiffMaps(ppHosts, wp.Hosts, (*dataplane.HostEndpointPolicy).Equal, func(_ string, old, h *dataplane.HostEndpointPolicy, inOld, in bool) bool {
		endpointsChanged = true
		v.Host(old, h, inOld, in)
		return true
	})
	if endpointsChanged {
		v.Endpoints()
	}
	prevNAT := dataplane.NATConfig{}
	if prev != nil {
		prevNAT = prev.NAT
	}
	if full || !prevNAT.Equal(want.NAT) {
		v.NAT()
	}
}

// RuleTag is the tag both backends put on rule i of a chain whose content
// hashes to sum: "<sum>:<i>", plus ":r<index>" for a policy rule (the API
// rule it comes from; index < 0 for none). Reading the tags back tells a
// backend whether the kernel holds the chain as wanted, and which API rule
// a kernel rule's counters belong to.
func RuleTag(sum string, i, index int) string {
	tag := sum + ":" + strconv.Itoa(i)
	if index >= 0 {
		tag += ":r" + strconv.Itoa(index)
	}
	return tag
}

// RuleIndex parses the API rule index out of a tag (-1 when none).
func RuleIndex(tag string) int {
	i := strings.LastIndex(tag, ":r")
	if i < 0 {
		return -1
	}
	n, err := strconv.Atoi(tag[i+2:])
	if err != nil {
		return -1
	}
	return n
}
