package api

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestValidationGolden runs testdata/validation.yaml: every document is
// decoded, defaulted and validated, and the error must equal the document's
// "# want:" line. UPDATE_GOLDEN=1 rewrites the want lines (review the diff).
func TestValidationGolden(t *testing.T) {
	const file = "testdata/validation.yaml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	docs := splitYAML(data)
	if len(docs) < 40 {
		t.Fatalf("only %d golden cases, want at least 40", len(docs))
	}
	update := os.Getenv("UPDATE_GOLDEN") != ""
	out := string(data)
	for i, d := range docs {
		text := string(d.text)
		wantLine := ""
		for _, l := range strings.Split(text, "\n") {
			if w, ok := strings.CutPrefix(l, "# want: "); ok {
				wantLine = w
			}
		}
		rs, err := Decode(d.text)
		if err != nil || len(rs) != 1 {
			t.Errorf("case %d (line %d): decode: %v", i+1, d.line, err)
			continue
		}
		Default(rs[0])
		got := "<no error>"
		if err := Validate(rs[0]); err != nil {
			got = err.Error()
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("case %d: %T is not a *ValidationError", i+1, err)
			}
		}
		if update {
			out = strings.Replace(out, "# want: "+wantLine+"\n"+strings.SplitAfterN(text, "# want: "+wantLine+"\n", 2)[1],
				"# want: "+got+"\n"+strings.SplitAfterN(text, "# want: "+wantLine+"\n", 2)[1], 1)
			continue
		}
		if got != wantLine {
			t.Errorf("case %d (line %d):\n got: %s\nwant: %s", i+1, d.line, got, wantLine)
		}
	}
	if update {
		if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestValidateRuleLimits(t *testing.T) {
	rules := make([]Rule, maxRules+1)
	for i := range rules {
		rules[i] = Rule{Action: ActionAllow}
	}
	gnp := &GlobalNetworkPolicy{Metadata: ObjectMeta{Name: "big"}, Spec: GlobalNetworkPolicySpec{Ingress: rules}}
	Default(gnp)
	err := Validate(gnp)
	want := `GlobalNetworkPolicy "big": spec.ingress: has 1025 rules, the limit is 1024`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	gnp.Spec.Ingress = rules[:maxRules]
	if err := Validate(gnp); err != nil {
		t.Errorf("1024 rules must be accepted: %v", err)
	}

	nets := make([]string, maxRuleNets+1)
	for i := range nets {
		nets[i] = fmt.Sprintf("10.0.%d.%d/32", i/256, i%256)
	}
	long := strings.Repeat("a", maxSelectorLen) + ` == "x"`
	np := &NetworkPolicy{Metadata: ObjectMeta{Name: "n", Namespace: "ns"}, Spec: NetworkPolicySpec{
		Selector: long,
		Egress:   []Rule{{Action: ActionAllow, Destination: EntityRule{Nets: nets}}},
	}}
	Default(np)
	err = Validate(np)
	if err == nil || !strings.Contains(err.Error(), "spec.selector: is 1031 characters long, the limit is 1024") ||
		!strings.Contains(err.Error(), "spec.egress[0].destination.nets: has 257 entries, the limit is 256") {
		t.Errorf("limits not enforced: %v", err)
	}
}

func TestValidateBeforeDefault(t *testing.T) {
	// Validate accepts objects before Default: unset blockSize, types, tier.
	for _, r := range []Resource{
		&IPPool{Metadata: ObjectMeta{Name: "p"}, Spec: IPPoolSpec{CIDR: "10.1.0.0/16"}},
		&GlobalNetworkPolicy{Metadata: ObjectMeta{Name: "g"}},
		&Tier{Metadata: ObjectMeta{Name: "default"}},
		&IPAMConfiguration{Metadata: ObjectMeta{Name: "default"}},
	} {
		if err := Validate(r); err != nil {
			t.Errorf("%s: %v", Describe(r), err)
		}
	}
	// But a namespaced kind needs its namespace (Default sets "default").
	np := &NetworkPolicy{Metadata: ObjectMeta{Name: "n"}}
	if err := Validate(np); err == nil || !strings.Contains(err.Error(), "metadata.namespace: is required") {
		t.Errorf("missing namespace: %v", err)
	}
	Default(np)
	if err := Validate(np); err != nil || np.Metadata.Namespace != "default" {
		t.Errorf("after Default: %v, namespace %q", err, np.Metadata.Namespace)
	}
}

func TestValidateUpdate(t *testing.T) {
	pool := func(cidr string, bs int, uses ...string) *IPPool {
		p := &IPPool{Metadata: ObjectMeta{Name: "p"}, Spec: IPPoolSpec{CIDR: cidr, BlockSize: bs, AllowedUses: uses}}
		Default(p)
		return p
	}
	cases := []struct {
		name     string
		old, new Resource
		want     string
	}{
		{"unchanged", pool("10.0.0.0/16", 0), pool("10.0.0.0/16", 26), ""},
		{"disable is fine", pool("10.0.0.0/16", 0), func() Resource { p := pool("10.0.0.0/16", 0); p.Spec.Disabled = true; return p }(), ""},
		{"cidr", pool("10.0.0.0/16", 0), pool("10.1.0.0/16", 0),
			`IPPool "p": spec.cidr: cannot change (was 10.0.0.0/16): delete the pool and create a new one`},
		{"blockSize", pool("10.0.0.0/16", 0), pool("10.0.0.0/16", 24),
			`IPPool "p": spec.blockSize: cannot change (was 26): delete the pool and create a new one`},
		{"to LoadBalancer", pool("10.0.0.0/16", 0), pool("10.0.0.0/16", 0, UseLoadBalancer),
			`IPPool "p": spec.allowedUses: cannot change to or from LoadBalancer`},
		{"from LoadBalancer", pool("10.0.0.0/16", 0, UseLoadBalancer), pool("10.0.0.0/16", 0, UseWorkload),
			`IPPool "p": spec.allowedUses: cannot change to or from LoadBalancer`},
		{"new object invalid too", pool("10.0.0.0/16", 0), pool("10.0.0.0/16", 40),
			`IPPool "p": spec.blockSize: cannot change (was 26): delete the pool and create a new one; spec.blockSize: must be between 20 and 32 for an IPv4 pool, got 40`},
		{"rename", &Tier{Metadata: ObjectMeta{Name: "a"}}, &Tier{Metadata: ObjectMeta{Name: "b"}},
			`Tier "b": metadata.name: cannot change (Tier "a" to Tier "b")`},
	}
	for _, c := range cases {
		err := ValidateUpdate(c.old, c.new)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("%s:\n got: %s\nwant: %s", c.name, got, c.want)
		}
	}
	if err := ValidateUpdate(&Tier{}, &IPPool{}); err == nil {
		t.Error("kind change must fail")
	}
}

