package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
)

// evalCase runs a packet from one workload to another through the model:
// the source's egress, then the destination's ingress.
func evalVerdict(t *testing.T, rs []api.Resource, from, to string, pkt Packet) (Verdict, []Step) {
	t.Helper()
	c := build(Config{AllLocal: true}, rs)
	st := c.State()
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	var steps []Step
	if from != "" {
		ns, name := splitRef(from)
		ep := c.Workload(ns, name)
		if ep == nil {
			t.Fatalf("no workload %s", from)
		}
		r := Evaluate(st, &ep.Egress, dataplane.Egress, dataplane.StageNormal, pkt)
		steps = append(steps, r.Steps...)
		if r.Verdict != Allowed {
			return r.Verdict, steps
		}
	}
	ns, name := splitRef(to)
	ep := c.Workload(ns, name)
	if ep == nil {
		t.Fatalf("no workload %s", to)
	}
	r := Evaluate(st, &ep.Ingress, dataplane.Ingress, dataplane.StageNormal, pkt)
	return r.Verdict, append(steps, r.Steps...)
}

func splitRef(s string) (string, string) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], "n1-weft-" + s[i+1:] + "-eth0"
		}
	}
	return "default", "n1-weft-" + s + "-eth0"
}

func tcp(src, dst string, port uint16) Packet {
	return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: dataplane.ProtoTCP, SrcPort: 40000, DstPort: port}
}

// A two-workload world: a (10.0.0.1, role=a) and b (10.0.0.2, role=b) in
// namespace default, with the allow-all namespace profile.
func world(t *testing.T, yaml string) []api.Resource {
	rs := decodeAll(t, `apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: default}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: first}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: passing}
spec: {order: 20, defaultAction: Pass}
`+yaml)
	return append(rs,
		wep("n1", "default", "a", "10.0.0.1/32", map[string]string{"role": "a"}),
		wep("n1", "default", "b", "10.0.0.2/32", map[string]string{"role": "b"},
			api.WorkloadEndpointPort{Name: "http", Protocol: api.ProtocolFromString("TCP"), Port: 8080}),
		nsProfile("default", nil),
	)
}

