// Package policybench measures the policy dataplane (issue 10): change →
// kernel latency at scale against Felix's way (a full iptables-nft-restore),
// apply → enforced on every node of a cluster, the packet rate through a
// policy with 10,000 set members, agent memory, and a cold start over an
// existing ruleset. See README.md and docs/benchmarks.md.
package policybench

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/store"
)

// The benchmark world: 1,000 GlobalNetworkPolicies × 10 rules on 10 local
// workloads (100 policies each), every policy's rule 0 allowing from the
// selector role == 'frontend' — a GlobalNetworkSet of 10,000 addresses —
// and rules 1–9 from group == 'g<k>', which the 1,000 remote endpoints
// (workloads of 50 other nodes) are spread over.
const (
	nPolicies       = 1000
	nRulesPerPolicy = 10
	nLocal          = 10
	nRemote         = 1000
	nSetMembers     = 10000
)

func localWEP(j int) *api.WorkloadEndpoint {
	w := &api.WorkloadEndpoint{}
	w.Metadata.Namespace = "default"
	w.Metadata.Labels = map[string]string{"app": fmt.Sprintf("app-%d", j)}
	w.Metadata.Annotations = map[string]string{"weft.io/netns": fmt.Sprintf("/run/netns/bench-%d", j)}
	iface, _ := dataplane.WorkloadIfaceName("weft", "default", fmt.Sprintf("local-%d", j))
	w.Spec = api.WorkloadEndpointSpec{Orchestrator: api.OrchestratorWeft, Workload: fmt.Sprintf("local-%d", j), Node: "local",
		Endpoint: "eth0", InterfaceName: iface, IPNetworks: []string{fmt.Sprintf("10.250.0.%d/32", j+1)},
		Profiles: []string{"kns.default"}}
	api.Default(w)
	return w
}

func remoteWEP(k int, frontend bool) *api.WorkloadEndpoint {
	w := &api.WorkloadEndpoint{}
	w.Metadata.Namespace = "default"
	w.Metadata.Labels = map[string]string{"group": fmt.Sprintf("g%d", k%9+1), "role": "backend"}
	if frontend {
		w.Metadata.Labels["role"] = "frontend"
	}
	iface, _ := dataplane.WorkloadIfaceName("weft", "default", fmt.Sprintf("remote-%d", k))
	w.Spec = api.WorkloadEndpointSpec{Orchestrator: api.OrchestratorWeft, Workload: fmt.Sprintf("remote-%d", k),
		Node: fmt.Sprintf("node-%d", k%50), Endpoint: "eth0", InterfaceName: iface,
		IPNetworks: []string{fmt.Sprintf("10.200.%d.%d/32", k/250, k%250+1)}, Profiles: []string{"kns.default"}}
	api.Default(w)
	return w
}

func policy(i, port3 int) *api.GlobalNetworkPolicy {
	p := &api.GlobalNetworkPolicy{}
	p.Metadata.Name = fmt.Sprintf("pol-%d", i)
	p.Spec.Selector = fmt.Sprintf("app == 'app-%d'", i%nLocal)
	tcp := api.ProtocolFromString("TCP")
	for k := range nRulesPerPolicy {
		sel := "role == 'frontend'"
		if k > 0 {
			sel = fmt.Sprintf("group == 'g%d'", k)
		}
		port := uint16(8000 + k)
		if k == 3 {
			port = uint16(port3)
		}
		p.Spec.Ingress = append(p.Spec.Ingress, api.Rule{Action: api.ActionAllow, Protocol: &tcp,
			Source: api.EntityRule{Selector: sel}, Destination: api.EntityRule{Ports: []api.Port{api.SinglePort(port)}}})
	}
	api.Default(p)
	return p
}

func frontendSet() *api.GlobalNetworkSet {
	s := &api.GlobalNetworkSet{}
	s.Metadata.Name = "frontends"
	s.Metadata.Labels = map[string]string{"role": "frontend"}
	a := netip.MustParseAddr("10.100.0.0")
	for range nSetMembers {
		a = a.Next().Next() // every other address: 10,000 separate elements
		s.Spec.Nets = append(s.Spec.Nets, a.String()+"/32")
	}
	api.Default(s)
	return s
}

func nsProfile() *api.Profile {
	p := &api.Profile{}
	p.Metadata.Name = "kns.default"
	p.Spec.Ingress = []api.Rule{{Action: api.ActionAllow}}
	p.Spec.Egress = []api.Rule{{Action: api.ActionAllow}}
	api.Default(p)
	return p
}

