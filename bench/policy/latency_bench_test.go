package policybench

import (
	"context"
	"flag"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/dataplane/nft"
	"github.com/weftnet/weft/internal/netns/nstest"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/store"
)

var (
	changes = flag.Int("pol.changes", 200, "changes of each kind in the latency benchmark")
	rounds  = flag.Int("pol.rounds", 3, "rounds (medians are over rounds)")
	restore = flag.Int("pol.restores", 5, "iptables-nft-restore runs per round")
)

// node is the calculation and the nftables firewall of one node, wired
// as in the agent minus the store: a store event goes through the
// dispatcher (decoding, topology, the incremental policy calculation),
// Compute (the whole desired state, validated), the firewall manager's
// Set and Apply (one nftables transaction).
type node struct {
	disp *calc.Dispatcher
	fw   *firewall.Manager
	rev  uint64
}

func newNode(tb testing.TB, ns *nstest.NS) *node {
	be, err := nft.New(nft.Config{NetNS: ns.Path})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { be.Close() })
	fw, err := firewall.New(firewall.Config{}, be)
	if err != nil {
		tb.Fatal(err)
	}
	return &node{disp: calc.New(calc.Config{NodeName: "local"}), fw: fw}
}

// apply puts resources (each a store event, the store's encoding made
// beforehand: it is the replica's) and programs the result; it returns
// the time from the first event to the kernel holding it, and the
// calculation's part.
func (n *node) apply(tb testing.TB, rs ...api.Resource) (total, calcPart time.Duration) {
	tb.Helper()
	evs := make([]store.Event, len(rs))
	for i, r := range rs {
		n.rev++
		evs[i] = event(tb, r, n.rev)
	}
	start := time.Now()
	for _, ev := range evs {
		n.disp.OnEvent(ev)
	}
	out, err := n.disp.Compute(n.rev)
	if err != nil {
		tb.Fatal(err)
	}
	n.fw.Set(&out.Desired)
	calcPart = time.Since(start)
	for _, ph := range []dataplane.Phase{dataplane.PhaseUpdate, dataplane.PhaseRemove} {
		if err := n.fw.Apply(context.Background(), ph); err != nil {
			tb.Fatal(err)
		}
	}
	return time.Since(start), calcPart
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func median(ds []time.Duration) time.Duration { return percentile(ds, 0.5) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// BenchmarkChangeToKernel measures, with the world programmed (1,000
// policies × 10 rules, 10,000 set members, 1,000 remote endpoints), the
// time from a store change to the kernel holding it: a policy edit (one
// rule's port), and a label change that moves a remote endpoint into the
// selector every policy uses. Side by side, in the same rounds: the same
// ruleset rewritten the way Felix does, `iptables-nft-restore` of the whole
// table. Run once (-benchtime=1x), as root.
func BenchmarkChangeToKernel(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	ns := nstest.New(b, "p")
	n := newNode(b, ns)
	objs := worldObjects()
	start := time.Now()
	// The listing then SYNC, as the runner feeds it: one Compute.
	cold, _ := n.apply(b, objs...)
	st := n.fw.Status()
	b.Logf("world programmed from scratch in %s (%d chains, %d rules, %d sets, %d set members) (build %s)",
		ms(cold), st.Chains, st.Rules, st.Sets, st.SetMembers, time.Since(start))

	// The Felix way: ipsets once, then the whole table restored.
	ipset := exec.Command("ip", "netns", "exec", ns.Name, "ipset", "restore")
	ipset.Stdin = strings.NewReader(ipsetRestore())
	if out, err := ipset.CombinedOutput(); err != nil {
		b.Fatalf("ipset restore: %v\n%s", err, out)
	}
	rules := iptablesRuleset()
	restoreOnce := func() time.Duration {
		cmd := exec.Command("ip", "netns", "exec", ns.Name, "iptables-nft-restore")
		cmd.Stdin = strings.NewReader(rules)
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("iptables-nft-restore: %v\n%s", err, out)
		}
		return time.Since(t0)
	}
	restoreOnce() // the first creates the table

	type result struct{ edit, label, editCalc, labelCalc, restore []time.Duration }
	var perRound []result
	port := 8003
	frontend := false
	for r := range *rounds {
		var res result
		// Alternate which runs first.
		runWeft := func() {
			for i := range *changes {
				port = 8003 + 1000*((i+r)%2)
				p := policy(7, port)
				tot, c := n.apply(b, p)
				res.edit, res.editCalc = append(res.edit, tot), append(res.editCalc, c)
				frontend = !frontend
				w := remoteWEP(5, frontend)
				tot, c = n.apply(b, w)
				res.label, res.labelCalc = append(res.label, tot), append(res.labelCalc, c)
			}
		}
		runRestore := func() {
			for range *restore {
				res.restore = append(res.restore, restoreOnce())
			}
		}
		if r%2 == 0 {
			runWeft()
			runRestore()
		} else {
			runRestore()
			runWeft()
		}
		perRound = append(perRound, res)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| round | policy edit p50 / p99 | label change p50 / p99 | calc part (edit, label) p50 | iptables-nft-restore, whole table (median of %d) | restore / edit p50 |\n|---|---|---|---|---|---|\n", *restore)
	var editP99, labelP99, ratios []time.Duration
	for i, res := range perRound {
		ratio := float64(median(res.restore)) / float64(median(res.edit))
		fmt.Fprintf(&sb, "| %d | %s / %s | %s / %s | %s, %s | %s | %.0f× |\n", i+1,
			ms(median(res.edit)), ms(percentile(res.edit, 0.99)), ms(median(res.label)), ms(percentile(res.label, 0.99)),
			ms(median(res.editCalc)), ms(median(res.labelCalc)), ms(median(res.restore)), ratio)
		editP99 = append(editP99, percentile(res.edit, 0.99))
		labelP99 = append(labelP99, percentile(res.label, 0.99))
		ratios = append(ratios, time.Duration(ratio*1000))
	}
	fmt.Fprintf(&sb, "\nmedian over rounds: policy edit p99 %s, label change p99 %s, restore/edit %.0f×\n",
		ms(median(editP99)), ms(median(labelP99)), float64(median(ratios))/1000)
	b.Log(sb.String())
}
