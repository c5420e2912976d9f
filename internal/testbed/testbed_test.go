package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/site"
)

// These tests exercise the test bed itself with its fake agent, so they do
// not depend on weft's agent; e2e/ runs the real one.

func assertClean(t *testing.T, s *Site) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := s.Leftovers(); len(left) > 0 {
		t.Fatalf("site %s left:\n%s", s.ID(), strings.Join(left, "\n"))
	}
}

func TestSiteUnderlayAndIsolation(t *testing.T) {
	s := New(t, Options{Hosts: 3, FakeAgent: true, IPv6: true})
	hosts := s.Hosts()

	var checks []Check
	checks = append(checks, Mesh(hosts, Ping(), func(_, _ *Host) bool { return true })...)
	for _, h := range hosts {
		checks = append(checks,
			Reach(h, s.RouterAddress(), Ping()),
			Reach(s.Router(), h.Address(), Ping()),
			Reach(h, hosts[0].Address6(), Ping()),
			Reach(s.Router(), h.Address(), TCP(MetricsPort)), // the fake agent's /readyz listener
		)
	}
	s.Expect(checks...)

	for _, h := range hosts {
		fwd, err := h.Exec("cat", "/proc/sys/net/ipv4/ip_forward")
		if err != nil || strings.TrimSpace(fwd) != "1" {
			t.Errorf("%s: ip_forward = %q, %v", h.Name(), fwd, err)
		}
		route, err := h.Exec("ip", "route", "show", "default")
		if err != nil || !strings.Contains(route, "via "+s.RouterAddress()+" dev eth0") {
			t.Errorf("%s: default route %q, %v", h.Name(), route, err)
		}
		// Each host sees only its own agent's file in its private
		// /run/wireguard.
		ls, err := h.Exec("ls", "-A", site.WireGuardDir)
		if err != nil || strings.TrimSpace(ls) != h.Name()+".sock" {
			t.Errorf("%s: %s holds %q (%v), want only %s.sock", h.Name(), site.WireGuardDir, ls, err, h.Name())
		}
	}
	self, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(self), site.WireGuardTmpfs) {
		t.Errorf("the %s tmpfs leaked into the test's mount namespace", site.WireGuardTmpfs)
	}
	for _, h := range hosts {
		if _, err := os.Stat(filepath.Join(site.WireGuardDir, h.Name()+".sock")); err == nil {
			t.Errorf("%s/%s.sock is visible outside the host", site.WireGuardDir, h.Name())
		}
	}

	// While the site lives, Leftovers must see it: otherwise the clean
	// result below would prove nothing.
	live := strings.Join(s.Leftovers(), "\n")
	for _, want := range []string{
		"state file " + statePath(s.ID()),
		"directory " + s.Dir(),
		"netns " + hosts[2].Netns().Path(),
		"netns " + s.Router().Path(),
		fmt.Sprintf("process %d ", hosts[0].PID()),
		"/run/netns/" + Prefix + s.ID() + "-h1",
	} {
		if !strings.Contains(live, want) {
			t.Errorf("Leftovers of a live site lacks %q:\n%s", want, live)
		}
	}
	assertClean(t, s)
}

func TestPartitionCutAndHeal(t *testing.T) {
	s := New(t, Options{Hosts: 3, NoStart: true})
	hosts := s.Hosts()
	all := func(_, _ *Host) bool { return true }
	s.Expect(Mesh(hosts, Ping(), all)...)

	cut := hosts[1]
	if err := cut.CutLink(); err != nil {
		t.Fatal(err)
	}
	apart := func(a, b *Host) bool { return a != cut && b != cut }
	s.Expect(append(Mesh(hosts, Ping(), apart), NoReach(cut, s.RouterAddress(), Ping()))...)

	// While the partition holds, expecting full connectivity must fail with
	// a report of the whole matrix.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err := VerifyConnectivity(ctx, Mesh(hosts, Ping(), all))
	var ce *ConnectivityError
	if !errors.As(err, &ce) {
		t.Fatalf("want a ConnectivityError during the partition, got %v", err)
	}
	if len(ce.Outcomes) != 6 {
		t.Fatalf("report has %d rows, want all 6:\n%v", len(ce.Outcomes), err)
	}
	for _, o := range ce.Outcomes {
		if want := apart(hostOf(t, hosts, o.From), hostByAddr(t, hosts, o.To)); o.Seen != want {
			t.Errorf("during the partition %s -> %s seen %v, want %v", o.From.Netns().Label(), o.To, o.Seen, want)
		}
	}

	if err := cut.HealLink(); err != nil {
		t.Fatal(err)
	}
	s.Expect(Mesh(hosts, Ping(), all)...)
	assertClean(t, s)
}

func hostOf(t *testing.T, hosts []*Host, n Namespace) *Host {
	for _, h := range hosts {
		if h.Netns() == n.Netns() {
			return h
		}
	}
	t.Fatalf("no host for %s", n.Netns().Label())
	return nil
}

func hostByAddr(t *testing.T, hosts []*Host, addr string) *Host {
	for _, h := range hosts {
		if h.Address() == addr {
			return h
		}
	}
	t.Fatalf("no host with address %s", addr)
	return nil
}

