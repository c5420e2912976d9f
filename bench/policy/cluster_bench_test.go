package policybench

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

func TestMain(m *testing.M) { testbed.Main(m) }

var (
	applies     = flag.Int("pol.applies", 100, "policy applies in the cluster benchmark")
	heapProfile = flag.String("pol.heap-profile", "", "write the loaded agent's heap profile here")
)

// benchTOML: production log level, no BGP.
const benchTOML = "[log]\nlevel = \"info\"\n[bgp]\nenabled = false\n"

func startCluster(b *testing.B, n int, backend string) *testbed.Site {
	b.Helper()
	site := testbed.New(b, testbed.Options{Hosts: n, NoStart: true, ReadyTimeout: 120 * time.Second,
		ExpectTimeout: 60 * time.Second, ExtraTOML: benchTOML + fmt.Sprintf("[dataplane]\nbackend = %q\n", backend)})
	if err := site.StartCluster(context.Background()); err != nil {
		b.Fatal(err)
	}
	return site
}

func addWorkload(b *testing.B, site *testbed.Site, h *testbed.Host, name string, labels ...string) (*testbed.Workload, string) {
	b.Helper()
	w := site.AddWorkload(h, name)
	args := []string{"workload", "add", name, "--netns", w.Path(), "-o", "json"}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	out, err := h.Weft(args...)
	if err != nil {
		b.Fatalf("workload add %s: %v\n%s", name, err, out)
	}
	var info localapi.Workload
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		b.Fatal(err)
	}
	ip, _, _ := strings.Cut(info.IPs[0], "/")
	return w, ip
}

func encode(b *testing.B, rs ...api.Resource) string {
	b.Helper()
	out, err := api.Encode("yaml", rs)
	if err != nil {
		b.Fatal(err)
	}
	return string(out)
}

// applyDoc writes documents through a host's local API and returns the
// revision of the last resource written.
func applyDoc(b *testing.B, h *testbed.Host, doc string) uint64 {
	b.Helper()
	resp, err := localapi.NewClient(h.Socket()).Write(context.Background(), localapi.WriteRequest{Mode: localapi.ModeApply, Data: doc})
	if err != nil {
		b.Fatalf("apply: %v", err)
	}
	var rev uint64
	for _, r := range resp.Results {
		n, _ := strconv.ParseUint(r.ResourceVersion, 10, 64)
		rev = max(rev, n)
	}
	return rev
}

// appliedRevision is the revision whose policy a node's kernel holds.
func appliedRevision(h *testbed.Host) uint64 {
	st, err := localapi.NewClient(h.Socket()).Status(context.Background())
	if err != nil || st.Policy == nil {
		return 0
	}
	return st.Policy.AppliedRevision
}

