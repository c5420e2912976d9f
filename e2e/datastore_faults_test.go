package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
)

// TestDatastoreLeaderKill: `kill -9` of the leader. The other two elect a
// new leader and take writes from both; nothing acknowledged before the
// crash is lost. The killed node restarts from its data dir (its
// cluster.join, pointed at an address where nothing listens, is ignored
// because it has state) and catches up with what was written while it was
// down; then it takes writes again.
func TestDatastoreLeaderKill(t *testing.T) {
	c := newDatastoreCluster(t, 3, testbed.Options{})
	all := names(c.hosts...)
	resp := c.waitMembers(c.hosts[0], 30*time.Second, wantMembers{voters: all})
	old := c.leader(resp)
	var rest []*testbed.Host
	for _, h := range c.hosts {
		if h != old {
			rest = append(rest, h)
		}
	}
	// Acknowledged writes before the crash, one through each node.
	for _, h := range c.hosts {
		c.mustApply(h, globalNetworkSet("before-"+h.Name(), "192.0.2.1/32"))
	}

	if err := old.Kill9(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for _, h := range rest {
		c.waitMembers(h, 30*time.Second, wantMembers{voters: all, down: []string{old.Name()}, notLeader: old.Name()})
	}
	t.Logf("new leader seen by both survivors %s after kill -9 of %s", time.Since(killed).Round(time.Millisecond), old.Name())
	for _, h := range rest {
		for _, b := range c.hosts {
			if c.getObject(h, "globalnetworksets", "before-"+b.Name()) == "" {
				t.Errorf("%s: acknowledged write before-%s lost after kill -9 of the leader", h.Name(), b.Name())
			}
		}
		c.mustApply(h, globalNetworkSet("during-"+h.Name(), "192.0.2.2/32"))
	}
	for _, h := range rest {
		for _, w := range rest {
			c.waitObject(h, "globalnetworksets", "during-"+w.Name(), 20*time.Second)
		}
	}

	// Restart with a join list that leads nowhere: a node with state must
	// not try to join again.
	old.SetTOML(fmt.Sprintf("[cluster]\njoin = [%q]\ntoken_file = %q\n",
		net.JoinHostPort(c.site.RouterAddress(), fmt.Sprint(testbed.ClusterPort)), c.tokenFile()))
	if err := old.StartAgent(); err != nil {
		t.Fatal(err)
	}
	c.waitReady(old)
	for _, w := range rest {
		c.waitObject(old, "globalnetworksets", "during-"+w.Name(), 30*time.Second)
	}
	c.waitMembers(old, 30*time.Second, wantMembers{voters: all})
	c.mustApply(old, globalNetworkSet("after-"+old.Name(), "192.0.2.3/32"))
	for _, h := range rest {
		c.waitObject(h, "globalnetworksets", "after-"+old.Name(), 20*time.Second)
	}
	if logs := old.Logs(); strings.Contains(logs, "join attempt failed") || !strings.Contains(logs, "mode=resume") {
		t.Errorf("%s did not resume from its data dir (or tried to join again) after the restart", old.Name())
	}
	stopAll(t, c.hosts)
}

// TestDatastorePartition: a follower cut off from the other two (the
// minority) refuses writes with a clear error within a bounded time but
// keeps answering local reads; its /readyz turns 503 once it has lost the
// leader; the majority keeps taking writes and shows it unhealthy. After
// HealLink it heals by itself: it sees what the others wrote and takes
// writes again.
func TestDatastorePartition(t *testing.T) {
	c := newDatastoreCluster(t, 3, testbed.Options{})
	all := names(c.hosts...)
	resp := c.waitMembers(c.hosts[0], 30*time.Second, wantMembers{voters: all})
	leader := c.leader(resp)
	var minority *testbed.Host
	var majority []*testbed.Host
	for _, h := range c.hosts {
		if h != leader && minority == nil {
			minority = h
		} else {
			majority = append(majority, h)
		}
	}
	c.mustApply(minority, globalNetworkSet("before", "192.0.2.1/32"))
	for _, h := range c.hosts {
		c.waitObject(h, "globalnetworksets", "before", 20*time.Second)
	}

	if err := minority.CutLink(); err != nil {
		t.Fatal(err)
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			_ = minority.HealLink()
		}
	})

	// The agent is no longer ready once it has lost the leader (it
	// cannot know its replica is current).
	c.waitFor(30*time.Second, minority.Name()+"'s /readyz to turn 503", func() error {
		code, body, err := readyz(minority)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d:\n%s", code, body)
		}
		return nil
	})

	// A write on the minority fails, with one clear line, in bounded time.
	start := time.Now()
	r := c.weft(minority, globalNetworkSet("cutoff", "192.0.2.9/32"), "apply", "-f", "-")
	took := time.Since(start)
	t.Logf("write on the partitioned node: %s after %s", r, took.Round(time.Millisecond))
	if r.code == 0 {
		t.Fatalf("write on the partitioned minority node succeeded: %s", r)
	}
	checkOneLineError(t, r, "leader")
	if took > 45*time.Second {
		t.Errorf("the refused write took %s, want a bounded wait (< 45s)", took)
	}
	// Local reads still answer, with what the node had.
	if got := c.listNames(minority, "globalnetworksets"); fmt.Sprint(got) != "[before]" {
		t.Errorf("local read on the partitioned node: %v, want [before]", got)
	}
	if r := c.weft(minority, "", "get", "ippools"); r.code != 0 || !strings.Contains(r.stdout, "default-ipv4") {
		t.Errorf("local read of ippools on the partitioned node: %s", r)
	}
	// Membership as the node last saw it, flagged as such.
	if resp, r := c.members(minority); r.code != 0 || len(resp.Members) != 3 || !strings.Contains(resp.Warning, "no leader") {
		t.Errorf("weft cluster members on the partitioned node: %s", r)
	} else {
		for _, m := range resp.Members {
			if m.LastContactSeconds != -1 {
				t.Errorf("weft cluster members on the partitioned node: %s's last contact %v, want -1 (unknown)", m.Name, m.LastContactSeconds)
			}
		}
	}
	if r := c.weft(minority, "", "cluster", "members"); r.code != 0 || !strings.Contains(r.stderr, "warning: no leader") || !strings.Contains(r.stdout, "unknown") {
		t.Errorf("weft cluster members (table) on the partitioned node: %s", r)
	}

	// The majority carries on and sees the minority node as unhealthy.
	for _, h := range majority {
		c.mustApply(h, globalNetworkSet("during-"+h.Name(), "192.0.2.2/32"))
	}
	c.waitMembers(majority[0], 30*time.Second, wantMembers{voters: all, down: []string{minority.Name()}})

	// The others stay ready.
	for _, h := range majority {
		if code, body, err := readyz(h); err != nil || code != http.StatusOK {
			t.Errorf("%s (majority): /readyz %d, %v:\n%s", h.Name(), code, err, body)
		}
	}

	if err := minority.HealLink(); err != nil {
		t.Fatal(err)
	}
	healed = true
	healStart := time.Now()
	for _, h := range majority {
		c.waitObject(minority, "globalnetworksets", "during-"+h.Name(), 30*time.Second)
	}
	c.waitFor(30*time.Second, "a write on the healed node", func() error {
		r := c.weft(minority, globalNetworkSet("healed", "192.0.2.3/32"), "apply", "-f", "-")
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	t.Logf("healed node caught up and took a write %s after HealLink", time.Since(healStart).Round(time.Millisecond))
	for _, h := range majority {
		c.waitObject(h, "globalnetworksets", "healed", 20*time.Second)
	}
	if got := c.listNames(minority, "globalnetworksets"); strings.Contains(fmt.Sprint(got), "cutoff") {
		t.Errorf("the write refused during the partition appeared later: %v", got)
	}
	for _, h := range c.hosts {
		c.waitMembers(h, 30*time.Second, wantMembers{voters: all})
	}
	if err := minority.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopAll(t, c.hosts)
}

// checkOneLineError checks a failed CLI run: non-zero exit, exactly one
// line on stderr starting "weft: " and containing want (case-insensitive),
// nothing on stdout.
func checkOneLineError(t *testing.T, r cliResult, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	switch {
	case r.code == 0:
		t.Errorf("succeeded, want an error mentioning %q: %s", want, r)
	case len(lines) != 1 || !strings.HasPrefix(lines[0], "weft: "):
		t.Errorf("want exactly one stderr line starting \"weft: \": %s", r)
	case !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(want)):
		t.Errorf("error does not mention %q: %s", want, r)
	case strings.TrimSpace(r.stdout) != "":
		t.Errorf("printed on stdout although it failed: %s", r)
	}
}

