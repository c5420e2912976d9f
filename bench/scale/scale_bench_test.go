// Package scalebench measures the datastore at 10 to 50 nodes (issue 14):
// N real `weft agent`s, each in its own network namespace of
// internal/testbed, 3 voters and the rest non-voters. See README.md.
package scalebench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

var (
	sizesFlag     = flag.String("scale.nodes", "10,20,30,50", "cluster sizes, comma-separated")
	hogFlag       = flag.Int("scale.hog", 0, "busy loops (sh -c 'while :; do :; done') running beside the agents")
	idleFlag      = flag.Duration("scale.idle", 30*time.Second, "idle CPU measurement window")
	settleFlag    = flag.Duration("scale.settle", 15*time.Second, "wait after the voters settled, before the idle window")
	writesFlag    = flag.Int("scale.writes", 100, "writes of the write-to-visible phase")
	rateFlag      = flag.Int("scale.rate", 4, "writes per second of the write-to-visible phase (every node applies every write: 50 agents on 2 cores saturate at about 8/s)")
	watchersFlag  = flag.Int("scale.watchers", 10, "nodes watching in the write-to-visible phase")
	addsFlag      = flag.Int("scale.adds-per-node", 2, "concurrent `weft workload add`s per node")
	reachFlag     = flag.Int("scale.reach", 5, "workloads of the reachability phase (each probed from 5 other nodes)")
	baselineFlag  = flag.String("scale.baseline", "", "a second weft binary measured the same way in the same run (e.g. the previous commit)")
	baseSizesFlag = flag.String("scale.baseline-nodes", "50", "sizes at which the baseline binary is measured too")
	profileFlag   = flag.String("scale.profile", "", "directory for the leader's CPU profile over the idle window and heap profile after it")
	envFlag       = flag.String("scale.agent-env", "", "environment for every agent, comma-separated K=V (e.g. GOGC=50)")
	coolFlag      = flag.Duration("scale.cool-down", 30*time.Second, "pause after a cluster is torn down, before the next one forms")
	holdFlag      = flag.Duration("scale.hold", 0, "keep each cluster this long after its phases (to inspect it by hand)")
	phasesFlag    = flag.String("scale.phases", "idle,visible,adds,reach,kill", "phases to run after formation")
)

// benchTOML: production log level (the test bed defaults to debug, whose
// cost would be measured too); BGP plays no part.
const benchTOML = "[log]\nlevel = \"info\"\n[bgp]\nenabled = false\n"

// result is one cluster's figures.
type result struct {
	binary string
	nodes  int

	formation, settled time.Duration // all ready; 3 healthy voters and every member healthy
	unsettled          bool          // not settled within 3 minutes
	votersFormed       int

	leaderCPU, voterCPU, followerCPU float64 // % of one core while idle
	leaderRSS, followerRSS           float64 // MB

	visP50, visP99  time.Duration // write → visible in every watch
	writerPerWrite  time.Duration // CPU per write, idle share subtracted: the non-voter the writes go through
	passivePerWrite time.Duration // a non-voter that only replicates
	leaderPerWrite  time.Duration

	addP50, addP99, addMax time.Duration
	adds, addFailures      int
	addErrors              []string
	leaderChanges          int // seen by the leader during the burst

	reachP50, reachMax time.Duration

	killToWrite   time.Duration
	killDemoted   time.Duration // the dead leader no longer a voter (voter failover)
	killSettled   time.Duration
	votersAfter   int
	healthyVoters int

	load string
}

