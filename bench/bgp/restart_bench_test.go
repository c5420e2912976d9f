package bgpbench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgptest"
	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

var (
	kills  = flag.Int("bgp.kills", 4, "kill -9 + restart rounds of BenchmarkBGPRestartAndDeath (victims alternate h1, h3)")
	deaths = flag.Int("bgp.deaths", 3, "node death (cable cut) rounds of BenchmarkBGPRestartAndDeath")
)

// nativePoolTOML: a native pool (no encapsulation) and each node labelled with
// its subnet (rackTOML), as in the end-to-end BGP tests: between the two
// subnets only BGP routes the blocks.
const nativePoolTOML = "[[network.pool]]\nname = \"native\"\ncidr = \"10.246.0.0/16\"\nvxlan_mode = \"Never\"\nnat_outgoing = false\n"

func rackTOML(h *testbed.Host) string {
	return fmt.Sprintf("[node]\nlabels = { rack = \"r%d\" }\n", h.Subnet())
}

// rackPeers: every node peers with the router on its own subnet.
func rackPeers(site *testbed.Site) string {
	var b strings.Builder
	for i, sn := range site.Subnets() {
		fmt.Fprintf(&b, "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rack-%d}\nspec: {nodeSelector: \"rack == 'r%d'\", peerIP: %q, asNumber: %d}\n---\n",
			i, i, sn.RouterAddr().String(), bgptest.RouterAS)
	}
	return b.String()
}

// attach adds workload name on h with weft and returns its namespace and
// IPv4 address.
func attach(b *testing.B, site *testbed.Site, h *testbed.Host, name string) (*testbed.Netns, string) {
	b.Helper()
	w := site.AddWorkload(h, name)
	out, err := h.Weft("workload", "add", name, "--netns", w.Path(), "-o", "json")
	if err != nil {
		b.Fatalf("%s: workload add %s: %v %s", h.Name(), name, err, out)
	}
	var info localapi.Workload
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		b.Fatalf("%s: workload add %s printed %q: %v", h.Name(), name, out, err)
	}
	for _, p := range info.IPs {
		if pp, err := netip.ParsePrefix(p); err == nil && pp.Addr().Is4() {
			return w.Netns(), pp.Addr().String()
		}
	}
	b.Fatalf("%s: workload add %s answered no IPv4 address: %+v", h.Name(), name, info)
	return nil, ""
}

// flow is a ping every 10 ms from a namespace, stopped with SIGINT so that
// it prints its statistics whenever the event it spans is over.
type flow struct {
	what string
	cmd  *exec.Cmd
	out  bytes.Buffer
}

func startFlow(b *testing.B, ns *testbed.Netns, to string) *flow {
	b.Helper()
	f := &flow{what: ns.Label() + " → " + to}
	f.cmd = exec.Command("ping", "-n", "-q", "-i", "0.01", "-W", "1", to)
	f.cmd.Stdout = &f.out
	if err := ns.Launch(f.cmd); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.cmd.Process.Kill(); _ = f.cmd.Wait() })
	return f
}

var pingStatsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// stop ends the flow and returns what it sent and lost.
func (f *flow) stop(b *testing.B) (sent, lost int) {
	b.Helper()
	_ = f.cmd.Process.Signal(syscall.SIGINT)
	_ = f.cmd.Wait()
	m := pingStatsRE.FindStringSubmatch(f.out.String())
	if m == nil {
		b.Fatalf("%s: no ping statistics: %q", f.what, f.out.String())
	}
	sent, _ = strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	return sent, sent - recv
}

