package workloadsbench

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
)

var rssWorkloads = flag.Int("wl.rss-workloads", 100, "workloads attached on the measured node in the RSS benchmark")

// BenchmarkAgentRSS measures the resident memory (VmRSS) of one agent of a
// three-node cluster with no workloads and again, the same process, with
// wl.rss-workloads workloads attached on its node; the Go heap in use
// (from the agent's /metrics) alongside. Each figure is the median of
// five samples 200 ms apart once the node's dataplane has settled. Run
// once (-benchtime=1x), as root.
func BenchmarkAgentRSS(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x: one iteration is the whole measurement")
	}
	site := startCluster(b, 3, "")
	hosts := site.Hosts()
	h := hosts[0]
	settled := func(want int) {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			n, err := workloadRoutes(h)
			_, vxErr := h.Exec("ip", "link", "show", "weft.vxlan")
			if err == nil && vxErr == nil && n == want {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: %d workload routes (want %d), weft.vxlan: %v, %v", h.Name(), n, want, vxErr, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	settled(0)
	idle := sampleMemory(b, hosts)

	b.ResetTimer()
	start := time.Now()
	for i := range *rssWorkloads {
		attach(b, site, h, "m"+strconv.Itoa(i))
	}
	took := time.Since(start)
	b.StopTimer()
	settled(*rssWorkloads)
	loaded := sampleMemory(b, hosts)

	mb := func(kb int) string { return fmt.Sprintf("%.1f", float64(kb)/1024) }
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nAgent memory, 3-node cluster, %d workloads attached on %s in %s (%.0f adds/s), %d CPUs\n\n", *rssWorkloads, h.Name(), took.Round(time.Millisecond), float64(*rssWorkloads)/took.Seconds(), cpuCount())
	fmt.Fprintf(&sb, "| agent | RSS, 0 workloads (MB) | RSS, %d workloads on h1 (MB) | ratio | Go heap in use, 0 → %d (MB) | RSS file-backed (the binary's pages), 0 → %d (MB) |\n| --- | --- | --- | --- | --- | --- |\n", *rssWorkloads, *rssWorkloads, *rssWorkloads)
	for _, x := range hosts {
		i, l := idle[x.Name()], loaded[x.Name()]
		role := "remote"
		if x == h {
			role = "the workloads' node"
		}
		fmt.Fprintf(&sb, "| %s (%s) | %s | %s | %.2f | %s → %s | %s → %s |\n", x.Name(), role, mb(i.rssKB), mb(l.rssKB), float64(l.rssKB)/float64(i.rssKB), mb(i.heapKB), mb(l.heapKB), mb(i.fileKB), mb(l.fileKB))
	}
	fmt.Fprintf(&sb, "\n%s's RSS with %d workloads: %s MB: target < 40 MB: %s\n", h.Name(), *rssWorkloads, mb(loaded[h.Name()].rssKB), met(loaded[h.Name()].rssKB < 40*1024))
	fmt.Fprint(os.Stdout, sb.String())
	b.ReportMetric(float64(idle[h.Name()].rssKB)/1024, "rss-0-MB")
	b.ReportMetric(float64(loaded[h.Name()].rssKB)/1024, "rss-loaded-MB")
}

type memory struct{ rssKB, heapKB, fileKB int }

// sampleMemory takes the median of five samples of every agent's VmRSS and
// Go heap in use.
func sampleMemory(b *testing.B, hosts []*testbed.Host) map[string]memory {
	b.Helper()
	samples := map[string][]memory{}
	for range 5 {
		for _, h := range hosts {
			rss, err := statusKB(h.PID(), "VmRSS")
			if err != nil {
				b.Fatal(err)
			}
			file, err := statusKB(h.PID(), "RssFile")
			if err != nil {
				b.Fatal(err)
			}
			samples[h.Name()] = append(samples[h.Name()], memory{rss, heapInUseKB(h), file})
		}
		time.Sleep(200 * time.Millisecond)
	}
	out := map[string]memory{}
	for name, ms := range samples {
		rs := make([]int, len(ms))
		hs := make([]int, len(ms))
		fs := make([]int, len(ms))
		for i, m := range ms {
			rs[i], hs[i], fs[i] = m.rssKB, m.heapKB, m.fileKB
		}
		slices.Sort(rs)
		slices.Sort(hs)
		slices.Sort(fs)
		out[name] = memory{rs[len(rs)/2], hs[len(hs)/2], fs[len(fs)/2]}
	}
	return out
}

// heapInUseKB reads go_memstats_heap_inuse_bytes from the agent's metrics
// endpoint; 0 when it is not there.
func heapInUseKB(h *testbed.Host) int {
	resp, err := h.Netns().HTTPClient(2 * time.Second).Get("http://" + h.Address() + ":" + strconv.Itoa(testbed.MetricsPort) + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return int(f / 1024)
			}
		}
	}
	return 0
}

// workloadRoutes counts the weft routes to workload interfaces on h.
func workloadRoutes(h *testbed.Host) (int, error) {
	out, err := h.Exec("ip", "-4", "route", "show", "proto", "87")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[1] == "dev" && strings.HasPrefix(f[2], "weft") && f[2] != "weft.vxlan" {
			n++
		}
	}
	return n, nil
}