func BenchmarkScale(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x: one iteration is the whole measurement")
	}
	var sizes []int
	for _, s := range strings.Split(*sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 4 {
			b.Fatalf("-scale.nodes: bad size %q", s)
		}
		sizes = append(sizes, n)
	}
	baseSizes := map[int]bool{}
	for _, s := range strings.Split(*baseSizesFlag, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			baseSizes[n] = true
		}
	}
	if *hogFlag > 0 {
		startHog(b, *hogFlag)
	}
	bin := os.Getenv("WEFT_BIN")
	var results []*result
	for i, n := range sizes {
		bins := []string{bin}
		if *baselineFlag != "" && baseSizes[n] {
			bins = append(bins, *baselineFlag)
			if i%2 == 1 {
				slices.Reverse(bins)
			}
		}
		for _, bb := range bins {
			label := "this"
			if bb == *baselineFlag {
				label = "baseline"
			}
			var r *result
			b.Run(fmt.Sprintf("nodes=%d/%s", n, label), func(b *testing.B) { r = runCluster(b, n, bb, label) })
			if r != nil {
				results = append(results, r)
				fmt.Fprintln(os.Stdout, table([]*result{r}))
			}
		}
	}
	fmt.Fprintf(os.Stdout, "\nAll sizes (%d CPUs, %d hog loops):\n\n%s\n", runtime.NumCPU(), *hogFlag, table(results))
}

func table(rs []*result) string {
	var sb strings.Builder
	sb.WriteString("| binary | nodes | load | formation s (voters settled s) | voters | idle CPU % leader / voter / non-voter | RSS MB leader / non-voter | write→visible p50 / p99 ms | CPU per write ms: replica / writer / leader | concurrent adds p50 / p99 / max ms | add failures | leader changes in burst | add→reachable from 5 p50 / max ms | leader kill→write s | dead voter demoted after s | voters after kill (healthy), settled s |\n")
	sb.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rs {
		fmt.Fprintf(&sb, "| %s | %d | %s | %s (%s) | %d | %.1f / %.1f / %.1f | %.1f / %.1f | %s / %s | %.2f / %.2f / %.2f | %s / %s / %s | %d of %d | %d | %s / %s | %s | %s | %d (%d), %s |\n",
			r.binary, r.nodes, r.load, secs(r.formation), secs(r.settled), r.votersFormed,
			r.leaderCPU, r.voterCPU, r.followerCPU, r.leaderRSS, r.followerRSS,
			ms(r.visP50), ms(r.visP99), float64(r.passivePerWrite)/1e6, float64(r.writerPerWrite)/1e6, float64(r.leaderPerWrite)/1e6,
			ms(r.addP50), ms(r.addP99), ms(r.addMax), r.addFailures, r.adds, r.leaderChanges,
			ms(r.reachP50), ms(r.reachMax), secs(r.killToWrite), secs(r.killDemoted), r.votersAfter, r.healthyVoters, secs(r.killSettled))
	}
	for _, r := range rs {
		if r.unsettled {
			fmt.Fprintf(&sb, "\n%s, %d nodes: never settled to 3 healthy voters within 3 minutes (voters column: what it had)", r.binary, r.nodes)
		}
	}
	for _, r := range rs {
		for _, e := range r.addErrors {
			fmt.Fprintf(&sb, "\n%s, %d nodes: add failed: %s", r.binary, r.nodes, e)
		}
	}
	return sb.String()
}

func phase(name string) bool { return slices.Contains(strings.Split(*phasesFlag, ","), name) }

