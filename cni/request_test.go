package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/node/localapi"
)

func TestWorkloadName(t *testing.T) {
	hex64 := "3f9c2b1de0a94c7b8e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f70819"
	tests := []struct {
		id, want string
	}{
		{"cnitool-3a5f0c1e2d4b6a8c9e0f", "cnitool-3a5f0c1e2d4b6a8c9e0f"}, // already a label: unchanged
		{"abc", "abc"},
		{hex64, hex64[:54] + "-" + hashSuffix(hex64)}, // 64 > 63
		{"Ctr_1.a", "ctr-1-a-" + hashSuffix("Ctr_1.a")},
		{"ctr-", "ctr-" + hashSuffix("ctr-")}, // a label cannot end in '-'
	}
	for _, tt := range tests {
		if got := WorkloadName(tt.id); got != tt.want {
			t.Errorf("WorkloadName(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}

	// Every container ID the CNI library accepts gives a DNS label, and IDs
	// that differ give different names, also when they differ only in case,
	// in characters a label cannot hold, or beyond the cut.
	ids := []string{hex64, strings.ToUpper(hex64), hex64[:63] + "0", hex64[:63] + "1",
		"a_b", "a.b", "a-b", "A-B", "x" + strings.Repeat("_", 100), "x" + strings.Repeat(".", 100),
		strings.Repeat("z", 300), "9", "0123"}
	seen := map[string]string{}
	for _, id := range ids {
		name := WorkloadName(id)
		if !isDNSLabel(name) {
			t.Errorf("WorkloadName(%q) = %q is not a DNS-1123 label of at most 63 characters", id, name)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("WorkloadName(%q) = WorkloadName(%q) = %q", id, other, name)
		}
		seen[name] = id
	}
}

// hashSuffix is the first 8 hex digits of the ID's SHA-256.
func hashSuffix(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:4])
}

func TestBuildAddRequest(t *testing.T) {
	const cid = "c0ffee"
	base := `"cniVersion":"1.0.0","name":"weft","type":"weft"`
	tests := []struct {
		name    string
		conf    string // extra keys
		args    string // CNI_ARGS
		want    localapi.WorkloadAddRequest
		wantErr string
		errCode uint
	}{
		{name: "plain: name from the container ID, namespace default",
			want: localapi.WorkloadAddRequest{Name: cid, Namespace: "default"}},
		{name: "namespace from the configuration", conf: `"namespace":"shop"`,
			want: localapi.WorkloadAddRequest{Name: cid, Namespace: "shop"}},
		{name: "pod name and namespace from CNI_ARGS win", conf: `"namespace":"shop"`,
			args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=tills;K8S_POD_NAME=till-1;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=u1;FOO=bar",
			want: localapi.WorkloadAddRequest{Name: "till-1", Namespace: "tills"}},
		{name: "pod name alone keeps the configured namespace", conf: `"namespace":"shop"`, args: "K8S_POD_NAME=till-2",
			want: localapi.WorkloadAddRequest{Name: "till-2", Namespace: "shop"}},
		{name: "pools and labels; args labels win", conf: `"pools":["edge"],"labels":{"app":"till","env":"dev"},
			"args":{"cni":{"labels":[{"key":"env","value":"prod"}]}}`,
			want: localapi.WorkloadAddRequest{Name: cid, Namespace: "default", Pools: []string{"edge"},
				Labels: map[string]string{"app": "till", "env": "prod"}}},
		{name: "CNI_ARGS IP, prefix length dropped", args: "IP=10.244.7.7/24",
			want: localapi.WorkloadAddRequest{Name: cid, Namespace: "default", IPs: []string{"10.244.7.7"}}},
		{name: "CNI_ARGS IP dual stack", args: "IP=10.244.7.7,fd00:10::7",
			want: localapi.WorkloadAddRequest{Name: cid, Namespace: "default", IPs: []string{"10.244.7.7", "fd00:10::7"}}},
		{name: "args.cni.ips win over CNI_ARGS", conf: `"args":{"cni":{"ips":["10.244.8.8"]}}`, args: "IP=10.244.7.7",
			want: localapi.WorkloadAddRequest{Name: cid, Namespace: "default", IPs: []string{"10.244.8.8"}}},
		{name: "runtimeConfig.ips win over args", conf: `"capabilities":{"ips":true},"runtimeConfig":{"ips":["10.244.9.9/32"]},
			"args":{"cni":{"ips":["10.244.8.8"]}}`,
			want: localapi.WorkloadAddRequest{Name: cid, Namespace: "default", IPs: []string{"10.244.9.9"}}},
		{name: "two IPv4 addresses", args: "IP=10.244.7.7,10.244.7.8", errCode: types.ErrInvalidNetworkConfig,
			wantErr: "CNI_ARGS IP: at most one IPv4 and one IPv6 address"},
		{name: "not an address", conf: `"runtimeConfig":{"ips":["10.244.300.1"]}`, errCode: types.ErrInvalidNetworkConfig,
			wantErr: `runtimeConfig.ips: "10.244.300.1" is not an IP address`},
		{name: "unknown CNI_ARGS key", args: "FOO=bar", errCode: types.ErrInvalidEnvironmentVariables,
			wantErr: "CNI_ARGS: ARGS: unknown args"},
		{name: "malformed CNI_ARGS", args: "FOO", errCode: types.ErrInvalidEnvironmentVariables,
			wantErr: "CNI_ARGS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdin := "{" + base
			if tt.conf != "" {
				stdin += "," + tt.conf
			}
			stdin += "}"
			cmd := &skel.CmdArgs{ContainerID: cid, Netns: "/run/netns/ctr", IfName: "eth1", Args: tt.args, StdinData: []byte(stdin)}
			req, err := buildAdd(cmd)
			if tt.wantErr != "" {
				var e *types.Error
				if !errors.As(err, &e) || e.Code != tt.errCode || !strings.Contains(e.Msg, tt.wantErr) {
					t.Fatalf("error %v, want code %d containing %q", err, tt.errCode, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.NetNS, want.Interface, want.Orchestrator, want.ContainerID = "/run/netns/ctr", "eth1", "cni", cid
			if !reflect.DeepEqual(*req, want) {
				t.Fatalf("request\n got  %+v\n want %+v", *req, want)
			}
			// DEL and CHECK name the same workload.
			ref := BuildRef(cmd, mustConf(t, cmd), mustArgs(t, cmd))
			wantRef := localapi.WorkloadRef{Name: want.Name, Namespace: want.Namespace, NetNS: "/run/netns/ctr", Interface: "eth1", ContainerID: cid}
			if *ref != wantRef {
				t.Fatalf("ref %+v, want %+v", *ref, wantRef)
			}
		})
	}
}

func buildAdd(cmd *skel.CmdArgs) (*localapi.WorkloadAddRequest, error) {
	conf, err := ParseNetConf(cmd.StdinData)
	if err != nil {
		return nil, err
	}
	args, err := ParseArgs(cmd.Args)
	if err != nil {
		return nil, err
	}
	return BuildAddRequest(cmd, conf, args)
}

func mustConf(t *testing.T, cmd *skel.CmdArgs) *NetConf {
	t.Helper()
	c, err := ParseNetConf(cmd.StdinData)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustArgs(t *testing.T, cmd *skel.CmdArgs) *Args {
	t.Helper()
	a, err := ParseArgs(cmd.Args)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ExampleWorkloadName() {
	fmt.Println(WorkloadName("cnitool-77d4c0f9a1b2c3d4e5f6"))
	fmt.Println(len(WorkloadName("3f9c2b1de0a94c7b8e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f70819")))
	// Output:
	// cnitool-77d4c0f9a1b2c3d4e5f6
	// 63
}