// BenchmarkBGPRestartAndDeath: three nodes on two subnets, BIRD as the
// site's router (its default graceful-restart helper), a native pool.
// (1) Packets lost by three ping flows (every 10 ms: across the router
// both ways and within a subnet) across kill -9 + immediate restart of
// an agent until it is synced again, bgp.kills rounds alternating h1 and
// h3, against the same flows over the same time with nothing happening
// (the baseline, run right after each restart for as long as it took). (2) A node's cable cut →
// its block's routes gone from a node on its subnet (derived from the
// store), from a node on the other subnet (learned over BGP) and from
// BIRD, bgp.deaths rounds (the cable back in between), against the 3 s
// hold time.
func BenchmarkBGPRestartAndDeath(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	site := testbed.New(b, testbed.Options{Hosts: 3, Subnets: 2, NoStart: true, ReadyTimeout: 90 * time.Second,
		ExtraTOML: benchTOML + nativePoolTOML, HostTOML: rackTOML})
	if err := site.StartCluster(context.Background()); err != nil {
		b.Fatal(err)
	}
	hosts := site.Hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	if h1.Subnet() != 0 || h2.Subnet() != 0 || h3.Subnet() != 1 {
		b.Fatalf("subnets %d %d %d", h1.Subnet(), h2.Subnet(), h3.Subnet())
	}
	ns := map[string]*testbed.Netns{}
	var ip1, ip2, ip3 string
	ns["w1"], ip1 = attach(b, site, h1, "w1")
	ns["w2"], ip2 = attach(b, site, h2, "w2")
	ns["w3"], ip3 = attach(b, site, h3, "w3")
	r := bgptest.StartBIRD(b, site.Router(), "bird-router",
		bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: bgptest.NodePeers(hosts, false)}.Config())
	apply(b, h1, rackPeers(site))
	sn := site.Subnets()
	peersOf := map[*testbed.Host][]string{
		h1: {sn[0].RouterAddr().String(), h2.Address(), h3.Address()},
		h2: {sn[0].RouterAddr().String(), h1.Address(), h3.Address()},
		h3: {sn[1].RouterAddr().String(), h1.Address(), h2.Address()},
	}
	synced := func(h *testbed.Host) (bool, error) {
		if err := bgptest.SessionsUp(h, peersOf[h]...); err != nil {
			return false, err
		}
		st, err := bgptest.Status(h)
		return err == nil && !st.Syncing, err
	}
	for _, h := range hosts {
		waitFor(b, h.Name()+" synced", 120*time.Second, func() (bool, error) { return synced(h) })
	}
	reach := func(from, to string) (bool, error) {
		_, err := ns[from].Exec("ping", "-n", "-q", "-c", "1", "-W", "1", to)
		return err == nil, err
	}
	for _, p := range [][2]string{{"w3", ip1}, {"w2", ip3}, {"w1", ip2}} {
		waitFor(b, p[0]+" reaches "+p[1], 60*time.Second, func() (bool, error) { return reach(p[0], p[1]) })
	}

	type lossRound struct {
		victim        string
		took          time.Duration
		sent, lost    int
		bsent, blost  int
		perFlowDetail string
	}
	flows := func() []*flow {
		return []*flow{startFlow(b, ns["w3"], ip1), startFlow(b, ns["w2"], ip3), startFlow(b, ns["w1"], ip2)}
	}
	stopAll := func(fs []*flow) (sent, lost int, detail string) {
		var ds []string
		for _, f := range fs {
			s, l := f.stop(b)
			sent, lost = sent+s, lost+l
			ds = append(ds, fmt.Sprintf("%s %d/%d", f.what, l, s))
		}
		return sent, lost, strings.Join(ds, "; ")
	}
	var losses []lossRound
	for i := range *kills {
		victim := []*testbed.Host{h1, h3}[i%2]
		var lr lossRound
		lr.victim = victim.Name()
		fs := flows()
		time.Sleep(2 * time.Second)
		if err := victim.Kill9(); err != nil {
			b.Fatal(err)
		}
		killed := time.Now()
		if err := victim.StartAgent(); err != nil {
			b.Fatal(err)
		}
		waitFor(b, victim.Name()+" synced after kill -9", 120*time.Second, func() (bool, error) { return synced(victim) })
		lr.took = time.Since(killed)
		time.Sleep(2 * time.Second)
		span := time.Since(killed) + 2*time.Second
		lr.sent, lr.lost, lr.perFlowDetail = stopAll(fs)
		// The baseline: the same flows over the same span, nothing happening.
		fs = flows()
		time.Sleep(span)
		lr.bsent, lr.blost, _ = stopAll(fs)
		losses = append(losses, lr)
		fmt.Printf("kill round %d: %+v\n", i+1, lr)
	}

	type deathRound struct{ derived, learned, bird time.Duration }
	var dead []deathRound
	block := netip.PrefixFrom(netip.MustParseAddr(ip1), 26).Masked().String()
	gone := func(h *testbed.Host) func() bool {
		return func() bool { via, err := bgptest.RouteVia(h, block); return err == nil && via == "" }
	}
	watch := func(start time.Time, cond func() bool) <-chan time.Duration {
		ch := make(chan time.Duration, 1)
		go func() {
			for time.Since(start) < 30*time.Second {
				if cond() {
					ch <- time.Since(start)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			ch <- -1
		}()
		return ch
	}
	for range *deaths {
		if via, _ := bgptest.RouteVia(h2, block); via != h1.Address() {
			b.Fatalf("h2's route to h1's block %s: via %q, want %s", block, via, h1.Address())
		}
		if via, _ := bgptest.RouteVia(h3, block); via != h3.Gateway() {
			b.Fatalf("h3's route to h1's block %s: via %q, want %s", block, via, h3.Gateway())
		}
		if err := h1.CutLink(); err != nil {
			b.Fatal(err)
		}
		cut := time.Now()
		onH2, onH3 := watch(cut, gone(h2)), watch(cut, gone(h3))
		onBIRD := watch(cut, func() bool {
			rs, err := r.Routes()
			_, has := rs[block]
			return err == nil && !has
		})
		d := deathRound{<-onH2, <-onH3, <-onBIRD}
		if d.derived < 0 || d.learned < 0 || d.bird < 0 {
			b.Fatalf("the dead node's routes did not all go within 30 s: %+v", d)
		}
		dead = append(dead, d)
		fmt.Printf("death round %d: %+v\n", len(dead), d)
		if err := h1.HealLink(); err != nil {
			b.Fatal(err)
		}
		// BIRD on its defaults waits 60 s after a hold-timer expiry before
		// it takes the session up again, doubling up to 300 s
		// (`error wait time 60, 300`): restart the protocol instead.
		if out, err := r.Birdc("restart", h1.Name()); err != nil {
			b.Fatalf("birdc restart %s: %v %s", h1.Name(), err, out)
		}
		for _, h := range hosts {
			waitFor(b, h.Name()+" synced after the cable is back", 120*time.Second, func() (bool, error) { return synced(h) })
		}
		waitFor(b, "h1's block back on h2, h3 and BIRD", 60*time.Second, func() (bool, error) {
			v2, _ := bgptest.RouteVia(h2, block)
			v3, _ := bgptest.RouteVia(h3, block)
			rs, err := r.Routes()
			_, has := rs[block]
			return v2 == h1.Address() && v3 == h3.Gateway() && has, err
		})
	}

	fmt.Printf("\nkill -9 + restart of an agent, 3 ping flows every 10 ms (w3→w1 and w2→w3 across BIRD, w1→w2 within a subnet) (load %s)\n\n", loadavg())
	fmt.Printf("| round | victim | kill → restarted agent synced (ms) | lost/sent across the restart | lost/sent, same flows, same span, no event (baseline) | per flow (lost/sent) |\n| --- | --- | --- | --- | --- | --- |\n")
	var took []time.Duration
	totalLost, totalSent := 0, 0
	for i, l := range losses {
		fmt.Printf("| %d | %s | %s | %d/%d | %d/%d | %s |\n", i+1, l.victim, ms(l.took), l.lost, l.sent, l.blost, l.bsent, l.perFlowDetail)
		took = append(took, l.took)
		totalLost, totalSent = totalLost+l.lost, totalSent+l.sent
	}
	fmt.Printf("\nlost %d of %d packets over %d restarts (target 0: %s); kill → synced median %s ms, max %s ms\n",
		totalLost, totalSent, len(losses), map[bool]string{true: "met", false: "NOT met"}[totalLost == 0], ms(percentile(took, .5)), ms(percentile(took, 1)))
	fmt.Printf("\nnode death (h1's cable cut) → h1's block %s gone, hold time 3 s (load %s)\n\n", block, loadavg())
	fmt.Printf("| round | from h2, derived route (ms) | from h3, learned route (ms) | from BIRD (ms) |\n| --- | --- | --- | --- |\n")
	var all []time.Duration
	for i, d := range dead {
		fmt.Printf("| %d | %s | %s | %s |\n", i+1, ms(d.derived), ms(d.learned), ms(d.bird))
		all = append(all, d.derived, d.learned, d.bird)
	}
	fmt.Printf("\nslowest %s ms, median %s ms (target < 3000 ms: %s)\n", ms(percentile(all, 1)), ms(percentile(all, .5)),
		map[bool]string{true: "met", false: "NOT met"}[percentile(all, 1) < 3*time.Second])
}