// runCluster forms a cluster of n agents running bin and measures it.
func runCluster(b *testing.B, n int, bin, label string) *result {
	r := &result{binary: label, nodes: n, load: loadAverage()}
	var env []string
	if *envFlag != "" {
		env = strings.Split(*envFlag, ",")
	}
	b.Cleanup(func() { sleep(context.Background(), *coolFlag) })
	site := testbed.New(b, testbed.Options{
		Hosts: n, NoStart: true, Binary: bin, AgentEnv: env,
		ReadyTimeout: 5 * time.Minute, ExpectTimeout: time.Minute, StopTimeout: 10 * time.Second,
		ExtraTOML: benchTOML,
	})
	hosts := site.Hosts()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	// Formation: the first node bootstraps, all others join at once.
	start := time.Now()
	if err := site.StartCluster(ctx); err != nil {
		b.Fatal(err)
	}
	r.formation = time.Since(start)
	if !waitSettled(ctx, b, hosts[0], n, 3*time.Minute) {
		r.unsettled = true // measured anyway: what it is is the finding
	}
	r.settled = time.Since(start)
	ms, err := members(ctx, hosts[0])
	if err != nil {
		b.Fatal(err)
	}
	r.votersFormed, _, _ = voterCounts(ms)
	leader, voter, nonVoter, passive := roles(b, site, ms)
	b.Logf("%d nodes formed in %s, settled in %s; leader %s, voter %s, non-voter %s", n, r.formation, r.settled, leader.Name(), voter.Name(), nonVoter.Name())

	sleep(ctx, *settleFlag)
	idleRate := map[int]float64{}
	if phase("idle") {
		m, err := startCPU(leader.PID(), voter.PID(), nonVoter.PID(), passive.PID())
		if err != nil {
			b.Fatal(err)
		}
		profiled := make(chan struct{})
		go func() {
			defer close(profiled)
			profile(ctx, b, leader, fmt.Sprintf("%s-%d-leader-cpu.pprof", label, n), "profile", fmt.Sprintf("seconds=%d", int(idleFlag.Seconds())))
		}()
		sleep(ctx, *idleFlag)
		<-profiled
		profile(ctx, b, leader, fmt.Sprintf("%s-%d-leader-heap.pprof", label, n), "heap", "")
		used, wall, err := m.used()
		if err != nil {
			b.Fatal(err)
		}
		for pid, d := range used {
			idleRate[pid] = float64(d) / float64(wall)
		}
		r.leaderCPU = 100 * idleRate[leader.PID()]
		r.voterCPU = 100 * idleRate[voter.PID()]
		r.followerCPU = 100 * idleRate[nonVoter.PID()]
		if r.leaderRSS, err = medianRSS(leader.PID()); err != nil {
			b.Fatal(err)
		}
		if r.followerRSS, err = medianRSS(nonVoter.PID()); err != nil {
			b.Fatal(err)
		}
	}
	// Voters once settled (formation, then the settle and idle periods):
	// cluster.voters is 3.
	if ms, err := members(ctx, leader); err == nil {
		r.votersFormed, _, _ = voterCounts(ms)
	}
	if phase("visible") {
		writeToVisible(ctx, b, r, hosts, leader, nonVoter, passive, idleRate)
	}
	if phase("adds") {
		concurrentAdds(ctx, b, r, site, currentLeader(ctx, b, site, nonVoter))
	}
	if phase("reach") {
		reachability(ctx, b, r, site)
	}
	if phase("kill") {
		leaderKill(ctx, b, r, hosts, currentLeader(ctx, b, site, nonVoter), nonVoter)
	}
	if *holdFlag > 0 {
		b.Logf("holding: leader %s (pid %d, socket %s), non-voter %s (pid %d, socket %s)", leader.Name(), leader.PID(), leader.Socket(), nonVoter.Name(), nonVoter.PID(), nonVoter.Socket())
		sleep(ctx, *holdFlag)
	}
	return r
}

// profile saves a pprof profile of h's agent into *profileFlag, if set.
func profile(ctx context.Context, b *testing.B, h *testbed.Host, file, name, query string) {
	if *profileFlag == "" {
		return
	}
	body, err := localapi.NewClient(h.Socket()).Profile(ctx, name, query)
	if err != nil {
		b.Logf("profile %s: %v", name, err)
		return
	}
	defer body.Close()
	f, err := os.Create(filepath.Join(*profileFlag, file))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, body); err != nil {
		b.Logf("profile %s: %v", name, err)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// waitSettled waits until h reports n members, all healthy, 3 of them
// voters; false (logged) if that does not happen within limit.
func waitSettled(ctx context.Context, b *testing.B, h *testbed.Host, n int, limit time.Duration) bool {
	b.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		ms, err := members(ctx, h)
		v, hv, _ := voterCounts(ms)
		if err == nil && len(ms) == n && v == 3 && hv == 3 && allHealthy(ms) {
			return true
		}
		last = fmt.Sprintf("%d members, %d voters (%d healthy), all healthy %v, err %v", len(ms), v, hv, allHealthy(ms), err)
		sleep(ctx, 200*time.Millisecond)
	}
	b.Logf("cluster of %d did not settle within %s: %s", n, limit, last)
	return false
}