func TestWorkloadEndpointNameAndDefaults(t *testing.T) {
	if got := WorkloadEndpointName("edge-1", "weft", "my-web", "eth0"); got != "edge--1-weft-my--web-eth0" {
		t.Errorf("name = %q", got)
	}
	w := &WorkloadEndpoint{Metadata: ObjectMeta{Namespace: "shop"}, Spec: WorkloadEndpointSpec{
		Orchestrator: OrchestratorCNI, ContainerID: "abc123", Workload: "ignored", Node: "n1", Endpoint: "eth0",
		InterfaceName: "weft1", IPNetworks: []string{"10.0.0.1/32"}, ServiceAccountName: "sa",
	}}
	Default(w)
	if w.Metadata.Name != "n1-cni-abc123-eth0" {
		t.Errorf("CNI name = %q", w.Metadata.Name)
	}
	want := map[string]string{LabelNamespace: "shop", LabelOrchestrator: "cni", LabelServiceAccount: "sa"}
	for k, v := range want {
		if w.Metadata.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, w.Metadata.Labels[k], v)
		}
	}
	if err := Validate(w); err != nil {
		t.Error(err)
	}
}

func TestDefaultPolicyTypes(t *testing.T) {
	allow := []Rule{{Action: ActionAllow}}
	cases := []struct {
		in, eg []Rule
		want   string
	}{
		{nil, nil, "Ingress"},
		{allow, nil, "Ingress"},
		{nil, allow, "Egress"},
		{allow, allow, "Ingress,Egress"},
	}
	for _, c := range cases {
		np := &NetworkPolicy{Metadata: ObjectMeta{Name: "n"}, Spec: NetworkPolicySpec{Ingress: c.in, Egress: c.eg}}
		Default(np)
		if got := strings.Join(np.Spec.Types, ","); got != c.want {
			t.Errorf("ingress %d egress %d: types %s, want %s", len(c.in), len(c.eg), got, c.want)
		}
		if np.Spec.Tier != "default" || np.Metadata.Labels[LabelTier] != "default" {
			t.Errorf("tier %q label %q", np.Spec.Tier, np.Metadata.Labels[LabelTier])
		}
	}
	// Explicit types are kept.
	gnp := &GlobalNetworkPolicy{Metadata: ObjectMeta{Name: "g"}, Spec: GlobalNetworkPolicySpec{Tier: "sec", Types: []string{"Egress"}, Ingress: allow}}
	Default(gnp)
	if strings.Join(gnp.Spec.Types, ",") != "Egress" || gnp.Metadata.Labels[LabelTier] != "sec" {
		t.Errorf("explicit types/tier not kept: %v %v", gnp.Spec.Types, gnp.Metadata.Labels)
	}
}

