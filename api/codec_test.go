package api

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestDecodeStrictErrors(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{
			name: "unknown field deep in a rule (brief's example)",
			in: `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.0.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: default
spec:
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      portz: [80]
`,
			want: `document 2 (NetworkPolicy default/allow-web): unknown field "spec.ingress[0].destination.portz"`,
		},
		{
			name: "field names are case-sensitive",
			in:   "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {CIDR: 10.0.0.0/16}\n",
			want: `document 1 (IPPool p1): unknown field "spec.CIDR"`,
		},
		{
			name: "several unknown fields are all reported",
			in:   "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1, labelz: {}}\nspec: {cidr: 10.0.0.0/16, blocksize: 26}\n",
			want: `document 1 (IPPool p1): unknown field "metadata.labelz"; unknown field "spec.blocksize"`,
		},
		{
			name: "unknown top-level field",
			in:   "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {}\nextra: 1\n",
			want: `document 1 (Tier t): unknown field "extra"`,
		},
		{
			name: "HTTP match is not supported",
			in: `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  ingress:
  - action: Allow
  - action: Allow
    http: {methods: [GET]}
`,
			want: `document 1 (GlobalNetworkPolicy web): field "spec.ingress[1].http" is not supported by weft: HTTP match needs an application-layer proxy, which weft does not have`,
		},
		{
			name: "service accounts in a profile rule",
			in:   "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: p}\nspec:\n  egress:\n  - action: Allow\n    destination: {serviceAccounts: {names: [a]}}\n",
			want: `document 1 (Profile p): field "spec.egress[0].destination.serviceAccounts" is not supported by weft: Kubernetes service accounts do not exist in weft`,
		},
		{
			name: "domain names (Calico Enterprise)",
			in:   "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  egress:\n  - action: Allow\n    destination: {domains: [example.com]}\n",
			want: `document 1 (GlobalNetworkPolicy p): field "spec.egress[0].destination.domains" is not supported by weft: domain names in rules are a Calico Enterprise feature`,
		},
		{
			name: "serviceAccountSelector",
			in:   "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: ns}\nspec: {serviceAccountSelector: all()}\n",
			want: `document 1 (NetworkPolicy ns/p): field "spec.serviceAccountSelector" is not supported by weft: Kubernetes service accounts do not exist in weft`,
		},
		{
			name: "BGP password",
			in:   "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 65000, password: {secretKeyRef: {name: s, key: k, optional: true}}}\n",
			want: `document 1 (BGPPeer p): field "spec.password.secretKeyRef.optional" is not supported by weft: a missing password file is an error in weft`,
		},
		{
			name: "node mesh password",
			in:   "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeMeshPassword: {secretKeyRef: {name: s, key: k}}}\n",
			want: `document 1 (BGPConfiguration default): field "spec.nodeMeshPassword" is not supported by weft: Kubernetes secrets do not exist in weft`,
		},
		{
			name: "Felix field with a config-file equivalent",
			in:   "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: true}\n",
			want: `document 1 (FelixConfiguration default): field "spec.bpfEnabled" is not supported by weft: choose the dataplane with [dataplane] backend in the config file`,
		},
		{
			name: "any other Felix field",
			in:   "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {reportingInterval: 0s}\n",
			want: `document 1 (FelixConfiguration default): field "spec.reportingInterval" is not supported by weft: this FelixConfiguration field does not apply to weft (docs/resources.md lists the supported ones)`,
		},
		{
			name: "Kubernetes metadata",
			in:   "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1, generation: 3}\nspec: {cidr: 10.0.0.0/16}\n",
			want: `document 1 (IPPool p1): field "metadata.generation" is not supported by weft: Kubernetes-only metadata`,
		},
		{
			name: "wrong type",
			in:   "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.0.0.0/16, blockSize: \"26\", natOutgoing: \"yes\"}\n",
			want: `document 1 (IPPool p1): spec.blockSize: expected an integer, got string "26"; spec.natOutgoing: expected true or false, got string "yes"`,
		},
		{
			name: "integer out of range",
			in:   "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {listenPort: 70000}\n",
			want: `document 1 (BGPConfiguration default): spec.listenPort: expected an integer between 0 and 65535, got 70000`,
		},
		{
			name: "object where a list is expected",
			in:   "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: s, namespace: ns}\nspec: {nets: {a: 1}}\n",
			want: `document 1 (NetworkSet ns/s): spec.nets: expected a list, got an object`,
		},
		{
			name: "bad port",
			in:   "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [\"90:80\", 70000]}\n",
			want: `document 1 (GlobalNetworkPolicy g): spec.ingress[0].destination.ports[0]: invalid port range 90:80: the first port is greater than the second; spec.ingress[0].destination.ports[1]: invalid port 70000: must be a number between 0 and 65535, a range "min:max" or a port name`,
		},
		{
			name: "bad duration",
			in:   "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {maxRestartTime: 120}\n",
			want: `document 1 (BGPPeer p): spec.maxRestartTime: invalid duration 120: must be a string such as "90s"`,
		},
		{
			name: "missing apiVersion",
			in:   "kind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.0.0.0/16}\n",
			want: `document 1 (IPPool p1): apiVersion is missing (weft accepts projectcalico.org/v3)`,
		},
		{
			name: "other apiVersion",
			in:   "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.0.0.0/16}\n",
			want: `document 1 (IPPool p1): unsupported apiVersion "crd.projectcalico.org/v1" (weft accepts projectcalico.org/v3)`,
		},
		{
			name: "missing kind",
			in:   "apiVersion: projectcalico.org/v3\nmetadata: {name: p1}\n",
			want: `document 1 (line 1): kind is missing`,
		},
		{
			name: "unknown kind",
			in:   "apiVersion: projectcalico.org/v3\nkind: IPPol\nmetadata: {name: p1}\n",
			want: `document 1 (IPPol p1): unknown kind "IPPol"`,
		},
		{
			name: "unsupported kind",
			in:   "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f}\n",
			want: `document 1 (BGPFilter f): kind BGPFilter is not supported by weft (BGP filters are not implemented)`,
		},
		{
			name: "invalid YAML names the document's line",
			in:   "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\n---\n# second\nkind: IPPool\n  bad: indent\n",
			want: `document 2 (line 5): invalid YAML: yaml: line 3: mapping values are not allowed in this context`,
		},
		{
			name: "duplicate YAML key",
			in:   "apiVersion: projectcalico.org/v3\nkind: Tier\nkind: Tier\nmetadata: {name: t}\n",
			want: `document 1 (line 1): invalid YAML: yaml: line 3: key "kind" already set in map`,
		},
		{
			name: "two duplicate YAML keys",
			in:   "apiVersion: projectcalico.org/v3\nkind: Tier\nkind: Tier\nmetadata: {name: t, name: u}\n",
			want: `document 1 (line 1): invalid YAML: yaml: line 3: key "kind" already set in map; line 4: key "name" already set in map`,
		},
		{
			name: "duplicate JSON key",
			in:   `{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "a", "name": "b"}}`,
			want: `document 1: duplicate key "name"`,
		},
		{
			name: "not an object",
			in:   "just a string\n",
			want: `document 1 (line 1): expected a resource (an object with apiVersion, kind, metadata and spec), got string "just a string"`,
		},
		{
			name: "item of a typed list with another kind",
			in:   "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: Tier\n  metadata: {name: t}\n",
			want: `document 1, item 1 (Tier t): kind Tier in a IPPoolList`,
		},
		{
			name: "problem inside a List item",
			in:   "apiVersion: v1\nkind: List\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: Tier\n  metadata: {name: t}\n- apiVersion: projectcalico.org/v3\n  kind: HostEndpoint\n  metadata: {name: h}\n  spec: {node: n, interfaceName: eth0, colour: red}\n",
			want: `document 1, item 2 (HostEndpoint h): unknown field "spec.colour"`,
		},
		{
			name: "list of an unsupported kind",
			in:   "apiVersion: projectcalico.org/v3\nkind: BGPFilterList\nitems: []\n",
			want: `document 1 (BGPFilterList <no name>): kind BGPFilter is not supported by weft (BGP filters are not implemented)`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs, err := Decode([]byte(c.in))
			if err == nil {
				t.Fatalf("Decode succeeded with %d resources, want error %q", len(rs), c.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Errorf("error %T is not a *DecodeError", err)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("error:\n  %s\nwant:\n  %s", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines (the CLI prints one): %q", err)
			}
		})
	}
}

