// Package ipambench measures IPAM allocation on a real three-node weft
// cluster (issue 4): allocation throughput with the three nodes allocating
// concurrently, and the latency of one allocation, each against a plain
// store write measured in the same run with the same concurrency.
//
// Each node is a network namespace of internal/testbed running the real
// `weft agent`; the clients call each agent's local API over its unix
// socket, as `weft`, the CNI plugin and orchestrators do. See README.md.
package ipambench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/bench/internal/stats"
	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/localapi"
)

var (
	perNode = flag.Int("ipam.per-node", 600, "requests per node in each concurrent phase (a node holds at most 20 /26 blocks = 1280 addresses)")
	clients = flag.Int("ipam.clients", 16, "concurrent clients per node in the concurrent phases")
	rounds  = flag.Int("ipam.rounds", 5, "rounds; each runs the store-write and the allocation phase, in alternating order")
	serial  = flag.Int("ipam.serial", 1000, "requests of the single-client latency phases (spread over the nodes)")
	profDir = flag.String("ipam.profile", "", "if set, a directory: a CPU profile of h1's agent during each concurrent phase of the last round is written there")
	profFor = flag.Duration("ipam.profile-seconds", 2*time.Second, "length of each CPU profile (-ipam.profile)")
)

// op is one kind of request under test.
type op struct {
	name string
	// do sends request i of round r from node h.
	do func(ctx context.Context, c *localapi.Client, node string, r, i int) error
	// undo removes what do created (untimed, between rounds).
	undo func(ctx context.Context, c *localapi.Client, node string, r, i int) error
}

// storeWrite is the baseline: `weft apply` of a small GlobalNetworkSet
// through the local API, one replicated store write.
var storeWrite = op{
	name: "store write (apply GlobalNetworkSet)",
	do: func(ctx context.Context, c *localapi.Client, node string, r, i int) error {
		doc := fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: %s\n  labels:\n    bench: ipam\nspec:\n  nets:\n  - 192.0.2.%d/32\n",
			name(node, r, i), i%256)
		_, err := c.Write(ctx, localapi.WriteRequest{Mode: localapi.ModeApply, Data: doc})
		return err
	},
	undo: func(ctx context.Context, c *localapi.Client, node string, r, i int) error {
		_, err := c.Delete(ctx, localapi.DeleteRequest{Kind: "GlobalNetworkSet", Name: name(node, r, i)})
		return err
	},
}

// allocation is ipam.assign of one IPv4 address for a new handle, as a
// workload add asks for it.
var allocation = op{
	name: "IPAM allocation (assign one IPv4)",
	do: func(ctx context.Context, c *localapi.Client, node string, r, i int) error {
		resp, err := c.IPAMAssign(ctx, ipam.AssignRequest{
			Handle: name(node, r, i), Num4: 1,
			Attrs: ipam.Attributes{Namespace: "bench", Workload: name(node, r, i), Type: ipam.TypeWorkload},
		})
		if err == nil && len(resp.Addresses) != 1 {
			err = fmt.Errorf("assign %s: %d addresses", name(node, r, i), len(resp.Addresses))
		}
		return err
	},
	undo: func(ctx context.Context, c *localapi.Client, node string, r, i int) error {
		_, err := c.IPAMReleaseHandle(ctx, name(node, r, i))
		return err
	},
}

func cpuCount() int { return runtime.NumCPU() }

func name(node string, r, i int) string { return fmt.Sprintf("bench-%s-r%d-%d", node, r, i) }

// result is one phase's measurements.
type result struct {
	ops       int
	wall      time.Duration
	latencies []time.Duration // sorted
	cpu       time.Duration   // CPU time the three agents used
}

// cpuPerOp is the agents' CPU time per request.
func (r result) cpuPerOp() time.Duration { return r.cpu / time.Duration(max(r.ops, 1)) }

func (r result) throughput() float64 { return float64(r.ops) / r.wall.Seconds() }

func (r result) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(len(r.latencies)-1, int(q*float64(len(r.latencies))))]
}

// node is one agent and its client.
type node struct {
	name string
	pid  int
	c    *localapi.Client
}

// cpuTime is the CPU time (user + system) the agents have used so far,
// from /proc/PID/stat.
func cpuTime(nodes []node) (time.Duration, error) {
	var total time.Duration
	for _, n := range nodes {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.pid))
		if err != nil {
			return 0, fmt.Errorf("agent %s: %w", n.name, err)
		}
		// The command may contain spaces: fields start after the last ')'.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("agent %s: short /proc stat %q", n.name, b)
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("agent %s: bad /proc stat %q", n.name, b)
		}
		total += time.Duration(utime+stime) * time.Second / clockTicks
	}
	return total, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTicks = 100