func TestDefaultIPPoolAndTiers(t *testing.T) {
	p := &IPPool{Metadata: ObjectMeta{Name: "p"}, Spec: IPPoolSpec{CIDR: "FD00:0::/48"}}
	Default(p)
	s := p.Spec
	if s.CIDR != "fd00::/48" || s.BlockSize != 122 || s.IPIPMode != "Never" || s.VXLANMode != "Never" ||
		s.NodeSelector != "all()" || strings.Join(s.AllowedUses, ",") != "Workload,Tunnel" || s.AssignmentMode != "Automatic" {
		t.Errorf("IPv6 pool defaults: %+v", s)
	}
	p4 := &IPPool{Spec: IPPoolSpec{CIDR: "10.0.0.0/8"}}
	Default(p4)
	if p4.Spec.BlockSize != 26 {
		t.Errorf("IPv4 block size %d", p4.Spec.BlockSize)
	}
	d := DefaultTier()
	if *d.Spec.Order != DefaultTierOrder || d.Spec.DefaultAction != ActionDeny || Validate(d) != nil {
		t.Errorf("default tier %+v", d.Spec)
	}
	admin := &Tier{Metadata: ObjectMeta{Name: KubeAdminTierName}}
	Default(admin)
	if *admin.Spec.Order != KubeAdminTierOrder || admin.Spec.DefaultAction != ActionPass {
		t.Errorf("kube-admin tier %+v", admin.Spec)
	}
	c := &IPAMConfiguration{Metadata: ObjectMeta{Name: "default"}}
	Default(c)
	if c.Spec.AutoAllocateBlocks == nil || !*c.Spec.AutoAllocateBlocks {
		t.Error("autoAllocateBlocks should default to true")
	}
	f := &FelixConfiguration{Metadata: ObjectMeta{Name: "default"}, Spec: FelixConfigurationSpec{
		FailsafeInboundHostPorts: &[]ProtoPort{{Port: 22}}}}
	Default(f)
	if (*f.Spec.FailsafeInboundHostPorts)[0].Protocol != "TCP" {
		t.Error("failsafe protocol should default to TCP")
	}
}

// An error about a huge input repeats only the start of it: the message
// stays one readable line (a 500 KB label value came back as a 500 KB
// error, which the CLI could not even read).
func TestErrorsClipHugeInput(t *testing.T) {
	huge := strings.Repeat("b", 500_000)
	for name, doc := range map[string]string{
		"label value":   "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: x\n  labels:\n    a: " + huge + "\n",
		"label key":     `{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": {"name": "x", "labels": {"` + huge + `": "a"}}}`,
		"name":          "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: " + huge + "\n",
		"unknown field": `{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": {"name": "x"}, "spec": {"` + huge + `": 1}}`,
		"net":           "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: x\nspec:\n  nets: [" + huge + "]\n",
	} {
		t.Run(name, func(t *testing.T) {
			rs, err := Decode([]byte(doc))
			if err == nil {
				for _, r := range rs {
					Default(r)
					err = Validate(r)
				}
			}
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if len(msg) > 1500 || !strings.Contains(msg, "…(5000") || strings.Contains(msg, "\n") {
				t.Fatalf("%d-byte error: %.300s", len(msg), msg)
			}
			t.Logf("%s", msg)
		})
	}
}

func TestClipKeepsWholeCharacters(t *testing.T) {
	s := strings.Repeat("é", maxQuoted) // 2 bytes each
	got := clipTo(s, maxQuoted)
	if !utf8.ValidString(got) || !strings.HasSuffix(got, fmt.Sprintf("…(%d bytes)", len(s))) {
		t.Fatalf("clipTo = %q", got)
	}
	if clipTo("short", maxQuoted) != "short" {
		t.Fatal("a short value was clipped")
	}
	if got := clipTo(`ab\u00e9`, 3); got != `ab…(8 bytes)` {
		t.Fatalf("clipTo cut inside an escape: %q", got)
	}
}