func TestDecodeListsAndStreams(t *testing.T) {
	tier := func(name string) string {
		return `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"` + name + `"},"spec":{}}`
	}
	cases := []struct {
		name, in string
		want     []string // names, in order
	}{
		{"empty input", "", nil},
		{"only separators and comments", "---\n# nothing\n---\n\n...\n", nil},
		{"null document", "null\n---\n~\n", nil},
		{"multi-document YAML", "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a}\n---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: b}\n", []string{"a", "b"}},
		{"leading separator and CRLF", "---\r\napiVersion: projectcalico.org/v3\r\nkind: Tier\r\nmetadata: {name: a}\r\n---\r\n", []string{"a"}},
		{"separator with a comment", "--- # first\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a}\n", []string{"a"}},
		{"kind List", "apiVersion: v1\nkind: List\nmetadata: {resourceVersion: \"\"}\nitems:\n- " + tier("a") + "\n- " + tier("b") + "\n", []string{"a", "b"}},
		{"typed list with kind-less items", "apiVersion: projectcalico.org/v3\nkind: TierList\nitems:\n- metadata: {name: a}\n- metadata: {name: b}\n", []string{"a", "b"}},
		{"empty typed list", "apiVersion: projectcalico.org/v3\nkind: TierList\nitems: []\n", nil},
		{"YAML sequence", "- " + tier("a") + "\n- " + tier("b") + "\n", []string{"a", "b"}},
		{"JSON object", tier("a"), []string{"a"}},
		{"JSON stream", tier("a") + "\n" + tier("b"), []string{"a", "b"}},
		{"JSON array", "[" + tier("a") + "," + tier("b") + "]", []string{"a", "b"}},
		{"JSON List", `{"apiVersion":"v1","kind":"List","items":[` + tier("a") + `]}`, []string{"a"}},
		{"byte order mark", "\xef\xbb\xbf" + tier("a"), []string{"a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs, err := Decode([]byte(c.in))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			var names []string
			for _, r := range rs {
				names = append(names, r.GetMeta().Name)
				if tm := r.GetTypeMeta(); tm.Kind != "Tier" || tm.APIVersion != Group {
					t.Errorf("TypeMeta %+v", tm)
				}
			}
			if strings.Join(names, ",") != strings.Join(c.want, ",") {
				t.Errorf("got %v, want %v", names, c.want)
			}
		})
	}
}

