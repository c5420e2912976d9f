package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/demo"
	"github.com/weftnet/weft/internal/testbed"
)

// TestDemoRun runs `weft demo` as an operator would: it must build the
// three hosts, show the cluster, IPAM and routes, find every workload pair
// reachable, and leave nothing behind.
func TestDemoRun(t *testing.T) {
	bin := demoBinary(t)
	out := runWeft(t, bin, "demo")
	checkWalkthrough(t, out)
	if !strings.Contains(out, "Removed: 3 agents stopped, the BIRD router stopped, 10 network namespaces deleted, "+demo.StateDir+" removed.") {
		t.Errorf("no teardown report in:\n%s", out)
	}
	assertNoDemoLeft(t)
}

// TestDemoKeepAndDown runs `weft demo --keep`, follows its instructions
// (they must work as printed), runs `weft demo --keep` again over the
// running demo (it must replace it), and then `weft demo down`, which must
// leave nothing, also not the workload namespace the operator added.
func TestDemoKeepAndDown(t *testing.T) {
	bin := demoBinary(t)
	out := runWeft(t, bin, "demo", "--keep")
	checkWalkthrough(t, out)
	agents := 0
	for _, p := range demoAgentPIDs(t) {
		if strings.Contains(p, " agent ") { // not BIRD, the demo's router
			agents++
		}
	}
	if agents != 3 {
		t.Fatalf("%d demo agents running after --keep, want 3: %v", agents, demoAgentPIDs(t))
	}

	cmds := instructionCommands(out)
	members := findCommand(t, cmds, "cluster members")
	got := runShell(t, members)
	for _, want := range []string{"h1 ", "h2 ", "h3 ", "leader", "voter"} {
		if !strings.Contains(got, want) {
			t.Errorf("%s printed no %q:\n%s", members, want, got)
		}
	}
	got = runShell(t, findCommand(t, cmds, "get nodes"))
	if !strings.Contains(got, "10.250.77.13") {
		t.Errorf("get nodes does not show h3's address:\n%s", got)
	}
	got = runShell(t, findCommand(t, cmds, "ip netns exec "+demo.NetnsPrefix+"h1-w1 ping"))
	if !strings.Contains(got, " 0% packet loss") {
		t.Errorf("ping from the instructions lost packets:\n%s", got)
	}
	got = runShell(t, findCommand(t, cmds, "ip route show proto"))
	if !strings.Contains(got, "dev weft.vxlan") {
		t.Errorf("the host's routes show no VXLAN route:\n%s", got)
	}
	// The operator attaches a workload of their own, as the instructions
	// show; its namespace must appear inside the agent's mount namespace.
	runShell(t, findCommand(t, cmds, "ip netns add"))
	got = runShell(t, findCommand(t, cmds, "workload add"))
	if !regexp.MustCompile(`^10\.250\.\d+\.\d+\s*$`).MatchString(got) {
		t.Errorf("workload add printed %q, want its address", got)
	}

	// A new demo over a running one removes it first.
	again := runWeft(t, bin, "demo", "--keep")
	if !strings.Contains(again, "Removed an earlier demo: 3 agents stopped, the BIRD router stopped, 11 network namespaces deleted") {
		t.Errorf("the second demo did not report removing the first:\n%s", again)
	}
	checkWalkthrough(t, again)

	down := runWeft(t, bin, "demo", "down")
	if !strings.Contains(down, "Removed the weft demo: 3 agents stopped, the BIRD router stopped, 10 network namespaces deleted, "+demo.StateDir+" removed.") {
		t.Errorf("demo down printed %q", down)
	}
	assertNoDemoLeft(t)
	if down := runWeft(t, bin, "demo", "down"); !strings.Contains(down, "nothing to remove") {
		t.Errorf("a second demo down printed %q", down)
	}
}

// TestDemoInterrupted: SIGTERM while the agents start removes everything
// and exits non-zero with one line; after a SIGKILL, which leaves the demo
// no chance, `weft demo down` removes what is left.
func TestDemoInterrupted(t *testing.T) {
	bin := demoBinary(t)

	cmd, stderr := startDemoUntil(t, bin, "agent pid")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("weft demo after SIGTERM: %v, want exit status 1", err)
	}
	if msg := stderr.String(); msg != "weft: demo interrupted; everything it built was removed\n" {
		t.Errorf("stderr after SIGTERM: %q", msg)
	}
	assertNoDemoLeft(t)

	cmd, _ = startDemoUntil(t, bin, "agent pid")
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(demoAgentPIDs(t)) == 0 {
		t.Fatal("no demo agent survived the demo's SIGKILL: nothing for `demo down` to do")
	}
	down := runWeft(t, bin, "demo", "down")
	if !regexp.MustCompile(`Removed the weft demo: [1-3] agents? stopped, (\d other process(es)? killed, )?10 network namespaces deleted, ` + demo.StateDir + ` removed.`).MatchString(down) {
		t.Errorf("demo down printed %q", down)
	}
	assertNoDemoLeft(t)
}

// startDemoUntil starts `weft demo` and returns once its output has shown
// a line containing marker.
func startDemoUntil(t *testing.T, bin, marker string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, "demo")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	seen := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), marker) {
				seen <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		seen <- fmt.Errorf("weft demo's output ended (%v) before a line with %q", sc.Err(), marker)
	}()
	select {
	case err := <-seen:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("no line with %q after 2 minutes", marker)
	}
	return cmd, &stderr
}