// worldObjects are the benchmark world as resources.
func worldObjects() []api.Resource {
	rs := []api.Resource{api.DefaultTier(), nsProfile(), frontendSet()}
	for j := range nLocal {
		rs = append(rs, localWEP(j))
	}
	for k := range nRemote {
		rs = append(rs, remoteWEP(k, false))
	}
	for i := range nPolicies {
		rs = append(rs, policy(i, 8003))
	}
	return rs
}

// event is a store put of r at revision rev.
func event(tb testing.TB, r api.Resource, rev uint64) store.Event {
	tb.Helper()
	v, err := api.StoreValue(r)
	if err != nil {
		tb.Fatal(err)
	}
	kind, ns, name := api.Key(r)
	// Stored values carry no uid or revision; the store's record does.
	var check map[string]any
	if err := json.Unmarshal(v, &check); err != nil {
		tb.Fatal(err)
	}
	return store.Event{Type: store.EventPut, Revision: rev, Object: store.Object{
		Key: store.Key{Kind: kind, Namespace: ns, Name: name}, Value: v, Revision: rev, CreateRevision: rev,
	}}
}

// iptablesRuleset is the same ruleset the way Felix writes it with
// iptables: one chain per policy (cali-pi-*) with its rules matching
// ipsets, one chain per local endpoint (cali-tw-*) jumping to its
// policies with Calico's mark checks, a dispatch chain, and FORWARD into
// it. The ipsets are created separately (setup, not timed).
func iptablesRuleset() string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:cali-to-wl-dispatch - [0:0]\n")
	for i := range nPolicies {
		fmt.Fprintf(&b, ":cali-pi-pol-%d - [0:0]\n", i)
	}
	for j := range nLocal {
		fmt.Fprintf(&b, ":cali-tw-app-%d - [0:0]\n", j)
	}
	for i := range nPolicies {
		for k := range nRulesPerPolicy {
			set := "cali40frontend"
			if k > 0 {
				set = fmt.Sprintf("cali40g%d", k)
			}
			fmt.Fprintf(&b, "-A cali-pi-pol-%d -p tcp -m set --match-set %s src -m tcp --dport %d -j MARK --set-xmark 0x10000/0x10000\n", i, set, 8000+k)
			fmt.Fprintf(&b, "-A cali-pi-pol-%d -m mark --mark 0x10000/0x10000 -j RETURN\n", i)
		}
	}
	for j := range nLocal {
		fmt.Fprintf(&b, "-A cali-tw-app-%d -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", j)
		fmt.Fprintf(&b, "-A cali-tw-app-%d -j MARK --set-xmark 0x0/0x30000\n", j)
		for i := j; i < nPolicies; i += nLocal {
			fmt.Fprintf(&b, "-A cali-tw-app-%d -m mark --mark 0x0/0x20000 -j cali-pi-pol-%d\n", j, i)
			fmt.Fprintf(&b, "-A cali-tw-app-%d -m mark --mark 0x10000/0x10000 -j RETURN\n", j)
		}
		fmt.Fprintf(&b, "-A cali-tw-app-%d -m mark --mark 0x0/0x20000 -j DROP\n", j)
		iface, _ := dataplane.WorkloadIfaceName("weft", "default", fmt.Sprintf("local-%d", j))
		fmt.Fprintf(&b, "-A cali-to-wl-dispatch -o %s -g cali-tw-app-%d\n", iface, j)
	}
	b.WriteString("-A FORWARD -j cali-to-wl-dispatch\nCOMMIT\n")
	return b.String()
}

// ipsetRestore creates the ipsets the iptables ruleset names.
func ipsetRestore() string {
	var b strings.Builder
	b.WriteString("create cali40frontend hash:net family inet maxelem 1048576\n")
	a := netip.MustParseAddr("10.100.0.0")
	for range nSetMembers {
		a = a.Next().Next()
		fmt.Fprintf(&b, "add cali40frontend %s/32\n", a)
	}
	for k := 1; k < nRulesPerPolicy; k++ {
		fmt.Fprintf(&b, "create cali40g%d hash:net family inet\n", k)
		for r := k - 1; r < nRemote; r += 9 {
			fmt.Fprintf(&b, "add cali40g%d 10.200.%d.%d/32\n", k, r/250, r%250+1)
		}
	}
	return b.String()
}
