package workloadsbench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/bench/internal/stats"
	"github.com/weftnet/weft/internal/testbed"
)

var (
	reachAdds    = flag.Int("wl.adds", 50, "workloads added (round robin over the nodes) per cluster in the reachability benchmark")
	reachRuns    = flag.Int("wl.reach-runs", 3, "runs of the reachability benchmark, each on fresh clusters (block sizes in alternating order)")
	reachBlocks  = flag.String("wl.reach-blocks", "26,30", "IPv4 block sizes of the reachability benchmark, comma separated")
	probeTimeout = flag.Duration("wl.probe-timeout", 10*time.Millisecond, "timeout of one TCP connect attempt of the reachability probe (its resolution)")
)

const reachPort = 8080

// reachRun is what one cluster measured, every slice sorted.
type reachRun struct {
	baseline []time.Duration // `weft workload list` (CLI, wall time)
	addTook  []time.Duration // `weft workload add` (CLI, wall time)
	reach    []time.Duration // add invoked → reachable from every other node
	// reach split by whether the add's address opened a block no earlier
	// address of the run was in.
	newBlock, oldBlock []time.Duration
	// firstTry counts adds that every prober reached at its first connect
	// after the command returned (reachable by then already).
	firstTry int
}

// BenchmarkWorkloadReachability measures the time from the moment `weft
// workload add` is invoked (just before the CLI process is started) to
// the new workload being reachable from every other node: on a three-node
// cluster (VXLAN pool), each of the other nodes has a prober workload
// that, as soon as the command has printed the new address, tries TCP
// connects to it in a tight loop (a fresh connect every wl.probe-timeout,
// so a SYN lost before the path existed costs no retransmission timer).
// The reachability time of an add is the slowest of the probers. Adds go
// round robin over the nodes; the workloads stay. With the default /26
// blocks almost every add lands in a block the peers already route; with
// /30 blocks every fourth address or so opens a new block, whose route the
// peers learn through the store: those adds are reported on their own row.
// The baseline, interleaved with the adds on the same host, is the wall
// time of a CLI call that only reads (`weft workload list`): what starting
// the CLI and one round trip on the socket cost. wl.reach-runs runs, each
// on fresh clusters, block sizes in alternating order; the report gives
// every run and the median and range over the runs. Run once
// (-benchtime=1x), as root.
func BenchmarkWorkloadReachability(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x: one iteration is the whole measurement")
	}
	var sizes []int
	for _, f := range strings.Split(*reachBlocks, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatalf("-wl.reach-blocks: %q: %v", f, err)
		}
		sizes = append(sizes, n)
	}
	runs := map[int][]reachRun{}
	for r := range *reachRuns {
		order := slices.Clone(sizes)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, bits := range order {
			b.Run(fmt.Sprintf("run=%d/blocks=/%d", r+1, bits), func(b *testing.B) {
				rr := reachability(b, bits)
				runs[bits] = append(runs[bits], rr)
				fmt.Fprint(os.Stdout, reachReport(fmt.Sprintf("run %d, /%d blocks", r+1, bits), []reachRun{rr}))
			})
		}
	}
	for _, bits := range sizes {
		rs := runs[bits]
		if len(rs) == 0 {
			continue
		}
		fmt.Fprint(os.Stdout, reachReport(fmt.Sprintf("/%d blocks, %d runs: median [range] over the runs of each run's quantile", bits, len(rs)), rs))
		var p99s []float64
		for _, r := range rs {
			p99s = append(p99s, msf(quantile(r.reach, .99)))
		}
		fmt.Fprintf(os.Stdout, "\n/%d: add invoked → reachable from every other node, p99 median %.1f ms: target < 300 ms: %s\n", bits, stats.Median(p99s), met(stats.Median(p99s) < 300))
		b.ReportMetric(stats.Median(p99s), fmt.Sprintf("reach-p99-ms/%d", bits))
	}
}

