package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// feed applies one object (or, with del, its deletion).
func feed(c *Calculator, r api.Resource, del bool) {
	if del {
		kind, ns, name := api.Key(r)
		c.Delete(kind, ns, name)
		return
	}
	c.Put(r)
}

func decodeAll(t testing.TB, yaml string) []api.Resource {
	t.Helper()
	rs, err := api.Decode([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		api.Default(r)
		if err := api.Validate(r); err != nil {
			t.Fatalf("%v", err)
		}
	}
	return rs
}

func wep(node, ns, name, ip string, labels map[string]string, ports ...api.WorkloadEndpointPort) *api.WorkloadEndpoint {
	w := &api.WorkloadEndpoint{}
	w.Metadata.Namespace = ns
	w.Metadata.Labels = labels
	w.Spec = api.WorkloadEndpointSpec{
		Orchestrator: api.OrchestratorWeft, Workload: name, Node: node, Endpoint: "eth0",
		InterfaceName: ifaceOf(ns, name), IPNetworks: []string{ip},
		Profiles: []string{api.NamespaceProfileName(ns)}, Ports: ports,
	}
	api.Default(w)
	return w
}

func ifaceOf(ns, name string) string {
	s, err := dataplane.WorkloadIfaceName("weft", ns, name)
	if err != nil {
		panic(err)
	}
	return s
}

func nsProfile(ns string, labels map[string]string) *api.Profile {
	p := &api.Profile{}
	p.Metadata.Name = api.NamespaceProfileName(ns)
	p.Metadata.Labels = labels
	p.Spec.Ingress = []api.Rule{{Action: api.ActionAllow}}
	p.Spec.Egress = []api.Rule{{Action: api.ActionAllow}}
	api.Default(p)
	return p
}

// dump is a canonical text of a state, for comparing states built in
// different orders and for readable failures.
func dump(st *dataplane.PolicyState) string {
	var b strings.Builder
	for _, id := range st.AddrSets.Keys() {
		s, _ := st.AddrSets.Get(id)
		fmt.Fprintf(&b, "addrset %s (%s): %v\n", id, s.Comment, s.Members)
	}
	for _, id := range st.PortSets.Keys() {
		s, _ := st.PortSets.Get(id)
		fmt.Fprintf(&b, "portset %s (%s): %v\n", id, s.Comment, s.Members)
	}
	for _, id := range st.Chains.Keys() {
		c, _ := st.Chains.Get(id)
		fmt.Fprintf(&b, "chain %s %s %s %s:\n", id, c.Policy, c.Direction, c.Stage)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "  %+v\n", r)
		}
	}
	for _, iface := range st.Workloads.Keys() {
		e, _ := st.Workloads.Get(iface)
		fmt.Fprintf(&b, "workload %s %s in=%+v out=%+v\n", iface, e.Name, e.Ingress, e.Egress)
	}
	for _, iface := range st.Hosts.Keys() {
		h, _ := st.Hosts.Get(iface)
		fmt.Fprintf(&b, "host %s %s in=%+v out=%+v fwd=%v/%v pre=%v untracked=%v/%v\n", iface, h.Name, h.Ingress, h.Egress,
			h.ForwardIngress, h.ForwardEgress, h.PreDNAT, h.UntrackedIngress, h.UntrackedEgress)
	}
	return b.String()
}

const basePolicies = `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: default}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.deny-db}
spec:
  tier: security
  selector: role == 'db'
  ingress:
  - action: Deny
    source: {namespaceSelector: name == 'default'}
  - action: Pass
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'client'}
    destination: {ports: [80, http]}
  - action: Allow
    protocol: UDP
    source: {nets: [10.9.0.0/16], notNets: [10.9.9.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: outside, labels: {role: client}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: prod, labels: {role: client}}
spec: {nets: [198.51.100.0/24, 10.1.0.5/32]}
`

