package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// Datastore end-to-end tests (issue 3): real agents on the test bed form a
// raft cluster by address, and the CLI drives it from every node. Helpers
// shared by datastore_*_test.go live here.

// TestDatastoreJoinAndReplicate: host 1 bootstraps, hosts 2 and 3 join it
// by address with the token file from host 1's data dir. Every node then
// shows three healthy voters with one leader; `weft token show` works on a
// voter and prints that token; writes from every node are visible in every
// node's local replica; `weft get -w` on one node streams a change made on
// another; /metrics carries the datastore metrics.
func TestDatastoreJoinAndReplicate(t *testing.T) {
	c := newDatastoreCluster(t, 3, testbed.Options{})
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]

	for _, h := range c.hosts {
		c.waitMembers(h, 30*time.Second, wantMembers{voters: names(c.hosts...)})
	}

	// The token: printed by a voter, equal to the bootstrap token file.
	tokenFile, err := os.ReadFile(filepath.Join(h1.DataDir(), "token"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*testbed.Host{h1, h3} {
		r := c.weft(h, "", "token", "show")
		if r.code != 0 || strings.TrimSpace(r.stdout) != strings.TrimSpace(string(tokenFile)) {
			t.Errorf("%s: weft token show: %s; want the token of %s/token", h.Name(), r, h1.DataDir())
		}
	}

	// A watch on h3, started before the writes below.
	w := c.startWatch(h3, "globalnetworksets")

	// Writes from every node, visible from every node's local replica.
	for i, h := range c.hosts {
		c.mustApply(h, globalNetworkSet("gns-"+h.Name(), fmt.Sprintf("192.0.2.%d/32", i+1))+"---\n"+
			ipPool("pool-"+h.Name(), fmt.Sprintf("10.%d.0.0/24", 100+i)))
	}
	for _, h := range c.hosts {
		for _, from := range c.hosts {
			c.waitObject(h, "globalnetworksets", "gns-"+from.Name(), 20*time.Second)
			c.waitObject(h, "ippools", "pool-"+from.Name(), 20*time.Second)
		}
	}
	// The watch on h3 saw the writes made on h1 and h2.
	for _, from := range []*testbed.Host{h1, h2} {
		w.waitLine(t, 20*time.Second, func(l string) bool {
			return strings.HasPrefix(l, "PUT") && strings.Contains(l, "gns-"+from.Name())
		}, "a PUT of gns-"+from.Name())
	}
	// An update made on h2 streams to h3's watch too.
	c.mustApply(h2, globalNetworkSet("gns-h1", "198.51.100.7/32"))
	w.waitLine(t, 20*time.Second, func(l string) bool {
		return strings.HasPrefix(l, "PUT") && strings.Contains(l, "gns-h1")
	}, "the PUT of gns-h1's update")
	// A delete made on h1 too.
	if r := c.weft(h1, "", "delete", "globalnetworkset", "gns-h2"); r.code != 0 {
		t.Fatalf("h1: weft delete: %s", r)
	}
	w.waitLine(t, 20*time.Second, func(l string) bool {
		return strings.HasPrefix(l, "DELETE") && strings.Contains(l, "gns-h2")
	}, "the DELETE of gns-h2")
	for _, h := range c.hosts {
		c.waitGone(h, "globalnetworksets", "gns-h2", 20*time.Second)
		got := c.getObject(h, "globalnetworksets", "gns-h1")
		if !strings.Contains(got, "198.51.100.7/32") {
			t.Errorf("%s: gns-h1 after the update on h2: %s", h.Name(), got)
		}
	}
	w.stop()

	// Datastore metrics on every node; exactly one leader among them.
	leaders := 0
	for _, h := range c.hosts {
		m := c.metrics(h)
		for _, name := range []string{
			"weft_store_raft_state", "weft_store_raft_term", "weft_store_raft_commit_index",
			"weft_store_raft_applied_index", "weft_store_fsm_apply_duration_seconds_bucket",
			"weft_store_in_sync", "weft_store_objects",
		} {
			if !m.has(name) {
				t.Errorf("%s: /metrics lacks %s", h.Name(), name)
			}
		}
		if m.value(`weft_store_raft_term`) < 1 || m.value(`weft_store_raft_commit_index`) < 1 {
			t.Errorf("%s: term %v, commit index %v: want both >= 1", h.Name(), m.value("weft_store_raft_term"), m.value("weft_store_raft_commit_index"))
		}
		if m.value(`weft_store_fsm_apply_duration_seconds_count`) < 1 {
			t.Errorf("%s: no apply latency observed", h.Name())
		}
		if m.value(`weft_store_commit_duration_seconds_count`) < 2 {
			t.Errorf("%s: weft_store_commit_duration_seconds_count %v after its own writes, want >= 2", h.Name(), m.value(`weft_store_commit_duration_seconds_count`))
		}
		if m.value(`weft_store_in_sync`) != 1 {
			t.Errorf("%s: weft_store_in_sync %v, want 1", h.Name(), m.value(`weft_store_in_sync`))
		}
		if m.value(`weft_store_objects{kind="GlobalNetworkSet"}`) != 2 {
			t.Errorf("%s: weft_store_objects{kind=\"GlobalNetworkSet\"} = %v, want 2", h.Name(), m.value(`weft_store_objects{kind="GlobalNetworkSet"}`))
		}
		leaders += int(m.value(`weft_store_raft_state{state="leader"}`))
	}
	if leaders != 1 {
		t.Errorf("%d nodes report weft_store_raft_state{state=\"leader\"} 1, want exactly 1", leaders)
	}
}

// datastoreCluster is a test bed site whose agents form one datastore.
type datastoreCluster struct {
	t     *testing.T
	site  *testbed.Site
	hosts []*testbed.Host
}

// newDatastoreCluster builds n hosts, starts host 1 (it bootstraps) and then
// the others at once, each joining host 1 by address with the token file
// from host 1's data dir, and waits until all are ready. opts.Hosts may
// create more hosts than n: the rest are left stopped.
func newDatastoreCluster(t *testing.T, n int, opts testbed.Options) *datastoreCluster {
	t.Helper()
	if opts.Hosts < n {
		opts.Hosts = n
	}
	opts.NoStart = true
	site := testbed.New(t, opts)
	c := &datastoreCluster{t: t, site: site, hosts: site.Hosts()}
	h1 := c.hosts[0]
	if err := h1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.join(c.hosts[1:n]...)
	return c
}

// join starts hosts at once, joining host 1 with its token file, and waits
// until they are ready.
func (c *datastoreCluster) join(hosts ...*testbed.Host) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.site.Join(ctx, hosts...); err != nil {
		c.t.Fatal(err)
	}
}