func TestEvaluationSemantics(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		pkt  Packet
		want Verdict
		// decider is the last step's policy and rule, when it matters.
		decider string
		rule    int
	}{
		{name: "no policy: the namespace profile allows", pkt: tcp("10.0.0.1", "10.0.0.2", 80), want: Allowed, decider: "Profile kns.default", rule: 0},
		{
			name: "a policy selecting b turns on default deny for ingress",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b'}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Denied, decider: "", rule: -1,
		},
		{
			name: "types default to Egress with egress rules only: ingress unaffected",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b', egress: [{action: Deny}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Allowed,
		},
		{
			name: "lower order first: deny at 10 beats allow at 20",
			yaml: `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: z-allow, namespace: default}
spec: {order: 20, selector: role == 'b', ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-deny, namespace: default}
spec: {order: 10, selector: role == 'b', ingress: [{action: Deny}]}
`,
			pkt: tcp("10.0.0.1", "10.0.0.2", 80), want: Denied, decider: "NetworkPolicy default/a-deny", rule: 0,
		},
		{
			name: "equal order: by name",
			yaml: `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-deny, namespace: default}
spec: {order: 10, selector: role == 'b', ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-allow, namespace: default}
spec: {order: 10, selector: role == 'b', ingress: [{action: Allow}]}
`,
			pkt: tcp("10.0.0.1", "10.0.0.2", 80), want: Allowed, decider: "NetworkPolicy default/a-allow", rule: 0,
		},
		{
			name: "unset order is last",
			yaml: `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-deny, namespace: default}
spec: {selector: role == 'b', ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: z-allow, namespace: default}
spec: {order: 1000, selector: role == 'b', ingress: [{action: Allow}]}
`,
			pkt: tcp("10.0.0.1", "10.0.0.2", 80), want: Allowed, decider: "NetworkPolicy default/z-allow", rule: 0,
		},
		{
			name: "Pass skips the rest of the tier and goes to the next tier",
			yaml: `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: first.pass}
spec: {tier: first, order: 1, selector: role == 'b', ingress: [{action: Pass, source: {selector: role == 'a'}}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: first.deny}
spec: {tier: first, order: 2, selector: role == 'b', ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow, namespace: default}
spec: {selector: role == 'b', ingress: [{action: Allow}]}
`,
			pkt: tcp("10.0.0.1", "10.0.0.2", 80), want: Allowed, decider: "NetworkPolicy default/allow", rule: 0,
		},
		{
			name: "Pass from the last tier goes to the profiles",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: first.pass}\nspec: {tier: first, selector: role == 'b', ingress: [{action: Pass}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Allowed, decider: "Profile kns.default", rule: 0,
		},
		{
			name: "a tier with defaultAction Pass passes what no policy decided",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: passing.nothing}\nspec: {tier: passing, selector: role == 'b', ingress: [{action: Deny, protocol: UDP}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Allowed, decider: "Profile kns.default", rule: 0,
		},
		{
			name: "the end of a Deny tier drops",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: first.nothing}\nspec: {tier: first, selector: role == 'b', ingress: [{action: Deny, protocol: UDP}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Denied,
		},
		{
			name: "Log goes on to the next rule",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b', ingress: [{action: Log}, {action: Allow}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Allowed, decider: "NetworkPolicy default/p", rule: 1,
		},
		{
			name: "named port: allowed on the declared port only",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b', ingress: [{action: Allow, protocol: TCP, destination: {ports: [http]}}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 8080), want: Allowed, decider: "NetworkPolicy default/p", rule: 0,
		},
		{
			name: "named port: another port is denied",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b', ingress: [{action: Allow, protocol: TCP, destination: {ports: [http]}}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Denied,
		},
		{
			name: "notSelector matches others",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b', ingress: [{action: Allow, source: {notSelector: role == 'a'}}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Denied,
		},
		{
			name: "egress: a's egress denies port range",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'a', egress: [{action: Deny, protocol: TCP, destination: {ports: ['70:90']}}, {action: Allow}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Denied, decider: "NetworkPolicy default/p", rule: 0,
		},
		{
			name: "ICMP type: echo request allowed, TCP denied",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b', ingress: [{action: Allow, protocol: ICMP, icmp: {type: 8}}]}\n",
			pkt:  Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Proto: dataplane.ProtoICMP, ICMPType: 8},
			want: Allowed, decider: "NetworkPolicy default/p", rule: 0,
		},
		{
			name: "nets of another family do not match",
			yaml: "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b', ingress: [{action: Allow, source: {notNets: ['fd00::/8']}}]}\n",
			pkt:  tcp("10.0.0.1", "10.0.0.2", 80), want: Denied,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, steps := evalVerdict(t, world(t, tc.yaml), "a", "b", tc.pkt)
			if got != tc.want {
				t.Fatalf("verdict %s, want %s; steps %+v", got, tc.want, steps)
			}
			if tc.decider != "" {
				last := steps[len(steps)-1]
				if last.Policy != tc.decider || last.Rule != tc.rule {
					t.Fatalf("decided by %q rule %d, want %q rule %d; steps %+v", last.Policy, last.Rule, tc.decider, tc.rule, steps)
				}
			}
		})
	}
}

func TestTracer(t *testing.T) {
	rs := world(t, "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: role == 'b', ingress: [{action: Deny, source: {selector: role == 'a'}}]}\n")
	tr := NewTracer(rs, dataplane.PolicySettings{})
	got := tr.Trace(tcp("10.0.0.1", "10.0.0.2", 443))
	if got.Verdict != Denied || len(got.Hops) != 2 || got.Hops[0].Verdict != Allowed || got.Hops[1].Verdict != Denied {
		t.Fatalf("trace: %+v", got)
	}
	last := got.Hops[1].Steps[len(got.Hops[1].Steps)-1]
	if last.Policy != "NetworkPolicy default/p" || last.Rule != 0 || last.Action != "Deny" || last.Tier != "default" {
		t.Fatalf("decided by %+v", last)
	}
	// The other way round: b's egress allows (profile), a's ingress too.
	if got := tr.Trace(tcp("10.0.0.2", "10.0.0.1", 443)); got.Verdict != Allowed || len(got.Hops) != 2 {
		t.Fatalf("reverse trace: %+v", got)
	}
	// Unknown addresses: nothing applies.
	if got := tr.Trace(tcp("192.0.2.1", "192.0.2.2", 443)); got.Verdict != Allowed || len(got.Hops) != 0 {
		t.Fatalf("unknown: %+v", got)
	}
}

// A trace to a host endpoint's address honours the failsafe ports, and a
// forwarded packet passes the nodes' all-interfaces host endpoints.
func TestTracerHostEndpoints(t *testing.T) {
	rs := world(t, `---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n1-eth0, labels: {host: n1}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [192.168.1.1]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n2-all, labels: {host: n2}}
spec: {node: n2, interfaceName: "*"}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: hosts-deny}
spec: {selector: has(host), applyOnForward: true, ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}, {action: Allow}]}
`)
	// A workload on n2.
	rs = append(rs, wep("n2", "default", "c", "10.0.0.3/32", map[string]string{"role": "c"}))
	tr := NewTracer(rs, dataplane.PolicySettings{FailsafeIn: []dataplane.ProtoPort{{Proto: dataplane.ProtoTCP, Port: 22}}})
	if got := tr.Trace(tcp("10.0.0.1", "192.168.1.1", 22)); got.Verdict != Allowed || got.Hops[len(got.Hops)-1].Steps[0].Action != "failsafe port: Allow" {
		t.Fatalf("failsafe: %+v", got)
	}
	if got := tr.Trace(tcp("10.0.0.1", "192.168.1.1", 80)); got.Verdict != Denied {
		t.Fatalf("host endpoint ingress: %+v", got)
	}
	// a (n1) → c (n2) port 80: denied by n2's "*" forward ingress.
	got := tr.Trace(tcp("10.0.0.1", "10.0.0.3", 80))
	if got.Verdict != Denied || !strings.Contains(got.Hops[len(got.Hops)-1].Endpoint, "n2-all") {
		t.Fatalf("forwarded: %+v", got)
	}
	if got := tr.Trace(tcp("10.0.0.1", "10.0.0.3", 443)); got.Verdict != Allowed {
		t.Fatalf("forwarded 443: %+v", got)
	}
	// a → b, both on n1: no host endpoint on the way.
	if got := tr.Trace(tcp("10.0.0.1", "10.0.0.2", 80)); got.Verdict != Allowed || len(got.Hops) != 2 {
		t.Fatalf("same node: %+v", got)
	}
}
