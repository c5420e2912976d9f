// Package wireguardbench measures weft's WireGuard (issue 13) on real
// agents in test-bed namespaces: throughput against a standalone
// wireguard-go tunnel in the same run, a node's join to encrypted
// reachability, agent restarts and key rotations under ping, and the idle
// cost. See README.md; run with run.sh.
package wireguardbench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netns/nstest"
	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

var (
	iperfSeconds = flag.Int("wg.iperf-seconds", 5, "seconds of each iperf3 run (plus 1 s omitted)")
	iperfRounds  = flag.Int("wg.iperf-rounds", 5, "rounds; each runs every path once, in rotating order")
	wireguardGo  = flag.String("wg.wireguard-go", "", "the standalone wireguard-go binary (run.sh builds it from the module's wireguard-go)")
	repeats      = flag.Int("wg.repeats", 3, "joins, restarts and rotations measured")
	idleSeconds  = flag.Int("wg.idle-seconds", 60, "seconds of the idle measurement")
)

// benchTOML: production log level, BGP off; wgTOML turns WireGuard on.
const (
	benchTOML = "[log]\nlevel = \"info\"\n[bgp]\nenabled = false\n"
	wgTOML    = "[wireguard]\nenabled = true\n"
	iperfPort = 5201
	probePort = 8080
)

func TestMain(m *testing.M) { testbed.Main(m) }

func oneShot(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x: one iteration is the whole measurement")
	}
}

// site builds a test-bed site of n hosts (not started).
func site(b *testing.B, n int, extra string) *testbed.Site {
	b.Helper()
	return testbed.New(b, testbed.Options{
		Hosts: n, NoStart: true, ReadyTimeout: 90 * time.Second, ExpectTimeout: 60 * time.Second,
		ExtraTOML: benchTOML + extra,
	})
}