// tokenFile is the bootstrap node's token file.
func (c *datastoreCluster) tokenFile() string { return c.site.TokenFile() }

// waitReady waits for hosts' agents to be ready, in parallel.
func (c *datastoreCluster) waitReady(hosts ...*testbed.Host) {
	c.t.Helper()
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			errs[i] = h.WaitReady(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Fatal(err)
	}
}

// cliResult is one run of the weft CLI.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("`weft %s` exit %d, stdout %q, stderr %q", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// weft runs the weft CLI against h's agent socket with stdin and returns
// what it printed and its exit status. It runs in the test's own
// namespaces: the CLI only talks to the socket, a path.
func (c *datastoreCluster) weft(h *testbed.Host, stdin string, args ...string) cliResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.site.Binary(), append([]string{"--socket", h.Socket()}, args...)...)
	cmd.Env = append(os.Environ(), testbed.EnvSocket+"="+h.Socket())
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		c.t.Fatalf("%s: running weft %v: %v", h.Name(), args, err)
	}
	return r
}

// mustApply runs `weft apply -f -` on h and fails the test unless it
// succeeds.
func (c *datastoreCluster) mustApply(h *testbed.Host, yaml string) {
	c.t.Helper()
	if r := c.weft(h, yaml, "apply", "-f", "-"); r.code != 0 || r.stderr != "" {
		c.t.Fatalf("%s: %s", h.Name(), r)
	}
}

// getObject reads one object from h's local replica as JSON ("" when it
// does not exist).
func (c *datastoreCluster) getObject(h *testbed.Host, kind, name string) string {
	c.t.Helper()
	r := c.weft(h, "", "get", kind, name, "-o", "json")
	if r.code != 0 {
		if strings.Contains(r.stderr, "not found") {
			return ""
		}
		c.t.Fatalf("%s: %s", h.Name(), r)
	}
	return r.stdout
}

