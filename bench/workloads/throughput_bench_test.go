package workloadsbench

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/bench/internal/stats"
	"github.com/weftnet/weft/internal/testbed"
)

var (
	iperfSeconds = flag.Int("wl.iperf-seconds", 5, "seconds of each iperf3 run (plus 1 s omitted for slow start)")
	iperfRounds  = flag.Int("wl.iperf-rounds", 5, "rounds; each runs every path once, in rotating order")
	diagnostics  = flag.Bool("wl.diagnostics", true, "also measure the diagnostic paths (see README.md)")
)

// twoPools: the VXLAN pool and a native one (the hosts share one L2
// subnet), so one cluster carries both kinds of workload path.
const twoPools = `
[[network.pool]]
name = "vxlan-ipv4"
cidr = "10.244.0.0/16"
vxlan_mode = "Always"
nat_outgoing = true
[[network.pool]]
name = "native-ipv4"
cidr = "10.245.0.0/16"
vxlan_mode = "Never"
nat_outgoing = true
`

// vxlanOnly: a cluster whose only pool uses VXLAN.
const vxlanOnly = `
[[network.pool]]
name = "vxlan-ipv4"
cidr = "10.244.0.0/16"
vxlan_mode = "Always"
nat_outgoing = true
`

// nativeOnly: a cluster whose only pool routes natively.
const nativeOnly = `
[[network.pool]]
name = "native-ipv4"
cidr = "10.245.0.0/16"
vxlan_mode = "Never"
nat_outgoing = true
`

const iperfPort = 5201

// path is one iperf3 measurement: a client namespace and a server address.
type path struct {
	name   string
	from   *testbed.Netns
	to     string
	target float64 // ratio to the underlay the issue asks for; 0 = none
	// before and after run around each iperf3 run of this path (nil:
	// nothing).
	before, after func(b *testing.B)
}