// runConcurrent runs op perNode times on every node with clients
// concurrent clients each, all nodes at once.
func runConcurrent(ctx context.Context, nodes []node, o op, round, perNode, clients int) (result, error) {
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	cpu0, err := cpuTime(nodes)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	for _, n := range nodes {
		jobs := make(chan int, perNode)
		for i := range perNode {
			jobs <- i
		}
		close(jobs)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := make([]time.Duration, 0, perNode/clients+1)
				for i := range jobs {
					t0 := time.Now()
					err := o.do(ctx, n.c, n.name, round, i)
					mine = append(mine, time.Since(t0))
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("%s on %s: %w", o.name, n.name, err))
						mu.Unlock()
						return
					}
				}
				mu.Lock()
				lats = append(lats, mine...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	wall := time.Since(start)
	cpu1, err := cpuTime(nodes)
	if err != nil {
		return result{}, err
	}
	if len(errs) > 0 {
		return result{}, errs[0]
	}
	slices.Sort(lats)
	return result{ops: len(lats), wall: wall, latencies: lats, cpu: cpu1 - cpu0}, nil
}

// runSerial runs op n times from one client, going round the nodes.
func runSerial(ctx context.Context, nodes []node, o op, round, n int) (result, error) {
	lats := make([]time.Duration, 0, n)
	cpu0, err := cpuTime(nodes)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	for i := range n {
		nd := nodes[i%len(nodes)]
		t0 := time.Now()
		if err := o.do(ctx, nd.c, nd.name, round, i); err != nil {
			return result{}, fmt.Errorf("%s on %s: %w", o.name, nd.name, err)
		}
		lats = append(lats, time.Since(t0))
	}
	wall := time.Since(start)
	cpu1, err := cpuTime(nodes)
	if err != nil {
		return result{}, err
	}
	slices.Sort(lats)
	return result{ops: n, wall: wall, latencies: lats, cpu: cpu1 - cpu0}, nil
}