func TestDecodeCoercesScalarsWhereStringsAreExpected(t *testing.T) {
	// calicoctl (sigs.k8s.io/yaml with a target) accepts unquoted numbers
	// and booleans as label values; so does weft.
	rs, err := Decode([]byte("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\n  labels: {version: 1.10, enabled: true, count: 3}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := rs[0].GetMeta().Labels
	if got["version"] != "1.1" || got["enabled"] != "true" || got["count"] != "3" {
		t.Errorf("labels = %v", got)
	}
}

func TestDecodeDropsControllerStatus(t *testing.T) {
	rs, err := Decode([]byte("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: 5}\nstatus: {conditions: [{type: Ready}]}\n"))
	if err != nil || len(rs) != 1 {
		t.Fatalf("Decode: %v", err)
	}
	// A Node's status is data weft keeps.
	rs, err = Decode([]byte("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n}\nstatus: {wireguardPublicKey: k, bogus: 1}\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "status.bogus"`) {
		t.Errorf("Node status should be checked strictly: %v %v", rs, err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, seed := range readTestdataForFuzz(f) {
		f.Add(seed)
	}
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{kind: Tier}]"))
	f.Add([]byte(`[{"kind":"IPPool","apiVersion":"projectcalico.org/v3","spec":{"cidr":5}}]`))
	f.Add([]byte("--- \n- - -\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Decode(data)
		if err != nil {
			return
		}
		// Whatever decodes must encode, default and validate without
		// panicking, and re-decode to the same number of resources.
		out, err := Encode("json", rs)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		if len(rs) > 0 {
			back, err := Decode(out)
			if err != nil || len(back) != len(rs) {
				t.Fatalf("re-decode: %v (%d vs %d)\n%s", err, len(back), len(rs), out)
			}
		}
		for _, r := range rs {
			Default(r)
			_ = Validate(r)
			_ = Row(r, true)
		}
	})
}

func readTestdataForFuzz(f *testing.F) [][]byte {
	var out [][]byte
	for _, name := range []string{"ippool.yaml", "networkpolicy.yaml", "bgppeer.yaml", "node.yaml", "felixconfiguration.yaml", "workloadendpoint.yaml"} {
		b, err := os.ReadFile("testdata/roundtrip/" + name)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}