// listNames lists the names of kind in h's local replica, sorted.
func (c *datastoreCluster) listNames(h *testbed.Host, kind string) []string {
	c.t.Helper()
	r := c.weft(h, "", "get", kind, "-o", "json")
	if r.code != 0 {
		c.t.Fatalf("%s: %s", h.Name(), r)
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		c.t.Fatalf("%s: weft get %s -o json: %v\n%s", h.Name(), kind, err, r.stdout)
	}
	var out []string
	for _, it := range list.Items {
		out = append(out, it.Metadata.Name)
	}
	sort.Strings(out)
	return out
}

// waitObject waits until h's local replica holds kind/name.
func (c *datastoreCluster) waitObject(h *testbed.Host, kind, name string, timeout time.Duration) {
	c.t.Helper()
	c.waitFor(timeout, fmt.Sprintf("%s to see %s %s", h.Name(), kind, name), func() error {
		if c.getObject(h, kind, name) == "" {
			return errors.New("not found")
		}
		return nil
	})
}

// waitGone waits until h's local replica no longer holds kind/name.
func (c *datastoreCluster) waitGone(h *testbed.Host, kind, name string, timeout time.Duration) {
	c.t.Helper()
	c.waitFor(timeout, fmt.Sprintf("%s to stop seeing %s %s", h.Name(), kind, name), func() error {
		if c.getObject(h, kind, name) != "" {
			return errors.New("still there")
		}
		return nil
	})
}

// waitFor polls cond until it returns nil or timeout passes, then fails the
// test with cond's last error.
func (c *datastoreCluster) waitFor(timeout time.Duration, what string, cond func() error) {
	c.t.Helper()
	if err := poll(timeout, cond); err != nil {
		c.t.Fatalf("waiting %s for %s: %v", timeout, what, err)
	}
}

// poll calls cond every 200 ms until it returns nil or timeout passes; it
// returns cond's last error then.
func poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// members runs `weft cluster members -o json` on h.
func (c *datastoreCluster) members(h *testbed.Host) (localapi.MembersResponse, cliResult) {
	c.t.Helper()
	r := c.weft(h, "", "cluster", "members", "-o", "json")
	var resp localapi.MembersResponse
	if r.code == 0 {
		if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
			c.t.Fatalf("%s: weft cluster members -o json: %v\n%s", h.Name(), err, r.stdout)
		}
	}
	return resp, r
}

// wantMembers describes an expected membership: the names of the voters
// (one of which leads) and of the non-voters, all healthy.
type wantMembers struct {
	voters, nonvoters []string
	// down names members that must be listed but unhealthy (stopped or
	// cut off); the others must be healthy.
	down []string
	// leader, when set, must be the leader; notLeader must not be.
	leader, notLeader string
}

// check compares a membership with w.
func (w wantMembers) check(resp localapi.MembersResponse) error {
	var voters, nonvoters, leaders, unhealthy []string
	down := map[string]bool{}
	for _, d := range w.down {
		down[d] = true
	}
	for _, m := range resp.Members {
		switch m.Role {
		case "leader":
			leaders = append(leaders, m.Name)
			voters = append(voters, m.Name)
		case "voter":
			voters = append(voters, m.Name)
		case "nonvoter":
			nonvoters = append(nonvoters, m.Name)
		default:
			return fmt.Errorf("member %s has role %q", m.Name, m.Role)
		}
		if m.Healthy && down[m.Name] {
			return fmt.Errorf("member %s is healthy, want it down (members %+v)", m.Name, resp.Members)
		}
		if !m.Healthy && !down[m.Name] {
			unhealthy = append(unhealthy, m.Name)
		}
	}
	sort.Strings(voters)
	sort.Strings(nonvoters)
	want := func(s []string) []string { s = append([]string(nil), s...); sort.Strings(s); return s }
	switch {
	case resp.Warning != "":
		return fmt.Errorf("warning %q", resp.Warning)
	case len(down) > 0 && len(leaders) == 1 && down[leaders[0]]:
		return fmt.Errorf("leader %s should be down", leaders[0])
	case fmt.Sprint(voters) != fmt.Sprint(want(w.voters)):
		return fmt.Errorf("voters %v, want %v (members %+v)", voters, want(w.voters), resp.Members)
	case fmt.Sprint(nonvoters) != fmt.Sprint(want(w.nonvoters)):
		return fmt.Errorf("non-voters %v, want %v (members %+v)", nonvoters, want(w.nonvoters), resp.Members)
	case len(leaders) != 1:
		return fmt.Errorf("leaders %v, want exactly one (members %+v)", leaders, resp.Members)
	case w.leader != "" && leaders[0] != w.leader:
		return fmt.Errorf("leader %s, want %s", leaders[0], w.leader)
	case w.notLeader != "" && leaders[0] == w.notLeader:
		return fmt.Errorf("leader is still %s", leaders[0])
	case len(unhealthy) > 0:
		return fmt.Errorf("unhealthy members %v (members %+v)", unhealthy, resp.Members)
	}
	return nil
}