func TestKill9AndRestart(t *testing.T) {
	s := New(t, Options{Hosts: 1, FakeAgent: true})
	h := s.Hosts()[0]
	first := h.PID()
	if first == 0 {
		t.Fatal("agent not running after New")
	}
	if err := h.Kill9(); err != nil {
		t.Fatal(err)
	}
	if h.Running() || !processGone(first) {
		t.Fatal("agent still running after Kill9")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err == nil || !strings.Contains(err.Error(), "before it was ready") {
		t.Fatalf("WaitReady on a killed agent: want an immediate exit error, got %v", err)
	}
	if err := h.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := h.PID()
	if err := h.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if third := h.PID(); third == second || third == first {
		t.Fatalf("restart kept pid %d", third)
	}
	if err := h.StopAgent(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	if err := h.StopAgent(); err == nil {
		t.Fatal("StopAgent of a stopped agent succeeded")
	}
	logs := h.Logs()
	if n := strings.Count(logs, "=== testbed: h1 start #"); n != 3 {
		t.Fatalf("want 3 start markers in the log, got %d:\n%s", n, logs)
	}
	if !strings.Contains(logs, "fake agent h1: terminated, stopping") {
		t.Fatalf("log lacks the agent's own output:\n%s", logs)
	}
	assertClean(t, s)
}

func TestSlowStopIsReported(t *testing.T) {
	s := New(t, Options{
		Hosts:       1,
		FakeAgent:   true,
		StopTimeout: 300 * time.Millisecond,
		AgentEnv:    []string{EnvFakeStopDelay + "=3s"},
	})
	h := s.Hosts()[0]
	start := time.Now()
	err := h.StopAgent()
	if err == nil || !strings.Contains(err.Error(), "did not stop within 300ms") {
		t.Fatalf("want a slow-stop error, got %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("StopAgent took %s; it should kill after the limit", took)
	}
	if h.Running() {
		t.Fatal("agent still running")
	}
	assertClean(t, s)
}

func TestWorkloadsAndTCP(t *testing.T) {
	s := New(t, Options{Hosts: 2, NoStart: true})
	h1, h2 := s.Hosts()[0], s.Hosts()[1]
	w := s.AddWorkload(h1, "web")
	if w.Path() != "/run/netns/"+Prefix+s.ID()+"-h1-web" {
		t.Fatalf("workload path %s", w.Path())
	}
	// A workload created after the host's mount namespace must still be
	// visible there: the agent opens the path given to `weft workload add`.
	if out, err := h1.Exec("ip", "netns", "exec", filepath.Base(w.Path()), "ip", "-o", "link", "show", "lo"); err != nil || !strings.Contains(out, "lo:") {
		t.Fatalf("workload netns not usable from the host's mount namespace: %q, %v", out, err)
	}
	const addr = "10.99.0.5"
	if err := w.AttachVeth(addr); err != nil {
		t.Fatal(err)
	}
	w.Netns().ServeTCP("0.0.0.0:8080")
	h1.Netns().ServeTCP(h1.Address() + ":8080")
	s.Expect(
		Reach(h1, addr, Ping()),
		Reach(w, h1.Address(), Ping()),
		Reach(h1, addr, TCP(8080)),
		NoReach(h1, addr, TCP(8081)),
		Reach(w, h1.Address(), TCP(8080)),
		// Nothing routes workloads between hosts: that is weft's job.
		NoReach(h2, addr, Ping()),
		NoReach(w, h2.Address(), Ping()),
	)
	greeting, err := h1.Netns().ReadTCPGreeting(context.Background(), addr+":8080")
	if err != nil || greeting != "weft-testbed h1/web" {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	if out, err := w.Exec("ip", "-4", "-o", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(out, addr+"/32") {
		t.Fatalf("workload address: %q, %v", out, err)
	}
	assertClean(t, s)
}

// childReport is what a child test process tells its parent about the site
// it built.
type childReport struct {
	ID     string   `json:"id"`
	Dir    string   `json:"dir"`
	Inodes []uint64 `json:"inodes"`
	PIDs   []int    `json:"pids"`
}

const (
	envChild       = "WEFT_TESTBED_TEST_CHILD"
	envChildReport = "WEFT_TESTBED_TEST_REPORT"
)

// TestChildSite is not a test of its own: the parent tests below run it in a
// child process, which builds a site, reports it, then panics in a subtest
// or blocks until it is killed.
func TestChildSite(t *testing.T) {
	mode := os.Getenv(envChild)
	if mode == "" {
		t.Skip("helper for TestCleanupAfterPanic and TestInterruptedRun")
	}
	t.Run("site", func(t *testing.T) {
		s := New(t, Options{Hosts: 2, FakeAgent: true})
		rep := childReport{ID: s.ID(), Dir: s.Dir()}
		for ino := range s.site.Inodes() {
			rep.Inodes = append(rep.Inodes, ino)
		}
		for _, h := range s.Hosts() {
			rep.PIDs = append(rep.PIDs, h.PID())
		}
		b, _ := json.Marshal(rep)
		if err := os.WriteFile(os.Getenv(envChildReport), b, 0o600); err != nil {
			t.Fatal(err)
		}
		switch mode {
		case "panic":
			panic("deliberate panic with a live site")
		case "block":
			select {}
		}
	})
}

// runChild starts this test binary running TestChildSite in mode and waits
// for its report.
func runChild(t *testing.T, mode string) (*exec.Cmd, childReport) {
	t.Helper()
	SkipUnlessCapable(t)
	report := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildSite$", "-test.v")
	cmd.Env = append(os.Environ(), envChild+"="+mode, envChildReport+"="+report)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(report)
		if err == nil && len(b) > 0 {
			var rep childReport
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("child output:\n%s", out.String())
				}
			})
			return cmd, rep
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child reported nothing in 30s; output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r childReport) leftovers() []string {
	inodes := map[uint64]bool{}
	for _, i := range r.Inodes {
		inodes[i] = true
	}
	left := leftovers(r.ID, r.Dir, inodes, false)
	for _, pid := range r.PIDs {
		if !processGone(pid) {
			left = append(left, fmt.Sprintf("process %d (%s)", pid, cmdline(pid)))
		}
	}
	return left
}

func TestCleanupAfterPanic(t *testing.T) {
	cmd, rep := runChild(t, "panic")
	err := cmd.Wait()
	if err == nil {
		t.Fatal("the panicking child exited 0")
	}
	if left := rep.leftovers(); len(left) > 0 {
		t.Fatalf("a panicking subtest left:\n%s", strings.Join(left, "\n"))
	}
}

func TestInterruptedRun(t *testing.T) {
	t.Run("SIGKILL then Sweep", func(t *testing.T) {
		cmd, rep := runChild(t, "block")
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		// The agents die with their parent (Pdeathsig) ...
		waitFor(t, 5*time.Second, "agents to die with the test process", func() bool {
			for _, pid := range rep.PIDs {
				if !processGone(pid) {
					return false
				}
			}
			return true
		})
		// ... but the namespaces stay until a sweep (which the TestMain of a
		// test binary starting right now may also run: then it is gone).
		_, err := os.Stat(netns.PathOf(Prefix + rep.ID + "-router"))
		remained := err == nil
		if !remained {
			t.Logf("site %s already swept by another test process: %v", rep.ID, err)
		}
		var log strings.Builder
		if err := Sweep(&log); err != nil {
			t.Fatalf("Sweep: %v", err)
		}
		if remained && !strings.Contains(log.String(), rep.ID) {
			t.Errorf("Sweep did not report site %s: %q", rep.ID, log.String())
		}
		if left := rep.leftovers(); len(left) > 0 {
			t.Fatalf("after Sweep:\n%s", strings.Join(left, "\n"))
		}
	})
	t.Run("SIGINT", func(t *testing.T) {
		cmd, rep := runChild(t, "block")
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil {
			t.Fatal("interrupted child exited 0")
		}
		if left := rep.leftovers(); len(left) > 0 {
			t.Fatalf("an interrupted run left:\n%s", strings.Join(left, "\n"))
		}
	})
}

func TestSweepSparesLiveSites(t *testing.T) {
	s := New(t, Options{Hosts: 1, NoStart: true})
	if err := Sweep(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Hosts()[0].Netns().Path()); err != nil {
		t.Fatalf("Sweep removed a live site: %v", err)
	}
	s.Expect(Reach(s.Hosts()[0], s.RouterAddress(), Ping()))
	assertClean(t, s)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two subnets joined by the router (two racks): hosts reach each other
// across it, each through the router's address on its own subnet.
func TestTwoSubnets(t *testing.T) {
	s := New(t, Options{Hosts: 3, Subnets: 2, NoStart: true, IPv6: true})
	hosts := s.Hosts()
	subnets := s.Subnets()
	if len(subnets) != 2 || hosts[0].Subnet() != 0 || hosts[1].Subnet() != 0 || hosts[2].Subnet() != 1 {
		t.Fatalf("subnets %v, hosts on %d %d %d", subnets, hosts[0].Subnet(), hosts[1].Subnet(), hosts[2].Subnet())
	}
	for _, h := range hosts {
		sn := subnets[h.Subnet()]
		if !sn.V4.Contains(netip.MustParseAddr(h.Address())) || h.Gateway() != sn.RouterAddr().String() {
			t.Errorf("%s: %s via %s, want in %s via %s", h.Name(), h.Address(), h.Gateway(), sn.V4, sn.RouterAddr())
		}
		route, err := h.Exec("ip", "route", "show", "default")
		if err != nil || !strings.Contains(route, "via "+h.Gateway()+" dev eth0") {
			t.Errorf("%s: default route %q, %v", h.Name(), route, err)
		}
	}
	checks := Mesh(hosts, Ping(), func(_, _ *Host) bool { return true })
	checks = append(checks, Reach(hosts[0], hosts[2].Address6(), Ping()), Reach(hosts[2], hosts[1].Address6(), Ping()))
	s.Expect(checks...)
	assertClean(t, s)
}
