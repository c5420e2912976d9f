package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// TestCNI drives weft's CNI plugin with a real CNI runtime: cnitool, which
// is libcni (the library containerd, CRI-O and podman's CNI backend use to
// run plugins) behind a small CLI. `weft install-cni` installs the plugin
// and its conflist on host 1; cnitool attaches a container namespace
// through them; it reaches a workload that `weft workload add` attached on
// host 2 and back; CHECK passes; DEL removes it and releases its address;
// DEL again succeeds.
func TestCNI(t *testing.T) {
	site := testbed.New(t, testbed.Options{Hosts: 2, NoStart: true})
	h1, h2 := site.Hosts()[0], site.Hosts()[1]
	ctx := context.Background()
	if err := h1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	rt := newCNIRuntime(t, h1)
	out, err := h1.Weft("install-cni", "--bin-dir", rt.binDir, "--conf-dir", rt.confDir)
	if err != nil {
		t.Fatalf("weft install-cni: %v", err)
	}
	t.Logf("install-cni:\n%s", out)
	conflist, err := os.ReadFile(filepath.Join(rt.confDir, "10-weft.conflist"))
	if err != nil || !strings.Contains(string(conflist), `"socket": "`+h1.Socket()+`"`) {
		t.Fatalf("conflist %q (%v) does not name the agent's socket %s", conflist, err, h1.Socket())
	}

	// The container: a network namespace on host 1, as a runtime creates
	// one, with a pod name and namespace in CNI_ARGS.
	ctr := site.AddWorkload(h1, "ctr")
	rt.args = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=till-1"
	// An agent without the workload API fails here (cnitool add reports
	// "no such API call"): it is a failure, never a skip.
	addOut, err := rt.cnitool("add", "weft", ctr.Path())
	// From here on the container must be detached whatever happens.
	detached := false
	t.Cleanup(func() {
		if detached {
			return
		}
		if _, err := rt.cnitool("del", "weft", ctr.Path()); err != nil {
			t.Logf("cleanup: cnitool del: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("cnitool add: %v", err)
	}
	res, err := types100.NewResult([]byte(addOut))
	if err != nil {
		t.Fatalf("cnitool add printed %q: %v", addOut, err)
	}
	result := res.(*types100.Result)
	t.Logf("CNI result: %s", strings.Join(strings.Fields(addOut), " "))
	ctrIP, hostVeth := checkResult(t, result, ctr.Path())

	// The agent recorded the workload under the pod's name and namespace.
	list, err := localapi.NewClient(h1.Socket()).ListWorkloads(ctx, "shop", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "till-1" || list.Items[0].Orchestrator != "cni" ||
		!strings.HasPrefix(list.Items[0].ContainerID, "cnitool-") || list.Items[0].NetNS != ctr.Path() {
		t.Fatalf("workloads in namespace shop: %+v", list.Items)
	}
	// The container sees its address on eth0.
	if out, err := ctr.Exec("ip", "-o", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(out, " "+ctrIP+"/32 ") {
		t.Fatalf("eth0 in the container: %q, %v", out, err)
	}
	if !ipInUse(t, h1, ctrIP) {
		t.Fatalf("IPAM does not show %s as in use after ADD", ctrIP)
	}

	// Host 2 joins the cluster and attaches a workload with the CLI.
	h2.SetJoin(filepath.Join(h1.DataDir(), "token"), h1)
	if err := h2.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h2.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	w2 := site.AddWorkload(h2, "w2")
	out, err = h2.Weft("workload", "add", "w2", "--netns", w2.Path())
	if err != nil {
		t.Fatalf("weft workload add on h2: %v", err)
	}
	w2Attached := true
	t.Cleanup(func() {
		if !w2Attached {
			return
		}
		if _, err := h2.Weft("workload", "del", "w2"); err != nil {
			t.Logf("cleanup: weft workload del w2: %v", err)
		}
	})
	w2IP := firstIPv4(out)
	if w2IP == "" {
		t.Fatalf("weft workload add printed no IPv4 address: %q", out)
	}

	site.Expect(
		testbed.Reach(ctr.Netns(), w2IP, testbed.Ping()),
		testbed.Reach(w2.Netns(), ctrIP, testbed.Ping()),
	)

	if _, err := rt.cnitool("check", "weft", ctr.Path()); err != nil {
		t.Fatalf("cnitool check: %v", err)
	}

	if _, err := rt.cnitool("del", "weft", ctr.Path()); err != nil {
		t.Fatalf("cnitool del: %v", err)
	}
	detached = true
	if out, err := h1.Exec("ip", "-o", "link", "show", "dev", hostVeth); err == nil {
		t.Errorf("host side %s still exists after DEL: %s", hostVeth, out)
	}
	if out, err := ctr.Exec("ip", "-o", "link", "show", "dev", "eth0"); err == nil {
		t.Errorf("eth0 still exists in the container after DEL: %s", out)
	}
	if ipInUse(t, h1, ctrIP) {
		t.Errorf("IPAM still shows %s in use after DEL", ctrIP)
	}
	if list, err := localapi.NewClient(h1.Socket()).ListWorkloads(ctx, "shop", false); err != nil || len(list.Items) != 0 {
		t.Errorf("workloads in namespace shop after DEL: %+v, %v", list.Items, err)
	}
	if _, err := rt.cnitool("del", "weft", ctr.Path()); err != nil {
		t.Fatalf("second cnitool del: %v", err)
	}
	site.Expect(testbed.NoReach(w2.Netns(), ctrIP, testbed.Ping()))

	if _, err := h2.Weft("workload", "del", "w2"); err != nil {
		t.Fatalf("weft workload del w2: %v", err)
	}
	w2Attached = false
	stopAll(t, site.Hosts())
	if err := site.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if left := site.Leftovers(); len(left) > 0 {
		t.Fatalf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

// checkResult checks a CNI ADD result against SPEC §5 and returns the
// container's IPv4 address and the host side of its veth.
func checkResult(t *testing.T, r *types100.Result, netns string) (string, string) {
	t.Helper()
	if r.CNIVersion != "1.0.0" || len(r.Interfaces) != 2 || len(r.IPs) != 1 || len(r.Routes) != 1 {
		t.Fatalf("result %+v: want CNI 1.0.0, 2 interfaces, 1 address, 1 route", r)
	}
	host, ctr := r.Interfaces[0], r.Interfaces[1]
	if host.Sandbox != "" || host.Mac != "ee:ee:ee:ee:ee:ee" || ctr.Name != "eth0" || ctr.Sandbox != netns || ctr.Mac == "" {
		t.Fatalf("interfaces %v %v", host, ctr)
	}
	ip := r.IPs[0]
	if ip.Interface == nil || *ip.Interface != 1 || ip.Gateway.String() != "169.254.1.1" {
		t.Fatalf("address %v", ip)
	}
	ones, bits := ip.Address.Mask.Size()
	addr, ok := netip.AddrFromSlice(ip.Address.IP)
	if !ok || ones != 32 || bits != 32 || !addr.Unmap().Is4() {
		t.Fatalf("address %v is not an IPv4 /32", ip.Address)
	}
	if rt := r.Routes[0]; rt.Dst.String() != "0.0.0.0/0" || rt.GW.String() != "169.254.1.1" {
		t.Fatalf("route %v", rt)
	}
	return addr.Unmap().String(), host.Name
}

// cniRuntime runs cnitool on a host against a plugin dir and a conf dir of
// the test's own.
type cniRuntime struct {
	host            *testbed.Host
	tool            string
	binDir, confDir string
	varLib          string // stands in for /var/lib, where libcni caches results
	args            string // CNI_ARGS
}

func newCNIRuntime(t *testing.T, h *testbed.Host) *cniRuntime {
	t.Helper()
	dir := t.TempDir()
	rt := &cniRuntime{host: h, tool: cnitoolBinary(t, dir), binDir: filepath.Join(dir, "bin"),
		confDir: filepath.Join(dir, "net.d"), varLib: filepath.Join(dir, "varlib")}
	if err := os.Mkdir(rt.varLib, 0o700); err != nil {
		t.Fatal(err)
	}
	return rt
}

// cnitool runs `cnitool args...` on the host. libcni keeps each
// attachment's result under /var/lib/cni (for CHECK and DEL) and cnitool
// cannot move it, so every run gets a private mount namespace in which the
// test's own directory is bound over /var/lib: nothing is written to the
// machine's /var/lib, even when the test is killed.
func (r *cniRuntime) cnitool(args ...string) (string, error) {
	argv := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", `mount --bind "$0" /var/lib && exec "$@"`, r.varLib,
		"env", "NETCONFPATH=" + r.confDir, "CNI_PATH=" + r.binDir}
	if r.args != "" {
		argv = append(argv, "CNI_ARGS="+r.args)
	}
	argv = append(argv, r.tool)
	return r.host.Exec(append(argv, args...)...)
}

// cnitoolBinary returns $CNITOOL, or builds cnitool from the CNI module
// pinned in go.mod (Debian's containernetworking-plugins does not ship it;
// it is part of github.com/containernetworking/cni).
func cnitoolBinary(t *testing.T, dir string) string {
	t.Helper()
	if p := os.Getenv("CNITOOL"); p != "" {
		return p
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		t.Fatalf("finding the module to build cnitool from: %v", err)
	}
	out := filepath.Join(dir, "cnitool")
	cmd := exec.Command("go", "build", "-o", out, "github.com/containernetworking/cni/cnitool")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cnitool: %v\n%s", err, b)
	}
	return out
}

// ipInUse asks `weft ipam show --ip` whether addr is allocated.
func ipInUse(t *testing.T, h *testbed.Host, addr string) bool {
	t.Helper()
	out, err := h.Weft("ipam", "show", "--ip", addr, "-o", "json")
	if err != nil {
		t.Fatalf("weft ipam show --ip %s: %v", addr, err)
	}
	var rep struct {
		IP *struct {
			State string `json:"state"`
		} `json:"ip"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.IP == nil {
		t.Fatalf("weft ipam show --ip %s -o json printed %q (%v)", addr, out, err)
	}
	return rep.IP.State == "allocated"
}

var ipv4RE = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b`)

// firstIPv4 finds the first IPv4 address in s (`weft workload add` prints
// the workload's addresses).
func firstIPv4(s string) string {
	for _, m := range ipv4RE.FindAllString(s, -1) {
		if a, err := netip.ParseAddr(m); err == nil && a.Is4() {
			return a.String()
		}
	}
	return ""
}