// BenchmarkWorkloadThroughput measures single-stream TCP throughput
// (iperf3) between workloads on two nodes, natively routed and over VXLAN,
// and on the raw underlay between the two host namespaces (each host's
// eth0 is a veth into the site bridge), in the same run, rounds
// interleaved; plus diagnostic paths that explain the ratios (README.md).
// Run once (-benchtime=1x), as root.
func BenchmarkWorkloadThroughput(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x: one iteration is the whole measurement")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("iperf3 is not installed")
	}
	// The headline paths are clusters as an operator would run them: a
	// native-only cluster (workloads get the underlay MTU, nothing is
	// encapsulated) and a VXLAN cluster with the defaults (transmit
	// checksum offload off on the VXLAN device).
	site := startCluster(b, 2, vxlanOnly)
	h1, h2 := site.Hosts()[0], site.Hosts()[1]
	vx1 := attach(b, site, h1, "vx1")
	vx2 := attach(b, site, h2, "vx2")
	nsite := startCluster(b, 2, nativeOnly)
	nt1 := attach(b, nsite, nsite.Hosts()[0], "nt1")
	nt2 := attach(b, nsite, nsite.Hosts()[1], "nt2")
	site.Expect(
		testbed.Reach(vx1.Netns(), vx2.ip, testbed.Ping()),
		testbed.Reach(h1, h2.Address(), testbed.Ping()),
	)
	nsite.Expect(testbed.Reach(nt1.Netns(), nt2.ip, testbed.Ping()))
	if out, err := nsite.Hosts()[0].Exec("ip", "route", "get", nt2.ip); err != nil || strings.Contains(out, "vxlan") {
		b.Fatalf("native path to %s goes %q (%v)", nt2.ip, out, err)
	}
	if out, err := nt1.Exec("ip", "link", "show", "eth0"); err != nil || !strings.Contains(out, "mtu 1500") {
		b.Fatalf("native workload's eth0: %q (%v), want the underlay MTU 1500", out, err)
	}
	if out, err := h1.Exec("ip", "route", "get", vx2.ip); err != nil || !strings.Contains(out, "weft.vxlan") {
		b.Fatalf("VXLAN path to %s goes %q (%v)", vx2.ip, out, err)
	}
	for _, n := range []*testbed.Netns{h2.Netns(), vx2.Netns(), nt2.Netns()} {
		iperfServer(b, n)
	}
	paths := []path{
		{name: "underlay (host h1 → host h2)", from: h1.Netns(), to: h2.Address()},
		{name: "workloads, native (native-only cluster, MTU 1500)", from: nt1.Netns(), to: nt2.ip, target: 0.9},
		{name: "workloads, VXLAN (defaults: tx checksum offload off)", from: vx1.Netns(), to: vx2.ip, target: 0.8},
	}
	if *diagnostics {
		paths = append(paths, diagnosticPaths(b, site)...)
	}

	// Warm-up (untimed).
	if _, err := iperf(paths[0], 1); err != nil {
		b.Fatal(err)
	}
	got := make([][]float64, len(paths))
	b.ResetTimer()
	// Every round runs every path once, starting at a different one.
	for r := range *iperfRounds {
		for i := range paths {
			k := (i + r) % len(paths)
			if paths[k].before != nil {
				paths[k].before(b)
			}
			bps, err := iperf(paths[k], *iperfSeconds)
			if err != nil {
				b.Fatal(err)
			}
			if paths[k].after != nil {
				paths[k].after(b)
			}
			got[k] = append(got[k], bps/1e9)
		}
	}
	b.StopTimer()

	// A round's ratio compares runs seconds apart: the median of the
	// per-round ratios and their range is the figure (the ratio of the
	// medians is shown as well).
	under := stats.Median(got[0])
	roundRatios := func(i int) []float64 {
		xs := make([]float64, len(got[i]))
		for r := range got[i] {
			xs[r] = got[i][r] / got[0][r]
		}
		return xs
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nTCP throughput, one iperf3 stream, %d s per run (+1 s omitted), %d rounds interleaved (rotating order), %d CPUs\n\n", *iperfSeconds, *iperfRounds, cpuCount())
	fmt.Fprintf(&sb, "| path | rounds (Gbit/s) | median [range] (Gbit/s) | ratio to underlay, per round: median [range] | ratio of medians | target |\n| --- | --- | --- | --- | --- | --- |\n")
	for i, p := range paths {
		var rs []string
		for _, v := range got[i] {
			rs = append(rs, fmt.Sprintf("%.2f", v))
		}
		rr := roundRatios(i)
		target := "-"
		if p.target > 0 {
			target = fmt.Sprintf(">= %.1f: %s", p.target, met(stats.Median(rr) >= p.target))
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %.2f | %s |\n", p.name, strings.Join(rs, ", "), stats.Spread(got[i], "%.2f"), stats.Spread(rr, "%.2f"), stats.Median(got[i])/under, target)
	}
	fmt.Fprint(os.Stdout, sb.String())
	b.ReportMetric(under, "underlay-Gbit/s")
	b.ReportMetric(stats.Median(roundRatios(1)), "native-ratio")
	b.ReportMetric(stats.Median(roundRatios(2)), "vxlan-ratio")
}

// diagnosticPaths builds the paths that explain the ratios:
//   - the native topology wired by hand without weft (testbed AttachVeth:
//     veths with /32s behind proxy ARP, static routes via the peer host),
//     MTU 1500: what the extra veth hops and forwarding cost by
//     themselves;
//   - the same over a plain kernel VXLAN device (point to point, kernel
//     defaults: transmit checksum offload on, workload MTU 1450): what
//     VXLAN costs by itself;
//   - a VXLAN cluster with [vxlan] tx_checksum_offload = true: weft's
//     VXLAN path with the offload kept on;
//   - native workloads in a cluster that also has a VXLAN pool (the
//     workload MTU is then the VXLAN one, 1450, for every workload).
func diagnosticPaths(b *testing.B, site *testbed.Site) []path {
	b.Helper()
	hosts := site.Hosts()[:2]
	run := func(h *testbed.Host, argv ...string) {
		b.Helper()
		if out, err := h.Exec(argv...); err != nil {
			b.Fatalf("%s: %v: %s", h.Name(), err, out)
		}
	}
	var native, overVXLAN []*testbed.Workload
	for i, h := range hosts {
		peer := hosts[1-i]
		me, other := strconv.Itoa(i+1), strconv.Itoa(2-i)
		// Native, by hand.
		w := site.AddWorkload(h, "hw")
		if err := w.AttachVeth("10.246.0." + me); err != nil {
			b.Fatal(err)
		}
		run(h, "ip", "route", "add", "10.246.0."+other+"/32", "via", peer.Address())
		native = append(native, w)
		// Over a plain VXLAN device, by hand.
		run(h, "ip", "link", "add", "hvx0", "type", "vxlan", "id", "100", "remote", peer.Address(), "local", h.Address(), "dstport", "4790", "dev", "eth0")
		run(h, "ip", "addr", "add", "10.247.255."+me+"/24", "dev", "hvx0")
		run(h, "ip", "link", "set", "hvx0", "up")
		v := site.AddWorkload(h, "hv")
		if err := v.AttachVeth("10.247.0." + me); err != nil {
			b.Fatal(err)
		}
		run(h, "ip", "link", "set", v.HostVeth(), "mtu", "1450")
		if out, err := v.Exec("ip", "link", "set", "eth0", "mtu", "1450"); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		run(h, "ip", "route", "add", "10.247.0."+other+"/32", "via", "10.247.255."+other, "dev", "hvx0")
		overVXLAN = append(overVXLAN, v)
	}
	site.Expect(
		testbed.Reach(native[0].Netns(), "10.246.0.2", testbed.Ping()),
		testbed.Reach(overVXLAN[0].Netns(), "10.247.0.2", testbed.Ping()),
	)
	iperfServer(b, native[1].Netns())
	iperfServer(b, overVXLAN[1].Netns())

	osite := startCluster(b, 2, "[vxlan]\ntx_checksum_offload = true\n"+vxlanOnly)
	o1 := attach(b, osite, osite.Hosts()[0], "o1")
	o2 := attach(b, osite, osite.Hosts()[1], "o2")
	osite.Expect(testbed.Reach(o1.Netns(), o2.ip, testbed.Ping()))
	if out, err := osite.Hosts()[0].Exec("ethtool", "-k", "weft.vxlan"); err != nil || !strings.Contains(out, "tx-checksumming: on") {
		b.Fatalf("weft.vxlan with tx_checksum_offload = true: %q (%v)", out, err)
	}
	iperfServer(b, o2.Netns())

	msite := startCluster(b, 2, twoPools)
	m1 := attach(b, msite, msite.Hosts()[0], "m1", "--pool", "native-ipv4")
	m2 := attach(b, msite, msite.Hosts()[1], "m2", "--pool", "native-ipv4")
	msite.Expect(testbed.Reach(m1.Netns(), m2.ip, testbed.Ping()))
	iperfServer(b, m2.Netns())

	return []path{
		{name: "diagnostic: hand-wired workloads, native, MTU 1500, no weft", from: native[0].Netns(), to: "10.246.0.2"},
		{name: "diagnostic: hand-wired workloads, plain kernel VXLAN, MTU 1450, no weft", from: overVXLAN[0].Netns(), to: "10.247.0.2"},
		{name: "diagnostic: weft workloads, VXLAN, [vxlan] tx_checksum_offload = true", from: o1.Netns(), to: o2.ip},
		{name: "diagnostic: weft workloads, native, cluster that also has a VXLAN pool (MTU 1450)", from: m1.Netns(), to: m2.ip},
	}
}

// iperfServer runs `iperf3 -s` inside n until the benchmark ends and waits
// until it listens.
func iperfServer(b *testing.B, n *testbed.Netns) {
	b.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.Name(), "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := n.Exec("ss", "-Hltn", "sport", "=", ":"+strconv.Itoa(iperfPort))
		if err == nil && strings.TrimSpace(out) != "" {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("iperf3 server in %s not listening: %q %v", n.Label(), out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// iperf runs one iperf3 client along p and returns the receiver's rate in
// bit/s.
func iperf(p path, seconds int) (float64, error) {
	out, err := p.from.Exec("iperf3", "-c", p.to, "-p", strconv.Itoa(iperfPort), "-t", strconv.Itoa(seconds), "-O", "1", "-J")
	if err != nil {
		return 0, fmt.Errorf("iperf3 %s: %w", p.name, err)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Error != "" || res.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 %s: %v %s", p.name, err, res.Error)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}
