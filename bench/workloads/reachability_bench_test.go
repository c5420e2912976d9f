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

	"github.com/weftnet/weft/internal/testbed"
)

var (
	reachAdds    = flag.Int("wl.adds", 50, "workloads added (round robin over the nodes) in the reachability benchmark")
	probeTimeout = flag.Duration("wl.probe-timeout", 10*time.Millisecond, "timeout of one TCP connect attempt of the reachability probe (its resolution)")
)

const reachPort = 8080

// BenchmarkWorkloadReachability measures the time from `weft workload add`
// returning to the new workload being reachable from every other node: on
// a three-node cluster (VXLAN pool), each of the other nodes has a prober
// workload that, as soon as the command returns, tries TCP connects to the
// new workload in a tight loop (a fresh connect every wl.probe-timeout, so
// a SYN lost before the path existed costs no retransmission timer). The
// reachability time of an add is the slowest of the probers. Adds go round
// robin over the nodes; the workloads stay. With the default /26 blocks
// every add lands in a block the peers already route; with /29 blocks
// every eighth address or so opens a new block, whose route the peers
// learn through the store (reported separately). Run once
// (-benchtime=1x), as root.
func BenchmarkWorkloadReachability(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x: one iteration is the whole measurement")
	}
	for _, bits := range []int{26, 29} {
		b.Run(fmt.Sprintf("blocks=/%d", bits), func(b *testing.B) { reachability(b, bits) })
	}
}

func reachability(b *testing.B, blockBits int) {
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
	var addTook, reach, reachNewBlock []time.Duration
	perPeer := map[string][]time.Duration{}
	blocks := map[netip.Prefix]bool{}
	for _, p := range probers {
		blocks[netip.PrefixFrom(netip.MustParseAddr(p.ip), blockBits).Masked()] = true
	}
	b.ResetTimer()
	for i := range *reachAdds {
		h := hosts[i%len(hosts)]
		w := site.AddWorkload(h, "r"+strconv.Itoa(i))
		listen(b, w.Netns(), reachPort)
		start := time.Now()
		ip, err := add(w)
		returned := time.Now()
		if err != nil {
			b.Fatalf("add %d on %s: %v", i, h.Name(), err)
		}
		addTook = append(addTook, returned.Sub(start))
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			slow time.Duration
			errs []string
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
				took, err := probe(pctx, probers[peer].Netns(), net.JoinHostPort(ip, strconv.Itoa(reachPort)), returned)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Sprintf("from %s: %v", peer.Name(), err))
					return
				}
				perPeer[peer.Name()+" ← "+h.Name()] = append(perPeer[peer.Name()+" ← "+h.Name()], took)
				slow = max(slow, took)
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			b.Fatalf("workload %d (%s on %s) never became reachable: %s", i, ip, h.Name(), strings.Join(errs, "; "))
		}
		reach = append(reach, slow)
		if blk := netip.PrefixFrom(netip.MustParseAddr(ip), blockBits).Masked(); !blocks[blk] {
			blocks[blk] = true
			reachNewBlock = append(reachNewBlock, slow)
		}
	}
	b.StopTimer()

	slices.Sort(addTook)
	slices.Sort(reach)
	slices.Sort(reachNewBlock)
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nWorkload reachability on a 3-node cluster (VXLAN pool, /%d blocks), %d adds round robin, probe resolution %s, %d CPUs\n\n", blockBits, len(reach), *probeTimeout, cpuCount())
	fmt.Fprintf(&sb, "| measure | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |\n| --- | --- | --- | --- | --- |\n")
	row := func(label string, ds []time.Duration) {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", label, ms(quantile(ds, .5)), ms(quantile(ds, .9)), ms(quantile(ds, .99)), ms(ds[len(ds)-1]))
	}
	row("`weft workload add` (CLI, wall time)", addTook)
	row("add returned → reachable from every other node", reach)
	if len(reachNewBlock) > 0 {
		row(fmt.Sprintf("  of which the first address of a new block (%d)", len(reachNewBlock)), reachNewBlock)
	}
	var keys []string
	for k := range perPeer {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ds := perPeer[k]
		slices.Sort(ds)
		row("  from "+k, ds)
	}
	fmt.Fprintf(&sb, "\nreachable from every other node, p99 %s ms: target < 300 ms: %s\n", ms(quantile(reach, .99)), met(quantile(reach, .99) < 300*time.Millisecond))
	fmt.Fprint(os.Stdout, sb.String())
	b.ReportMetric(float64(quantile(reach, .99))/float64(time.Millisecond), "reach-p99-ms")
	b.ReportMetric(float64(quantile(reach, .5))/float64(time.Millisecond), "reach-p50-ms")
	b.ReportMetric(float64(quantile(addTook, .99))/float64(time.Millisecond), "add-p99-ms")
}

// probe connects from n to address until a connect succeeds and returns
// the time since since.
func probe(ctx context.Context, n *testbed.Netns, address string, since time.Time) (time.Duration, error) {
	var last error
	for {
		attempt := time.Now()
		dctx, cancel := context.WithTimeout(ctx, *probeTimeout)
		c, err := n.DialContext(dctx, "tcp", address)
		cancel()
		if err == nil {
			took := time.Since(since)
			c.Close()
			return took, nil
		}
		last = err
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), last)
		}
		// An immediate refusal (no route yet, ICMP unreachable) must not
		// spin: attempts at most every millisecond.
		if d := time.Since(attempt); d < time.Millisecond {
			time.Sleep(time.Millisecond - d)
		}
	}
}
