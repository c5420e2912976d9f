package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/conformance"
	"github.com/weftnet/weft/internal/site"
	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// The policy conformance table (internal/conformance) on a 3-node cluster
// with real workloads, once per backend: each gets a cluster of its own.
func TestPolicyConformanceNftables(t *testing.T) {
	policyConformance(t, "nftables")
}

func TestPolicyConformanceIptables(t *testing.T) {
	policyConformance(t, "iptables")
}

// polWorld is the conformance world: the site, its hosts by name, its
// workloads by "namespace/name".
type polWorld struct {
	t         *testing.T
	site      *testbed.Site
	hosts     map[string]*testbed.Host
	workloads map[string]*polWorkload
}

type polWorkload struct {
	spec conformance.Workload
	w    *testbed.Workload
	host *testbed.Host
	info localapi.Workload
	ip4  string
	ip6  string
}

// polPools: IPv4 over VXLAN (so host endpoints see tunnelled traffic),
// IPv6 routed natively.
const polPools = `
[[network.pool]]
name = "pol-ipv4"
cidr = "10.246.0.0/16"
vxlan_mode = "Always"
nat_outgoing = true
[[network.pool]]
name = "pol-ipv6"
cidr = "fd00:246::/48"
vxlan_mode = "Never"
`

func policyConformance(t *testing.T, backend string) {
	w := newPolWorld(t, backend)
	// `weft node status` names the backend (the iptables one with its
	// variant: iptables-nft or iptables-legacy).
	for _, h := range w.hosts {
		out, err := h.Weft("node", "status")
		if err != nil || !strings.Contains(out, "Policy:   "+backend) {
			t.Fatalf("weft node status on %s does not name the %s backend: %v\n%s", h.Name(), backend, err, out)
		}
	}
	for _, sc := range conformance.Scenarios {
		if !t.Run(sc.Name, func(t *testing.T) { w.run(t, sc) }) {
			// A scenario that failed may have left its resources: the
			// next ones would not start from the world.
			break
		}
	}
}