func baseInputs(t testing.TB) []api.Resource {
	rs := decodeAll(t, basePolicies)
	http := api.WorkloadEndpointPort{Name: "http", Protocol: api.ProtocolFromString("TCP"), Port: 8080}
	rs = append(rs,
		wep("n1", "prod", "web1", "10.1.0.1/32", map[string]string{"app": "web"}, http),
		wep("n2", "prod", "web2", "10.1.0.2/32", map[string]string{"app": "web"}, http),
		wep("n1", "prod", "client1", "10.1.0.3/32", map[string]string{"role": "client"}),
		wep("n2", "default", "client2", "10.1.0.4/32", map[string]string{"role": "client"}),
		wep("n1", "prod", "db", "10.1.0.6/32", map[string]string{"role": "db"}),
		nsProfile("prod", map[string]string{"name": "prod"}),
		nsProfile("default", map[string]string{"name": "default"}),
	)
	return rs
}

func build(cfg Config, rs []api.Resource) *Calculator {
	c := New(cfg)
	for _, r := range rs {
		feed(c, r, false)
	}
	return c
}

func TestCalculatorBasics(t *testing.T) {
	c := build(Config{NodeName: "n1"}, baseInputs(t))
	st := c.State()
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	d := dump(st)
	// Local workloads: web1, client1, db (node n1).
	if st.Workloads.Len() != 3 {
		t.Fatalf("want 3 local workloads:\n%s", d)
	}
	web, _ := st.Workloads.Get(ifaceOf("prod", "web1"))
	if len(web.Ingress.Tiers) != 1 || web.Ingress.Tiers[0].Name != "default" || len(web.Ingress.Tiers[0].Policies) != 1 {
		t.Fatalf("web1 ingress: %+v", web.Ingress)
	}
	if len(web.Egress.Tiers) != 0 || !slices.Equal(web.Egress.Profiles, []string{"pro-_kns.prod"}) {
		t.Fatalf("web1 egress: %+v", web.Egress)
	}
	db, _ := st.Workloads.Get(ifaceOf("prod", "db"))
	if len(db.Ingress.Tiers) != 1 || db.Ingress.Tiers[0].Name != "security" {
		t.Fatalf("db ingress: %+v", db.Ingress)
	}
	// The allow-web chain: rule 0 splits into numeric 80 and the named
	// port http; rule 1 is IPv4 only (its nets).
	ch, ok := st.Chains.Get("pi-prod_allow-web")
	if !ok || len(ch.Rules) != 3 {
		t.Fatalf("allow-web chain:\n%s", d)
	}
	if ch.Rules[0].Index != 0 || ch.Rules[1].Index != 0 || ch.Rules[2].Index != 1 || ch.Rules[2].IPVersion != 4 {
		t.Fatalf("allow-web rules: %+v", ch.Rules)
	}
	// The client set: role == 'client' in namespace prod: client1 and the
	// prod network set (not client2 of namespace default, nor the global
	// set).
	src, _ := st.AddrSets.Get(ch.Rules[0].Src.Sets[0])
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.3/32"), netip.MustParsePrefix("10.1.0.5/32"), netip.MustParsePrefix("198.51.100.0/24")}
	if !slices.Equal(src.Members, want) {
		t.Fatalf("client set: %v, want %v", src.Members, want)
	}
	// The named port set of the destination: web endpoints in prod with
	// port http.
	ps, _ := st.PortSets.Get(ch.Rules[1].Dst.PortSet)
	if len(ps.Members) != 2 || ps.Members[0].Port != 8080 {
		t.Fatalf("http port set: %+v", ps.Members)
	}
	// deny-db's namespaceSelector: name == 'default' → client2 only.
	deny, _ := st.Chains.Get("pi-security.deny-db")
	s, _ := st.AddrSets.Get(deny.Rules[0].Src.Sets[0])
	if !slices.Equal(s.Members, []netip.Prefix{netip.MustParsePrefix("10.1.0.4/32")}) {
		t.Fatalf("default namespace set: %v", s.Members)
	}
	// Nothing changed: the same state.
	if st2 := c.State(); st2 != st {
		t.Fatal("State without changes is not the previous state")
	}
}