// currentLeader is the host that leads now, as h's agent reports it.
func currentLeader(ctx context.Context, b *testing.B, site *testbed.Site, h *testbed.Host) *testbed.Host {
	b.Helper()
	for range 50 {
		ms, err := members(ctx, h)
		if _, _, name := voterCounts(ms); err == nil && name != "" {
			return site.Host(name)
		}
		sleep(ctx, 200*time.Millisecond)
	}
	b.Fatalf("no leader known to %s", h.Name())
	return nil
}

// roles picks the leader, another voter and two non-voters (the last two
// in name order: the first writes, the other only replicates).
func roles(b *testing.B, site *testbed.Site, ms []localapi.Member) (leader, voter, nonVoter, passive *testbed.Host) {
	b.Helper()
	for _, m := range ms {
		h := site.Host(m.Name)
		switch m.Role {
		case "leader":
			leader = h
		case "voter":
			voter = h
		case "nonvoter":
			passive, nonVoter = nonVoter, h
		}
	}
	if leader == nil || voter == nil || nonVoter == nil || passive == nil {
		b.Fatalf("roles: %+v", ms)
	}
	return leader, voter, nonVoter, passive
}

// writeToVisible writes *writesFlag GlobalNetworkSets at *rateFlag/s
// through the non-voter writer's socket while up to *watchersFlag other
// nodes (the leader among them) watch; a write's latency is from sending it
// to its arrival in the last watch. The CPU over the phase of the writer, the
// leader and a passive non-voter (no watch), less their idle share, divided
// by the writes, is their CPU per write.
func writeToVisible(ctx context.Context, b *testing.B, r *result, hosts []*testbed.Host, leader, writer, passive *testbed.Host, idleRate map[int]float64) {
	b.Helper()
	var watchers []*testbed.Host
	watchers = append(watchers, leader)
	for _, h := range hosts {
		if len(watchers) >= *watchersFlag {
			break
		}
		if h != leader && h != writer && h != passive {
			watchers = append(watchers, h)
		}
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	arrivals := make(chan arrival, 4096)
	var wg sync.WaitGroup
	for _, h := range watchers {
		synced := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := watchNames(wctx, h, synced, arrivals); err != nil {
				b.Error(err)
			}
		}()
		select {
		case <-synced:
		case <-time.After(30 * time.Second):
			b.Fatalf("watch on %s: no SYNC", h.Name())
		}
	}
	defer wg.Wait()
	defer wcancel()

	sent := make([]time.Time, *writesFlag)
	seen := make([]map[string]time.Time, *writesFlag)
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		remaining := *writesFlag * len(watchers)
		for remaining > 0 {
			select {
			case a := <-arrivals:
				i, err := strconv.Atoi(strings.TrimPrefix(a.name, "vis-"))
				if err != nil || i < 0 || i >= len(seen) {
					continue
				}
				mu.Lock()
				if seen[i] == nil {
					seen[i] = map[string]time.Time{}
				}
				if _, dup := seen[i][a.host]; !dup {
					seen[i][a.host] = a.at
					remaining--
				}
				mu.Unlock()
			case <-wctx.Done():
				return
			}
		}
	}()

	m, err := startCPU(writer.PID(), leader.PID(), passive.PID())
	if err != nil {
		b.Fatal(err)
	}
	c := localapi.NewClient(writer.Socket())
	interval := time.Second / time.Duration(*rateFlag)
	var wwg sync.WaitGroup
	var failures int
	var fmu sync.Mutex
	for i := range *writesFlag {
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := putNetworkSet(cctx, c, "vis-"+strconv.Itoa(i), i); err != nil {
				fmu.Lock()
				failures++
				fmu.Unlock()
			}
		}()
		time.Sleep(interval)
	}
	wwg.Wait()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Errorf("write-to-visible: not every write arrived in every watch")
	}
	used, wall, err := m.used()
	if err != nil {
		b.Fatal(err)
	}
	perWrite := func(pid int) time.Duration {
		busy := float64(used[pid]) - idleRate[pid]*float64(wall)
		return time.Duration(max(0, busy) / float64(*writesFlag))
	}
	r.writerPerWrite = perWrite(writer.PID())
	r.passivePerWrite = perWrite(passive.PID())
	r.leaderPerWrite = perWrite(leader.PID())
	mu.Lock()
	var lat []time.Duration
	for i := range seen {
		if len(seen[i]) < len(watchers) {
			continue
		}
		var last time.Time
		for _, at := range seen[i] {
			if at.After(last) {
				last = at
			}
		}
		lat = append(lat, last.Sub(sent[i]))
	}
	mu.Unlock()
	slices.Sort(lat)
	r.visP50, r.visP99 = quantile(lat, 0.5), quantile(lat, 0.99)
	if failures > 0 {
		b.Logf("write-to-visible: %d writes failed", failures)
	}
}

