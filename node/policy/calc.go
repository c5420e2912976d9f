package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// Config configures a [Calculator].
type Config struct {
	// NodeName is this node: its workloads and host endpoints are the
	// local endpoints.
	NodeName string
	// AllLocal treats every workload and host endpoint of the cluster as
	// local (the tracer evaluates any endpoint). The output's Workloads and
	// Hosts are then left empty; use [Calculator.Workload] and
	// [Calculator.Host].
	AllLocal bool
	// Settings are copied into the output.
	Settings dataplane.PolicySettings
}

// Calculator is the incremental policy calculation; see the package
// comment. It is not safe for concurrent use.
type Calculator struct {
	cfg Config

	endpoints    map[EndpointKey]*endpoint
	byNamespace  map[string]map[EndpointKey]bool
	profileUsers map[string]map[EndpointKey]bool // every endpoint naming a profile
	local        map[EndpointKey]bool
	nsLabels     map[string]map[string]string

	tiers    map[string]*tier
	policies map[policyKey]*policyState
	profiles map[string]*profileState

	selSets map[string]*selSet
	netSets map[string]*netSet

	// chains are the chains in the output, by ID.
	chains map[string]*rendered
	// selected are the policies selecting each local endpoint.
	selected map[EndpointKey]map[policyKey]bool
	// ifaces are the local endpoints claiming each interface (workloads
	// and host endpoints apart): the first key in order wins.
	wlIfaces, hostIfaces map[string]map[EndpointKey]bool

	dirtySets      map[string]bool
	dirtyChains    map[string]bool
	dirtyWlIfaces  map[string]bool
	dirtyHostIface map[string]bool
	settingsDirty  bool

	problems map[string]string
	state    *dataplane.PolicyState
}

type policyState struct {
	p      *policy
	chains []*rendered // one per direction the policy has
	local  map[EndpointKey]bool
	active bool
}

type profileState struct {
	p      *profile
	chains []*rendered
	active bool
}

// New returns an empty calculator.
func New(cfg Config) *Calculator {
	c := &Calculator{cfg: cfg}
	c.Reset()
	return c
}

// Reset forgets every input (a store watch RESET); the next State is
// empty (settings only) until inputs arrive again.
func (c *Calculator) Reset() {
	c.endpoints = map[EndpointKey]*endpoint{}
	c.byNamespace = map[string]map[EndpointKey]bool{}
	c.profileUsers = map[string]map[EndpointKey]bool{}
	c.local = map[EndpointKey]bool{}
	c.nsLabels = map[string]map[string]string{}
	c.tiers = map[string]*tier{}
	c.policies = map[policyKey]*policyState{}
	c.profiles = map[string]*profileState{}
	c.selSets = map[string]*selSet{}
	c.netSets = map[string]*netSet{}
	c.chains = map[string]*rendered{}
	c.selected = map[EndpointKey]map[policyKey]bool{}
	c.wlIfaces = map[string]map[EndpointKey]bool{}
	c.hostIfaces = map[string]map[EndpointKey]bool{}
	c.dirtySets = map[string]bool{}
	c.dirtyChains = map[string]bool{}
	c.dirtyWlIfaces = map[string]bool{}
	c.dirtyHostIface = map[string]bool{}
	c.problems = map[string]string{}
	c.state = &dataplane.PolicyState{Settings: c.cfg.Settings}
}

// SetSettings changes the settings copied into the output.
func (c *Calculator) SetSettings(s dataplane.PolicySettings) {
	if !c.cfg.Settings.Equal(s) {
		c.cfg.Settings = s
		c.settingsDirty = true
	}
}

