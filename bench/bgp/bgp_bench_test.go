package bgpbench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/bgptest"
	"github.com/weftnet/weft/internal/testbed"
)

var (
	restarts = flag.Int("bgp.restarts", 10, "agent restarts timed in BenchmarkBGPConvergence")
	blocks   = flag.Int("bgp.blocks", 20, "new blocks timed in BenchmarkBGPConvergence")
	rounds   = flag.Int("bgp.rounds", 5, "rounds of BenchmarkBGPImport10k")
	prefixes = flag.Int("bgp.prefixes", 10000, "prefixes BIRD announces in BenchmarkBGPImport10k and BenchmarkBGPScale49")
	peers    = flag.Int("bgp.peers", 49, "peers of BenchmarkBGPScale49")
	heapProf = flag.String("bgp.heapprofile", "", "BenchmarkBGPScale49 saves the agent's heap profile in the steady state here")
	agentEnv = flag.String("bgp.agent-env", "", "extra environment of the agents, comma-separated (e.g. GOGC=50)")
)

// benchTOML: production log level (the test bed defaults to debug).
const benchTOML = "[log]\nlevel = \"info\"\n"

func newSite(b *testing.B, hosts int, extra string) *testbed.Site {
	b.Helper()
	var env []string
	if *agentEnv != "" {
		env = strings.Split(*agentEnv, ",")
	}
	return testbed.New(b, testbed.Options{Hosts: hosts, NoStart: true, ReadyTimeout: 90 * time.Second,
		ExtraTOML: benchTOML + extra, AgentEnv: env})
}

func apply(b *testing.B, h *testbed.Host, docs string) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte(docs), 0o600); err != nil {
		b.Fatal(err)
	}
	if out, err := h.Weft("apply", "-f", path); err != nil {
		b.Fatalf("weft apply: %v %s", err, out)
	}
}

func routerPeer(site *testbed.Site) string {
	return fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: router}\nspec: {peerIP: %q, asNumber: %d}\n",
		site.RouterAddress(), bgptest.RouterAS)
}

// waitFor polls cond every 20 ms until it holds; it returns how long that
// took, or fails the benchmark after timeout.
func waitFor(b *testing.B, what string, timeout time.Duration, cond func() (bool, error)) time.Duration {
	b.Helper()
	start := time.Now()
	for {
		ok, err := cond()
		if err == nil && ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			b.Fatalf("%s: not within %s (%v)", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }

// BenchmarkBGPConvergence: a three-node cluster with BIRD as the site's
// router. (1) kill -9 of an agent and its start → all its sessions
// (mesh and router) Established again, bgp.restarts times; (2) a block
// claimed by a workload add → the block in BIRD's table, bgp.blocks times
// (pool of /30 blocks: every fourth add claims one), against the add's own
// wall time.
func BenchmarkBGPConvergence(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	site := newSite(b, 3, "[[network.pool]]\nname = \"p\"\ncidr = \"10.247.0.0/16\"\nblock_size = 30\nvxlan_mode = \"Never\"\n")
	cold := time.Now()
	if err := site.StartCluster(context.Background()); err != nil {
		b.Fatal(err)
	}
	hosts := site.Hosts()
	r := bgptest.StartBIRD(b, site.Router(), "router", bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: bgptest.NodePeers(hosts, false)}.Config())
	apply(b, hosts[0], routerPeer(site))
	all := func(h *testbed.Host) []string {
		var as []string
		for _, o := range hosts {
			if o != h {
				as = append(as, o.Address())
			}
		}
		return append(as, site.RouterAddress())
	}
	for _, h := range hosts {
		waitFor(b, h.Name()+" sessions", 120*time.Second, func() (bool, error) { return bgptest.SessionsUp(h, all(h)...) == nil, nil })
	}
	coldTook := time.Since(cold)

	var restart []time.Duration
	victim := hosts[1]
	for i := range *restarts {
		_ = i
		if err := victim.Kill9(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := victim.StartAgent(); err != nil {
			b.Fatal(err)
		}
		waitFor(b, "sessions after a restart", 120*time.Second, func() (bool, error) { return bgptest.SessionsUp(victim, all(victim)...) == nil, nil })
		restart = append(restart, time.Since(start))
	}

	var claim, adds []time.Duration
	h := hosts[0]
	known := map[string]bool{}
	if rs, err := r.Routes(); err == nil {
		for p := range rs {
			known[p] = true
		}
	}
	for i := 0; len(claim) < *blocks; i++ {
		w := site.AddWorkload(h, "b"+strconv.Itoa(i))
		start := time.Now()
		if out, err := h.Weft("workload", "add", w.Name(), "--netns", w.Path()); err != nil {
			b.Fatalf("workload add: %v %s", err, out)
		}
		added := time.Since(start)
		if i%4 != 0 {
			continue // the block of this add was claimed by an earlier one
		}
		d := waitFor(b, "the new block in BIRD's table", 30*time.Second, func() (bool, error) {
			rs, err := r.Routes()
			if err != nil {
				return false, err
			}
			for p := range rs {
				if !known[p] {
					known[p] = true
					return true, nil
				}
			}
			return false, nil
		})
		claim = append(claim, added+d)
		adds = append(adds, added)
	}
	fmt.Printf("\nBGP convergence, 3 nodes + BIRD (load %s)\n\n", loadavg())
	fmt.Printf("| measure | n | p50 (ms) | p99 (ms) | max (ms) |\n| --- | --- | --- | --- | --- |\n")
	fmt.Printf("| cluster start (3 agents) → every session Established | 1 | %s | %s | %s |\n", ms(coldTook), ms(coldTook), ms(coldTook))
	fmt.Printf("| kill -9 + start of an agent → its sessions Established | %d | %s | %s | %s |\n", len(restart), ms(percentile(restart, .5)), ms(percentile(restart, .99)), ms(percentile(restart, 1)))
	fmt.Printf("| `weft workload add` claiming a block (baseline) | %d | %s | %s | %s |\n", len(adds), ms(percentile(adds, .5)), ms(percentile(adds, .99)), ms(percentile(adds, 1)))
	fmt.Printf("| add started → its new block in BIRD's table | %d | %s | %s | %s |\n", len(claim), ms(percentile(claim, .5)), ms(percentile(claim, .99)), ms(percentile(claim, 1)))
}

// countRoutes counts the IPv4 main-table routes of a protocol in ns.
func countRoutes(ns *testbed.Netns, proto int) (int, error) {
	n := 0
	err := ns.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: netlink.RouteProtocol(proto)},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		n = len(rs)
		return err
	})
	return n, err
}

