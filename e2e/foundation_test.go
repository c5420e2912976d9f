package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
)

// TestFoundation is the first end-to-end test: three hosts boot agents that
// report ready through /readyz and their sockets, reach each other on the
// underlay, stop cleanly within 5 s of SIGTERM, and leave nothing behind.
func TestFoundation(t *testing.T) {
	start := time.Now()
	site := testbed.New(t, testbed.Options{Hosts: 3})
	t.Logf("3 agents ready in %s", time.Since(start).Round(time.Millisecond))
	hosts := site.Hosts()

	for _, h := range hosts {
		// Each agent runs inside its host's network namespace ...
		if got, want := netnsOf(t, h.PID()), inodeOf(t, h.Netns().Path()); got != want {
			t.Errorf("%s: agent in netns %d, want the host's %d", h.Name(), got, want)
		}
		// ... with the host's private /run/wireguard, invisible outside.
		mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", h.PID()))
		if err != nil || !strings.Contains(string(mounts), " /run/wireguard ") {
			t.Errorf("%s: agent lacks its private /run/wireguard: %v", h.Name(), err)
		}

		// Ready and live over the underlay, seen from the site router.
		for _, path := range []string{"/readyz", "/livez"} {
			if code := get(t, site.Router(), "http://"+h.Address()+":9091"+path); code != http.StatusOK {
				t.Errorf("%s: GET %s from the router: %d", h.Name(), path, code)
			}
		}

		// Ready through the local socket: `weft node status -o json`.
		out, err := h.Weft("node", "status", "-o", "json")
		if err != nil {
			t.Fatalf("%s: weft node status: %v", h.Name(), err)
		}
		var st struct {
			Name  *string `json:"name"`
			Ready *bool   `json:"ready"`
			PID   int     `json:"pid"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%s: weft node status -o json: %v\n%s", h.Name(), err, out)
		}
		if st.Name == nil || *st.Name != h.Name() || st.Ready == nil || !*st.Ready {
			t.Errorf("%s: node status %s, want name %q and ready true", h.Name(), out, h.Name())
		}
		if st.PID != 0 && st.PID != h.PID() {
			t.Errorf("%s: node status pid %d, the agent the test bed started is %d", h.Name(), st.PID, h.PID())
		}
	}
	if self, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(self), "weft-wg") {
		t.Errorf("a host's /run/wireguard tmpfs leaked into the test's mount namespace (%v)", err)
	}

	// Every host reaches every other one and the router on the underlay.
	checks := testbed.Mesh(hosts, testbed.Ping(), func(_, _ *testbed.Host) bool { return true })
	for _, h := range hosts {
		checks = append(checks,
			testbed.Reach(h, site.RouterAddress(), testbed.Ping()),
			testbed.Reach(site.Router(), h.Address(), testbed.TCP(testbed.MetricsPort)))
	}
	site.Expect(checks...)

	// SIGTERM: every agent exits 0 within 5 s (StopAgent's limit).
	stopAll(t, hosts)
	for _, h := range hosts {
		if _, err := os.Stat(h.Socket()); err == nil {
			t.Errorf("%s: socket %s still exists after a clean stop", h.Name(), h.Socket())
		}
	}

	if err := site.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if left := site.Leftovers(); len(left) > 0 {
		t.Fatalf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

// TestAgentCrashRestartAndPartition drives the test bed's failure helpers
// against real agents: kill -9 and restart (the data dir lock and socket of a
// crashed agent must not block its successor), graceful restart, and a
// partition that cuts one host off the underlay and heals.
func TestAgentCrashRestartAndPartition(t *testing.T) {
	site := testbed.New(t, testbed.Options{Hosts: 2})
	h1, h2 := site.Hosts()[0], site.Hosts()[1]
	ctx := context.Background()

	crashed := h1.PID()
	if err := h1.Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := h1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatalf("agent restarted after kill -9: %v", err)
	}
	if h1.PID() == crashed {
		t.Fatal("agent pid unchanged after kill -9 and start")
	}
	if err := h1.Restart(); err != nil {
		t.Fatalf("graceful restart: %v", err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatalf("agent after graceful restart: %v", err)
	}
	if st, err := h1.NodeStatus(ctx); err != nil || !st.Ready || st.Name != "h1" {
		t.Fatalf("node status after restarts: %+v, %v", st, err)
	}

	all := func(_, _ *testbed.Host) bool { return true }
	site.Expect(testbed.Mesh(site.Hosts(), testbed.Ping(), all)...)
	if err := h2.CutLink(); err != nil {
		t.Fatal(err)
	}
	site.Expect(
		testbed.NoReach(h1, h2.Address(), testbed.Ping()),
		testbed.NoReach(h2, h1.Address(), testbed.Ping()),
		testbed.NoReach(h1, h2.Address(), testbed.TCP(testbed.MetricsPort)),
		testbed.Reach(h1, site.RouterAddress(), testbed.Ping()),
	)
	// The cut-off agent still answers locally.
	if st, err := h2.NodeStatus(ctx); err != nil || !st.Ready {
		t.Fatalf("partitioned node status: %+v, %v", st, err)
	}
	if err := h2.HealLink(); err != nil {
		t.Fatal(err)
	}
	site.Expect(append(testbed.Mesh(site.Hosts(), testbed.Ping(), all),
		testbed.Reach(h1, h2.Address(), testbed.TCP(testbed.MetricsPort)))...)

	stopAll(t, site.Hosts())
	if err := site.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if left := site.Leftovers(); len(left) > 0 {
		t.Fatalf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

// stopAll stops every host's agent at once and fails on any slow or unclean
// stop.
func stopAll(t *testing.T, hosts []*testbed.Host) {
	t.Helper()
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.StopAgent()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func get(t *testing.T, from *testbed.Netns, url string) int {
	t.Helper()
	resp, err := from.HTTPClient(2 * time.Second).Get(url)
	if err != nil {
		t.Errorf("GET %s from %s: %v", url, from.Label(), err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func netnsOf(t *testing.T, pid int) uint64 {
	t.Helper()
	return inodeOf(t, fmt.Sprintf("/proc/%d/ns/net", pid))
}
