// Package scripts holds tests of the repository's shell scripts.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// stubs is a directory of fake commands, each logging its arguments to
// <dir>/<name>.log, plus the real utilities the script needs.
func stubs(t *testing.T, policy string) string {
	t.Helper()
	dir := t.TempDir()
	logCall := func(name, extra string) string {
		return "#!/bin/sh\necho \"$*\" >>" + filepath.Join(dir, name+".log") + "\n" + extra
	}
	files := map[string]string{
		"id": "#!/bin/sh\necho 0\n",
		// apt-get install records whether the policy denied service starts.
		"apt-get":     logCall("apt-get", "case \"$1\" in install) [ -x "+policy+" ] && "+policy+"; echo \"policy-rc.d exit $?\" >>"+filepath.Join(dir, "apt-get.log")+";; esac\n"),
		"systemctl":   logCall("systemctl", ""),
		"pkill":       logCall("pkill", ""),
		"killall":     logCall("killall", ""),
		"go":          logCall("go", ""),
		"staticcheck": "#!/bin/sh\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, real := range []string{"dirname", "chmod", "rm", "sh"} {
		p, err := exec.LookPath(real)
		if err != nil {
			t.Skipf("%s not found: %v", real, err)
		}
		if err := os.Symlink(p, filepath.Join(dir, real)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runInstallDeps(t *testing.T, stubDir, policy string) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	cmd := exec.Command(bash, "install-deps.sh")
	cmd.Env = []string{"PATH=" + stubDir, "HOME=" + t.TempDir(), "WEFT_DEPS_POLICY_RC_D=" + policy, "WEFT_DEPS_EXTRA_DIRS="}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install-deps.sh: %v\n%s", err, out)
	}
}

func readLog(t *testing.T, dir, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name+".log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// With everything missing, install-deps.sh installs every package the tests
// and benchmarks need, with service starts denied during the install, then
// disables the services it installed; it never stops or kills a process
// (it used to pkill etcd and bird machine-wide).
func TestInstallDepsInstallsAndNeverKills(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy-rc.d")
	dir := stubs(t, policy)
	runInstallDeps(t, dir, policy)

	apt := readLog(t, dir, "apt-get")
	var install []string
	for _, l := range apt {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "install" {
			install = f
		}
	}
	for _, pkg := range []string{"frr", "ipset", "stress-ng", "tcpdump", "iperf3", "wireguard-tools", "etcd-server", "bird2", "nftables", "iptables"} {
		if !slices.Contains(install, pkg) {
			t.Errorf("apt-get install %v lacks %s", install, pkg)
		}
	}
	if !slices.Contains(apt, "policy-rc.d exit 101") {
		t.Errorf("service starts were not denied during apt-get install: %q", apt)
	}
	if _, err := os.Stat(policy); !os.IsNotExist(err) {
		t.Errorf("the policy-rc.d it created is still there (%v)", err)
	}
	got := readLog(t, dir, "systemctl")
	slices.Sort(got)
	if want := []string{"disable bird", "disable etcd", "disable frr"}; !slices.Equal(got, want) {
		t.Errorf("systemctl calls %q, want %q (never --now, never stop)", got, want)
	}
	if calls := append(readLog(t, dir, "pkill"), readLog(t, dir, "killall")...); len(calls) > 0 {
		t.Errorf("it killed processes by name: %q", calls)
	}
}

// An existing policy-rc.d (the administrator's) is neither replaced nor
// removed.
func TestInstallDepsKeepsAnExistingPolicy(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy-rc.d")
	mine := "#!/bin/sh\n# the administrator's\nexit 101\n"
	if err := os.WriteFile(policy, []byte(mine), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := stubs(t, policy)
	runInstallDeps(t, dir, policy)
	if b, err := os.ReadFile(policy); err != nil || string(b) != mine {
		t.Fatalf("policy-rc.d after the run: %q, %v", b, err)
	}
}

// Nothing in the script signals processes: no pkill, killall or kill.
func TestInstallDepsHasNoKill(t *testing.T) {
	b, err := os.ReadFile("install-deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		code, _, _ := strings.Cut(line, "#")
		if regexp.MustCompile(`\b(pkill|killall|kill)\b|--now|systemctl\s+stop`).MatchString(code) {
			t.Errorf("install-deps.sh:%d: %s", i+1, strings.TrimSpace(line))
		}
	}
}
