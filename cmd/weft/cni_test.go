package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/cni"
	"github.com/weftnet/weft/cni/cnitest"
)

// runPlugin runs bin as a runtime does: a clean environment with the CNI
// variables, the network configuration on stdin. It returns stdout,
// stderr and the exit code.
func runPlugin(t *testing.T, bin string, env []string, stdin string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s: %v", bin, err)
	}
	return stdout.String(), stderr.String(), code
}

func cniEnv(command, containerID, netns string) []string {
	return []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin"}
}

func TestCNIVersion(t *testing.T) {
	stdout, stderr, code := runPlugin(t, weftBinary(t), []string{"CNI_COMMAND=VERSION"}, "")
	if code != 0 {
		t.Fatalf("VERSION: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("VERSION printed %q: %v", stdout, err)
	}
	for _, want := range []string{"0.4.0", "1.0.0"} {
		if !slices.Contains(v.SupportedVersions, want) {
			t.Errorf("supportedVersions %v lacks %s", v.SupportedVersions, want)
		}
	}
}

func TestCNIAddCheckDel(t *testing.T) {
	agent := cnitest.NewAgent(t)
	bin := weftBinary(t)
	netns := "/run/netns/weft-test-no-such-ns" // the fake agent does not look at it
	conf := `{"cniVersion":"1.0.0","name":"weft","type":"weft","socket":"` + agent.Socket + `","namespace":"shop"}`

	stdout, stderr, code := runPlugin(t, bin, append(cniEnv("ADD", "ctr1", netns), "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=till-1"), conf)
	if code != 0 {
		t.Fatalf("ADD: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		Interfaces []struct {
			Name, Mac, Sandbox string
		} `json:"interfaces"`
		IPs []struct {
			Address   string `json:"address"`
			Gateway   string `json:"gateway"`
			Interface *int   `json:"interface"`
		} `json:"ips"`
		Routes []struct{ Dst, GW string } `json:"routes"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("ADD printed %q: %v", stdout, err)
	}
	wl := agent.Workloads()
	if len(wl) != 1 || wl[0].Name != "till-1" || wl[0].Namespace != "shop" || wl[0].ContainerID != "ctr1" || wl[0].Orchestrator != "cni" {
		t.Fatalf("agent holds %+v", wl)
	}
	if res.CNIVersion != "1.0.0" || len(res.Interfaces) != 2 || res.Interfaces[1].Sandbox != netns ||
		len(res.IPs) != 1 || res.IPs[0].Address != wl[0].IPs[0] || res.IPs[0].Gateway != "169.254.1.1" ||
		res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 ||
		len(res.Routes) != 1 || res.Routes[0].Dst != "0.0.0.0/0" || res.Routes[0].GW != "169.254.1.1" {
		t.Fatalf("ADD result %s", stdout)
	}

	// CHECK with the result as prevResult, as libcni passes it.
	checkConf := strings.TrimSuffix(conf, "}") + `,"prevResult":` + stdout + "}"
	env := append(cniEnv("CHECK", "ctr1", netns), "CNI_ARGS=K8S_POD_NAME=till-1")
	if out, errOut, code := runPlugin(t, bin, env, checkConf); code != 0 || out != "" {
		t.Fatalf("CHECK: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	for i := range 2 { // DEL twice: the second finds nothing and succeeds
		env := append(cniEnv("DEL", "ctr1", netns), "CNI_ARGS=K8S_POD_NAME=till-1")
		if out, errOut, code := runPlugin(t, bin, env, conf); code != 0 || out != "" {
			t.Fatalf("DEL %d: exit %d, stdout %q, stderr %q", i+1, code, out, errOut)
		}
		if n := len(agent.Workloads()); n != 0 {
			t.Fatalf("DEL %d: %d workloads left", i+1, n)
		}
	}
	// DEL with the netns gone (CNI_NETNS empty) succeeds too.
	if out, errOut, code := runPlugin(t, bin, cniEnv("DEL", "ctr1", ""), conf); code != 0 {
		t.Fatalf("DEL without netns: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestCNIErrors(t *testing.T) {
	bin := weftBinary(t)
	dir, err := os.MkdirTemp("", "weftcni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	none := filepath.Join(dir, "none.sock")
	conf := func(extra string) string {
		return `{"cniVersion":"1.0.0","name":"weft","type":"weft","socket":"` + none + `"` + extra + `}`
	}
	tests := []struct {
		name  string
		env   []string
		stdin string
		code  uint
		msg   string
	}{
		{"agent not running", cniEnv("ADD", "c1", "/run/netns/x"), conf(""), 11,
			"weft agent socket " + none + ": no such file; is the agent running?"},
		{"unknown key", cniEnv("ADD", "c1", "/run/netns/x"), conf(`,"bridge":"br0"`), 2, `unknown key "bridge"`},
		{"missing variables", []string{"CNI_COMMAND=ADD", "CNI_PATH=/opt/cni/bin"}, conf(""), 4,
			"required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing"},
		{"unknown command", []string{"CNI_COMMAND=FROB"}, conf(""), 4, "unknown CNI_COMMAND: FROB"},
		{"unsupported version", cniEnv("ADD", "c1", "/run/netns/x"), strings.Replace(conf(""), "1.0.0", "0.2.0", 1), 1,
			"incompatible CNI versions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, exit := runPlugin(t, bin, tt.env, tt.stdin)
			if exit != 1 {
				t.Fatalf("exit %d, want 1; stdout %q", exit, stdout)
			}
			var e struct {
				Code uint   `json:"code"`
				Msg  string `json:"msg"`
			}
			if err := json.Unmarshal([]byte(stdout), &e); err != nil {
				t.Fatalf("stdout %q is not a CNI error: %v", stdout, err)
			}
			if e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("CNI error %d %q, want %d containing %q", e.Code, e.Msg, tt.code, tt.msg)
			}
		})
	}
}

func TestInstallCNI(t *testing.T) {
	bin := weftBinary(t)
	root := t.TempDir()
	binDir, confDir := filepath.Join(root, "bin"), filepath.Join(root, "net.d")
	args := []string{"install-cni", "--bin-dir", binDir, "--conf-dir", confDir}

	stdout, stderr, code := runWeft(t, []string{"WEFT_SOCKET=/run/weft/test.sock"}, args...)
	if code != 0 {
		t.Fatalf("install-cni: exit %d: %s", code, stderr)
	}
	plugin, conflist := filepath.Join(binDir, "weft"), filepath.Join(confDir, "10-weft.conflist")
	if want := "installed " + plugin + "\nwrote " + conflist + ` (network "weft", socket /run/weft/test.sock)` + "\n"; stdout != want {
		t.Fatalf("install-cni printed %q, want %q", stdout, want)
	}
	want, _ := os.ReadFile(bin)
	got, _ := os.ReadFile(plugin)
	if fi, err := os.Stat(plugin); err != nil || fi.Mode().Perm() != 0o755 || !bytes.Equal(got, want) {
		t.Fatalf("%s is not a 0755 copy of the weft binary (%v)", plugin, err)
	}
	var cl struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Plugins    []struct {
			Type   string `json:"type"`
			Socket string `json:"socket"`
		} `json:"plugins"`
	}
	data, err := os.ReadFile(conflist)
	if err != nil || json.Unmarshal(data, &cl) != nil {
		t.Fatalf("conflist %q: %v", data, err)
	}
	if cl.CNIVersion != "1.0.0" || cl.Name != "weft" || len(cl.Plugins) != 1 || cl.Plugins[0].Type != "weft" ||
		cl.Plugins[0].Socket != "/run/weft/test.sock" {
		t.Fatalf("conflist %s", data)
	}

	// The installed copy is a working plugin.
	if out, errOut, code := runPlugin(t, plugin, []string{"CNI_COMMAND=VERSION"}, ""); code != 0 || !strings.Contains(out, `"1.0.0"`) {
		t.Fatalf("installed plugin VERSION: exit %d, %q, %q", code, out, errOut)
	}

	// Idempotent.
	stdout, stderr, code = runWeft(t, []string{"WEFT_SOCKET=/run/weft/test.sock"}, args...)
	if code != 0 || !strings.HasPrefix(stdout, "unchanged "+plugin+"\nunchanged "+conflist) {
		t.Fatalf("second install-cni: exit %d, %q, %q", code, stdout, stderr)
	}
	// --socket and --network-name.
	stdout, _, code = runWeft(t, nil, append(args, "--socket", "/run/other.sock", "--network-name", "edge")...)
	if code != 0 || !strings.Contains(stdout, "wrote "+filepath.Join(confDir, "10-edge.conflist")) || !strings.Contains(stdout, "socket /run/other.sock") {
		t.Fatalf("install-cni --network-name edge: exit %d, %q", code, stdout)
	}

	// A bin dir that cannot be created: one clear line, nothing written.
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(root, "other")
	_, stderr, code = runWeft(t, nil, "install-cni", "--bin-dir", filepath.Join(file, "bin"), "--conf-dir", other)
	if code == 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "--bin-dir "+filepath.Join(file, "bin")+": cannot create it") {
		t.Fatalf("install-cni into an impossible dir: exit %d, stderr %q", code, stderr)
	}
	if entries, _ := os.ReadDir(other); len(entries) != 0 {
		t.Fatalf("a refused install wrote %v", entries)
	}
}

// TestCNIThroughLibcni runs the installed plugin the way runtimes do, with
// libcni (containerd's, CRI-O's and podman's CNI library): load the
// conflist install-cni wrote, ADD with a capability argument, CHECK against
// the cached result, DEL twice. No root: the agent is the fake.
func TestCNIThroughLibcni(t *testing.T) {
	agent := cnitest.NewAgent(t)
	root := t.TempDir()
	binDir, confDir := filepath.Join(root, "bin"), filepath.Join(root, "net.d")
	if _, stderr, code := runWeft(t, nil, "install-cni", "--bin-dir", binDir, "--conf-dir", confDir, "--socket", agent.Socket); code != 0 {
		t.Fatalf("install-cni: %s", stderr)
	}
	list, err := libcni.LoadNetworkConf(confDir, "weft")
	if err != nil {
		t.Fatal(err)
	}
	cninet := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(root, "cache"), nil)
	ctx := context.Background()
	rt := &libcni.RuntimeConf{
		ContainerID: "3f9c2b1de0a94c7b8e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f70819",
		NetNS:       "/run/netns/weft-test-no-such-ns",
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}},
		// The "ips" capability: a runtime asking for a specific address.
		CapabilityArgs: map[string]any{"ips": []string{"10.244.3.7/24"}},
	}

	if vi, err := cninet.GetVersionInfo(ctx, "weft"); err != nil || !slices.Contains(vi.SupportedVersions(), "1.0.0") {
		t.Fatalf("VERSION through libcni: %v, %v", vi, err)
	}
	res, err := cninet.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, err := types100.GetResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IPs) != 1 || r.IPs[0].Address.String() != "10.244.3.7/32" {
		t.Fatalf("ADD result addresses %v, want 10.244.3.7/32", r.IPs)
	}
	wl := agent.Workloads()
	if len(wl) != 1 || wl[0].Namespace != "shop" || wl[0].Name != cni.WorkloadName(rt.ContainerID) || len(wl[0].Name) > 63 {
		t.Fatalf("agent holds %+v", wl)
	}

	if err := cninet.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	// CHECK fails once the workload's address differs from the recorded one.
	changed := wl[0]
	changed.IPs = []string{"10.244.3.8/32"}
	agent.Put(changed)
	if err := cninet.CheckNetworkList(ctx, list, rt); err == nil || !strings.Contains(err.Error(), "the runtime recorded [10.244.3.7]") {
		t.Fatalf("CHECK of a changed workload: %v", err)
	}

	for i := range 2 {
		if err := cninet.DelNetworkList(ctx, list, rt); err != nil {
			t.Fatalf("DEL %d: %v", i+1, err)
		}
	}
	if n := len(agent.Workloads()); n != 0 {
		t.Fatalf("%d workloads after DEL", n)
	}
}
