package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// TestRestartAloneKeepsItsState: three nodes over VXLAN with two workloads
// each; the agents of h2 and h3 are stopped (SIGTERM: their kernels keep
// forwarding) and h1's agent is restarted alone, without quorum. Raft
// alone would give h1 an empty replica (it applies entries only once a
// leader confirms them, and below 8,192 writes there is no snapshot): its
// reads answered empty lists with exit 0, and once the agent gave up
// waiting for quorum it started its dataplane from that replica and
// deleted weft.vxlan and every route to the others (issue 9). Now, from the
// restart until well past every fallback timer (the agent starts its
// dataplane from the local replica when no leader answers; two periodic
// resyncs at 5 s): `weft get ippools` and `weft workload list` answer
// either the real data (exit 0) or one clear error, never less; the
// revision is never below the one before the restart; h1's weft routes,
// neighbours, FDB entries and weft.vxlan (same ifindex) are unchanged; and
// a ping from h1's workload to h2's every 50 ms loses nothing while TCP
// and ping between all workloads keep working. Then h2 and h3 come back:
// every agent is ready, the kernel state is the cluster's, and reads agree.
func TestRestartAloneKeepsItsState(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 3, ExtraTOML: "[network]\nresync_period = \"5s\"\n"})
	hosts := site.Hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	c := &datastoreCluster{t: t, site: site, hosts: hosts}
	ws := wlAttachTwoEach(t, site)
	site.ExpectWithin(30*time.Second, wlPairChecks(ws)...)
	wlExpectKernelState(t, site, true, 20*time.Second)
	// All three must be voters before two stop: a joiner is a non-voter
	// until promoted, and h1 alone among voters would simply lead on.
	vctx, vcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer vcancel()
	if err := site.WaitVoters(vctx, h1, 3); err != nil {
		t.Fatal(err)
	}

	wantPools := c.listNames(h1, "ippools")
	wantWorkloads := raWorkloadNames(wlWorkloadList(t, h1))
	if len(wantPools) == 0 || len(wantWorkloads) != 2 {
		t.Fatalf("h1 before the restart: pools %v, workloads %v", wantPools, wantWorkloads)
	}
	before := raKernel(t, h1)
	revBefore := raStatus(t, h1).Datastore.Revision
	t.Logf("h1 before the restart at revision %d: %s", revBefore, before)

	for _, h := range []*testbed.Host{h2, h3} {
		if err := h.StopAgent(); err != nil {
			t.Fatal(err)
		}
	}
	// h1 → h2 every 50 ms for 40 s (longer on a busy machine): about the
	// time h1 is alone (35-50 s).
	ping := wlStartPing(t, ws[0], ws[2].ip, 800)
	ping.waitSeq(t, 10)
	if err := h1.StopAgent(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := h1.StartAgent(); err != nil {
		t.Fatal(err)
	}

	// Until the dataplane has started from the local replica and two
	// resync periods have passed (at least 35 s: past the 30 s the agent
	// waits for quorum at most), poll what users see and the kernel.
	var dataplaneSince time.Time
	reads, refused := 0, 0
	for {
		reads++
		if !raReadsTell(t, c, h1, wantPools, wantWorkloads) {
			refused++
		}
		if got := raKernel(t, h1); got.String() != before.String() {
			t.Fatalf("h1's kernel state changed %s after the restart without quorum:\nbefore %s\nnow    %s\nagent log ends:\n%s",
				time.Since(restarted).Round(time.Millisecond), before, got, raLastLines(h1.Logs(), 30))
		}
		if st, err := raStatusErr(h1); err == nil {
			if st.Datastore != nil && st.Datastore.Revision < revBefore {
				t.Fatalf("h1 at revision %d after the restart, %d before: revisions went backwards", st.Datastore.Revision, revBefore)
			}
			if dataplaneSince.IsZero() && raComponentReady(st, "dataplane") {
				dataplaneSince = time.Now()
				t.Logf("h1's dataplane started from its local replica %s after the restart", time.Since(restarted).Round(time.Millisecond))
			}
		}
		if !dataplaneSince.IsZero() && time.Since(dataplaneSince) > 12*time.Second && time.Since(restarted) > 35*time.Second {
			break
		}
		if time.Since(restarted) > 50*time.Second {
			t.Fatalf("h1's dataplane did not start from its local replica within 50 s of the restart; log ends:\n%s", raLastLines(h1.Logs(), 30))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("h1 alone for %s: %d reads, %d refused with an error, the others answered the real data", time.Since(restarted).Round(time.Second), reads, refused)
	if !strings.Contains(h1.Logs(), "starting from the local replica") {
		t.Errorf("h1's log does not say the dataplane started from the local replica: the fallback was not exercised")
	}
	site.Expect(wlPairChecks(ws)...)
	sum := ping.wait(t)
	t.Logf("ping %s → %s while h1 restarted alone: %s", ws[0].Name(), ws[2].Name(), sum.line)
	if sum.received != sum.transmitted || sum.transmitted != 800 {
		t.Errorf("ping lost packets while h1 was alone: %s", sum.line)
	}

	// Heal.
	for _, h := range []*testbed.Host{h2, h3} {
		if err := h.StartAgent(); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hosts {
		if err := h.WaitReady(context.Background()); err != nil {
			t.Fatalf("after the heal: %v", err)
		}
	}
	wlExpectKernelState(t, site, true, 30*time.Second)
	site.ExpectWithin(30*time.Second, wlPairChecks(ws)...)
	for _, h := range hosts {
		if got := c.listNames(h, "ippools"); !slices.Equal(got, wantPools) {
			t.Errorf("%s after the heal: ippools %v, want %v", h.Name(), got, wantPools)
		}
		if st := raStatus(t, h); st.Datastore == nil || !st.Datastore.InSync {
			t.Errorf("%s after the heal: datastore %+v, want in sync", h.Name(), st.Datastore)
		}
	}
	if got := raWorkloadNames(wlWorkloadList(t, h1)); !slices.Equal(got, wantWorkloads) {
		t.Errorf("h1 after the heal: workloads %v, want %v", got, wantWorkloads)
	}
	stopAll(t, hosts)
}

// raReadsTell runs `weft get ippools -o json` and `weft workload list -A
// -o json` on h: each must either succeed with exactly the wanted names or
// fail with one line on stderr (the agent starting, the replica not in
// sync), never succeed with less. It reports whether both answered.
func raReadsTell(t *testing.T, c *datastoreCluster, h *testbed.Host, pools, workloads []string) bool {
	t.Helper()
	answered := true
	check := func(what string, want []string, args ...string) {
		r := c.weft(h, "", args...)
		if r.code != 0 {
			answered = false
			if lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "weft: ") || strings.TrimSpace(r.stdout) != "" {
				t.Errorf("%s: a refused read must be one error line: %s", h.Name(), r)
			}
			return
		}
		got, err := raNames(what, r.stdout)
		if err != nil {
			t.Fatalf("%s: %v: %s", h.Name(), err, r)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s answered %v with exit 0, want %v (or an error): a read presented a partial replica as the truth", h.Name(), got, want)
		}
	}
	check("ippools", pools, "get", "ippools", "-o", "json")
	check("workloads", workloads, "workload", "list", "-A", "-o", "json")
	return answered
}

// raNames decodes the names of `weft get -o json` (metadata.name) or of
// `weft workload list -o json` (namespace/name).
func raNames(what, out string) ([]string, error) {
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("%s: not a JSON list: %w", what, err)
	}
	var names []string
	for _, it := range list.Items {
		if it.Metadata.Name != "" {
			names = append(names, it.Metadata.Name)
		} else {
			names = append(names, it.Namespace+"/"+it.Name)
		}
	}
	sort.Strings(names)
	return names, nil
}

func raWorkloadNames(ws []localapi.Workload) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Namespace+"/"+w.Name)
	}
	sort.Strings(out)
	return out
}