// BenchmarkBGPImport10k: BIRD as the site's router announces bgp.prefixes
// routes at once (`birdc enable flood`) to a weft node (h1) and to a BIRD
// in h2's namespace acting as a node (its own kernel protocol programs
// them): the time until each kernel holds them all, and back to none after
// `birdc disable flood`, both measured in the same rounds.
func BenchmarkBGPImport10k(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	site := newSite(b, 2, "")
	hosts := site.Hosts()
	h1, h2 := hosts[0], hosts[1]
	if err := h1.StartAgent(); err != nil {
		b.Fatal(err)
	}
	if err := h1.WaitReady(context.Background()); err != nil {
		b.Fatal(err)
	}
	router := bgptest.StartBIRD(b, site.Router(), "router", bgptest.RouterConfig{RouterID: site.RouterAddress(),
		Peers: []bgptest.Peer{{Name: "weftnode", Addr: h1.Address(), AS: bgptest.NodeAS}, {Name: "birdnode", Addr: h2.Address(), AS: bgptest.NodeAS}},
		Flood: *prefixes, FloodDisabled: true}.Config())
	bgptest.StartBIRD(b, h2.Netns(), "bird-node", bgptest.ClientConfig(h2.Address(), site.RouterAddress(), bgptest.RouterAS))
	apply(b, h1, routerPeer(site))
	waitFor(b, "h1's session", 60*time.Second, func() (bool, error) { return bgptest.SessionsUp(h1, site.RouterAddress()) == nil, nil })
	waitFor(b, "the BIRD node's session", 60*time.Second, func() (bool, error) {
		out, err := router.Birdc("show", "protocols", "birdnode")
		return strings.Contains(out, "Established"), err
	})
	const protoBIRD = 12
	type result struct{ weft, bird time.Duration }
	measure := func(want int) result {
		start := time.Now()
		doneW, doneB := make(chan time.Duration, 1), make(chan time.Duration, 1)
		watch := func(ns *testbed.Netns, proto int, out chan<- time.Duration) {
			for time.Since(start) < 5*time.Minute {
				if n, err := countRoutes(ns, proto); err == nil && n == want {
					out <- time.Since(start)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			out <- -1
		}
		go watch(h1.Netns(), 88, doneW)
		go watch(h2.Netns(), protoBIRD, doneB)
		return result{<-doneW, <-doneB}
	}
	var in, out []result
	for i := range *rounds {
		_ = i
		if _, err := router.Birdc("enable", "flood"); err != nil {
			b.Fatal(err)
		}
		in = append(in, measure(*prefixes))
		if _, err := router.Birdc("disable", "flood"); err != nil {
			b.Fatal(err)
		}
		out = append(out, measure(0))
	}
	report := func(what string, rs []result) {
		var w, bd []time.Duration
		var cells []string
		for _, r := range rs {
			if r.weft < 0 || r.bird < 0 {
				b.Fatalf("%s: a round timed out: %+v", what, rs)
			}
			w, bd = append(w, r.weft), append(bd, r.bird)
			cells = append(cells, ms(r.weft)+"/"+ms(r.bird))
		}
		mw, mb := percentile(w, .5), percentile(bd, .5)
		fmt.Printf("| %s | %s | %s | %s | %.2f |\n", what, strings.Join(cells, ", "), ms(mw), ms(mb), float64(mb)/float64(mw))
	}
	fmt.Printf("\n%d prefixes from BIRD, weft (h1) against BIRD's kernel protocol (h2), %d rounds (load %s)\n\n", *prefixes, *rounds, loadavg())
	fmt.Printf("| event | rounds weft/BIRD (ms) | weft median (ms) | BIRD median (ms) | ratio BIRD/weft |\n| --- | --- | --- | --- | --- |\n")
	report("announced → all in the kernel", in)
	report("withdrawn → all gone from the kernel", out)
}

// BenchmarkBGPScale49: one weft node with bgp.peers iBGP peers (gobgp
// speakers in the router namespace, like 49 mesh peers), the first of
// which announces bgp.prefixes routes: the agent's RSS and CPU, idle
// without peers (the baseline) and in the steady state with them.
func BenchmarkBGPScale49(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	site := newSite(b, 1, "")
	h := site.Hosts()[0]
	if err := h.StartAgent(); err != nil {
		b.Fatal(err)
	}
	if err := h.WaitReady(context.Background()); err != nil {
		b.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	idleRSS, idleCPU := sample(b, h, 20*time.Second)

	var addrs []string
	a := site.Subnet().Addr()
	for range 100 {
		a = a.Next()
	}
	for range *peers {
		addrs = append(addrs, a.String())
		if _, err := site.Router().Exec("ip", "addr", "add", a.String()+"/"+strconv.Itoa(site.Subnet().Bits()), "dev", "br0"); err != nil {
			b.Fatal(err)
		}
		a = a.Next()
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envPeers+"="+strings.Join(addrs, ","), envNode+"="+h.Address(), envPrefixes+"="+strconv.Itoa(*prefixes))
	cmd.Stderr = os.Stderr
	if err := site.Router().Launch(cmd); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var docs strings.Builder
	for i, pa := range addrs {
		fmt.Fprintf(&docs, "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p%d}\nspec: {peerIP: %q, asNumber: %d}\n---\n", i, pa, bgptest.NodeAS)
	}
	start := time.Now()
	apply(b, h, docs.String())
	took := waitFor(b, "every session up", 5*time.Minute, func() (bool, error) { return bgptest.SessionsUp(h, addrs...) == nil, nil })
	waitFor(b, "the prefixes in the kernel", 5*time.Minute, func() (bool, error) {
		n, err := countRoutes(h.Netns(), 88)
		return n == *prefixes, err
	})
	loaded := time.Since(start)
	time.Sleep(5 * time.Second)
	rss, cpu := sample(b, h, 30*time.Second)
	if sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", h.PID())); err == nil {
		for _, l := range strings.Split(string(sm), "\n") {
			if strings.HasPrefix(l, "Rss:") || strings.HasPrefix(l, "Anonymous:") || strings.HasPrefix(l, "Pss_File:") || strings.HasPrefix(l, "Pss_Anon:") {
				fmt.Println("agent", strings.Join(strings.Fields(l), " "))
			}
		}
	}
	if *heapProf != "" {
		out, err := exec.Command("curl", "-sf", "--unix-socket", h.Socket(), "-o", *heapProf, "http://weft/debug/pprof/heap").CombinedOutput()
		if err != nil {
			b.Logf("heap profile: %v %s", err, out)
		}
	}
	fmt.Printf("\nOne agent with %d iBGP peers and %d learned prefixes (load %s)\n\n", *peers, *prefixes, loadavg())
	fmt.Printf("| state | RSS (MB) | CPU (%% of one core) |\n| --- | --- | --- |\n")
	fmt.Printf("| idle, no peers (baseline) | %.1f | %.2f |\n", idleRSS, idleCPU)
	fmt.Printf("| %d peers up, %d prefixes in the kernel, steady | %.1f | %.2f |\n", *peers, *prefixes, rss, cpu)
	fmt.Printf("\nsessions up after %s, prefixes in the kernel after %s; RSS ratio %.2f; target RSS < 60 MB: %s\n",
		took.Round(time.Millisecond), loaded.Round(time.Millisecond), rss/idleRSS, map[bool]string{true: "met", false: "NOT met"}[rss < 60])
}

// sample returns the agent's median RSS (MB) over five samples and its CPU
// use (% of one core) over d.
func sample(b *testing.B, h *testbed.Host, d time.Duration) (float64, float64) {
	b.Helper()
	pid := h.PID()
	t0, c0 := time.Now(), cpuTicks(b, pid)
	var rs []float64
	for range 5 {
		rs = append(rs, rssMB(b, pid))
		time.Sleep(d / 5)
	}
	cpu := float64(cpuTicks(b, pid)-c0) / 100 / time.Since(t0).Seconds() * 100
	slices.Sort(rs)
	return rs[2], cpu
}

func rssMB(b *testing.B, pid int) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// cpuTicks is utime+stime of pid in clock ticks (100 Hz).
func cpuTicks(b *testing.B, pid int) int {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