// concurrentAdds runs *addsFlag `weft workload add`s per node, all at
// once, each through its node's socket.
func concurrentAdds(ctx context.Context, b *testing.B, r *result, site *testbed.Site, leader *testbed.Host) {
	b.Helper()
	var ws []*testbed.Workload
	for _, h := range site.Hosts() {
		for j := range *addsFlag {
			ws = append(ws, site.AddWorkload(h, fmt.Sprintf("c%s-%d", h.Name(), j)))
		}
	}
	logOffset := len(leader.Logs())
	startGate := make(chan struct{})
	lat := make([]time.Duration, len(ws))
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGate
			t0 := time.Now()
			_, errs[i] = addWorkload(w)
			lat[i] = time.Since(t0)
		}()
	}
	close(startGate)
	wg.Wait()
	r.adds = len(ws)
	var ok []time.Duration
	for i, err := range errs {
		if err != nil {
			r.addFailures++
			r.addErrors = append(r.addErrors, fmt.Sprintf("%s: %v", ws[i].Host().Name(), oneLine(err.Error())))
			continue
		}
		ok = append(ok, lat[i])
	}
	slices.Sort(ok)
	r.addP50, r.addP99 = quantile(ok, 0.5), quantile(ok, 0.99)
	if len(ok) > 0 {
		r.addMax = ok[len(ok)-1]
	}
	r.leaderChanges = countInLog(leader, logOffset, "leader changed")
}

func oneLine(s string) string {
	if _, after, ok := strings.Cut(s, "exit status 1: "); ok {
		s = after // the nsenter command line says nothing new
	}
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", " | ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// addWorkload runs `weft workload add` for w and returns its IPv4 address.
func addWorkload(w *testbed.Workload) (string, error) {
	out, err := w.Host().Weft("workload", "add", w.Name(), "--netns", w.Path(), "-o", "json")
	if err != nil {
		return "", err
	}
	var info localapi.Workload
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return "", fmt.Errorf("weft workload add printed %q: %w", out, err)
	}
	for _, p := range info.IPs {
		if pp, err := netip.ParsePrefix(p); err == nil && pp.Addr().Is4() {
			return pp.Addr().String(), nil
		}
	}
	return "", fmt.Errorf("no IPv4 address in %+v", info)
}