// A label change moves an endpoint into a set: only that set changes, and
// the chains are shared with the previous state.
func TestLabelChangeIsIncremental(t *testing.T) {
	rs := baseInputs(t)
	c := build(Config{NodeName: "n1"}, rs)
	before := c.State()
	// client2 (namespace default, node n2) becomes role=client in prod?
	// No: it moves into the deny-db namespace set by its namespace; here a
	// prod workload gains role=client.
	w := wep("n2", "prod", "web2", "10.1.0.2/32", map[string]string{"app": "web", "role": "client"},
		api.WorkloadEndpointPort{Name: "http", Protocol: api.ProtocolFromString("TCP"), Port: 8080})
	c.SetWorkloadEndpoint("prod", w.Metadata.Name, w)
	after := c.State()
	if after == before {
		t.Fatal("no change")
	}
	changed := 0
	dataplane.DiffMaps(before.AddrSets, after.AddrSets, (*dataplane.AddrSet).Equal, func(k string, a, b *dataplane.AddrSet, _, _ bool) bool {
		changed++
		if !slices.Contains(b.Members, netip.MustParsePrefix("10.1.0.2/32")) {
			t.Errorf("set %s does not gain web2: %v", k, b.Members)
		}
		return true
	})
	if changed != 1 {
		t.Fatalf("%d address sets changed, want 1", changed)
	}
	if !after.Chains.Same(before.Chains) || !after.Workloads.Same(before.Workloads) || !after.PortSets.Same(before.PortSets) {
		t.Fatal("a label change of a remote endpoint changed chains, port sets or local dispatch")
	}
}

// The calculation is order-independent: random sequences (with objects
// deleted and re-added on the way) end in the same state as a straight
// build, and a full teardown ends empty.
func TestOrderIndependence(t *testing.T) {
	rs := baseInputs(t)
	want := dump(build(Config{NodeName: "n1"}, rs).State())
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		c := New(Config{NodeName: "n1"})
		order := rng.Perm(len(rs))
		present := map[int]bool{}
		for _, i := range order {
			feed(c, rs[i], false)
			present[i] = true
			if rng.IntN(3) == 0 {
				// Delete something present and put it back later.
				j := order[rng.IntN(len(order))]
				if present[j] {
					feed(c, rs[j], true)
					present[j] = false
				}
			}
			if rng.IntN(2) == 0 {
				if err := c.State().Validate(); err != nil {
					t.Fatalf("seed %d: intermediate state invalid: %v", seed, err)
				}
			}
		}
		for i := range rs {
			if !present[i] {
				feed(c, rs[i], false)
			}
		}
		if got := dump(c.State()); got != want {
			t.Fatalf("seed %d: state differs from a straight build\ngot:\n%s\nwant:\n%s", seed, got, want)
		}
		for _, i := range rng.Perm(len(rs)) {
			feed(c, rs[i], true)
		}
		if got := dump(c.State()); got != "" {
			t.Fatalf("seed %d: torn down to:\n%s", seed, got)
		}
	}
}

// Random label churn against a label index rebuilt from scratch.
func TestLabelIndexRandom(t *testing.T) {
	rs := baseInputs(t)
	labelValues := []map[string]string{
		{"app": "web"}, {"role": "client"}, {"role": "db"}, {}, {"app": "web", "role": "client"},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	c := build(Config{NodeName: "n1"}, rs)
	for step := range 300 {
		i := rng.IntN(len(rs))
		switch r := rs[i].(type) {
		case *api.WorkloadEndpoint:
			n := *r
			n.Metadata.Labels = labelValues[rng.IntN(len(labelValues))]
			api.Default(&n)
			rs[i] = &n
		case *api.Profile:
			n := *r
			n.Metadata.Labels = map[string]string{"name": []string{"default", "prod", "x"}[rng.IntN(3)]}
			if rng.IntN(4) == 0 {
				n.Spec.LabelsToApply = map[string]string{"role": "client"}
			} else {
				n.Spec.LabelsToApply = nil
			}
			rs[i] = &n
		default:
			continue
		}
		feed(c, rs[i], false)
		if got, want := dump(c.State()), dump(build(Config{NodeName: "n1"}, rs).State()); got != want {
			t.Fatalf("step %d: incremental state differs from a rebuild\ngot:\n%s\nwant:\n%s", step, got, want)
		}
	}
}
