package api

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestFelixFieldsCoverTheSpec: every field of the spec has exactly one row
// in the table and every row names a field; refused rows say why.
func TestFelixFieldsCoverTheSpec(t *testing.T) {
	var names []string
	for _, f := range felixSpecFields() {
		names = append(names, f.name)
		if _, ok := LookupFelixField(f.name); !ok {
			t.Errorf("spec field %q has no row in FelixFields: decide whether weft applies or refuses it", f.name)
		}
	}
	seen := map[string]bool{}
	for _, row := range FelixFields() {
		if seen[row.Name] {
			t.Errorf("FelixFields lists %q twice", row.Name)
		}
		seen[row.Name] = true
		if !slices.Contains(names, row.Name) {
			t.Errorf("FelixFields row %q names no spec field", row.Name)
		}
		if (row.State == FelixRefused || row.refuseTrue) && row.Reason == "" {
			t.Errorf("FelixFields row %q refuses without a reason", row.Name)
		}
		if row.State != FelixApplied && row.State != FelixRefused {
			t.Errorf("FelixFields row %q has no state", row.Name)
		}
	}
	if len(names) != 37 {
		t.Errorf("the spec has %d fields, the table was written for 37: update the table and docs/resources.md", len(names))
	}
}

// everyFelixField sets all 37 fields (Calico's spellings).
const everyFelixField = `apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  failsafeInboundHostPorts:
  - protocol: TCP
    port: 22
  - protocol: TCP
    port: 179
    net: 10.0.0.0/8
  failsafeOutboundHostPorts: []
  defaultEndpointToHostAction: Accept
  iptablesFilterAllowAction: Accept
  iptablesFilterDenyAction: Reject
  chainInsertMode: Append
  wireguardEnabled: true
  wireguardEnabledV6: false
  wireguardListeningPort: 51820
  wireguardListeningPortV6: 51821
  wireguardInterfaceName: weft.wg
  wireguardInterfaceNameV6: weft.wg6
  wireguardMTU: 1420
  wireguardMTUV6: 1400
  wireguardRoutingRulePriority: 99
  wireguardHostEncryptionEnabled: false
  wireguardKeepAlive: 25s
  vxlanEnabled: true
  vxlanPort: 4789
  vxlanVNI: 4096
  vxlanMTU: 1450
  vxlanMTUV6: 1430
  ipipEnabled: false
  ipipMTU: 1480
  allowVXLANPacketsFromWorkloads: false
  allowIPIPPacketsFromWorkloads: false
  natOutgoingAddress: 203.0.113.10
  natPortRange: "32768:65535"
  natOutgoingExclusions: IPPoolsAndHostIPs
  mtuIfacePattern: ^(en|eth).*
  routeRefreshInterval: 1m30s
  iptablesRefreshInterval: 3m
  nftablesRefreshInterval: 1m30s
  ipsetsRefreshInterval: 1m30s
  removeExternalRoutes: true
  maxIpsetSize: 1048576
`

// TestFelixRefusedFieldsNamed: a document setting every field decodes and
// encodes without loss (the fields are known), and validation refuses
// exactly the fields the table refuses, each by name with its reason.
func TestFelixRefusedFieldsNamed(t *testing.T) {
	rs, err := Decode([]byte(everyFelixField))
	if err != nil || len(rs) != 1 {
		t.Fatalf("decode: %v", err)
	}
	out, err := Encode("yaml", rs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(out)
	if err != nil || !reflect.DeepEqual(again[0], rs[0]) {
		t.Fatalf("round trip changed the resource (%v):\n%s", err, out)
	}
	var ve *ValidationError
	if err := Validate(rs[0]); !errors.As(err, &ve) {
		t.Fatalf("Validate = %v, want a ValidationError", err)
	}
	got := map[string]string{}
	for _, fe := range ve.Errors {
		got[fe.Field] = fe.Message
	}
	for _, row := range FelixFields() {
		msg, refused := got["spec."+row.Name]
		wantRefused := row.State == FelixRefused || row.refuseTrue // removeExternalRoutes is true here
		if refused != wantRefused {
			t.Errorf("%s: refused=%v (%q), want %v", row.Name, refused, msg, wantRefused)
		}
		if refused && !strings.Contains(msg, row.Reason) {
			t.Errorf("%s: message %q does not give the reason %q", row.Name, msg, row.Reason)
		}
	}
	if len(ve.Errors) != len(got) {
		t.Errorf("more than one error for one field: %v", ve.Errors)
	}

	// removeExternalRoutes: false is what weft does, so it is accepted.
	f := rs[0].(*FelixConfiguration)
	ok := &FelixConfiguration{TypeMeta: f.TypeMeta, Metadata: f.Metadata}
	ok.Spec.RemoveExternalRoutes = new(false)
	if err := Validate(ok); err != nil {
		t.Errorf("removeExternalRoutes: false refused: %v", err)
	}
}

// TestMergeFelixConfiguration: node.<name> overrides default field by
// field; unset fields of the node's keep default's values.
func TestMergeFelixConfiguration(t *testing.T) {
	base := FelixConfigurationSpec{
		VXLANPort: new(4790), VXLANVNI: new(4097), LogSeverityScreen: "Info",
		RouteRefreshInterval: &Duration{30 * time.Second},
	}
	over := FelixConfigurationSpec{VXLANVNI: new(5000), LogSeverityScreen: "Debug", IPIPEnabled: new(false)}
	got := MergeFelixConfiguration(base, over)
	if *got.VXLANPort != 4790 || *got.VXLANVNI != 5000 || got.LogSeverityScreen != "Debug" ||
		got.IPIPEnabled == nil || *got.IPIPEnabled || got.RouteRefreshInterval.Duration != 30*time.Second {
		t.Errorf("merge = %+v", got)
	}
	if *base.VXLANVNI != 4097 || base.IPIPEnabled != nil {
		t.Errorf("merge changed its input: %+v", base)
	}
	if e := MergeFelixConfiguration(FelixConfigurationSpec{}, FelixConfigurationSpec{}); !reflect.DeepEqual(e, FelixConfigurationSpec{}) {
		t.Errorf("merge of nothing = %+v", e)
	}
}
