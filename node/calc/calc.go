// Package calc turns the replicated store's state into this node's desired
// state: the dataplane's ([dataplane.Desired]: workloads, routes, rules, the
// VXLAN device and its peers, the IP-in-IP device, outgoing NAT, the apply
// loop's settings) and what the node's store writers must do (its tunnel
// addresses, [TunnelNeeds]). It is pure: no
// I/O, no clocks, and the result depends only on the current state, never
// on the order in which changes arrived (ARCHITECTURE.md, "Calc depends on
// current state only").
//
// # Shape
//
// A [Dispatcher] receives store events, decodes each object once and keeps
// the shared [Topology] (nodes, pools, IPAM block summaries, every
// WorkloadEndpoint in the cluster, and the FelixConfigurations that apply
// to this node, merged). What the node observes of itself rather than
// reads from the store (its links, its kernel's IP-in-IP support; later the
// routes BGP learns) enters the same way, as local inputs
// ([Dispatcher.OnLocal], see local.go). Each [Resolver] owns one section of the
// output and declares the kinds it reads; the dispatcher passes it the
// changes of those kinds and, on [Dispatcher.Compute], asks every resolver
// for its section, in registration order (a resolver may read the sections
// of the resolvers before it, e.g. block routes need to know whether the
// VXLAN device exists). A new subsystem (BGP, WireGuard, policy) is a new
// resolver in [defaultResolvers]. Compute then validates the whole state
// once, at this boundary: items that are invalid or conflict with others
// are dropped deterministically and reported ([Output.Problems]), so one
// bad object never freezes the dataplane, and what leaves the package is
// always a valid state.
//
// The sections are recomputed from the cached state on every Compute. At
// weft's scale (≤ 50 nodes, a few thousand blocks and workloads) that takes
// well under a millisecond, and it is never the kernel path: the drivers
// diff the result against the kernel and touch only what changed. A
// resolver whose section is expensive keeps its own incremental state.
package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/store"
)

// AnnotationNetNS is the annotation weft keeps on the WorkloadEndpoints it
// makes: the workload's network namespace path (the dataplane needs it to
// plumb the workload, also after a restart).
const AnnotationNetNS = "weft.io/netns"

// Config is the node's static identity and settings.
type Config struct {
	NodeName string
	// Address is the node's underlay IPv4 address and UnderlayPrefix its
	// connected subnet (for CrossSubnet and native routing).
	Address        netip.Addr
	UnderlayPrefix netip.Prefix
	// Address6 and UnderlayPrefix6 are the same for IPv6 (zero without
	// an IPv6 underlay): IPv6 blocks are routed natively between nodes
	// that share an IPv6 subnet.
	Address6        netip.Addr
	UnderlayPrefix6 netip.Prefix
	// UnderlayIface is the interface holding Address (native routes go out
	// of it).
	UnderlayIface string
	// VXLANIface is the VXLAN device name (vxlan.interface).
	VXLANIface string
	// VXLANMTU is the configured VXLAN device MTU, 0 = derive.
	VXLANMTU int
	// UnderlayMTU is the MTU of the underlay detected at start (0:
	// unknown, the kernel default is left on workload interfaces). The
	// links the node observes (local input [LocalKindLinks]) replace it.
	UnderlayMTU int
	// IPIPIface is the IP-in-IP device name; "" is
	// dataplane.DefaultIPIPIface.
	IPIPIface string
	// VXLANVNI and VXLANPort are the VXLAN device's VNI and port from the
	// config file (0: the driver's defaults); FelixConfiguration's
	// vxlanVNI and vxlanPort override them.
	VXLANVNI, VXLANPort int
	// MTU is network.mtu: when positive, the workload MTU whatever the
	// encapsulation.
	MTU int
	// Policy are the node's policy settings from its configuration
	// (failsafe ports, ...); FelixConfiguration objects may override them.
	Policy dataplane.PolicySettings
	// BGP is bgp.enabled: this node runs a BGP speaker ([Output.BGP]).
	BGP bool
	// WireGuard is the [wireguard] section.
	WireGuard WireGuardConfig
}

// Update is one change of a decoded object, handed to the resolvers that
// read its kind. Value is nil for a delete.
type Update struct {
	Key   store.Key
	Value any
}

// Resolver computes one section of the output.
type Resolver interface {
	// Name labels the resolver in problems and tests.
	Name() string
	// Kinds are the store kinds whose changes the resolver is told about.
	Kinds() []string
	// OnUpdate is called after the Topology has taken the change.
	OnUpdate(u Update)
	// Contribute writes the resolver's section of out. It may read the
	// sections written by the resolvers before it.
	Contribute(out *Output)
}

// Output is everything the calculation decides for this node.
type Output struct {
	// Desired is the dataplane's state.
	Desired dataplane.Desired
	// Tunnels is what the node's tunnel-address controller must do.
	Tunnels TunnelNeeds
	// BGP is the BGP speaker's desired configuration (nil: no speaker).
	BGP *BGPConfig
	// Problems lists objects skipped and items dropped, for the logs.
	Problems []string

	// wireguardOwns are the other nodes whose addresses the wireguard
	// resolver routes (through the device, or blackholed under
	// wireguard.require): the VXLAN and block-route resolvers after it
	// leave them alone, so those nodes have one path only.
	wireguardOwns map[string]bool
}

