package cni

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/node/localapi"
)

func testWorkload() *localapi.Workload {
	return &localapi.Workload{
		Name: "till-1", Namespace: "shop", Node: "n1", NetNS: "/run/netns/ctr",
		HostIface: "weft1a2b3c4d5e6", Interface: "eth0", MAC: "0a:58:0a:f4:00:05",
		IPs: []string{"10.244.0.5/32"}, Gateway4: "169.254.1.1", MTU: 1450,
	}
}

// printed renders a result as the runtime gets it, in version v.
func printed(t *testing.T, r *types100.Result, v string) string {
	t.Helper()
	out, err := r.GetAsVersion(v)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := out.PrintTo(&buf); err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	return compact.String()
}

func TestBuildResult(t *testing.T) {
	dual := testWorkload()
	dual.IPs = []string{"10.244.0.5/32", "fd00:10::5/128"}
	dual.Gateway6 = "fe80::ecee:eeff:feee:eeee"
	noGW := testWorkload()
	noGW.Gateway4 = "" // the agent left it out: 169.254.1.1 anyway
	tests := []struct {
		name    string
		w       *localapi.Workload
		dns     types.DNS
		version string
		want    string
	}{
		{name: "IPv4, CNI 1.0.0", w: testWorkload(), version: "1.0.0",
			want: `{"cniVersion":"1.0.0","interfaces":[{"mac":"ee:ee:ee:ee:ee:ee","name":"weft1a2b3c4d5e6"},` +
				`{"mac":"0a:58:0a:f4:00:05","name":"eth0","sandbox":"/run/netns/ctr"}],` +
				`"ips":[{"address":"10.244.0.5/32","gateway":"169.254.1.1","interface":1}],` +
				`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}]}`},
		{name: "no gateway from the agent", w: noGW, version: "1.0.0",
			want: `{"cniVersion":"1.0.0","interfaces":[{"mac":"ee:ee:ee:ee:ee:ee","name":"weft1a2b3c4d5e6"},` +
				`{"mac":"0a:58:0a:f4:00:05","name":"eth0","sandbox":"/run/netns/ctr"}],` +
				`"ips":[{"address":"10.244.0.5/32","gateway":"169.254.1.1","interface":1}],` +
				`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}]}`},
		{name: "dual stack with dns", w: dual, dns: types.DNS{Nameservers: []string{"10.0.0.53"}}, version: "1.0.0",
			want: `{"cniVersion":"1.0.0","dns":{"nameservers":["10.0.0.53"]},"interfaces":[{"mac":"ee:ee:ee:ee:ee:ee","name":"weft1a2b3c4d5e6"},` +
				`{"mac":"0a:58:0a:f4:00:05","name":"eth0","sandbox":"/run/netns/ctr"}],` +
				`"ips":[{"address":"10.244.0.5/32","gateway":"169.254.1.1","interface":1},` +
				`{"address":"fd00:10::5/128","gateway":"fe80::ecee:eeff:feee:eeee","interface":1}],` +
				`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"::/0","gw":"fe80::ecee:eeff:feee:eeee"}]}`},
		{name: "CNI 0.4.0", w: testWorkload(), version: "0.4.0",
			want: `{"cniVersion":"0.4.0","interfaces":[{"name":"weft1a2b3c4d5e6","mac":"ee:ee:ee:ee:ee:ee"},` +
				`{"name":"eth0","mac":"0a:58:0a:f4:00:05","sandbox":"/run/netns/ctr"}],` +
				`"ips":[{"version":"4","interface":1,"address":"10.244.0.5/32","gateway":"169.254.1.1"}],` +
				`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := BuildResult(tt.w, tt.dns)
			if err != nil {
				t.Fatal(err)
			}
			if got := printed(t, r, tt.version); got != tt.want {
				t.Fatalf("result\n got  %s\n want %s", got, tt.want)
			}
		})
	}
}

func TestBuildResultRejectsBadAnswers(t *testing.T) {
	tests := []struct {
		name   string
		modify func(w *localapi.Workload)
		want   string
	}{
		{"no address", func(w *localapi.Workload) { w.IPs = nil }, "has no address"},
		{"bad address", func(w *localapi.Workload) { w.IPs = []string{"10.244.0/32"} }, `address "10.244.0/32"`},
		{"no interface", func(w *localapi.Workload) { w.Interface = "" }, "names no interface"},
		{"bad gateway", func(w *localapi.Workload) { w.Gateway4 = "fe80::1" }, "IPv4 gateway"},
		{"bad v6 gateway", func(w *localapi.Workload) { w.Gateway6 = "10.0.0.1" }, "IPv6 gateway"},
	}
	for _, tt := range tests {
		w := testWorkload()
		tt.modify(w)
		if _, err := BuildResult(w, types.DNS{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestCheckPrevResult(t *testing.T) {
	w := testWorkload()
	good, err := BuildResult(w, types.DNS{})
	if err != nil {
		t.Fatal(err)
	}
	// What a runtime hands back at CHECK: the 1.0.0 result it cached.
	roundTrip := func(r *types100.Result) *types100.Result {
		b, _ := json.Marshal(r)
		out, err := types100.NewResult(bytes.ReplaceAll(b, []byte(`"1.1.0"`), []byte(`"1.0.0"`)))
		if err != nil {
			t.Fatal(err)
		}
		return out.(*types100.Result)
	}
	otherIP := roundTrip(good)
	otherIP.IPs[0].Address.IP = otherIP.IPs[0].Address.IP.To16()
	otherIP.IPs[0].Address.IP[15] = 9
	otherMAC := roundTrip(good)
	otherMAC.Interfaces[1].Mac = "0a:58:0a:f4:00:99"
	noSandbox := roundTrip(good)
	noSandbox.Interfaces[1].Sandbox = ""

	tests := []struct {
		name   string
		prev   *types100.Result
		ifName string
		want   string // "" = passes
	}{
		{"no prevResult", nil, "eth0", ""},
		{"matches", roundTrip(good), "eth0", ""},
		{"other address", otherIP, "eth0", "has addresses [10.244.0.5], the runtime recorded [10.244.0.9]"},
		{"other MAC", otherMAC, "eth0", "has MAC 0a:58:0a:f4:00:05, the runtime recorded 0a:58:0a:f4:00:99"},
		{"interface not recorded", noSandbox, "eth0", `no interface "eth0" in a sandbox`},
		{"other interface name", roundTrip(good), "eth1", `no interface "eth1"`},
	}
	for _, tt := range tests {
		err := CheckPrevResult(tt.prev, w, tt.ifName)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}