// reachability adds *reachFlag workloads, each on another node, each with a
// TCP listener; from the moment its add returns, 5 other nodes connect to
// it (a fresh attempt at most every 10 ms) until all succeeded.
func reachability(ctx context.Context, b *testing.B, r *result, site *testbed.Site) {
	b.Helper()
	hosts := site.Hosts()
	var lat []time.Duration
	for i := range *reachFlag {
		h := hosts[(i*len(hosts))/(*reachFlag)]
		w := site.AddWorkload(h, "reach"+strconv.Itoa(i))
		w.Netns().ServeTCP("0.0.0.0:8080")
		ip, err := addWorkload(w)
		if err != nil {
			b.Fatalf("reachability: add on %s: %v", h.Name(), err)
		}
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slowest time.Duration
		for k := 1; k <= 5; k++ {
			from := hosts[(slices.Index(hosts, h)+k*len(hosts)/6+1)%len(hosts)]
			if from == h {
				from = hosts[(slices.Index(hosts, h)+k)%len(hosts)]
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				for pctx.Err() == nil {
					actx, acancel := context.WithTimeout(pctx, 10*time.Millisecond)
					c, err := from.Netns().DialContext(actx, "tcp", net.JoinHostPort(ip, "8080"))
					acancel()
					if err == nil {
						c.Close()
						d := time.Since(start)
						mu.Lock()
						slowest = max(slowest, d)
						mu.Unlock()
						return
					}
					sleep(pctx, 2*time.Millisecond)
				}
				b.Errorf("reachability: %s never reached %s on %s", from.Name(), ip, h.Name())
			}()
		}
		wg.Wait()
		lat = append(lat, slowest)
	}
	slices.Sort(lat)
	r.reachP50 = quantile(lat, 0.5)
	if len(lat) > 0 {
		r.reachMax = lat[len(lat)-1]
	}
}

// leaderKill kills the leader with SIGKILL while the writer writes every
// 20 ms, and measures the time to the first write that succeeds after the
// kill; then waits for the voters to settle again (3 healthy voters, the
// dead one demoted after the voter failover time) and counts them.
func leaderKill(ctx context.Context, b *testing.B, r *result, hosts []*testbed.Host, leader, writer *testbed.Host) {
	b.Helper()
	c := localapi.NewClient(writer.Socket())
	var killed time.Time
	var mu sync.Mutex
	firstOK := make(chan time.Time, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		for i := 0; wctx.Err() == nil; i++ {
			t0 := time.Now()
			cctx, cancel := context.WithTimeout(wctx, 2*time.Second)
			err := putNetworkSet(cctx, c, "kill-"+strconv.Itoa(i%50), i)
			cancel()
			mu.Lock()
			after := !killed.IsZero() && t0.After(killed)
			mu.Unlock()
			if err == nil && after {
				firstOK <- time.Now()
				return
			}
			sleep(wctx, 20*time.Millisecond)
		}
	}()
	sleep(ctx, time.Second)
	mu.Lock()
	killed = time.Now()
	mu.Unlock()
	if err := leader.Kill9(); err != nil {
		b.Fatal(err)
	}
	select {
	case t := <-firstOK:
		r.killToWrite = t.Sub(killed)
	case <-time.After(time.Minute):
		b.Errorf("no write succeeded within a minute of killing the leader")
	}
	wcancel()
	// Settled: 3 voters, all healthy (the dead one demoted), or 2 minutes.
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		ms, err := members(ctx, writer)
		v, hv, _ := voterCounts(ms)
		r.votersAfter, r.healthyVoters = v, hv
		if err == nil && r.killDemoted == 0 {
			for _, m := range ms {
				if m.Name == leader.Name() && m.Role == "nonvoter" {
					r.killDemoted = time.Since(killed)
				}
			}
		}
		if err == nil && v == 3 && hv == 3 {
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	r.killSettled = time.Since(killed)
}