// BenchmarkApplyToEnforced: on a 3-node cluster with a workload on every
// node and a policy selecting them all, the time from `weft apply` of an
// edit of that policy returning to every node's kernel holding it (each
// node's policy dataplane reports the revision applied). Run once, as
// root.
func BenchmarkApplyToEnforced(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	site := startCluster(b, 3, "nftables")
	hosts := site.Hosts()
	for i, h := range hosts {
		addWorkload(b, site, h, fmt.Sprintf("w%d", i), "app=bench")
	}
	pol := func(port int) string {
		return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: bench}
spec:
  selector: app == 'bench'
  ingress:
  - {action: Allow, protocol: TCP, destination: {ports: [%d]}}
`, port)
	}
	rev := applyDoc(b, hosts[0], pol(1000))
	waitAll := func(rev uint64) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for _, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				deadline := time.Now().Add(30 * time.Second)
				for appliedRevision(h) < rev {
					if time.Now().After(deadline) {
						b.Errorf("%s never applied revision %d", h.Name(), rev)
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	waitAll(rev)
	var lat, calls []time.Duration
	for i := range *applies {
		// Alternate the node that is asked: a follower forwards to the
		// leader.
		h := hosts[i%len(hosts)]
		start := time.Now()
		rev := applyDoc(b, h, pol(1001+i))
		calls = append(calls, time.Since(start))
		lat = append(lat, waitAll(rev))
	}
	// The baseline: the apply call itself (a raft commit through the
	// leader), measured on the same applies.
	b.Logf("\n%d applies of a policy edit on a 3-node cluster, `weft apply` returned → enforced on every node: p50 %s, p90 %s, p99 %s, max %s; target p99 < 100 ms: %s\n"+
		"baseline, the apply call itself: p50 %s, p99 %s; ratio enforced/call p50 %.2f, p99 %.2f\n",
		len(lat), ms(median(lat)), ms(percentile(lat, 0.9)), ms(percentile(lat, 0.99)), ms(percentile(lat, 1)), met(percentile(lat, 0.99) < 100*time.Millisecond),
		ms(median(calls)), ms(percentile(calls, 0.99)), float64(median(lat))/float64(median(calls)), float64(percentile(lat, 0.99))/float64(percentile(calls, 0.99)))
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// rssKB reads a process's VmRSS.
func rssKB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func medianRSS(pid int) int {
	var xs []int
	for range 5 {
		xs = append(xs, rssKB(pid))
		time.Sleep(200 * time.Millisecond)
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// BenchmarkAgentAtScale loads one agent with the benchmark world —
// 1,000 policies × 10 rules, 1,000 remote endpoints, 10,000 set members —
// and measures its RSS against the same process before; then, with a UDP
// stream between two of its workloads through the policy, restarts it
// (SIGTERM) over the ruleset in the kernel and measures the time to in
// sync and the packets lost. The remote endpoints are HostEndpoints of
// 1,000 other nodes (remote WorkloadEndpoints cannot be written through
// the API: only their node makes them); they enter the same label index
// and sets. Run once, as root.
func BenchmarkAgentAtScale(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	for _, name := range backendNames() {
		b.Run(name, func(b *testing.B) { agentAtScale(b, name) })
	}
}

func agentAtScale(b *testing.B, backend string) {
	site := startCluster(b, 1, backend)
	h := site.Hosts()[0]
	var ips []string
	var wls []*testbed.Workload
	for j := range nLocal {
		w, ip := addWorkload(b, site, h, fmt.Sprintf("local-%d", j), fmt.Sprintf("app=app-%d", j))
		wls, ips = append(wls, w), append(ips, ip)
	}
	time.Sleep(2 * time.Second)
	idle := medianRSS(h.PID())

	// The world, in requests under the 1 MiB limit.
	world := []api.Resource{frontendSet()}
	for k := range nRemote {
		hep := &api.HostEndpoint{}
		hep.Metadata.Name = fmt.Sprintf("remote-%d", k)
		hep.Metadata.Labels = map[string]string{"group": fmt.Sprintf("g%d", k%9+1), "role": "backend"}
		hep.Spec = api.HostEndpointSpec{Node: fmt.Sprintf("node-%d", k), InterfaceName: "eth0", ExpectedIPs: []string{fmt.Sprintf("10.200.%d.%d", k/250, k%250+1)}}
		world = append(world, hep)
	}
	for i := range nPolicies {
		world = append(world, policy(i, 8003))
	}
	// The stream's allowance: w0 → w1 UDP 9.
	allow := &api.GlobalNetworkPolicy{}
	allow.Metadata.Name = "stream"
	order := 1.0
	udp := api.ProtocolFromString("UDP")
	allow.Spec = api.GlobalNetworkPolicySpec{Order: &order, Selector: "app == 'app-1'", Ingress: []api.Rule{{Action: api.ActionAllow, Protocol: &udp,
		Source: api.EntityRule{Nets: []string{ips[0] + "/32"}}}}}
	world = append(world, allow)
	start := time.Now()
	var last uint64
	for i := 0; i < len(world); i += 200 {
		last = applyDoc(b, h, encode(b, world[i:min(i+200, len(world))]...))
	}
	for appliedRevision(h) < last {
		time.Sleep(10 * time.Millisecond)
	}
	programmed := time.Since(start)
	st, _ := localapi.NewClient(h.Socket()).Status(context.Background())
	time.Sleep(2 * time.Second)
	loaded := medianRSS(h.PID())
	// What the RSS is made of: the binary's pages (file) against the heap
	// and stacks (anonymous).
	var rollup []string
	if sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", h.PID())); err == nil {
		for _, l := range strings.Split(string(sm), "\n") {
			for _, k := range []string{"Rss:", "Anonymous:", "Pss_File:", "Pss_Anon:"} {
				if strings.HasPrefix(l, k) {
					rollup = append(rollup, strings.Join(strings.Fields(l), " "))
				}
			}
		}
	}
	if *heapProfile != "" {
		out, err := exec.Command("curl", "-s", "--unix-socket", h.Socket(), "-o", *heapProfile, "http://weft/debug/pprof/heap?gc=1").CombinedOutput()
		if err != nil {
			b.Logf("heap profile: %v %s", err, out)
		}
	}

	// A UDP stream w0 → w1 at 2,000 packets/s.
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	var conn net.Conn
	if err := wls[0].Netns().Do(func() error {
		c, err := net.Dial("udp", ips[1]+":9")
		conn = c
		return err
	}); err != nil {
		b.Fatal(err)
	}
	// w1's UDP layer counts the datagrams that reached it (nothing
	// listens on port 9: NoPorts), and only those (the interface's own
	// counter also counts ARP and neighbour discovery).
	rx := func() uint64 {
		out, err := wls[1].Exec("cat", "/proc/net/snmp")
		if err != nil {
			b.Fatal(err)
		}
		var names []string
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "Udp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			var n uint64
			for i, k := range names {
				if k == "InDatagrams" || k == "NoPorts" || k == "InErrors" {
					v, _ := strconv.ParseUint(f[i], 10, 64)
					n += v
				}
			}
			return n
		}
		b.Fatal("no Udp counters in /proc/net/snmp")
		return 0
	}
	rx0 := rx()
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				for range 2 {
					if _, err := conn.Write([]byte("weft-bench")); err == nil {
						sent.Add(1)
					}
				}
			}
		}
	}()
	time.Sleep(time.Second)
	if err := h.StopAgent(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Second)
	restart := time.Now()
	if err := h.StartAgent(); err != nil {
		b.Fatal(err)
	}
	var ready, inSync time.Duration
	for {
		s, err := localapi.NewClient(h.Socket()).Status(context.Background())
		if err == nil && s.Ready && ready == 0 {
			ready = time.Since(restart)
		}
		if err == nil && s.Policy != nil && s.Policy.AppliedRevision >= last {
			inSync = time.Since(restart)
			break
		}
		if time.Since(restart) > 5*time.Minute {
			b.Fatal("the restarted agent never came in sync")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ready == 0 {
		ready = inSync
	}
	time.Sleep(time.Second)
	close(stop)
	<-done
	time.Sleep(200 * time.Millisecond)
	received := int64(rx() - rx0)
	restartedRSS := medianRSS(h.PID())

	mb := func(kb int) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }
	b.Logf("\nworld: %d policies × %d rules, %d remote endpoints, %d set members, %d local workloads: programmed through the API in %s (%d chains, %d rules, %d sets, %d set members in the kernel)\n"+
		"| agent RSS | before the world | with the world | ratio | after a restart over it |\n|---|---|---|---|---|\n| %s | %s | %s | %.2f | %s |\n"+
		"target < 60 MB with the world: %s (with the world: %s)\n\n"+
		"cold start over the ruleset in the kernel: ready in %s, policy in sync in %s; UDP stream w0 → w1 through the policy: %d sent, %d received, %d lost (target 0: %s)\n",
		nPolicies, nRulesPerPolicy, nRemote, nSetMembers, nLocal, programmed.Round(time.Millisecond), st.Policy.Chains, st.Policy.Rules, st.Policy.Sets, st.Policy.SetMembers,
		h.Name(), mb(idle), mb(loaded), float64(loaded)/float64(idle), mb(restartedRSS), met(loaded < 60*1024), strings.Join(rollup, ", "),
		ready.Round(time.Millisecond), inSync.Round(time.Millisecond), sent.Load(), received, sent.Load()-received, met(sent.Load() <= received))
}
