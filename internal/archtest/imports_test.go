// Package archtest guards the import rules of ARCHITECTURE.md (in the
// style of Tailscale's deps tests): a change that makes a package depend
// on something it must not fails here, naming the import chain's ends.
package archtest

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/weftnet/weft"

type pkg struct {
	ImportPath string
	Imports    []string // direct
	Deps       []string // transitive
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v: %s", err, stderr.String())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func rel(path string) string {
	if path == module {
		return "."
	}
	return strings.TrimPrefix(path, module+"/")
}

// under reports whether a package path (relative to the module) is dir or
// below it.
func under(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }

type rule struct {
	// who the rule is about (a package dir and everything below it),
	// except the listed packages.
	who    string
	except []string
	// forbidden imports: our packages by dir ("=dir" for that package
	// alone, "" for all of ours), or external module paths by prefix,
	// except the allowed ones; direct says whether only direct imports
	// count.
	forbidden []string
	allowed   []string
	direct    bool
	why       string
}

var rules = []rule{
	{who: "dataplane", forbidden: []string{"store", "node", "ipam", "api", "cmd", "cni"},
		why: "the dataplane is the drivers and their contract; it knows nothing of the store or the calculation"},
	{who: "node/calc", forbidden: []string{"github.com/vishvananda/netlink", "github.com/google/nftables", "github.com/cilium/ebpf", "dataplane/links", "dataplane/routes", "dataplane/vxlan", "dataplane/ipip", "dataplane/nft", "dataplane/linux", "dataplane/rules", "dataplane/sysctls", "dataplane/mtu", "dataplane/wireguard", "golang.zx2c4.com/wireguard"},
		why: "the calculation is pure: no kernel library, only the dataplane's contract types"},
	{who: "node/policy", forbidden: []string{"github.com/vishvananda/netlink", "github.com/google/nftables", "github.com/cilium/ebpf"},
		why: "policy calculation is pure"},
	{who: "api", forbidden: []string{""}, allowed: []string{"api"},
		why: "api imports nothing of ours"},
	{who: "store", forbidden: []string{"api", "ipam", "node", "dataplane", "cni", "cmd"},
		why: "the store is a generic replicated key-value store"},
	{who: "ipam", forbidden: []string{"node", "dataplane", "cni", "cmd"},
		why: "IPAM is pure allocation over store state"},
	{who: "node", except: []string{"node", "node/localapi", "node/config"},
		forbidden: []string{"dataplane/links", "dataplane/routes", "dataplane/vxlan", "dataplane/ipip", "dataplane/nft", "dataplane/linux", "dataplane/rules", "dataplane/sysctls", "dataplane/mtu", "dataplane/wireguard", "github.com/vishvananda/netlink"},
		direct:    true, why: "only the composition root (package node) builds the drivers; services see the dataplane's contract"},
	{who: "", forbidden: []string{"=node"}, direct: true,
		why: "node is the composition root: only cmd/weft imports it"},
	{who: "", forbidden: []string{"cmd/weft"}, direct: true, why: "the CLI is a leaf"},
	{who: "", except: []string{"internal/testbed", "internal/bgptest", "internal/demo", "e2e", "bench", "cmd/weft"}, forbidden: []string{"internal/testbed"}, direct: true,
		why: "the test bed is for tests only"},
}

func (r rule) applies(path string) bool {
	if r.forbidden[0] == "=node" && (path == "cmd/weft" || path == "node") {
		return false
	}
	if r.who != "" && !under(path, r.who) {
		return false
	}
	for _, e := range r.except {
		if path == e {
			return false
		}
	}
	return true
}

func (r rule) forbids(imp string) (string, bool) {
	for _, f := range r.forbidden {
		if strings.HasPrefix(f, "github.com/") || strings.HasPrefix(f, "golang.org/") {
			if imp == f || strings.HasPrefix(imp, f+"/") {
				return f, true
			}
			continue
		}
		if !strings.HasPrefix(imp, module) {
			continue
		}
		ri := rel(imp)
		for _, a := range r.allowed {
			if under(ri, a) {
				return "", false
			}
		}
		if exact, ok := strings.CutPrefix(f, "="); ok {
			if ri == exact {
				return f, true
			}
			continue
		}
		if f == "" || under(ri, f) {
			return f, true
		}
	}
	return "", false
}

func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)
	for path, p := range pkgs {
		r := rel(path)
		for _, rl := range rules {
			if !rl.applies(r) {
				continue
			}
			imps := p.Imports
			if !rl.direct {
				imps = p.Deps // transitive
			}
			for _, imp := range imps {
				if imp == path {
					continue
				}
				if f, bad := rl.forbids(imp); bad {
					t.Errorf("%s imports %s (rule %q): %s", r, imp, f, rl.why)
				}
			}
		}
	}
}
