package calc

import (
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/store"
)

// TestPolicySettings: the policy section's settings follow the node's
// configuration, the FelixConfiguration overrides (node.<name> over
// default) and the encapsulations in use: VXLAN and IP-in-IP from
// workloads are dropped while the node uses them, unless allowed.
func TestPolicySettings(t *testing.T) {
	cfg := testCfg
	cfg.Policy = dataplane.PolicySettings{
		FailsafeIn: []dataplane.ProtoPort{{Proto: dataplane.ProtoTCP, Port: 22}},
		VXLANPort:  4789,
	}
	ipipPool := func() store.Object {
		p := api.IPPool{Spec: api.IPPoolSpec{CIDR: "10.99.0.0/16", BlockSize: 26, IPIPMode: api.EncapAlways}}
		p.Metadata.Name = "ipip"
		return obj(t, api.KindIPPool, "", "ipip", p)
	}
	local := wep(t, "default", "a", "n1", "weft-a", "10.1.0.2/32")
	for _, tc := range []struct {
		name string
		objs []store.Object
		want func(dataplane.PolicySettings) bool
	}{
		{"no encapsulation: nothing dropped", []store.Object{pool(t, "p", "10.1.0.0/16", "Never", false), local},
			func(s dataplane.PolicySettings) bool {
				return s.VXLANPort == 0 && !s.DropIPIP && len(s.FailsafeIn) == 1
			}},
		{"VXLAN in use: its port dropped", []store.Object{pool(t, "p", "10.1.0.0/16", "Always", false), local},
			func(s dataplane.PolicySettings) bool { return s.VXLANPort == 4789 && !s.DropIPIP }},
		{"Felix's vxlanPort", []store.Object{pool(t, "p", "10.1.0.0/16", "Always", false), local,
			felixConfig(t, "default", api.FelixConfigurationSpec{VXLANPort: new(4790)})},
			func(s dataplane.PolicySettings) bool { return s.VXLANPort == 4790 }},
		{"allowVXLANPacketsFromWorkloads", []store.Object{pool(t, "p", "10.1.0.0/16", "Always", false), local,
			felixConfig(t, "default", api.FelixConfigurationSpec{AllowVXLANPacketsFromWorkloads: new(true)})},
			func(s dataplane.PolicySettings) bool { return s.VXLANPort == 0 }},
		{"IP-in-IP in use: dropped", []store.Object{pool(t, "p", "10.1.0.0/16", "Never", false), ipipPool(), local},
			func(s dataplane.PolicySettings) bool { return s.DropIPIP }},
		{"allowIPIPPacketsFromWorkloads", []store.Object{ipipPool(), local,
			felixConfig(t, "node.n1", api.FelixConfigurationSpec{AllowIPIPPacketsFromWorkloads: new(true)})},
			func(s dataplane.PolicySettings) bool { return !s.DropIPIP }},
		{"failsafe and endpoint-to-host overrides, node over default", []store.Object{pool(t, "p", "10.1.0.0/16", "Never", false), local,
			felixConfig(t, "default", api.FelixConfigurationSpec{FailsafeInboundHostPorts: &[]api.ProtoPort{{Port: 2222}}, DefaultEndpointToHostAction: "Accept"}),
			felixConfig(t, "node.n1", api.FelixConfigurationSpec{DefaultEndpointToHostAction: "Return"}),
			felixConfig(t, "node.n2", api.FelixConfigurationSpec{FailsafeInboundHostPorts: &[]api.ProtoPort{}})},
			func(s dataplane.PolicySettings) bool {
				return len(s.FailsafeIn) == 1 && s.FailsafeIn[0] == dataplane.ProtoPort{Proto: dataplane.ProtoTCP, Port: 2222} &&
					s.EndpointToHost == dataplane.EndpointToHostReturn
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := run(t, cfg, tc.objs)
			if out.Desired.Policy == nil {
				t.Fatalf("no policy section (problems %v)", out.Problems)
			}
			if s := out.Desired.Policy.Settings; !tc.want(s) {
				t.Errorf("settings %+v", s)
			}
		})
	}
}