// Problems lists inputs the calculation could not use, one line each,
// sorted.
func (c *Calculator) Problems() []string {
	out := make([]string, 0, len(c.problems))
	for _, p := range c.problems {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// ---- inputs ----------------------------------------------------------

// SetWorkloadEndpoint adds or changes a WorkloadEndpoint; nil deletes the
// one with that namespace and name.
func (c *Calculator) SetWorkloadEndpoint(namespace, name string, w *api.WorkloadEndpoint) {
	key := EndpointKey{kindWorkload, namespace, name}
	if w == nil {
		c.setEndpoint(key, nil)
		return
	}
	e := &endpoint{
		key: key, namespace: namespace, own: withNamespaceLabel(w.Metadata.Labels, namespace),
		profiles: w.Spec.Profiles, iface: w.Spec.InterfaceName, name: namespace + "/" + w.Spec.Workload,
	}
	e.local = (c.cfg.AllLocal || w.Spec.Node == c.cfg.NodeName) && w.Spec.InterfaceName != ""
	for _, s := range w.Spec.IPNetworks {
		if p, err := api.ParseCIDROrIP(s); err == nil {
			e.addrs = append(e.addrs, netip.PrefixFrom(p.Addr().Unmap(), p.Addr().Unmap().BitLen()))
		}
	}
	for _, p := range w.Spec.Ports {
		if n, ok := p.Protocol.NumValue(); ok && p.Name != "" && p.Port != 0 {
			e.ports = append(e.ports, namedPortDef{p.Name, n, p.Port})
		}
	}
	c.setEndpoint(key, e)
}

// SetHostEndpoint adds or changes a HostEndpoint; nil deletes it.
func (c *Calculator) SetHostEndpoint(name string, h *api.HostEndpoint) {
	key := EndpointKey{kindHost, "", name}
	delete(c.problems, "hep/"+name)
	if h == nil {
		c.setEndpoint(key, nil)
		return
	}
	e := &endpoint{key: key, own: h.Metadata.Labels, profiles: h.Spec.Profiles, iface: h.Spec.InterfaceName, name: name}
	e.local = c.cfg.AllLocal || h.Spec.Node == c.cfg.NodeName
	if e.local && e.iface == "" && !c.cfg.AllLocal {
		c.problems["hep/"+name] = fmt.Sprintf("HostEndpoint %s has no interfaceName: weft applies host endpoint policy by interface, so only its expectedIPs are used (in rule selectors)", name)
		e.local = false
	}
	for _, s := range h.Spec.ExpectedIPs {
		if a, err := netip.ParseAddr(s); err == nil {
			e.addrs = append(e.addrs, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	for _, p := range h.Spec.Ports {
		if n, ok := p.Protocol.NumValue(); ok && p.Name != "" && p.Port != 0 {
			e.ports = append(e.ports, namedPortDef{p.Name, n, p.Port})
		}
	}
	slices.SortFunc(e.addrs, dataplane.ComparePrefix)
	e.addrs = slices.Compact(e.addrs)
	c.setEndpoint(key, e)
}

// SetNetworkSet adds or changes a NetworkSet (namespace != "") or a
// GlobalNetworkSet; nil deletes it.
func (c *Calculator) SetNetworkSet(namespace, name string, labels map[string]string, nets []string, exists bool) {
	kind := kindGlobalNetworkSet
	if namespace != "" {
		kind = kindNetworkSet
	}
	key := EndpointKey{kind, namespace, name}
	if !exists {
		c.setEndpoint(key, nil)
		return
	}
	e := &endpoint{key: key, namespace: namespace, own: labels, name: key.String()}
	if namespace != "" {
		e.own = withNamespaceLabel(labels, namespace)
	}
	for _, n := range nets {
		if p, err := api.ParseCIDROrIP(n); err == nil {
			e.addrs = append(e.addrs, p.Masked())
		}
	}
	slices.SortFunc(e.addrs, dataplane.ComparePrefix)
	e.addrs = slices.Compact(e.addrs)
	c.setEndpoint(key, e)
}

func withNamespaceLabel(labels map[string]string, ns string) map[string]string {
	if labels[api.LabelNamespace] == ns {
		return labels
	}
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out[api.LabelNamespace] = ns
	return out
}

// SetTier adds or changes a Tier; nil deletes it.
func (c *Calculator) SetTier(name string, t *api.Tier) {
	old := c.tiers[name]
	if t == nil {
		if old == nil {
			return
		}
		delete(c.tiers, name)
	} else {
		nt := &tier{order: t.Spec.Order, endPass: t.Spec.DefaultAction == api.ActionPass}
		if old != nil && compareOrder(old.order, nt.order) == 0 && old.endPass == nt.endPass {
			return
		}
		c.tiers[name] = nt
	}
	// Tiers are few and change rarely: every local endpoint's order may
	// have changed.
	c.dirtyAllEndpoints()
}

// SetNetworkPolicy adds or changes a NetworkPolicy; nil deletes the one
// with that namespace and name.
func (c *Calculator) SetNetworkPolicy(namespace, name string, p *api.NetworkPolicy) {
	key := policyKey{api.KindNetworkPolicy, namespace, name}
	if p == nil {
		c.setPolicy(key, nil)
		return
	}
	d, err := decodeNetworkPolicy(p)
	c.setPolicyOrProblem(key, d, err)
}

// SetGlobalNetworkPolicy adds or changes a GlobalNetworkPolicy; nil
// deletes it.
func (c *Calculator) SetGlobalNetworkPolicy(name string, p *api.GlobalNetworkPolicy) {
	key := policyKey{api.KindGlobalNetworkPolicy, "", name}
	if p == nil {
		c.setPolicy(key, nil)
		return
	}
	d, err := decodeGlobalNetworkPolicy(p)
	c.setPolicyOrProblem(key, d, err)
}

func (c *Calculator) setPolicyOrProblem(key policyKey, d *policy, err error) {
	pk := "policy/" + key.ref().String()
	delete(c.problems, pk)
	if err != nil {
		// Validated at the store's entrance; treated as absent.
		c.problems[pk] = fmt.Sprintf("%s: %v (left out)", key.ref(), err)
		c.setPolicy(key, nil)
		return
	}
	c.setPolicy(key, d)
}

// SetProfile adds or changes a Profile; nil deletes it.
func (c *Calculator) SetProfile(name string, p *api.Profile) {
	old := c.profiles[name]
	var np *profile
	if p != nil {
		np = &profile{name: name, labels: p.Metadata.Labels, apply: p.Spec.LabelsToApply, spec: p.Spec}
	}
	// The namespace's labels, for kns.<ns>.
	if ns, ok := strings.CutPrefix(name, api.NamespaceProfilePrefix); ok {
		var labels map[string]string
		if np != nil {
			labels = np.labels
		}
		c.setNamespaceLabels(ns, labels)
	}
	applyChanged := (old == nil) != (np == nil) || (old != nil && !maps.Equal(old.p.apply, np.apply))
	rulesChanged := (old == nil) != (np == nil) || (old != nil && !profileRulesEqual(&old.p.spec, &np.spec))
	if np == nil {
		if old != nil {
			c.setProfileChains(name, nil)
			delete(c.profiles, name)
		}
	} else if old == nil {
		c.profiles[name] = &profileState{p: np}
		c.setProfileChains(name, np)
	} else {
		old.p = np
		if rulesChanged {
			c.setProfileChains(name, np)
		}
	}
	if applyChanged {
		// Labels of the endpoints naming the profile change.
		for key := range c.profileUsers[name] {
			c.reindex(key)
		}
	}
	if (old == nil) != (np == nil) {
		// Endpoints naming it gain or lose it in their profile lists.
		for key := range c.profileUsers[name] {
			if c.local[key] {
				c.dirtyEndpoint(key)
			}
		}
		c.refreshProfileActivity(name)
	}
}

func profileRulesEqual(a, b *api.ProfileSpec) bool {
	return reflect.DeepEqual(a.Ingress, b.Ingress) && reflect.DeepEqual(a.Egress, b.Egress)
}

// setNamespaceLabels records a namespace's labels: its profile's labels
// plus projectcalico.org/name.
func (c *Calculator) setNamespaceLabels(ns string, labels map[string]string) {
	next := maps.Clone(labels)
	if next == nil {
		next = map[string]string{}
	}
	next[api.LabelName] = ns
	if maps.Equal(c.nsLabels[ns], next) {
		return
	}
	c.nsLabels[ns] = next
	for key := range c.byNamespace[ns] {
		c.reindex(key)
	}
}

// namespaceLabels are a namespace's labels (projectcalico.org/name alone
// for a namespace without a profile).
func (c *Calculator) namespaceLabels(ns string) map[string]string {
	if l, ok := c.nsLabels[ns]; ok {
		return l
	}
	return map[string]string{api.LabelName: ns}
}

// ---- endpoints and the label index -----------------------------------

// setEndpoint replaces (or, with nil, deletes) an endpoint and updates
// every set and selection it is part of.
func (c *Calculator) setEndpoint(key EndpointKey, e *endpoint) {
	old := c.endpoints[key]
	if old == nil && e == nil {
		return
	}
	if old != nil {
		delete(c.byNamespace[old.namespace], key)
		for _, p := range old.profiles {
			delete(c.profileUsers[p], key)
		}
	}
	if e != nil {
		e.labels = mergeLabels(e.own, e.profiles, c.profileOf)
		c.endpoints[key] = e
		if c.byNamespace[e.namespace] == nil {
			c.byNamespace[e.namespace] = map[EndpointKey]bool{}
		}
		c.byNamespace[e.namespace][key] = true
		for _, p := range e.profiles {
			if c.profileUsers[p] == nil {
				c.profileUsers[p] = map[EndpointKey]bool{}
			}
			c.profileUsers[p][key] = true
		}
	} else {
		delete(c.endpoints, key)
	}
	c.updateSets(key, old, e, false)
	c.updateLocal(key, old, e)
}

// reindex re-evaluates an endpoint whose labels may have changed (its
// profiles' labelsToApply, its namespace's labels).
func (c *Calculator) reindex(key EndpointKey) {
	e := c.endpoints[key]
	if e == nil {
		return
	}
	next := *e
	next.labels = mergeLabels(e.own, e.profiles, c.profileOf)
	c.endpoints[key] = &next
	// Forced: the endpoint's namespace labels may be what changed.
	c.updateSets(key, e, &next, true)
	c.updateLocal(key, e, &next)
}

func (c *Calculator) profileOf(name string) *profile {
	if st := c.profiles[name]; st != nil {
		return st.p
	}
	return nil
}

// updateSets moves the endpoint's members in and out of the selector sets
// as it changes from old to e (either may be nil). Unless force, an
// endpoint with the same labels and members is left alone.
func (c *Calculator) updateSets(key EndpointKey, old, e *endpoint, force bool) {
	same := !force && old != nil && e != nil && old.namespace == e.namespace && maps.Equal(old.labels, e.labels)
	if same && old.sameContribution(e) {
		return
	}
	for _, s := range c.selSets {
		c.moveEndpoint(s, key, old, e, same)
	}
}

// moveEndpoint updates one set for an endpoint changing from old to e.
// sameMatch says the match cannot have changed (same labels, namespace).
func (c *Calculator) moveEndpoint(s *selSet, key EndpointKey, old, e *endpoint, sameMatch bool) {
	was := s.matched[key]
	is := was
	if !sameMatch {
		is = e != nil && s.def.matches(e, c.namespaceLabels)
	}
	if !was && !is {
		return
	}
	if was && is && old.sameContribution(e) {
		return
	}
	changed := false
	if was {
		changed = c.contribute(s, old, false) || changed
		delete(s.matched, key)
	}
	if is {
		changed = c.contribute(s, e, true) || changed
		s.matched[key] = true
	}
	if changed && s.activeRefs > 0 {
		c.dirtySets[s.id] = true
	}
}

// contribute adds (or removes) an endpoint's members to a set; it reports
// whether the members changed.
func (c *Calculator) contribute(s *selSet, e *endpoint, add bool) bool {
	changed := false
	if s.def.port != "" {
		for _, m := range e.namedPorts(s.def.port) {
			if add {
				changed = s.ports.add(m) || changed
			} else {
				changed = s.ports.remove(m) || changed
			}
		}
		return changed
	}
	for _, m := range e.addrs {
		if add {
			changed = s.addrs.add(m) || changed
		} else {
			changed = s.addrs.remove(m) || changed
		}
	}
	return changed
}

// updateLocal keeps the local endpoints' policy selection and interfaces.
func (c *Calculator) updateLocal(key EndpointKey, old, e *endpoint) {
	wasLocal := old != nil && old.local
	isLocal := e != nil && e.local
	if !wasLocal && !isLocal {
		return
	}
	if isLocal {
		c.local[key] = true
	} else {
		delete(c.local, key)
	}
	if wasLocal {
		c.releaseIface(key, old)
		for _, p := range old.profiles {
			c.refreshProfileActivity(p)
		}
	}
	if !isLocal {
		for pk := range c.selected[key] {
			c.unselect(pk, key)
		}
		delete(c.selected, key)
		return
	}
	c.claimIface(key, e)
	for _, p := range e.profiles {
		c.refreshProfileActivity(p)
	}
	if c.selected[key] == nil {
		c.selected[key] = map[policyKey]bool{}
	}
	for pk, ps := range c.policies {
		c.reselect(pk, ps, key, e)
	}
	c.dirtyEndpoint(key)
}

func (c *Calculator) ifaceMap(e *endpoint) map[string]map[EndpointKey]bool {
	if e.key.kind == kindHost {
		return c.hostIfaces
	}
	return c.wlIfaces
}

func (c *Calculator) claimIface(key EndpointKey, e *endpoint) {
	if c.cfg.AllLocal {
		return
	}
	m := c.ifaceMap(e)
	if m[e.iface] == nil {
		m[e.iface] = map[EndpointKey]bool{}
	}
	m[e.iface][key] = true
	c.markIface(e)
}

func (c *Calculator) releaseIface(key EndpointKey, e *endpoint) {
	if c.cfg.AllLocal {
		return
	}
	m := c.ifaceMap(e)
	delete(m[e.iface], key)
	if len(m[e.iface]) == 0 {
		delete(m, e.iface)
	}
	c.markIface(e)
}

func (c *Calculator) markIface(e *endpoint) {
	if e.key.kind == kindHost {
		c.dirtyHostIface[e.iface] = true
	} else {
		c.dirtyWlIfaces[e.iface] = true
	}
}

func (c *Calculator) dirtyEndpoint(key EndpointKey) {
	if e := c.endpoints[key]; e != nil && e.local {
		c.markIface(e)
	}
}

func (c *Calculator) dirtyAllEndpoints() {
	for key := range c.local {
		c.dirtyEndpoint(key)
	}
}

// selects reports whether policy p applies to local endpoint e.
func (c *Calculator) selects(p *policy, e *endpoint) bool {
	switch e.key.kind {
	case kindWorkload:
		if p.stage != dataplane.StageNormal {
			return false // doNotTrack and preDNAT: host endpoints only
		}
		if p.key.kind == api.KindNetworkPolicy && p.key.namespace != e.namespace {
			return false
		}
		if p.nsSelector != nil && !p.nsSelector.Evaluate(c.namespaceLabels(e.namespace)) {
			return false
		}
	case kindHost:
		if p.key.kind != api.KindGlobalNetworkPolicy || p.nsSelector != nil {
			return false
		}
	default:
		return false
	}
	return p.selector.Evaluate(e.labels)
}

// reselect re-evaluates whether policy pk selects local endpoint key.
func (c *Calculator) reselect(pk policyKey, ps *policyState, key EndpointKey, e *endpoint) {
	is := ps.p != nil && c.selects(ps.p, e)
	was := c.selected[key][pk]
	switch {
	case is && !was:
		c.selected[key][pk] = true
		ps.local[key] = true
		c.refreshPolicyActivity(ps)
		c.dirtyEndpoint(key)
	case !is && was:
		c.unselect(pk, key)
	}
}

func (c *Calculator) unselect(pk policyKey, key EndpointKey) {
	delete(c.selected[key], pk)
	if ps := c.policies[pk]; ps != nil {
		delete(ps.local, key)
		c.refreshPolicyActivity(ps)
	}
	c.dirtyEndpoint(key)
}

// ---- policies and profiles -------------------------------------------

func (c *Calculator) setPolicy(key policyKey, p *policy) {
	ps := c.policies[key]
	if p == nil {
		if ps == nil {
			return
		}
		for ek := range ps.local {
			delete(c.selected[ek], key)
			c.dirtyEndpoint(ek)
		}
		ps.local = map[EndpointKey]bool{}
		c.setActive(ps, false)
		c.setChains(&ps.chains, nil, false)
		delete(c.policies, key)
		return
	}
	if ps == nil {
		ps = &policyState{local: map[EndpointKey]bool{}}
		c.policies[key] = ps
	}
	old := ps.p
	ps.p = p
	// Render first: the chains may be shared with nothing, but the sets
	// they name may be shared with other policies, which keep them.
	var chains []*rendered
	for _, d := range []struct {
		on    bool
		dir   dataplane.Direction
		rules []api.Rule
	}{{p.hasIngress, dataplane.Ingress, p.ingress}, {p.hasEgress, dataplane.Egress, p.egress}} {
		if !d.on {
			continue
		}
		r, err := renderChain(key.ref(), d.dir, p.stage, d.rules)
		if err != nil {
			c.problems["policy/"+key.ref().String()] = fmt.Sprintf("%s: %v (its %s rules are left out: it denies)", key.ref(), err, d.dir)
			r, _ = renderChain(key.ref(), d.dir, p.stage, nil)
		}
		chains = append(chains, r)
	}
	c.setChains(&ps.chains, chains, ps.active)
	// The rules live on in the rendered chains only.
	p.ingress, p.egress = nil, nil
	// Which local endpoints it selects.
	for ek := range c.local {
		c.reselect(key, ps, ek, c.endpoints[ek])
	}
	c.refreshPolicyActivity(ps)
	if old == nil || old.tier != p.tier || compareOrder(old.order, p.order) != 0 ||
		old.hasIngress != p.hasIngress || old.hasEgress != p.hasEgress || old.stage != p.stage ||
		old.applyOnForward != p.applyOnForward {
		for ek := range ps.local {
			c.dirtyEndpoint(ek)
		}
	}
}

func (c *Calculator) refreshPolicyActivity(ps *policyState) {
	c.setActive(ps, ps.p != nil && (len(ps.local) > 0 || ps.p.assumeNeeded))
}

func (c *Calculator) setActive(ps *policyState, active bool) {
	if ps.active == active {
		return
	}
	ps.active = active
	c.activateChains(ps.chains, active)
}

func (c *Calculator) setProfileChains(name string, p *profile) {
	st := c.profiles[name]
	if st == nil {
		return
	}
	var chains []*rendered
	if p != nil {
		ref := dataplane.PolicyRef{Kind: api.KindProfile, Name: name}
		for _, d := range []struct {
			dir   dataplane.Direction
			rules []api.Rule
		}{{dataplane.Ingress, p.spec.Ingress}, {dataplane.Egress, p.spec.Egress}} {
			r, err := renderChain(ref, d.dir, dataplane.StageNormal, d.rules)
			if err != nil {
				c.problems["profile/"+name] = fmt.Sprintf("Profile %s: %v (its %s rules are left out)", name, err, d.dir)
				r, _ = renderChain(ref, d.dir, dataplane.StageNormal, nil)
			}
			chains = append(chains, r)
		}
	}
	c.setChains(&st.chains, chains, st.active)
	if p == nil {
		c.activateChains(st.chains, false)
		st.active = false
	}
}

// refreshProfileActivity: a profile's chains are in the output while a
// local endpoint names it.
func (c *Calculator) refreshProfileActivity(name string) {
	st := c.profiles[name]
	if st == nil {
		return
	}
	active := false
	for key := range c.profileUsers[name] {
		if c.local[key] {
			active = true
			break
		}
	}
	if st.active != active {
		st.active = active
		c.activateChains(st.chains, active)
	}
}

// setChains replaces a policy's or profile's rendered chains, moving set
// references from the old chains to the new ones (new first, so shared
// sets are not rebuilt).
func (c *Calculator) setChains(slot *[]*rendered, next []*rendered, active bool) {
	prev := *slot
	for _, r := range next {
		c.refSets(r, 1, active)
	}
	for _, r := range prev {
		c.refSets(r, -1, active)
	}
	*slot = next
	if !active {
		return
	}
	for _, r := range prev {
		delete(c.chains, r.id)
		c.dirtyChains[r.id] = true
	}
	for _, r := range next {
		c.chains[r.id] = r
		c.dirtyChains[r.id] = true
	}
}

// activateChains puts chains into the output or takes them out.
func (c *Calculator) activateChains(chains []*rendered, active bool) {
	for _, r := range chains {
		d := 1
		if !active {
			d = -1
		}
		for id := range r.selSets {
			s := c.selSets[id]
			s.activeRefs += d
			if (d > 0 && s.activeRefs == 1) || s.activeRefs == 0 {
				c.dirtySets[id] = true
			}
		}
		for id := range r.netSets {
			s := c.netSets[id]
			s.activeRefs += d
			if (d > 0 && s.activeRefs == 1) || s.activeRefs == 0 {
				c.dirtySets[id] = true
			}
		}
		if active {
			c.chains[r.id] = r
		} else {
			delete(c.chains, r.id)
		}
		c.dirtyChains[r.id] = true
	}
}

// refSets counts a chain's references to its sets (d = +1 or -1),
// creating a set (and computing its members) on its first reference and
// dropping it after its last.
func (c *Calculator) refSets(r *rendered, d int, active bool) {
	for id, def := range r.selSets {
		s := c.selSets[id]
		if s == nil {
			s = c.newSelSet(id, def)
		}
		s.refs += d
		if active {
			s.activeRefs += d
			if (d > 0 && s.activeRefs == 1) || s.activeRefs == 0 {
				c.dirtySets[id] = true
			}
		}
		if s.refs == 0 {
			delete(c.selSets, id)
		}
	}
	for id, members := range r.netSets {
		s := c.netSets[id]
		if s == nil {
			s = &netSet{id: id, members: members}
			c.netSets[id] = s
		}
		s.refs += d
		if active {
			s.activeRefs += d
			if (d > 0 && s.activeRefs == 1) || s.activeRefs == 0 {
				c.dirtySets[id] = true
			}
		}
		if s.refs == 0 {
			delete(c.netSets, id)
		}
	}
}

// newSelSet creates a set and computes its members over every endpoint.
func (c *Calculator) newSelSet(id string, def setDef) *selSet {
	s := &selSet{
		id: id, def: def, matched: map[EndpointKey]bool{},
		addrs: newMemberSet(dataplane.ComparePrefix),
		ports: newMemberSet(dataplane.ComparePorts),
	}
	for key, e := range c.endpoints {
		if def.matches(e, c.namespaceLabels) {
			s.matched[key] = true
			c.contribute(s, e, true)
		}
	}
	c.selSets[id] = s
	return s
}

// ---- dispatch --------------------------------------------------------

// direction builds one direction of a local endpoint: its policies that
// pass filter, grouped by tier in order, then (withProfiles) its profiles.
func (c *Calculator) direction(key EndpointKey, dir dataplane.Direction, filter func(*policy) bool, withProfiles bool) dataplane.DirectionPolicy {
	var pols []*policyState
	for pk := range c.selected[key] {
		ps := c.policies[pk]
		if ps == nil || ps.p == nil {
			continue
		}
		p := ps.p
		if (dir == dataplane.Ingress && !p.hasIngress) || (dir == dataplane.Egress && !p.hasEgress) || !filter(p) {
			continue
		}
		pols = append(pols, ps)
	}
	slices.SortFunc(pols, func(a, b *policyState) int { return c.comparePolicies(a.p, b.p) })
	var out dataplane.DirectionPolicy
	for _, ps := range pols {
		id := ""
		for _, r := range ps.chains {
			if r.chain.Direction == dir {
				id = r.id
			}
		}
		if n := len(out.Tiers); n == 0 || out.Tiers[n-1].Name != ps.p.tier {
			t := c.tiers[ps.p.tier]
			out.Tiers = append(out.Tiers, dataplane.TierPolicies{Name: ps.p.tier, EndPass: t != nil && t.endPass})
		}
		t := &out.Tiers[len(out.Tiers)-1]
		t.Policies = append(t.Policies, id)
	}
	if withProfiles {
		e := c.endpoints[key]
		for _, name := range e.profiles {
			st := c.profiles[name]
			if st == nil || len(st.chains) != 2 {
				continue
			}
			id := st.chains[0].id
			if dir == dataplane.Egress {
				id = st.chains[1].id
			}
			if !slices.Contains(out.Profiles, id) {
				out.Profiles = append(out.Profiles, id)
			}
		}
	}
	return out
}

// comparePolicies is calico.md §2.3: tier order (unset last, a missing
// tier after all), tier name, policy order (unset last), then name,
// namespace, kind.
func (c *Calculator) comparePolicies(a, b *policy) int {
	if a.tier != b.tier {
		ta, tb := c.tiers[a.tier], c.tiers[b.tier]
		switch {
		case ta == nil && tb != nil:
			return 1
		case ta != nil && tb == nil:
			return -1
		case ta != nil && tb != nil:
			if r := compareOrder(ta.order, tb.order); r != 0 {
				return r
			}
		}
		return strings.Compare(a.tier, b.tier)
	}
	if r := compareOrder(a.order, b.order); r != 0 {
		return r
	}
	if a.key.name != b.key.name {
		return strings.Compare(a.key.name, b.key.name)
	}
	if a.key.namespace != b.key.namespace {
		return strings.Compare(a.key.namespace, b.key.namespace)
	}
	return strings.Compare(a.key.kind, b.key.kind)
}

func normal(p *policy) bool    { return p.stage == dataplane.StageNormal }
func forward(p *policy) bool   { return p.stage == dataplane.StageNormal && p.applyOnForward }
func preDNAT(p *policy) bool   { return p.stage == dataplane.StagePreDNAT }
func untracked(p *policy) bool { return p.stage == dataplane.StageUntracked }

func orNil(d dataplane.DirectionPolicy) *dataplane.DirectionPolicy {
	if len(d.Tiers) == 0 {
		return nil
	}
	return &d
}

func (c *Calculator) workloadPolicy(key EndpointKey) *dataplane.EndpointPolicy {
	return &dataplane.EndpointPolicy{
		Name:    c.endpoints[key].name,
		Ingress: c.direction(key, dataplane.Ingress, normal, true),
		Egress:  c.direction(key, dataplane.Egress, normal, true),
	}
}

func (c *Calculator) hostPolicy(key EndpointKey) *dataplane.HostEndpointPolicy {
	e := c.endpoints[key]
	return &dataplane.HostEndpointPolicy{
		Name:             e.key.Name,
		Iface:            e.iface,
		Ingress:          c.direction(key, dataplane.Ingress, normal, true),
		Egress:           c.direction(key, dataplane.Egress, normal, true),
		ForwardIngress:   orNil(c.direction(key, dataplane.Ingress, forward, false)),
		ForwardEgress:    orNil(c.direction(key, dataplane.Egress, forward, false)),
		PreDNAT:          orNil(c.direction(key, dataplane.Ingress, preDNAT, false)),
		UntrackedIngress: orNil(c.direction(key, dataplane.Ingress, untracked, false)),
		UntrackedEgress:  orNil(c.direction(key, dataplane.Egress, untracked, false)),
	}
}

// Workload is the policy of a workload endpoint evaluated as if it were
// local (with [Config.AllLocal]); nil if there is no such endpoint.
func (c *Calculator) Workload(namespace, name string) *dataplane.EndpointPolicy {
	key := EndpointKey{kindWorkload, namespace, name}
	if !c.local[key] {
		return nil
	}
	return c.workloadPolicy(key)
}

// Host is the policy of a host endpoint evaluated as if it were local;
// nil if there is none.
func (c *Calculator) Host(name string) *dataplane.HostEndpointPolicy {
	key := EndpointKey{kindHost, "", name}
	if !c.local[key] {
		return nil
	}
	return c.hostPolicy(key)
}

// ---- output ----------------------------------------------------------

// State returns the policy section for the current inputs. Only what
// changed since the last call is rebuilt; the rest is shared with the
// previous state, which is returned itself when nothing changed.
func (c *Calculator) State() *dataplane.PolicyState {
	if len(c.dirtySets) == 0 && len(c.dirtyChains) == 0 && len(c.dirtyWlIfaces) == 0 &&
		len(c.dirtyHostIface) == 0 && !c.settingsDirty {
		return c.state
	}
	prev := c.state
	next := &dataplane.PolicyState{Settings: c.cfg.Settings}

	addrs, ports := prev.AddrSets.Edit(), prev.PortSets.Edit()
	for id := range c.dirtySets {
		if s := c.selSets[id]; s != nil && s.activeRefs > 0 {
			if s.def.port != "" {
				addrs.Delete(id)
				ports.Set(id, &dataplane.PortSet{Members: s.ports.snapshot(), Comment: s.def.key()})
			} else {
				ports.Delete(id)
				addrs.Set(id, &dataplane.AddrSet{Members: s.addrs.snapshot(), Comment: s.def.key()})
			}
			continue
		}
		if s := c.netSets[id]; s != nil && s.activeRefs > 0 {
			addrs.Set(id, &dataplane.AddrSet{Members: s.members, Comment: "nets"})
			continue
		}
		addrs.Delete(id)
		ports.Delete(id)
	}
	next.AddrSets, next.PortSets = addrs.Map(), ports.Map()

	chains := prev.Chains.Edit()
	for id := range c.dirtyChains {
		if r := c.chains[id]; r != nil {
			if old, ok := chains.Get(id); !ok || !old.Equal(r.chain) {
				chains.Set(id, r.chain)
			}
		} else {
			chains.Delete(id)
		}
	}
	next.Chains = chains.Map()

	wls := prev.Workloads.Edit()
	for iface := range c.dirtyWlIfaces {
		owner, ok := firstKey(c.wlIfaces[iface])
		if !ok {
			wls.Delete(iface)
			continue
		}
		np := c.workloadPolicy(owner)
		if old, ok := wls.Get(iface); !ok || !old.Equal(np) {
			wls.Set(iface, np)
		}
	}
	next.Workloads = wls.Map()

	hosts := prev.Hosts.Edit()
	for iface := range c.dirtyHostIface {
		owner, ok := firstKey(c.hostIfaces[iface])
		if !ok {
			hosts.Delete(iface)
			continue
		}
		if len(c.hostIfaces[iface]) > 1 {
			c.problems["hepiface/"+iface] = fmt.Sprintf("interface %s has %d host endpoints on this node; %s applies", iface, len(c.hostIfaces[iface]), owner.Name)
		} else {
			delete(c.problems, "hepiface/"+iface)
		}
		np := c.hostPolicy(owner)
		if old, ok := hosts.Get(iface); !ok || !old.Equal(np) {
			hosts.Set(iface, np)
		}
	}
	next.Hosts = hosts.Map()

	clear(c.dirtySets)
	clear(c.dirtyChains)
	clear(c.dirtyWlIfaces)
	clear(c.dirtyHostIface)
	c.settingsDirty = false
	if next.Equal(prev) {
		return prev
	}
	c.state = next
	return next
}

// firstKey is the smallest key of a set, so that a conflict resolves the
// same way whatever the order of events.
func firstKey(m map[EndpointKey]bool) (EndpointKey, bool) {
	var best EndpointKey
	found := false
	for k := range m {
		if !found || k.kind < best.kind || (k.kind == best.kind && (k.Namespace < best.Namespace || (k.Namespace == best.Namespace && k.Name < best.Name))) {
			best, found = k, true
		}
	}
	return best, found
}

// Put adds or changes any object of the kinds the calculation reads
// (WorkloadEndpoint, HostEndpoint, NetworkPolicy, GlobalNetworkPolicy,
// Tier, Profile, NetworkSet, GlobalNetworkSet); other kinds are ignored.
func (c *Calculator) Put(r api.Resource) {
	m := r.GetMeta()
	switch r := r.(type) {
	case *api.WorkloadEndpoint:
		c.SetWorkloadEndpoint(m.Namespace, m.Name, r)
	case *api.HostEndpoint:
		c.SetHostEndpoint(m.Name, r)
	case *api.NetworkPolicy:
		c.SetNetworkPolicy(m.Namespace, m.Name, r)
	case *api.GlobalNetworkPolicy:
		c.SetGlobalNetworkPolicy(m.Name, r)
	case *api.Tier:
		c.SetTier(m.Name, r)
	case *api.Profile:
		c.SetProfile(m.Name, r)
	case *api.NetworkSet:
		c.SetNetworkSet(m.Namespace, m.Name, m.Labels, r.Spec.Nets, true)
	case *api.GlobalNetworkSet:
		c.SetNetworkSet("", m.Name, m.Labels, r.Spec.Nets, true)
	}
}

// Delete removes an object of kind (see Put).
func (c *Calculator) Delete(kind, namespace, name string) {
	switch kind {
	case api.KindWorkloadEndpoint:
		c.SetWorkloadEndpoint(namespace, name, nil)
	case api.KindHostEndpoint:
		c.SetHostEndpoint(name, nil)
	case api.KindNetworkPolicy:
		c.SetNetworkPolicy(namespace, name, nil)
	case api.KindGlobalNetworkPolicy:
		c.SetGlobalNetworkPolicy(name, nil)
	case api.KindTier:
		c.SetTier(name, nil)
	case api.KindProfile:
		c.SetProfile(name, nil)
	case api.KindNetworkSet:
		c.SetNetworkSet(namespace, name, nil, nil, false)
	case api.KindGlobalNetworkSet:
		c.SetNetworkSet("", name, nil, nil, false)
	}
}

// Kinds are the store kinds the calculation reads.
var Kinds = []string{
	api.KindWorkloadEndpoint, api.KindHostEndpoint, api.KindNetworkPolicy, api.KindGlobalNetworkPolicy,
	api.KindTier, api.KindProfile, api.KindNetworkSet, api.KindGlobalNetworkSet,
}
