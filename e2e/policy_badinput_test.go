package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// polWeftFile runs `weft VERB -f FILE` with doc and returns its output and
// error.
func polWeftFile(t *testing.T, h *testbed.Host, verb, doc string) (string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "doc.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return h.Weft(verb, "-f", f)
}

// polPolicyState lists the policy kinds as stored (what refused input
// must not change).
func polPolicyState(t *testing.T, h *testbed.Host) string {
	t.Helper()
	var b strings.Builder
	for _, kind := range []string{"globalnetworkpolicies", "networkpolicies", "tiers", "hostendpoints"} {
		out, err := h.Weft("get", kind, "-A", "-o", "json")
		if kind != "networkpolicies" {
			out, err = h.Weft("get", kind, "-o", "json")
		}
		if err != nil {
			t.Fatalf("get %s: %v\n%s", kind, err, out)
		}
		b.WriteString(out)
	}
	return b.String()
}

func polStatus(t *testing.T, h *testbed.Host) localapi.NodeStatus {
	t.Helper()
	out, err := h.Weft("node", "status", "-o", "json")
	if err != nil {
		t.Fatalf("node status: %v\n%s", err, out)
	}
	var st localapi.NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// Bad policy input is refused with the field named and changes nothing;
// a policy in a missing tier and a tier delete with policies are refused;
// a host endpoint on an interface that does not exist is accepted and
// applies when the interface appears; a policy of 10,000 rules is refused
// and one at the limit (1,024 rules each way) is programmed without
// stalling the dataplane.
func TestPolicyBadInput(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 1})
	h := site.Hosts()[0]
	w := wlAttach(t, site, h, "victim", "--label", "role=victim")

	gnp := func(spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: bad}\nspec:\n" + spec
	}
	var many strings.Builder
	many.WriteString(gnp("  ingress:\n"))
	for i := range 10000 {
		fmt.Fprintf(&many, "  - {action: Allow, protocol: TCP, destination: {ports: [%d]}}\n", i%65000+1)
	}
	before := polPolicyState(t, h)
	for _, tc := range []struct{ name, doc, want string }{
		{"selector", gnp("  selector: role = 'db'\n"), "spec.selector"},
		{"port", gnp("  ingress: [{action: Allow, protocol: TCP, destination: {ports: [70000]}}]\n"), "spec.ingress[0].destination.ports"},
		{"port range", gnp("  ingress: [{action: Allow, protocol: TCP, destination: {ports: ['90:80']}}]\n"), "spec.ingress[0].destination.ports[0]"},
		{"protocol", gnp("  ingress: [{action: Allow, protocol: GRE}]\n"), "spec.ingress[0].protocol"},
		{"action", gnp("  ingress: [{action: allow}]\n"), "spec.ingress[0].action"},
		{"order", gnp("  order: high\n"), "spec.order"},
		{"CIDR", gnp("  ingress: [{action: Allow, source: {nets: [10.0.0.1/8]}}]\n"), "spec.ingress[0].source.nets[0]"},
		{"ports without protocol", gnp("  ingress: [{action: Allow, destination: {ports: [80]}}]\n"), "spec.ingress[0].destination.ports"},
		{"Kubernetes-only field", gnp("  serviceAccountSelector: all()\n"), "spec.serviceAccountSelector"},
		{"Enterprise-only field", gnp("  egress: [{action: Allow, destination: {domains: [example.com]}}]\n"), "spec.egress[0].destination.domains"},
		{"missing tier", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: nope.p}\nspec: {tier: nope}\n", `tier "nope" does not exist`},
		{"10,000 rules", many.String(), "spec.ingress: has 10000 rules, the limit is 1024"},
	} {
		out, err := polWeftFile(t, h, "apply", tc.doc)
		if err == nil || !strings.Contains(out+err.Error(), tc.want) {
			t.Errorf("%s: want an error naming %q, got %v\n%s", tc.name, tc.want, err, out)
		}
	}
	if after := polPolicyState(t, h); after != before {
		t.Fatalf("refused input changed the store:\nbefore %s\nafter %s", before, after)
	}

	// A tier with policies cannot be deleted; the default tier never.
	if out, err := polWeftFile(t, h, "apply", `apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: sec}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: sec.p}
spec: {tier: sec, selector: role == 'nobody'}
`); err != nil {
		t.Fatalf("apply tier: %v\n%s", err, out)
	}
	for _, tier := range []string{"sec", "default"} {
		if out, err := h.Weft("delete", "tier", tier); err == nil || !strings.Contains(out+err.Error(), "cannot be deleted") && !strings.Contains(out+err.Error(), "still has policies") {
			t.Errorf("delete tier %s: want a refusal, got %v\n%s", tier, err, out)
		}
	}

	// A host endpoint on an interface that does not exist yet: accepted,
	// and the node stays in sync; when the interface appears, its policy
	// (deny all) applies and its failsafe port (22) stays open.
	if out, err := polWeftFile(t, h, "apply", `apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: ghost, labels: {hep: ghost}}
spec: {node: h1, interfaceName: ghost0}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ghost-deny}
spec: {selector: hep == 'ghost', types: [Ingress, Egress]}
`); err != nil {
		t.Fatalf("apply host endpoint: %v\n%s", err, out)
	}
	wlWaitFor(t, 20*time.Second, "the policy dataplane in sync", func() error {
		st := polStatus(t, h)
		if st.Policy == nil || !st.Policy.InSync {
			return fmt.Errorf("policy: %+v", st.Policy)
		}
		return nil
	})
	peer := polHandVeth(t, site, h, "ghostpeer", "ghost0", "10.98.0")
	h.Netns().ServeTCP("[::]:22")
	h.Netns().ServeTCP("[::]:9999")
	site.Expect(
		testbed.NoReach(peer.Netns(), "10.98.0.1", testbed.TCP(9999)),
		testbed.Reach(peer.Netns(), "10.98.0.1", testbed.TCP(22)),
	)

	// At the limit: 1,024 rules each way on the victim, programmed while
	// the dataplane keeps serving (a workload add answers promptly).
	var big strings.Builder
	big.WriteString("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: big, namespace: default}\nspec:\n  selector: role == 'victim'\n  ingress:\n")
	for i := range 1024 {
		fmt.Fprintf(&big, "  - {action: Allow, protocol: TCP, source: {nets: [10.%d.%d.0/24]}, destination: {ports: [%d]}}\n", i/256, i%256, 1000+i)
	}
	big.WriteString("  egress:\n")
	for i := range 1024 {
		fmt.Fprintf(&big, "  - {action: Allow, protocol: UDP, destination: {ports: [%d]}}\n", 1000+i)
	}
	if out, err := polWeftFile(t, h, "apply", big.String()); err != nil {
		t.Fatalf("apply a policy at the limit: %v\n%s", err, out)
	}
	start := time.Now()
	late := wlAttach(t, site, h, "late")
	t.Logf("workload add with a 2,048-rule policy being programmed: %s", time.Since(start))
	wlWaitFor(t, 30*time.Second, "the big policy programmed", func() error {
		st := polStatus(t, h)
		if st.Policy == nil || !st.Policy.InSync || st.Policy.Rules < 2048 {
			return fmt.Errorf("policy: %+v", st.Policy)
		}
		return nil
	})
	// The victim now refuses what its 2,048 rules do not allow.
	site.Expect(testbed.NoReach(late.Netns(), w.ip, testbed.TCP(wlPort)))
}