// cleanup undoes what a phase created, untimed, so every round starts from
// the same state (a node may hold at most 20 blocks).
func cleanup(ctx context.Context, nodes []node, o op, round, count int) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(nodes))
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, 8)
			var inner sync.WaitGroup
			var once sync.Once
			for i := range count {
				sem <- struct{}{}
				inner.Add(1)
				go func() {
					defer inner.Done()
					defer func() { <-sem }()
					if err := o.undo(ctx, n.c, n.name, round, i); err != nil {
						once.Do(func() { errc <- fmt.Errorf("undo %s on %s: %w", o.name, n.name, err) })
					}
				}()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// startCluster starts three agents as one cluster (h1 bootstraps, h2 and
// h3 join) and waits until all three are healthy voters.
func startCluster(b *testing.B) []node {
	b.Helper()
	site := testbed.New(b, testbed.Options{
		Hosts: 3, NoStart: true, ReadyTimeout: 90 * time.Second,
		// Production log level (the test bed defaults to debug); BGP plays
		// no part in IPAM.
		ExtraTOML: "[log]\nlevel = \"info\"\n[bgp]\nenabled = false\n",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := site.StartCluster(ctx); err != nil {
		b.Fatal(err)
	}
	hosts := site.Hosts()
	if err := site.WaitVoters(ctx, hosts[0], 3); err != nil {
		b.Fatal(err)
	}
	var nodes []node
	for _, h := range hosts {
		nodes = append(nodes, node{name: h.Name(), pid: h.PID(), c: localapi.NewClient(h.Socket())})
	}
	return nodes
}

// profileCPU writes a CPU profile of n's agent (-ipam.profile-seconds)
// into file; failures are printed, not fatal.
func profileCPU(ctx context.Context, n node, file string) {
	body, err := n.c.Profile(ctx, "profile", fmt.Sprintf("seconds=%d", max(1, int(profFor.Seconds()))))
	if err == nil {
		defer body.Close()
		var f *os.File
		if f, err = os.Create(file); err == nil {
			_, err = io.Copy(f, body)
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile %s: %v\n", file, err)
	}
}

// BenchmarkIPAMCluster measures, on one three-node cluster: throughput and
// latency of allocations and of plain store writes with every node's
// clients running at once, and single-client latency of each. Run it once
// (-benchtime=1x; run.sh does), as root.
func BenchmarkIPAMCluster(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x: one iteration is the whole measurement")
	}
	nodes := startCluster(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	// Warm-up: every node claims its blocks and every path is exercised
	// once, untimed.
	for _, o := range []op{storeWrite, allocation} {
		if _, err := runConcurrent(ctx, nodes, o, 0, 100, 4); err != nil {
			b.Fatal(err)
		}
		if err := cleanup(ctx, nodes, o, 0, 100); err != nil {
			b.Fatal(err)
		}
	}

	conc := map[string][]result{}
	b.ResetTimer()
	for r := 1; r <= *rounds; r++ {
		order := []op{storeWrite, allocation}
		if r%2 == 0 {
			order = []op{allocation, storeWrite}
		}
		for _, o := range order {
			var prof sync.WaitGroup
			if *profDir != "" && r == *rounds {
				prof.Add(1)
				go func() {
					defer prof.Done()
					profileCPU(ctx, nodes[0], filepath.Join(*profDir, fmt.Sprintf("h1-%s.pprof", strings.Fields(o.name)[0])))
				}()
			}
			res, err := runConcurrent(ctx, nodes, o, r, *perNode, *clients)
			prof.Wait()
			if err != nil {
				b.Fatal(err)
			}
			conc[o.name] = append(conc[o.name], res)
			if err := cleanup(ctx, nodes, o, r, *perNode); err != nil {
				b.Fatal(err)
			}
		}
	}
	ser := map[string]result{}
	for _, o := range []op{storeWrite, allocation} {
		res, err := runSerial(ctx, nodes, o, *rounds+1, *serial)
		if err != nil {
			b.Fatal(err)
		}
		ser[o.name] = res
		for i := range *serial {
			nd := nodes[i%len(nodes)]
			if err := o.undo(ctx, nd.c, nd.name, *rounds+1, i); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()

	// Per round: each round's store-write and allocation phases ran minutes
	// apart at most, in alternating order, so a round's ratio is like for
	// like; the figures are the median over the rounds and their range.
	base, alloc := conc[storeWrite.name], conc[allocation.name]
	sBase, sAlloc := ser[storeWrite.name], ser[allocation.name]
	per := func(rs []result, f func(result) float64) []float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return xs
	}
	ratios := func(f func(result) float64) []float64 {
		xs := make([]float64, len(alloc))
		for i := range alloc {
			xs[i] = f(alloc[i]) / f(base[i])
		}
		return xs
	}
	msOf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	tput := func(r result) float64 { return r.throughput() }
	p50 := func(r result) float64 { return msOf(r.quantile(0.5)) }
	p99 := func(r result) float64 { return msOf(r.quantile(0.99)) }
	cpu := func(r result) float64 { return msOf(r.cpuPerOp()) }

	var sb strings.Builder
	fmt.Fprintf(&sb, "\nIPAM on a 3-node cluster (real agents, local API over unix sockets), %d CPUs\n", cpuCount())
	fmt.Fprintf(&sb, "concurrent: 3 nodes x %d clients, %d requests per node per round, %d rounds in alternating order; median over the rounds [range]\n\n", *clients, *perNode, *rounds)
	fmt.Fprintf(&sb, "| phase | throughput (/s) | p50 (ms) | p99 (ms) | agents' CPU per request (ms) |\n| --- | --- | --- | --- | --- |\n")
	row := func(label string, rs []result) {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", label, stats.Spread(per(rs, tput), "%.0f"), stats.Spread(per(rs, p50), "%.1f"), stats.Spread(per(rs, p99), "%.1f"), stats.Spread(per(rs, cpu), "%.2f"))
	}
	row("concurrent "+storeWrite.name, base)
	row("concurrent "+allocation.name, alloc)
	row("single client "+storeWrite.name+" (one run)", []result{sBase})
	row("single client "+allocation.name+" (one run)", []result{sAlloc})
	for _, o := range []op{storeWrite, allocation} {
		var per []string
		for _, r := range conc[o.name] {
			per = append(per, fmt.Sprintf("%.0f", r.throughput()))
		}
		fmt.Fprintf(&sb, "\nrounds of %s: %s /s", o.name, strings.Join(per, ", "))
	}
	tRatio, p99Ratio, cpuRatio := ratios(tput), ratios(p99), ratios(cpu)
	fmt.Fprintf(&sb, "\n\n| ratio (allocation / store write, per round) | median [range] |\n| --- | --- |\n")
	fmt.Fprintf(&sb, "| concurrent throughput | %s |\n", stats.Spread(tRatio, "%.2f"))
	fmt.Fprintf(&sb, "| concurrent p99 latency | %s |\n", stats.Spread(p99Ratio, "%.2f"))
	fmt.Fprintf(&sb, "| agents' CPU per request (concurrent) | %s |\n", stats.Spread(cpuRatio, "%.2f"))
	fmt.Fprintf(&sb, "| single-client p99 latency (one run) | %.2f |\n", p99(sAlloc)/p99(sBase))
	allocs := stats.Median(per(alloc, tput))
	fmt.Fprintf(&sb, "\nallocation throughput, median of %d rounds, %.0f/s: target >= 2000/s cluster-wide: %s\n", len(alloc), allocs, map[bool]string{true: "met", false: "NOT met"}[allocs >= 2000])
	fmt.Fprint(os.Stdout, sb.String())

	b.ReportMetric(allocs, "allocs/s")
	b.ReportMetric(stats.Median(per(base, tput)), "writes/s")
	b.ReportMetric(stats.Median(tRatio), "throughput-ratio")
	b.ReportMetric(stats.Median(per(alloc, p99)), "alloc-p99-ms")
	b.ReportMetric(stats.Median(p99Ratio), "p99-ratio")
	b.ReportMetric(p99(sAlloc)/p99(sBase), "serial-p99-ratio")
	b.ReportMetric(stats.Median(cpuRatio), "cpu-ratio")
}