// waitMembers waits until `weft cluster members` on h matches w, and
// returns that membership.
func (c *datastoreCluster) waitMembers(h *testbed.Host, timeout time.Duration, w wantMembers) localapi.MembersResponse {
	c.t.Helper()
	var last localapi.MembersResponse
	c.waitFor(timeout, h.Name()+"'s `weft cluster members`", func() error {
		resp, r := c.members(h)
		if r.code != 0 {
			return errors.New(r.String())
		}
		last = resp
		return w.check(resp)
	})
	return last
}

// leader returns the host whose name `weft cluster members` on h shows as
// leader.
func (c *datastoreCluster) leader(resp localapi.MembersResponse) *testbed.Host {
	c.t.Helper()
	for _, m := range resp.Members {
		if m.Role == "leader" {
			return c.site.Host(m.Name)
		}
	}
	c.t.Fatalf("no leader in %+v", resp.Members)
	return nil
}

// watch is a running `weft get KIND -w` whose output lines are collected.
type watch struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	mu     sync.Mutex
	lines  []string
	done   chan struct{}
	stderr bytes.Buffer
}

// startWatch starts `weft get kind -w` (table output) on h and waits until
// its header is printed. It is stopped when the test ends.
func (c *datastoreCluster) startWatch(h *testbed.Host, kind string) *watch {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watch{cancel: cancel, done: make(chan struct{})}
	w.cmd = exec.CommandContext(ctx, c.site.Binary(), "--socket", h.Socket(), "get", kind, "-w")
	w.cmd.Stderr = &w.stderr
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			w.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	c.t.Cleanup(w.stop)
	w.waitLine(c.t, 20*time.Second, func(l string) bool { return strings.HasPrefix(l, "EVENT") }, "the watch's header")
	return w
}

// waitLine waits until the watch printed a line matching match.
func (w *watch) waitLine(t *testing.T, timeout time.Duration, match func(string) bool, what string) {
	t.Helper()
	err := poll(timeout, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, l := range w.lines {
			if match(l) {
				return nil
			}
		}
		select {
		case <-w.done:
			return fmt.Errorf("the watch ended (stderr %q)", w.stderr.String())
		default:
		}
		return errors.New("not yet")
	})
	if err != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Fatalf("`weft get -w` did not print %s: %v; it printed:\n%s", what, err, strings.Join(w.lines, "\n"))
	}
}

// stop ends the watch and waits for it.
func (w *watch) stop() {
	w.cancel()
	<-w.done
	_ = w.cmd.Wait()
}

// metricsSample is one scrape of /metrics: series (name with labels as
// printed) to value.
type metricsSample map[string]float64

func (m metricsSample) has(name string) bool {
	for k := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			return true
		}
	}
	return false
}

func (m metricsSample) value(series string) float64 { return m[series] }

// metrics scrapes h's /metrics over the underlay from the router.
func (c *datastoreCluster) metrics(h *testbed.Host) metricsSample {
	c.t.Helper()
	resp, err := c.site.Router().HTTPClient(5 * time.Second).Get(fmt.Sprintf("http://%s:%d/metrics", h.Address(), testbed.MetricsPort))
	if err != nil {
		c.t.Fatalf("%s: GET /metrics: %v", h.Name(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("%s: GET /metrics: %s", h.Name(), resp.Status)
	}
	m := metricsSample{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// readyz returns the status code of h's /readyz, probed from h's own
// namespace (so a cut link does not hide the answer).
func readyz(h *testbed.Host) (int, string, error) {
	resp, err := h.Netns().HTTPClient(3 * time.Second).Get(fmt.Sprintf("http://%s:%d/readyz", h.Address(), testbed.MetricsPort))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

func names(hosts ...*testbed.Host) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, h.Name())
	}
	return out
}

func globalNetworkSet(name, net string) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: %s
  labels:
    role: e2e
spec:
  nets:
  - %s
`, name, net)
}

func ipPool(name, cidr string) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: %s
spec:
  cidr: %s
  blockSize: 28
  vxlanMode: Never
  ipipMode: Never
  natOutgoing: false
  disabled: true
`, name, cidr)
}