// problem records a dropped item.
func (o *Output) problem(format string, args ...any) {
	o.Problems = append(o.Problems, fmt.Sprintf(format, args...))
}

// Env is what a resolver is built with.
type Env struct {
	Config   Config
	Topology *Topology
}

// defaultResolvers are the resolvers of every node, in Contribute order.
func defaultResolvers(env Env) []Resolver {
	return []Resolver{
		newWorkloads(env),
		newPolicy(env),
		newWireGuard(env),
		newVXLAN(env),
		newIPIP(env),
		newBlockRoutes(env),
		newNAT(env),
		newTunnels(env),
		newLoopSettings(env),
		newBGP(env),
	}
}

// Dispatcher feeds store events to the Topology and the resolvers and
// assembles their output. It is not safe for concurrent use: one
// goroutine feeds it and asks for the result.
type Dispatcher struct {
	cfg       Config
	topo      *Topology
	resolvers []Resolver
	byKind    map[string][]Resolver
	// problems are objects that could not be decoded, by key; they are
	// treated as absent (validated at the store's entrance, so this is a
	// safety net).
	problems map[store.Key]string
	// validPolicy is the policy section of the last state that passed
	// validation: the next is validated where it differs.
	validPolicy *dataplane.PolicyState
}

// New returns a dispatcher with the default resolvers and nothing cached.
func New(cfg Config) *Dispatcher {
	return NewWith(cfg, defaultResolvers)
}

// NewWith returns a dispatcher with the resolvers build returns (tests
// check one resolver at a time).
func NewWith(cfg Config, build func(Env) []Resolver) *Dispatcher {
	topo := newTopology(cfg.NodeName)
	d := &Dispatcher{
		cfg:       cfg,
		topo:      topo,
		resolvers: build(Env{Config: cfg, Topology: topo}),
		byKind:    map[string][]Resolver{},
		problems:  map[store.Key]string{},
	}
	for _, r := range d.resolvers {
		for _, k := range r.Kinds() {
			d.byKind[k] = append(d.byKind[k], r)
		}
	}
	return d
}

// Kinds are the store kinds the calculation reads: what the Topology keeps
// and every store kind a resolver declares (local kinds are not in the
// store).
func (d *Dispatcher) Kinds() []string {
	kinds := slices.Clone(topologyKinds)
	for k := range d.byKind {
		if !slices.Contains(kinds, k) && !IsLocalKind(k) {
			kinds = append(kinds, k)
		}
	}
	sort.Strings(kinds)
	return kinds
}

// Reset forgets everything (a watch RESET): the listing that follows
// rebuilds the state.
func (d *Dispatcher) Reset() {
	d.validPolicy = nil
	d.topo.reset()
	clear(d.problems)
	for _, r := range d.resolvers {
		if rr, ok := r.(interface{ Reset() }); ok {
			rr.Reset()
		}
	}
}

// OnEvent takes one store change.
func (d *Dispatcher) OnEvent(ev store.Event) {
	switch ev.Type {
	case store.EventPut:
		d.put(ev.Object)
	case store.EventDelete:
		d.del(ev.Object.Key)
	}
}

func (d *Dispatcher) put(o store.Object) {
	delete(d.problems, o.Key)
	v, err := d.topo.put(o)
	if err != nil {
		// Treated as absent: whatever an earlier version of it caused goes.
		d.del(o.Key)
		d.problems[o.Key] = err.Error()
		return
	}
	d.notify(Update{Key: o.Key, Value: v})
}

func (d *Dispatcher) del(k store.Key) {
	delete(d.problems, k)
	d.topo.del(k)
	d.notify(Update{Key: k})
}

func (d *Dispatcher) notify(u Update) {
	for _, r := range d.byKind[u.Key.Kind] {
		r.OnUpdate(u)
	}
}

// Compute assembles the output for store revision rev. The desired state
// is sanitized (invalid and conflicting items dropped, see [sanitize]) and
// then valid; an error means a bug (sanitize let something invalid
// through) and the caller must keep its last state.
func (d *Dispatcher) Compute(rev uint64) (Output, error) {
	var out Output
	out.Desired.Revision = rev
	for k, p := range d.problems {
		out.problem("%s: %s", k, p)
	}
	for _, r := range d.resolvers {
		r.Contribute(&out)
	}
	sanitize(&out)
	sort.Strings(out.Problems)
	if err := out.Desired.ValidateSince(d.validPolicy); err != nil {
		// The next state is checked whole again.
		d.validPolicy = nil
		return out, fmt.Errorf("calc produced an invalid desired state (a bug): %w", err)
	}
	d.validPolicy = out.Desired.Policy
	return out, nil
}

// Topology exposes the shared cache (tests and diagnostics).
func (d *Dispatcher) Topology() *Topology { return d.topo }