// TestDemoNeedsRoot: as another user `weft demo` changes nothing and says
// why in one line.
func TestDemoNeedsRoot(t *testing.T) {
	bin := demoBinary(t)
	for _, args := range [][]string{{"demo"}, {"demo", "down"}} {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if errors.Is(err, os.ErrPermission) {
			t.Skipf("user nobody cannot run %s: %v", bin, err)
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("weft %v as nobody: %v, want exit status 1", args, err)
		}
		msg := stderr.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "must run as root") || stdout.Len() != 0 {
			t.Errorf("weft %v as nobody: stdout %q, stderr %q: want one line saying it must run as root", args, stdout.String(), msg)
		}
	}
}

// demoBinary returns the weft binary the test bed uses. The demo has fixed
// names, so demo tests of concurrent test runs on this machine take turns.
func demoBinary(t *testing.T) string {
	t.Helper()
	testbed.SkipUnlessCapable(t)
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "weft-demo-e2e.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	site := testbed.New(t, testbed.Options{Hosts: 1, NoStart: true})
	bin := site.Binary()
	// Whatever happens, nothing of the demo outlives the test.
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "demo", "down").CombinedOutput(); err != nil {
			t.Errorf("cleanup: weft demo down: %v: %s", err, out)
		}
	})
	return bin
}

// runWeft runs the binary and returns its standard output; any failure
// fails the test with both outputs.
func runWeft(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("weft %s: %.1fs, %v", strings.Join(args, " "), time.Since(start).Seconds(), err)
	if err != nil {
		t.Fatalf("weft %s: %v\nstderr: %s\nstdout:\n%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String()
}

// checkWalkthrough checks what every successful demo shows.
func checkWalkthrough(t *testing.T, out string) {
	t.Helper()
	checks := []struct{ what, re string }{
		{"all pairs reachable", `(?m)^30/30 pairs reachable$`},
		{"three voting members", `(?s)cluster members\n.*h1 .*leader.*\nh2 .*voter .*healthy.*\nh3 .*voter .*healthy`},
		{"three blocks", `(?s)ipam show --show-blocks\n(.*\nBlock\s+10\.250\.8\d\.\d+/26){3}`},
		{"h1's VXLAN routes", `(?m)^  10\.250\.\d+\.\d+/26 via 10\.250\.\d+\.\d+ dev weft\.vxlan onlink$`},
		{"a blackhole per host", `(?s)(blackhole 10\.250\.\d+\.\d+/26.*){3}`},
		{"six workloads", `(?s)(h\d-w\d\s+h\d\s+10\.250\.\d+\.\d+\s+/run/netns/weft-demo-h\d-w\d\s+weft[0-9a-f]{11}.*){6}`},
		{"the BGP sessions in calicoctl's layout", `(?s)IPv4 BGP status\n.*PEER ADDRESS.*(node-to-node mesh.*global\s+\| up|global\s+\| up.*node-to-node mesh)`},
		{"BIRD's table with the hosts' blocks", `(?s)show route\):\n.*(10\.250\.8\d\.\d+/26\s+unicast \[h\d.*){3}`},
		{"the router's network in every host's kernel", `(?s)(h\d: 198\.51\.100\.0/24 via 10\.250\.77\.1 dev eth0 metric 32.*){3}`},
		{"the TCP matrix before the policy", `(?s)TCP to port 8080 between every pair.*\n30/30 pairs reachable`},
		{"the policy applied", `(?s)apply -f .*deny-db-access.yaml\nSuccessfully applied 1 'GlobalNetworkPolicy' resource`},
		{"ping and TCP after the policy", `(?s)After the policy: ping.*\n25/30 pairs reachable; not reachable: .*After the policy: TCP.*\n25/30 pairs reachable; not reachable: `},
		{"the trace of a refused pair", `(?s)policy trace --from h1-w1 --to prod/h2-w2.*GlobalNetworkPolicy deny-db-access rule 0: Deny.*Verdict: DENY`},
	}
	for _, c := range checks {
		if !regexp.MustCompile(c.re).MatchString(out) {
			t.Errorf("the walkthrough shows no %s (%s):\n%s", c.what, c.re, out)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// instructionCommands are the commands the --keep instructions print, one
// per "    $ " line.
func instructionCommands(out string) []string {
	var cmds []string
	for _, line := range strings.Split(out, "\n") {
		if cmd, ok := strings.CutPrefix(line, "    $ "); ok {
			cmds = append(cmds, cmd)
		}
	}
	return cmds
}

func findCommand(t *testing.T, cmds []string, substr string) string {
	t.Helper()
	for _, c := range cmds {
		if strings.Contains(c, substr) {
			return c
		}
	}
	t.Fatalf("no instruction with %q among %q", substr, cmds)
	return ""
}

// runShell runs an instruction line as the operator would paste it.
func runShell(t *testing.T, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", line).CombinedOutput()
	if err != nil {
		t.Fatalf("$ %s: %v\n%s", line, err, out)
	}
	return string(out)
}

// demoAgentPIDs lists running processes whose command line names the
// demo's state directory.
func demoAgentPIDs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte(demo.StateDir+"/")) {
			pids = append(pids, fmt.Sprintf("%s: %s", e.Name(), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return pids
}

// assertNoDemoLeft checks that no demo namespace, process, mount or state
// directory is left.
func assertNoDemoLeft(t *testing.T) {
	t.Helper()
	var left []string
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), demo.NetnsPrefix) {
				left = append(left, "namespace "+e.Name())
			}
		}
	}
	if _, err := os.Stat(demo.StateDir); err == nil {
		left = append(left, "directory "+demo.StateDir)
	}
	for _, p := range demoAgentPIDs(t) {
		left = append(left, "process "+p)
	}
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mounts), "\n") {
			if strings.Contains(line, demo.NetnsPrefix) || strings.Contains(line, demo.StateDir) {
				left = append(left, "mount "+line)
			}
		}
	}
	if len(left) > 0 {
		t.Fatalf("the demo left behind:\n%s", strings.Join(left, "\n"))
	}
}