// raKernelState is the weft state of one host's kernel.
type raKernelState struct {
	routes, neigh, fdb []string
	vxlanIndex         int // 0: no weft.vxlan
}

func (k raKernelState) String() string {
	return fmt.Sprintf("weft.vxlan ifindex %d; routes %q; neighbours %q; FDB %q", k.vxlanIndex, k.routes, k.neigh, k.fdb)
}

func raKernel(t *testing.T, h *testbed.Host) raKernelState {
	t.Helper()
	var k raKernelState
	var err error
	if k.routes, err = wlWeftRoutes(h); err != nil {
		t.Fatal(err)
	}
	l, err := wlLinkNamed(h.Netns(), wlVXLAN)
	if err != nil {
		t.Fatal(err)
	}
	if l == nil {
		return k // no device: no neighbours or FDB entries on it either
	}
	k.vxlanIndex = l.Index
	if k.neigh, err = wlVXLANNeighbours(h); err != nil {
		t.Fatal(err)
	}
	if k.fdb, err = wlVXLANFDB(h); err != nil {
		t.Fatal(err)
	}
	return k
}

func raStatusErr(h *testbed.Host) (*localapi.NodeStatus, error) {
	out, err := h.Weft("node", "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var st localapi.NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("weft node status -o json printed %q: %w", out, err)
	}
	return &st, nil
}

func raStatus(t *testing.T, h *testbed.Host) *localapi.NodeStatus {
	t.Helper()
	st, err := raStatusErr(h)
	if err != nil {
		t.Fatalf("%s: %v", h.Name(), err)
	}
	if st.Datastore == nil {
		t.Fatalf("%s: node status has no datastore yet", h.Name())
	}
	return st
}

func raComponentReady(st *localapi.NodeStatus, name string) bool {
	for _, c := range st.Components {
		if c.Name == name {
			return c.Ready
		}
	}
	return false
}

func raLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