func startCluster(b *testing.B, n int, extra string) *testbed.Site {
	b.Helper()
	s := site(b, n, extra)
	if err := s.StartCluster(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

type workload struct {
	*testbed.Workload
	ip string
}

// attach creates a workload and attaches it with `weft workload add`.
func attach(b *testing.B, s *testbed.Site, h *testbed.Host, name string) *workload {
	b.Helper()
	w := s.AddWorkload(h, name)
	out, err := h.Weft("workload", "add", name, "--netns", w.Path(), "-o", "json")
	if err != nil {
		b.Fatalf("%s: weft workload add %s: %v", h.Name(), name, err)
	}
	var info localapi.Workload
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		b.Fatal(err)
	}
	for _, p := range info.IPs {
		if pp, err := netip.ParsePrefix(p); err == nil && pp.Addr().Is4() {
			return &workload{Workload: w, ip: pp.Addr().String()}
		}
	}
	b.Fatalf("no IPv4 address in %+v", info)
	return nil
}

func status(b *testing.B, h *testbed.Host) localapi.NodeStatus {
	b.Helper()
	st, err := localapi.NewClient(h.Socket()).Status(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// ---- throughput ----

type path struct {
	name string
	run  func(seconds int) (float64, error) // bits/s
}

func iperfFrom(name string, exec func(argv ...string) (string, error), to string) path {
	return iperfFromPort(name, exec, to, iperfPort)
}

func iperfFromPort(name string, exec func(argv ...string) (string, error), to string, port int) path {
	return path{name: name, run: func(seconds int) (float64, error) {
		out, err := exec("iperf3", "-c", to, "-p", strconv.Itoa(port), "-t", strconv.Itoa(seconds), "-O", "1", "-J")
		if err != nil {
			return 0, fmt.Errorf("iperf3 %s: %w: %s", name, err, out)
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
			return 0, fmt.Errorf("iperf3 %s: %v %s", name, err, res.Error)
		}
		return res.End.SumReceived.BitsPerSecond, nil
	}}
}

// startNsenter runs argv inside the network namespace at path until the
// benchmark ends.
func startNsenter(b *testing.B, path string, env []string, argv ...string) *exec.Cmd {
	b.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + path}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd
}

func waitListening(b *testing.B, exec func(argv ...string) (string, error), proto string, port int) {
	b.Helper()
	flags := "-Hltn"
	if proto == "udp" {
		flags = "-Hlun"
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec("ss", flags, "sport", "=", ":"+strconv.Itoa(port))
		if err == nil && strings.TrimSpace(out) != "" {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("nothing listens on %s/%d: %v %s", proto, port, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wireguardGoBinary is the standalone wireguard-go (built once if not
// given).
func wireguardGoBinary(b *testing.B) string {
	b.Helper()
	if *wireguardGo == "" {
		bin := filepath.Join(os.TempDir(), fmt.Sprintf("weft-bench-wireguard-go-%d", os.Getpid()))
		if out, err := exec.Command("go", "build", "-o", bin, "golang.zx2c4.com/wireguard").CombinedOutput(); err != nil {
			b.Fatalf("building wireguard-go: %v: %s", err, out)
		}
		*wireguardGo = bin
	}
	return *wireguardGo
}

// side is one end of a standalone tunnel: a network namespace (path), its
// underlay address.
type side struct {
	netns string
	under string
}

func (s side) exec(argv ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + s.netns}, argv...)...).CombinedOutput()
	return string(out), err
}

// standaloneTunnel joins two namespaces with a standalone wireguard-go
// tunnel (same module version as weft's, MTU 1440 as weft's device on a
// 1500-byte underlay, listening on port), addresses <subnet>.1 and .2/24,
// an iperf3 server on the second; it returns the first's exec and the
// second's tunnel address. With ownSession each wireguard-go runs in a
// session of its own (setsid), as weft's device process does (and as a
// daemon or a systemd service does): the kernel's scheduler shares the CPU
// between sessions (autogroup) before it shares it between processes, so
// on a loaded machine a device process in the benchmark's own session
// competes with the iperf3 processes only, and one in its own session
// with every other session on the machine.
func standaloneTunnel(b *testing.B, ends [2]side, port int, subnet, tag string, ownSession bool) (func(...string) (string, error), string) {
	b.Helper()
	bin := wireguardGoBinary(b)
	return tunnelOf(b, ends, port, subnet, tag, func(name string) []string {
		if ownSession {
			return []string{"setsid", bin, "-f", name}
		}
		return []string{bin, "-f", name}
	})
}

// tunnelOf is standaloneTunnel with the device process argv gives for an
// interface name (wireguard-go, or weft's own device process).
func tunnelOf(b *testing.B, ends [2]side, port int, subnet, tag string, argv func(name string) []string) (func(...string) (string, error), string) {
	b.Helper()
	var keys [2]string
	var pubs [2]string
	for i := range keys {
		k, err := exec.Command("wg", "genkey").Output()
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = strings.TrimSpace(string(k))
		cmd := exec.Command("wg", "pubkey")
		cmd.Stdin = strings.NewReader(keys[i])
		p, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		pubs[i] = strings.TrimSpace(string(p))
	}
	id := strconv.Itoa(os.Getpid()%100000) + tag
	must := func(s side, argv ...string) {
		b.Helper()
		if out, err := s.exec(argv...); err != nil {
			b.Fatalf("%v: %v: %s", argv, err, out)
		}
	}
	for i, s := range ends {
		name := "wgs" + id + string(rune('a'+i))
		b.Cleanup(func() { os.Remove("/var/run/wireguard/" + name + ".sock") })
		startNsenter(b, s.netns, []string{"LOG_LEVEL=error"}, argv(name)...)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := s.exec("wg", "show", name); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("wireguard-go %s did not come up", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
		keyFile := filepath.Join(b.TempDir(), "key")
		if err := os.WriteFile(keyFile, []byte(keys[i]), 0o600); err != nil {
			b.Fatal(err)
		}
		peer := ends[1-i]
		must(s, "wg", "set", name, "private-key", keyFile, "listen-port", strconv.Itoa(port), "peer", pubs[1-i],
			"endpoint", fmt.Sprintf("%s:%d", peer.under, port), "allowed-ips", fmt.Sprintf("%s.%d/32", subnet, 2-i))
		must(s, "ip", "addr", "add", fmt.Sprintf("%s.%d/24", subnet, i+1), "dev", name)
		must(s, "ip", "link", "set", name, "mtu", "1440", "up")
	}
	to := subnet + ".2"
	startNsenter(b, ends[1].netns, nil, "iperf3", "-s", "-p", strconv.Itoa(iperfPort+1))
	waitListening(b, ends[1].exec, "tcp", iperfPort+1)
	must(ends[0], "ping", "-c", "2", "-W", "2", to)
	return ends[0].exec, to
}

// standalone joins two plain namespaces with a veth and two standalone
// wireguard-go tunnels over it (device processes in sessions of their own,
// and in the benchmark's session), and returns the paths through the
// tunnels and over the bare veth.
func standalone(b *testing.B) (tunnel, sameSession, veth path) {
	b.Helper()
	a, z := nstest.New(b, "sa"), nstest.New(b, "sz")
	nstest.Veth(b, a, "upl", netip.MustParsePrefix("192.168.90.1/24"), z, "upl", netip.MustParsePrefix("192.168.90.2/24"))
	ends := [2]side{{a.Path, "192.168.90.1"}, {z.Path, "192.168.90.2"}}
	from, to := standaloneTunnel(b, ends, 51820, "10.99.0", "p", true)
	sFrom, sTo := standaloneTunnel(b, ends, 51821, "10.98.0", "q", false)
	startNsenter(b, z.Path, nil, "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	waitListening(b, z.Try, "tcp", iperfPort)
	return iperfFromPort("standalone wireguard-go tunnel over a veth, two plain namespaces (MTU 1440, each device process in a session of its own, as weft's) — the baseline", from, to, iperfPort+1),
		iperfFromPort("diagnostic: the same standalone tunnel with its device processes in the benchmark's session", sFrom, sTo, iperfPort+1),
		iperfFrom("diagnostic: the bare veth under it (MTU 1500)", a.Try, "192.168.90.2")
}

// BenchmarkWireGuardThroughput measures one TCP stream (iperf3) between
// workloads on two WireGuard nodes against a standalone wireguard-go
// tunnel between two plain namespaces over a veth, in the same run, rounds
// interleaved; plus diagnostic paths (README.md).
func BenchmarkWireGuardThroughput(b *testing.B) {
	oneShot(b)
	s := startCluster(b, 2, wgTOML)
	h1, h2 := s.Hosts()[0], s.Hosts()[1]
	w1 := attach(b, s, h1, "w1")
	w2 := attach(b, s, h2, "w2")
	s.Expect(testbed.Reach(w1.Netns(), w2.ip, testbed.Ping()))
	if out, err := h1.Exec("ip", "route", "get", w2.ip); err != nil || !strings.Contains(out, "dev weft.wg") {
		b.Fatalf("the path to %s goes %q (%v), not through weft.wg", w2.ip, out, err)
	}
	for _, n := range []*testbed.Netns{w2.Netns(), h2.Netns()} {
		startNsenter(b, n.Path(), nil, "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
		waitListening(b, n.Exec, "tcp", iperfPort)
	}
	tunnel, sameSession, veth := standalone(b)
	// The same standalone tunnel between the test bed's hosts: what the
	// test bed's underlay (bridge, router namespace) costs a tunnel by
	// itself, apart from weft.
	bedFrom, bedTo := standaloneTunnel(b, [2]side{{h1.Netns().Path(), h1.Address()}, {h2.Netns().Path(), h2.Address()}}, 51900, "10.96.0", "t", true)
	// weft's own device process (`weft wireguard device`) configured by
	// wg alone, between the same hosts: weft's device without weft's
	// control (no agent writes, no table 87, no mark).
	devFrom, devTo := tunnelOf(b, [2]side{{h1.Netns().Path(), h1.Address()}, {h2.Netns().Path(), h2.Address()}}, 51910, "10.95.0", "d",
		func(name string) []string {
			return []string{"setsid", s.Binary(), "wireguard", "device", "--interface", name}
		})
	wgAddr := ""
	if st := status(b, h2).WireGuard; st != nil && len(st.Addresses) > 0 {
		wgAddr = strings.Split(st.Addresses[0], "/")[0]
	}
	paths := []path{
		tunnel,
		iperfFrom("weft workloads over WireGuard (h1 → h2, device MTU 1440)", w1.Exec, w2.ip),
		iperfFrom("diagnostic: weft hosts over WireGuard (h1 → h2's tunnel address: no workload veths)", h1.Exec, wgAddr),
		iperfFromPort("diagnostic: the standalone wireguard-go tunnel (own sessions) between the test bed's hosts h1 and h2 (no weft)", bedFrom, bedTo, iperfPort+1),
		iperfFromPort("diagnostic: weft's device process (`weft wireguard device`, own session) set up by `wg` between h1 and h2 (no agent, no table 87, no mark)", devFrom, devTo, iperfPort+1),
		sameSession,
		veth,
		iperfFrom("diagnostic: the test bed's underlay (host h1 → host h2: veth, bridge, veth)", h1.Exec, h2.Address()),
	}
	if _, err := paths[0].run(1); err != nil { // warm-up
		b.Fatal(err)
	}
	got := make([][]float64, len(paths))
	b.ResetTimer()
	for r := range *iperfRounds {
		for i := range paths {
			k := (i + r) % len(paths)
			bps, err := paths[k].run(*iperfSeconds)
			if err != nil {
				b.Fatal(err)
			}
			got[k] = append(got[k], bps/1e9)
		}
	}
	b.StopTimer()
	bareAt := slices.IndexFunc(paths, func(p path) bool { return p.name == veth.name })
	base, bare := median(got[0]), median(got[bareAt])
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nTCP throughput, one iperf3 stream, %d s per run (+1 s omitted), %d rounds interleaved, %d CPUs, load %s\n\n", *iperfSeconds, *iperfRounds, runtime.NumCPU(), loadAvg())
	fmt.Fprintf(&sb, "| path | rounds (Gbit/s) | median (Gbit/s) | ratio to standalone wireguard-go | ratio to the bare veth |\n| --- | --- | --- | --- | --- |\n")
	for i, p := range paths {
		var rs []string
		for _, v := range got[i] {
			rs = append(rs, fmt.Sprintf("%.2f", v))
		}
		fmt.Fprintf(&sb, "| %s | %s | %.2f | %.2f | %.3f |\n", p.name, strings.Join(rs, ", "), median(got[i]), median(got[i])/base, median(got[i])/bare)
	}
	ratio := median(got[1]) / base
	var perRound []float64
	var prs []string
	for r := range got[1] {
		perRound = append(perRound, got[1][r]/got[0][r])
		prs = append(prs, fmt.Sprintf("%.2f", got[1][r]/got[0][r]))
	}
	fmt.Fprintf(&sb, "\nweft's WireGuard / standalone wireguard-go: %.2f (ratio of the medians; per round %s, median %.2f): target >= 1.0: %s\n",
		ratio, strings.Join(prs, ", "), median(perRound), met(ratio >= 1.0))
	fmt.Fprint(os.Stdout, sb.String())
	b.ReportMetric(ratio, "weft/standalone")
}

// ---- join, restart, rotation ----

// probe dials TCP from n to addr:probePort every 10 ms until it connects
// (or the deadline) and returns when that was.
func probeUntil(n *testbed.Netns, addr string, deadline time.Time) (time.Time, error) {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		c, err := n.DialContext(ctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(probePort)))
		cancel()
		if err == nil {
			c.Close()
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkWireGuardJoin: a node joins a WireGuard cluster; how long from
// its agent's start until it is ready, until every node has it as a peer,
// and until a workload attached on it as soon as it is ready is reachable
// from a workload on every other node (only through WireGuard: nothing
// else routes between WireGuard nodes). Repeated for wg.repeats joiners.
func BenchmarkWireGuardJoin(b *testing.B) {
	oneShot(b)
	n := 2 + *repeats
	s := site(b, n, wgTOML)
	hosts := s.Hosts()
	if err := hosts[0].StartAgent(); err != nil {
		b.Fatal(err)
	}
	if err := hosts[0].WaitReady(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := s.Join(context.Background(), hosts[1]); err != nil {
		b.Fatal(err)
	}
	ws := []*workload{attach(b, s, hosts[0], "j1"), attach(b, s, hosts[1], "j2")}
	for _, w := range ws {
		w.Netns().ServeTCP(fmt.Sprintf("0.0.0.0:%d", probePort))
	}
	type sample struct{ ready, peers, reach, addToReach time.Duration }
	var samples []sample
	b.ResetTimer()
	for i := 2; i < n; i++ {
		h := hosts[i]
		start := time.Now()
		if err := s.Join(context.Background(), h); err != nil {
			b.Fatal(err)
		}
		ready := time.Since(start)
		w := attach(b, s, h, "j"+strconv.Itoa(i+1))
		added := time.Now()
		w.Netns().ServeTCP(fmt.Sprintf("0.0.0.0:%d", probePort))
		last := added
		for _, o := range ws {
			at, err := probeUntil(o.Netns(), w.ip, time.Now().Add(60*time.Second))
			if err != nil {
				b.Fatalf("%s not reachable from %s: %v", w.ip, o.Host().Name(), err)
			}
			if at.After(last) {
				last = at
			}
		}
		// Every other node has the joiner as a peer by now.
		peersAt := time.Now()
		for _, o := range hosts[:i] {
			st := status(b, o)
			found := false
			for _, p := range st.WireGuard.Peers {
				found = found || p.Node == h.Name()
			}
			if !found {
				b.Fatalf("%s has no peer %s although its workload answered", o.Name(), h.Name())
			}
		}
		samples = append(samples, sample{ready: ready, peers: peersAt.Sub(start), reach: last.Sub(start), addToReach: last.Sub(added)})
		ws = append(ws, w)
	}
	b.StopTimer()
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nNode join → encrypted reachability, %d joins, load %s\n\n| join | start → ready | start → reachable from every node | workload add → reachable from every node |\n| --- | --- | --- | --- |\n", len(samples), loadAvg())
	var readies, reaches, adds []float64
	for i, x := range samples {
		fmt.Fprintf(&sb, "| h%d | %s | %s | %s |\n", i+3, msf(x.ready), msf(x.reach), msf(x.addToReach))
		readies, reaches, adds = append(readies, ms(x.ready)), append(reaches, ms(x.reach)), append(adds, ms(x.addToReach))
	}
	fmt.Fprintf(&sb, "| median | %.0f ms | %.0f ms | %.1f ms |\n", median(readies), median(reaches), median(adds))
	fmt.Fprint(os.Stdout, sb.String())
}

// pinger pings every interval from a namespace until stopped.
type pinger struct {
	cmd *exec.Cmd
	out strings.Builder
}

func startPing(b *testing.B, from *testbed.Netns, to string, interval time.Duration) *pinger {
	b.Helper()
	p := &pinger{cmd: exec.Command("nsenter", "--net="+from.Path(), "ping", "-n", "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "5", to)}
	p.cmd.Stdout = &p.out
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return p
}

var pingReply = regexp.MustCompile(`icmp_seq=(\d+) `)
var pingSent = regexp.MustCompile(`(\d+) packets transmitted`)

// stop returns the requests sent and lost (those after the last answered
// one, in flight when ping is interrupted, not counted).
func (p *pinger) stop() (sent, lost int) {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	_ = p.cmd.Wait()
	out := p.out.String()
	if m := pingSent.FindStringSubmatch(out); m != nil {
		sent, _ = strconv.Atoi(m[1])
	}
	replied := map[int]bool{}
	for _, m := range pingReply.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		replied[n] = true
	}
	for sent > 0 && !replied[sent] {
		sent--
	}
	for i := 1; i <= sent; i++ {
		if !replied[i] {
			lost++
		}
	}
	return sent, lost
}

// BenchmarkWireGuardRestartAndRotation: with pings every 20 ms both ways
// between workloads on two WireGuard nodes, h1's agent is killed (SIGKILL)
// and restarted, wg.repeats times, then h1's key is rotated wg.repeats
// times; packets lost (target 0), the time to ready, whether a handshake
// was needed after a restart, and the rotation's duration.
func BenchmarkWireGuardRestartAndRotation(b *testing.B) {
	oneShot(b)
	s := startCluster(b, 2, wgTOML)
	h1, h2 := s.Hosts()[0], s.Hosts()[1]
	a := attach(b, s, h1, "a")
	z := attach(b, s, h2, "z")
	s.Expect(testbed.Reach(a.Netns(), z.ip, testbed.Ping()), testbed.Reach(z.Netns(), a.ip, testbed.Ping()))
	handshake := func() time.Time {
		st := status(b, h1).WireGuard
		if st == nil || len(st.Peers) != 1 {
			b.Fatalf("h1's device: %+v", st)
		}
		return st.Peers[0].LatestHandshake
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nAgent restarts and key rotations under pings every 20 ms both ways (h1-a ↔ h2-z), load %s\n\n", loadAvg())
	fmt.Fprintf(&sb, "| event | pings sent | lost | detail |\n| --- | --- | --- | --- |\n")
	b.ResetTimer()
	for i := range *repeats {
		hs := handshake()
		pa, pz := startPing(b, a.Netns(), z.ip, 20*time.Millisecond), startPing(b, z.Netns(), a.ip, 20*time.Millisecond)
		time.Sleep(500 * time.Millisecond)
		if err := h1.Kill9(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := h1.StartAgent(); err != nil {
			b.Fatal(err)
		}
		if err := h1.WaitReady(context.Background()); err != nil {
			b.Fatal(err)
		}
		ready := time.Since(start)
		time.Sleep(time.Second)
		s1, l1 := pa.stop()
		s2, l2 := pz.stop()
		detail := fmt.Sprintf("ready %s after the restart; ", msf(ready))
		if after := handshake(); after.Equal(hs) {
			detail += "no handshake needed (the device kept its sessions)"
		} else {
			detail += fmt.Sprintf("a handshake at +%s (WireGuard's own rekey)", after.Sub(start).Round(time.Millisecond))
		}
		fmt.Fprintf(&sb, "| kill -9 + restart #%d | %d | %d | %s |\n", i+1, s1+s2, l1+l2, detail)
	}
	for i := range *repeats {
		pa, pz := startPing(b, a.Netns(), z.ip, 20*time.Millisecond), startPing(b, z.Netns(), a.ip, 20*time.Millisecond)
		time.Sleep(500 * time.Millisecond)
		start := time.Now()
		if _, err := h1.Weft("wireguard", "rotate-key"); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		time.Sleep(time.Second)
		s1, l1 := pa.stop()
		s2, l2 := pz.stop()
		fmt.Fprintf(&sb, "| key rotation #%d | %d | %d | `weft wireguard rotate-key` took %s |\n", i+1, s1+s2, l1+l2, msf(took))
	}
	b.StopTimer()
	fmt.Fprint(os.Stdout, sb.String())
}

// ---- idle cost ----

type procUsage struct {
	rssKB int
	cpu   time.Duration
}

func usage(pid int) (procUsage, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procUsage{}, err
	}
	var u procUsage
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			u.rssKB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procUsage{}, err
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	u.cpu = time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ 100
	return u, nil
}

// BenchmarkWireGuardIdle: two 3-node clusters side by side, one with
// WireGuard and one without, two workloads per host, idle for
// wg.idle-seconds: each agent's and device process's RSS at the end and
// CPU over the period.
func BenchmarkWireGuardIdle(b *testing.B) {
	oneShot(b)
	type proc struct{ what, cluster string }
	pids := map[proc]int{}
	for _, c := range []struct{ name, toml string }{{"WireGuard", wgTOML}, {"no WireGuard", ""}} {
		s := startCluster(b, 3, c.toml)
		var ws []*workload
		for _, h := range s.Hosts() {
			ws = append(ws, attach(b, s, h, h.Name()+"-a"), attach(b, s, h, h.Name()+"-b"))
		}
		s.Expect(testbed.Reach(ws[0].Netns(), ws[len(ws)-1].ip, testbed.Ping()))
		for _, h := range s.Hosts() {
			pids[proc{"agent " + h.Name(), c.name}] = h.PID()
			if st := status(b, h).WireGuard; st != nil && st.DevicePID > 0 {
				pids[proc{"device process " + h.Name(), c.name}] = st.DevicePID
			}
		}
	}
	before := map[proc]procUsage{}
	for p, pid := range pids {
		u, err := usage(pid)
		if err != nil {
			b.Fatal(err)
		}
		before[p] = u
	}
	b.ResetTimer()
	time.Sleep(time.Duration(*idleSeconds) * time.Second)
	b.StopTimer()
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nIdle, two 3-node clusters side by side (2 workloads per host), %d s, load %s\n\n| process | cluster | RSS (MB) | CPU over %d s (%% of one core) |\n| --- | --- | --- | --- |\n", *idleSeconds, loadAvg(), *idleSeconds)
	keys := make([]proc, 0, len(pids))
	for p := range pids {
		keys = append(keys, p)
	}
	slices.SortFunc(keys, func(x, y proc) int { return strings.Compare(x.cluster+x.what, y.cluster+y.what) })
	for _, p := range keys {
		u, err := usage(pids[p])
		if err != nil {
			b.Fatal(err)
		}
		cpu := float64(u.cpu-before[p].cpu) / float64(time.Duration(*idleSeconds)*time.Second) * 100
		fmt.Fprintf(&sb, "| %s | %s | %.1f | %.2f |\n", p.what, p.cluster, float64(u.rssKB)/1024, cpu)
	}
	fmt.Fprint(os.Stdout, sb.String())
}

// ---- helpers ----

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func msf(d time.Duration) string { return fmt.Sprintf("%.0f ms", ms(d)) }

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