// TestDatastoreJoinRefused: a node that tries to join without the token,
// with an unreadable or malformed one, with the right CA but a wrong
// secret, or with the token of another cluster, is refused: its agent
// stops with one clear error, it gets no certificate, and the cluster's
// membership and objects are unchanged. A node whose data dir holds a
// certificate of another cluster (no raft state yet) finds that no listed
// member belongs to its cluster and stops with a clear error; it never
// becomes a member. (That members refuse such a certificate on their side
// is TestDatastoreClusterPortRefusesNonMembers.)
func TestDatastoreJoinRefused(t *testing.T) {
	c := newDatastoreCluster(t, 2, testbed.Options{Hosts: 4})
	h1, h2, h3, h4 := c.hosts[0], c.hosts[1], c.hosts[2], c.hosts[3]
	c.mustApply(h2, globalNetworkSet("existing", "192.0.2.1/32"))
	want := wantMembers{voters: names(h1, h2)}
	c.waitMembers(h1, 30*time.Second, want)
	before := c.clusterObjects(h1)

	// Another cluster: h4 bootstraps on its own.
	if err := h4.StartAgent(); err != nil {
		t.Fatal(err)
	}
	c.waitReady(h4)
	otherToken := filepath.Join(h4.DataDir(), "token")
	goodToken, err := os.ReadFile(c.tokenFile())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.TrimSpace(string(goodToken)), ".")
	if len(parts) != 3 {
		t.Fatalf("token %q: want three dot-separated parts", goodToken)
	}
	wrongSecret := parts[0] + "." + parts[1] + "." + strings.Repeat("ab", 32)
	wrongSecretFile := filepath.Join(t.TempDir(), "wrong-secret")
	if err := os.WriteFile(wrongSecretFile, []byte(wrongSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbageFile := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbageFile, []byte("not-a-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		toml      string // h3's [cluster] settings
		wantError string // in the agent's last words
	}{
		{"no token", fmt.Sprintf("[cluster]\njoin = [%q]\n", h1.ClusterAddress()), "needs the cluster's join token"},
		{"missing token file", fmt.Sprintf("[cluster]\njoin = [%q]\ntoken_file = %q\n", h1.ClusterAddress(), filepath.Join(t.TempDir(), "none")), "token_file"},
		{"malformed token", fmt.Sprintf("[cluster]\njoin = [%q]\ntoken_file = %q\n", h1.ClusterAddress(), garbageFile), "invalid join token"},
		{"wrong secret", fmt.Sprintf("[cluster]\njoin = [%q]\ntoken_file = %q\n", h1.ClusterAddress(), wrongSecretFile), "wrong join token"},
		{"other cluster's token", fmt.Sprintf("[cluster]\njoin = [%q]\ntoken_file = %q\n", h1.ClusterAddress(), otherToken), "no listed member presents the cluster CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.RemoveAll(h3.DataDir()); err != nil {
				t.Fatal(err)
			}
			h3.SetTOML(tc.toml)
			last := c.expectAgentFails(h3, 30*time.Second)
			t.Logf("h3 stopped with: %s", last)
			if !strings.Contains(last, tc.wantError) {
				t.Errorf("h3's agent stopped with %q, want it to mention %q", last, tc.wantError)
			}
			if _, err := os.Stat(filepath.Join(h3.DataDir(), "pki", "node.crt")); err == nil {
				t.Errorf("h3 holds a node certificate after a refused join")
			}
			c.waitMembers(h1, 10*time.Second, want)
			if got := c.clusterObjects(h1); got != before {
				t.Errorf("objects changed after a refused join:\nbefore %s\nafter  %s", before, got)
			}
		})
	}

	// A certificate of the other cluster: h3 joins h4's cluster, then is
	// pointed at h1 with a fresh raft dir but keeping that certificate.
	if err := os.RemoveAll(h3.DataDir()); err != nil {
		t.Fatal(err)
	}
	h3.SetTOML(fmt.Sprintf("[cluster]\njoin = [%q]\ntoken_file = %q\n", h4.ClusterAddress(), otherToken))
	if err := h3.StartAgent(); err != nil {
		t.Fatal(err)
	}
	c.waitReady(h3)
	if err := h3.StopAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h4.StopAgent(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(h3.DataDir(), "raft")); err != nil {
		t.Fatal(err)
	}
	h3.SetTOML(fmt.Sprintf("[cluster]\njoin = [%q]\ntoken_file = %q\n", h1.ClusterAddress(), c.tokenFile()))
	last := c.expectAgentFails(h3, 30*time.Second)
	t.Logf("h3 with another cluster's certificate stopped with: %s", last)
	if !strings.Contains(last, "no listed member belongs to this node's cluster") {
		t.Errorf("h3 with another cluster's certificate stopped with %q, want it to say the members belong to another cluster", last)
	}
	c.waitMembers(h1, 10*time.Second, want)
	if got := c.clusterObjects(h1); got != before {
		t.Errorf("objects changed after a node of another cluster called:\nbefore %s\nafter  %s", before, got)
	}
	stopAll(t, []*testbed.Host{h1, h2})
}

// expectAgentFails starts h's agent and waits until it exits on its own;
// it returns the last line the agent logged.
func (c *datastoreCluster) expectAgentFails(h *testbed.Host, timeout time.Duration) string {
	c.t.Helper()
	if err := h.StartAgent(); err != nil {
		c.t.Fatal(err)
	}
	err := poll(timeout, func() error {
		if h.Running() {
			return errors.New("the agent is still running")
		}
		return nil
	})
	if err != nil {
		_ = h.StopAgent()
		c.t.Fatalf("%s: the agent did not stop on its own within %s; log ends:\n%s", h.Name(), timeout, lastLogLines(h, 15))
	}
	return lastLogLines(h, 1)
}

// lastLogLines returns the last n lines of h's agent log.
func lastLogLines(h *testbed.Host, n int) string {
	lines := strings.Split(strings.TrimRight(h.Logs(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clusterObjects summarises what a refused request must not change: the
// Nodes and GlobalNetworkSets in h's replica.
func (c *datastoreCluster) clusterObjects(h *testbed.Host) string {
	c.t.Helper()
	return fmt.Sprintf("nodes %v, globalnetworksets %v", c.listNames(h, "nodes"), c.listNames(h, "globalnetworksets"))
}