// reachReport is a markdown table of runs: with one run its quantiles,
// with more the median and range over the runs of each quantile.
func reachReport(title string, rs []reachRun) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nWorkload reachability on a 3-node cluster (VXLAN pool), %s; %d adds per run round robin, probe resolution %s, %d CPUs\n\n", title, *reachAdds, *probeTimeout, cpuCount())
	fmt.Fprintf(&sb, "| measure | adds | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | p50 / baseline p50 |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	row := func(label string, pick func(reachRun) []time.Duration) {
		var n []float64
		var qs [4][]float64
		var ratio []float64
		for _, r := range rs {
			ds := pick(r)
			if len(ds) == 0 {
				continue
			}
			n = append(n, float64(len(ds)))
			for i, q := range []float64{.5, .9, .99, 1} {
				qs[i] = append(qs[i], msf(quantile(ds, q)))
			}
			ratio = append(ratio, msf(quantile(ds, .5))/msf(quantile(r.baseline, .5)))
		}
		if len(n) == 0 {
			return
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %s |\n", label, stats.Spread(n, "%.0f"), stats.Spread(qs[0], "%.1f"), stats.Spread(qs[1], "%.1f"), stats.Spread(qs[2], "%.1f"), stats.Spread(qs[3], "%.1f"), stats.Spread(ratio, "%.2f"))
	}
	row("baseline: `weft workload list` (CLI, wall time)", func(r reachRun) []time.Duration { return r.baseline })
	row("`weft workload add` (CLI, wall time)", func(r reachRun) []time.Duration { return r.addTook })
	row("add invoked → reachable from every other node", func(r reachRun) []time.Duration { return r.reach })
	row("… adds whose address opened a new block", func(r reachRun) []time.Duration { return r.newBlock })
	row("… adds into a block already in use", func(r reachRun) []time.Duration { return r.oldBlock })
	var first []string
	for _, r := range rs {
		first = append(first, fmt.Sprintf("%d of %d", r.firstTry, len(r.reach)))
	}
	fmt.Fprintf(&sb, "\nreachable from every other node at the first connect after the command returned: %s\n", strings.Join(first, ", "))
	return sb.String()
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func reachability(b *testing.B, blockBits int) reachRun {
	pool := fmt.Sprintf("\n[[network.pool]]\nname = \"default-ipv4\"\ncidr = \"10.244.0.0/16\"\nblock_size = %d\nvxlan_mode = \"Always\"\nnat_outgoing = true\n", blockBits)
	site := startCluster(b, 3, pool)
	hosts := site.Hosts()
	probers := map[*testbed.Host]*workload{}
	for _, h := range hosts {
		probers[h] = attach(b, site, h, "probe-"+h.Name())
	}
	var warm []testbed.Check
	for _, a := range hosts {
		for _, c := range hosts {
			if a != c {
				warm = append(warm, testbed.Reach(probers[a].Netns(), probers[c].ip, testbed.Ping()))
			}
		}
	}
	site.Expect(warm...)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out reachRun
	blocks := map[netip.Prefix]bool{}
	for _, p := range probers {
		blocks[netip.PrefixFrom(netip.MustParseAddr(p.ip), blockBits).Masked()] = true
	}
	list := func(h *testbed.Host) {
		t0 := time.Now()
		if _, err := h.Weft("workload", "list", "-o", "json"); err != nil {
			b.Fatalf("weft workload list on %s: %v", h.Name(), err)
		}
		out.baseline = append(out.baseline, time.Since(t0))
	}
	b.ResetTimer()
	for i := range *reachAdds {
		h := hosts[i%len(hosts)]
		w := site.AddWorkload(h, "r"+strconv.Itoa(i))
		listen(b, w.Netns(), reachPort)
		if i%2 == 0 {
			list(h)
		}
		invoked := time.Now()
		ip, err := add(w)
		returned := time.Now()
		if err != nil {
			b.Fatalf("add %d on %s: %v", i, h.Name(), err)
		}
		out.addTook = append(out.addTook, returned.Sub(invoked))
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			slow  time.Duration
			first = true
			errs  []string
		)
		for _, peer := range hosts {
			if peer == h {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				defer pcancel()
				took, attempts, err := probe(pctx, probers[peer].Netns(), net.JoinHostPort(ip, strconv.Itoa(reachPort)), invoked)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Sprintf("from %s: %v", peer.Name(), err))
					return
				}
				slow = max(slow, took)
				first = first && attempts == 1
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			b.Fatalf("workload %d (%s on %s) never became reachable: %s", i, ip, h.Name(), strings.Join(errs, "; "))
		}
		if i%2 == 1 {
			list(h)
		}
		out.reach = append(out.reach, slow)
		if first {
			out.firstTry++
		}
		if blk := netip.PrefixFrom(netip.MustParseAddr(ip), blockBits).Masked(); !blocks[blk] {
			blocks[blk] = true
			out.newBlock = append(out.newBlock, slow)
		} else {
			out.oldBlock = append(out.oldBlock, slow)
		}
	}
	b.StopTimer()
	for _, ds := range [][]time.Duration{out.baseline, out.addTook, out.reach, out.newBlock, out.oldBlock} {
		slices.Sort(ds)
	}
	return out
}

// probe connects from n to address until a connect succeeds and returns
// the time since since and the number of attempts.
func probe(ctx context.Context, n *testbed.Netns, address string, since time.Time) (time.Duration, int, error) {
	var last error
	for attempts := 1; ; attempts++ {
		attempt := time.Now()
		dctx, cancel := context.WithTimeout(ctx, *probeTimeout)
		c, err := n.DialContext(dctx, "tcp", address)
		cancel()
		if err == nil {
			took := time.Since(since)
			c.Close()
			return took, attempts, nil
		}
		last = err
		if ctx.Err() != nil {
			return 0, attempts, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), last)
		}
		// An immediate refusal (no route yet, ICMP unreachable) must not
		// spin: attempts at most every millisecond.
		if d := time.Since(attempt); d < time.Millisecond {
			time.Sleep(time.Millisecond - d)
		}
	}
}