func newPolWorld(t *testing.T, backend string) *polWorld {
	t.Helper()
	s := wlStartCluster(t, testbed.Options{Hosts: 3, IPv6: true, ExpectTimeout: 30 * time.Second,
		ExtraTOML: polPools + fmt.Sprintf("[dataplane]\nbackend = %q\n", backend)})
	w := &polWorld{t: t, site: s, hosts: map[string]*testbed.Host{}, workloads: map[string]*polWorkload{}}
	for _, h := range s.Hosts() {
		w.hosts[h.Name()] = h
		for _, port := range conformance.HostTCPPorts {
			h.Netns().ServeTCP(fmt.Sprintf("[::]:%d", port))
		}
	}
	for ns, labels := range conformance.NamespaceLabels {
		args := []string{"label", "namespace", ns, "--overwrite"}
		for k, v := range labels {
			args = append(args, k+"="+v)
		}
		if out, err := w.hosts["h1"].Weft(args...); err != nil {
			t.Fatalf("weft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, spec := range conformance.Workloads {
		h := w.hosts[spec.Node]
		tw := s.AddWorkload(h, spec.Namespace+"-"+spec.Name)
		args := []string{"-n", spec.Namespace}
		for k, v := range spec.Labels {
			args = append(args, "--label", k+"="+v)
		}
		for _, p := range spec.Ports {
			args = append(args, "--port", p)
		}
		info, err := wlWeftAdd(h, spec.Name, tw.Path(), args...)
		if err != nil {
			t.Fatalf("weft workload add %s: %v", spec.Ref(), err)
		}
		pw := &polWorkload{spec: spec, w: tw, host: h, info: info}
		for _, ip := range info.IPs {
			if p, err := netip.ParsePrefix(ip); err == nil {
				if p.Addr().Is4() {
					pw.ip4 = p.Addr().String()
				} else {
					pw.ip6 = p.Addr().String()
				}
			}
		}
		if pw.ip4 == "" || pw.ip6 == "" {
			t.Fatalf("%s: want an IPv4 and an IPv6 address, got %v", spec.Ref(), info.IPs)
		}
		for _, port := range conformance.TCPPorts {
			tw.Netns().ServeTCP(fmt.Sprintf("[::]:%d", port))
		}
		for _, port := range conformance.UDPPorts {
			tw.Netns().ServeUDP(fmt.Sprintf("[::]:%d", port))
		}
		w.workloads[spec.Ref()] = pw
	}
	w.expectBaseline(t)
	return w
}

// expectBaseline: with no policy everything reaches everything (a sample
// of pairs, both families).
func (w *polWorld) expectBaseline(t *testing.T) {
	t.Helper()
	var probes []conformance.Probe
	refs := slices.Sorted(mapsKeys(w.workloads))
	for _, a := range refs {
		for _, b := range refs {
			if a != b {
				probes = append(probes, conformance.Probe{From: a, To: b, Proto: "tcp", Port: 80, Want: true})
			}
		}
	}
	probes = append(probes,
		conformance.Probe{From: "default/client", To: "prod/db", Proto: "tcp6", Port: 5432, Want: true},
		conformance.Probe{From: "host:h1", To: "host:h2", Proto: "tcp", Port: 9999, Want: true},
		conformance.Probe{From: "host:h3", To: "host:h2", Proto: "tcp", Port: 9999, Want: true},
	)
	w.site.ExpectWithin(60*time.Second, w.checks(t, probes)...)
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// funcs are the table's template functions over the real addresses.
func (w *polWorld) funcs() template.FuncMap {
	wl := func(ref string) *polWorkload {
		pw := w.workloads[ref]
		if pw == nil {
			w.t.Fatalf("template: no workload %q", ref)
		}
		return pw
	}
	return template.FuncMap{
		"ip":       func(ref string) string { return wl(ref).ip4 },
		"ip6":      func(ref string) string { return wl(ref).ip6 },
		"cidr":     func(ref string) string { return wl(ref).ip4 + "/32" },
		"cidr6":    func(ref string) string { return wl(ref).ip6 + "/128" },
		"hostip":   func(name string) string { return w.hosts[name].Address() },
		"hostcidr": func(name string) string { return w.hosts[name].Address() + "/32" },
		"iface":    func(string) string { return site.Uplink },
	}
}

func (w *polWorld) render(t *testing.T, doc string) string {
	t.Helper()
	tpl, err := template.New("").Funcs(w.funcs()).Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tpl.Execute(&b, nil); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// weftFile runs `weft VERB -f FILE` with doc on a host.
func (w *polWorld) weftFile(t *testing.T, h *testbed.Host, verb, doc string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "doc.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Weft(verb, "-f", f); err != nil {
		t.Fatalf("weft %s: %v\n%s\n%s", verb, err, out, doc)
	}
}

// run runs one scenario, then puts the world back.
func (w *polWorld) run(t *testing.T, sc conformance.Scenario) {
	var applied []string
	labelled := map[string]bool{}
	nsLabelled := map[string]bool{}
	defer func() { w.restore(t, applied, labelled, nsLabelled) }()
	h1 := w.hosts["h1"]
	for i, st := range sc.Steps {
		if st.Apply != "" {
			doc := w.render(t, st.Apply)
			w.weftFile(t, h1, "apply", doc)
			applied = append(applied, doc)
		}
		if st.Delete != "" {
			w.weftFile(t, h1, "delete", w.render(t, st.Delete))
		}
		if l := st.LabelWorkload; l != nil {
			ns, name, _ := strings.Cut(l.Target, "/")
			w.label(t, "workload", ns, name, l)
			labelled[l.Target] = true
		}
		if l := st.LabelNamespace; l != nil {
			w.label(t, "namespace", "", l.Target, l)
			nsLabelled[l.Target] = true
		}
		if len(st.Probes) > 0 {
			checks := w.checks(t, st.Probes)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := testbed.VerifyConnectivity(ctx, checks)
			cancel()
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			w.checkTraces(t, i, st.Probes)
		}
		for _, c := range st.Counters {
			w.checkCounter(t, c)
		}
		if st.LabelWorkload != nil {
			w.checkInPlace(t, st.LabelWorkload.Target)
		}
	}
}

// label runs `weft label`.
func (w *polWorld) label(t *testing.T, kind, ns, name string, l *conformance.Label) {
	t.Helper()
	args := []string{"label", kind, name}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	for k, v := range l.Set {
		args = append(args, k+"="+v)
	}
	for _, k := range l.Remove {
		args = append(args, k+"-")
	}
	if out, err := w.hosts["h1"].Weft(args...); err != nil {
		t.Fatalf("weft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// restore deletes what a scenario applied (but restores the namespaces'
// profiles rather than deleting them) and puts labels back, then waits
// for the baseline.
func (w *polWorld) restore(t *testing.T, applied []string, labelled, nsLabelled map[string]bool) {
	h1 := w.hosts["h1"]
	for i := len(applied) - 1; i >= 0; i-- {
		rs, err := api.Decode([]byte(applied[i]))
		if err != nil {
			t.Fatalf("cleanup: %v", err)
		}
		for _, r := range rs {
			kind, ns, name := api.Key(r)
			if kind == api.KindProfile && strings.HasPrefix(name, api.NamespaceProfilePrefix) {
				continue
			}
			args := []string{"delete", kind, name}
			if ns != "" {
				args = append(args, "-n", ns)
			}
			if out, err := h1.Weft(args...); err != nil && !strings.Contains(out+err.Error(), "not found") {
				// A tier goes after its policies: retried below.
				if kind != api.KindTier {
					t.Errorf("cleanup: weft %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			}
		}
		for _, r := range rs {
			if kind, _, name := api.Key(r); kind == api.KindTier {
				h1.Weft("delete", "tier", name)
			}
		}
	}
	for ns, labels := range conformance.NamespaceLabels {
		p := &api.Profile{}
		p.Metadata.Name = api.NamespaceProfileName(ns)
		p.Metadata.Labels = labels
		p.Spec.Ingress = []api.Rule{{Action: api.ActionAllow}}
		p.Spec.Egress = []api.Rule{{Action: api.ActionAllow}}
		if nsLabelled[ns] || slices.ContainsFunc(applied, func(d string) bool { return strings.Contains(d, p.Metadata.Name) }) {
			b, _ := api.Encode("yaml", []api.Resource{p})
			w.weftFile(t, h1, "apply", string(b))
		}
	}
	for ref := range labelled {
		pw := w.workloads[ref]
		args := []string{"label", "workload", pw.spec.Name, "-n", pw.spec.Namespace, "--overwrite"}
		cur := w.workloadLabels(t, pw)
		for k := range cur {
			if _, ok := pw.spec.Labels[k]; !ok {
				args = append(args, k+"-")
			}
		}
		for k, v := range pw.spec.Labels {
			args = append(args, k+"="+v)
		}
		if out, err := h1.Weft(args...); err != nil {
			t.Errorf("cleanup: weft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	w.expectBaseline(t)
}

func (w *polWorld) workloadLabels(t *testing.T, pw *polWorkload) map[string]string {
	t.Helper()
	out, err := pw.host.Weft("workload", "list", "-n", pw.spec.Namespace, "-o", "json")
	if err != nil {
		t.Fatalf("workload list: %v\n%s", err, out)
	}
	var l localapi.WorkloadList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	for _, it := range l.Items {
		if it.Name == pw.spec.Name {
			return it.Labels
		}
	}
	t.Fatalf("workload %s not listed", pw.spec.Ref())
	return nil
}

// checkInPlace: a relabelled workload keeps its interface and addresses.
func (w *polWorld) checkInPlace(t *testing.T, ref string) {
	t.Helper()
	pw := w.workloads[ref]
	out, err := pw.host.Weft("workload", "list", "-n", pw.spec.Namespace, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var l localapi.WorkloadList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	for _, it := range l.Items {
		if it.Name == pw.spec.Name {
			if it.HostIface != pw.info.HostIface || !slices.Equal(it.IPs, pw.info.IPs) || it.MAC != pw.info.MAC {
				t.Fatalf("%s changed by a label change: %+v, was %+v", ref, it, pw.info)
			}
			return
		}
	}
	t.Fatalf("%s gone", ref)
}

// end resolves a probe end: the namespace it runs in and its address.
func (w *polWorld) end(t *testing.T, ref string, v6 bool) (testbed.Namespace, string) {
	t.Helper()
	if name, ok := strings.CutPrefix(ref, "host:"); ok {
		h := w.hosts[name]
		if v6 {
			return h, h.Address6()
		}
		return h, h.Address()
	}
	pw := w.workloads[ref]
	if pw == nil {
		t.Fatalf("no workload %q", ref)
	}
	if v6 {
		return pw.w.Netns(), pw.ip6
	}
	return pw.w.Netns(), pw.ip4
}

func (w *polWorld) checks(t *testing.T, probes []conformance.Probe) []testbed.Check {
	t.Helper()
	var cs []testbed.Check
	for _, p := range probes {
		v6 := strings.HasSuffix(p.Proto, "6")
		from, _ := w.end(t, p.From, v6)
		_, to := w.end(t, p.To, v6)
		var probe testbed.Probe
		switch strings.TrimSuffix(p.Proto, "6") {
		case "tcp":
			probe = testbed.TCP(p.Port)
		case "udp":
			probe = testbed.UDP(p.Port)
		default:
			probe = testbed.Ping()
		}
		cs = append(cs, testbed.Check{From: from, To: to, Probe: probe, Reachable: p.Want})
	}
	return cs
}

// checkTraces asks `weft policy trace` about every probe between two
// workloads: the model must agree with the kernel.
func (w *polWorld) checkTraces(t *testing.T, step int, probes []conformance.Probe) {
	t.Helper()
	for _, p := range probes {
		src, dst := w.workloads[p.From], w.workloads[p.To]
		if src == nil || dst == nil {
			continue
		}
		proto := strings.TrimSuffix(p.Proto, "6")
		args := []string{"policy", "trace", "--from", p.From, "--to", p.To, "-o", "json"}
		switch proto {
		case "ping":
			args = append(args, "--proto", "icmp")
			if strings.HasSuffix(p.Proto, "6") {
				args[len(args)-1] = "icmpv6"
			}
		default:
			args = append(args, "--proto", proto, "--port", fmt.Sprint(p.Port))
		}
		if strings.HasSuffix(p.Proto, "6") {
			args = append(args, "--ipv6")
		}
		want := "deny"
		if p.Want {
			want = "allow"
		}
		var last string
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := src.host.Weft(args...)
			if err != nil {
				t.Fatalf("step %d: weft %s: %v\n%s", step, strings.Join(args, " "), err, out)
			}
			var tr localapi.TraceResponse
			if err := json.Unmarshal([]byte(out), &tr); err != nil {
				t.Fatalf("step %d: trace output %q: %v", step, out, err)
			}
			if tr.Verdict == want {
				break
			}
			last = out
			if time.Now().After(deadline) {
				t.Fatalf("step %d: the kernel gives %s for %s -> %s %s/%d but `weft policy trace` says %s:\n%s", step, want, p.From, p.To, p.Proto, p.Port, tr.Verdict, last)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// checkCounter reads a node's per-rule counters: the rule must have
// counted packets.
func (w *polWorld) checkCounter(t *testing.T, c conformance.Counter) {
	t.Helper()
	h := w.hosts[c.Node]
	out, err := h.Weft("get", strings.ToLower(c.Kind), c.Name, "-n", c.Namespace, "-o", "wide")
	if err != nil {
		t.Fatalf("weft get -o wide: %v\n%s", err, out)
	}
	// The per-rule table: DIRECTION RULE ACTION PACKETS BYTES.
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && f[0] == c.Direction && f[1] == fmt.Sprint(c.Rule) {
			if f[3] == "0" {
				t.Fatalf("%s rule %d of %s counted no packets on %s:\n%s", c.Direction, c.Rule, c.Name, c.Node, out)
			}
			return
		}
	}
	t.Fatalf("no counter for %s rule %d of %s on %s:\n%s", c.Direction, c.Rule, c.Name, c.Node, out)
}

// sortedProbes is for stable messages.
var _ = sort.Strings
