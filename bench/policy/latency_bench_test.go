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
	"github.com/weftnet/weft/dataplane/ipt"
	"github.com/weftnet/weft/dataplane/nft"
	"github.com/weftnet/weft/internal/netns/nstest"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/store"
)

var (
	changes  = flag.Int("pol.changes", 200, "changes of each kind in the latency benchmark")
	rounds   = flag.Int("pol.rounds", 3, "rounds (medians are over rounds)")
	restore  = flag.Int("pol.restores", 5, "iptables-nft-restore runs per round")
	backends = flag.String("pol.backends", "nftables,iptables", "the firewall backends to measure, side by side")
)

// backendNames are the backends of -pol.backends.
func backendNames() []string { return strings.Split(*backends, ",") }

// removeBackend removes what a backend programmed in a namespace.
func removeBackend(name, nsPath string) error {
	if name == "iptables" {
		return ipt.RemoveAll(context.Background(), nsPath)
	}
	return nft.RemoveTable(nsPath)
}

// newBackend opens a firewall backend on a namespace: nftables, or
// iptables in its nft variant (the variant of iptables-nft-restore, the
// baseline).
func newBackend(tb testing.TB, name, nsPath string) firewall.Backend {
	tb.Helper()
	var be firewall.Backend
	var err error
	switch name {
	case "nftables":
		be, err = nft.New(nft.Config{NetNS: nsPath})
	case "iptables":
		be, err = ipt.New(ipt.Config{NetNS: nsPath, Variant: "nft"})
	default:
		err = fmt.Errorf("unknown backend %q", name)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { be.Close() })
	return be
}

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

func newNode(tb testing.TB, ns *nstest.NS, backend string) *node {
	fw, err := firewall.New(firewall.Config{}, newBackend(tb, backend, ns.Path))
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
// time from a store change to the kernel holding it, for each backend of
// -pol.backends (each on a node namespace of its own): a policy edit (one
// rule's port), and a label change that moves a remote endpoint into the
// selector every policy uses. Side by side, in the same rounds (which run
// first rotates): the same ruleset rewritten the way Felix does,
// `iptables-nft-restore` of the whole table. Run once (-benchtime=1x), as
// root.
func BenchmarkChangeToKernel(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	names := backendNames()
	nodes := map[string]*node{}
	objs := worldObjects()
	for _, name := range names {
		n := newNode(b, nstest.New(b, "p"), name)
		start := time.Now()
		// The listing then SYNC, as the runner feeds it: one Compute.
		cold, _ := n.apply(b, objs...)
		st := n.fw.Status()
		b.Logf("%s (%s): world programmed from scratch in %s (%d chains, %d rules, %d sets, %d set members) (build %s)",
			name, st.Backend, ms(cold), st.Chains, st.Rules, st.Sets, st.SetMembers, time.Since(start))
		nodes[name] = n
	}

	// The Felix way: ipsets once, then the whole table restored.
	ns := nstest.New(b, "r")
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

	type series struct{ edit, label, editCalc, labelCalc []time.Duration }
	type result struct {
		weft    map[string]*series
		restore []time.Duration
	}
	var perRound []result
	frontend := map[string]bool{}
	for r := range *rounds {
		res := result{weft: map[string]*series{}}
		var runs []func()
		for _, name := range names {
			n, s := nodes[name], &series{}
			res.weft[name] = s
			runs = append(runs, func() {
				for i := range *changes {
					port := 8003 + 1000*((i+r)%2)
					tot, c := n.apply(b, policy(7, port))
					s.edit, s.editCalc = append(s.edit, tot), append(s.editCalc, c)
					frontend[name] = !frontend[name]
					tot, c = n.apply(b, remoteWEP(5, frontend[name]))
					s.label, s.labelCalc = append(s.label, tot), append(s.labelCalc, c)
				}
			})
		}
		runs = append(runs, func() {
			for range *restore {
				res.restore = append(res.restore, restoreOnce())
			}
		})
		// Rotate which runs first.
		for i := range runs {
			runs[(i+r)%len(runs)]()
		}
		perRound = append(perRound, res)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| round | backend | policy edit p50 / p99 | label change p50 / p99 | calc part (edit, label) p50 | iptables-nft-restore, whole table (median of %d) | restore / edit p50 |\n|---|---|---|---|---|---|---|\n", *restore)
	type agg struct{ editP99, labelP99, editP50, labelP50, ratios []time.Duration }
	aggs := map[string]*agg{}
	for i, res := range perRound {
		for _, name := range names {
			s := res.weft[name]
			ratio := float64(median(res.restore)) / float64(median(s.edit))
			fmt.Fprintf(&sb, "| %d | %s | %s / %s | %s / %s | %s, %s | %s | %.1f× |\n", i+1, name,
				ms(median(s.edit)), ms(percentile(s.edit, 0.99)), ms(median(s.label)), ms(percentile(s.label, 0.99)),
				ms(median(s.editCalc)), ms(median(s.labelCalc)), ms(median(res.restore)), ratio)
			a := aggs[name]
			if a == nil {
				a = &agg{}
				aggs[name] = a
			}
			a.editP99 = append(a.editP99, percentile(s.edit, 0.99))
			a.labelP99 = append(a.labelP99, percentile(s.label, 0.99))
			a.editP50 = append(a.editP50, median(s.edit))
			a.labelP50 = append(a.labelP50, median(s.label))
			a.ratios = append(a.ratios, time.Duration(ratio*1000))
		}
	}
	for _, name := range names {
		a := aggs[name]
		fmt.Fprintf(&sb, "\n%s, median over rounds: policy edit p50 %s p99 %s, label change p50 %s p99 %s, restore/edit %.1f×\n", name,
			ms(median(a.editP50)), ms(median(a.editP99)), ms(median(a.labelP50)), ms(median(a.labelP99)), float64(median(a.ratios))/1000)
	}
	b.Log(sb.String())
}
