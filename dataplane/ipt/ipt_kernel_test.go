package ipt

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/dataplane/internal/fwlab"
	"github.com/weftnet/weft/internal/netns/nstest"
	"github.com/weftnet/weft/internal/testtier"
)

// The kernel tests run once per iptables variant, each in namespaces of
// its own (both variants in one namespace would see each other's rules).
var variants = []string{"nft", "legacy"}

func forVariants(t *testing.T, f func(t *testing.T, variant string)) {
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			testtier.Kernel(t, "ipset", "iptables-"+v+"-restore", "ip6tables-"+v+"-restore")
			f(t, v)
		})
	}
}

// lab is the firewall backends' kernel-test bench (dataplane/internal/fwlab)
// under the short names these tests use.
type lab struct {
	*fwlab.Lab
	node, a, b   *nstest.NS
	ifA, ifB     string
	addrA, addrB netip.Addr
	variant      string
}

func newLab(t *testing.T, variant string) *lab {
	t.Helper()
	fl := fwlab.New(t)
	return &lab{Lab: fl, node: fl.Node, a: fl.A, b: fl.B, ifA: fl.IfA, ifB: fl.IfB, addrA: fl.AddrA, addrB: fl.AddrB, variant: variant}
}

// serve accepts TCP connections on port in ns until the test ends.
func (l *lab) serve(t *testing.T, ns *nstest.NS, port int) { l.Serve(t, ns, port) }

// dial reports whether a TCP handshake from ns to addr:port succeeds.
func dial(ns *nstest.NS, addr netip.Addr, port int) bool { return fwlab.Dial(ns, addr, port) }

// lockFile is a private xtables lock: the tests never hold or wait on the
// machine's /run/xtables.lock.
func lockFile(t *testing.T) string {
	return filepath.Join(t.TempDir(), "xtables.lock")
}

func (l *lab) backend(t *testing.T, lock string) *Backend {
	t.Helper()
	b, err := New(Config{NetNS: l.node.Path, Variant: l.variant, LockFile: lock, LockWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func apply(t *testing.T, b *Backend, want, prev *firewall.State) firewall.Stats {
	t.Helper()
	st, err := b.Apply(context.Background(), want, prev)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// save is the variant's iptables-save of a family in the lab's node.
func (l *lab) save(t *testing.T, v uint8, args ...string) string {
	t.Helper()
	cmd := "iptables-" + l.variant + "-save"
	if v == 6 {
		cmd = "ip6" + cmd[2:]
	}
	return l.node.Run(append([]string{cmd}, args...)...)
}

// ipt runs an iptables command of the lab's variant in the node.
func (l *lab) ipt(t *testing.T, args ...string) string {
	t.Helper()
	return l.node.Run(append([]string{"iptables-" + l.variant, "-w"}, args...)...)
}

// state builds a policy state: both workloads with the allow-all profile,
// plus the given chains in b's ingress tier "default" (fwlab.Lab.State).
func state(l *lab, sets map[string]*dataplane.AddrSet, chains map[string]*dataplane.PolicyChain, bIngress []string) *firewall.State {
	return l.State(sets, chains, bIngress)
}

// chainRules lists a chain's saved rules (with their tags): unchanged
// output means the chain was not rewritten.
func (l *lab) chainRules(t *testing.T, chain string) string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(l.save(t, 4, "-t", "filter"), "\n") {
		if strings.HasPrefix(line, "-A "+chain+" ") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func denyPolicy(l *lab) (map[string]*dataplane.AddrSet, map[string]*dataplane.PolicyChain) {
	aSet := map[string]*dataplane.AddrSet{"s-a": {Members: []netip.Prefix{netip.PrefixFrom(l.addrA, 32)}, Comment: "role == 'a'"}}
	deny80 := map[string]*dataplane.PolicyChain{"pi-t_deny": {
		Policy: dataplane.PolicyRef{Kind: "NetworkPolicy", Namespace: "t", Name: "deny"}, Direction: dataplane.Ingress,
		Rules: []dataplane.PolicyRule{
			{Index: 0, Action: dataplane.ActionDeny, Protocol: dataplane.ProtoTCP, Src: dataplane.AddrMatch{Sets: []string{"s-a"}}, Dst: dataplane.AddrMatch{Ports: []dataplane.PortRange{{Min: 80, Max: 80}}}},
			{Index: 1, Action: dataplane.ActionAllow},
		},
	}}
	return aSet, deny80
}

func TestKernelEnforceAdoptAndRepair(t *testing.T) {
	forVariants(t, func(t *testing.T, variant string) {
		l := newLab(t, variant)
		l.serve(t, l.b, 80)
		l.serve(t, l.b, 443)
		lock := lockFile(t)
		b := l.backend(t, lock)

		aSet, deny80 := denyPolicy(l)
		s1 := state(l, aSet, deny80, []string{"pi-t_deny"})
		apply(t, b, s1, nil)
		if dial(l.a, l.addrB, 80) {
			t.Error("a reaches b:80 through a Deny")
		}
		if !dial(l.a, l.addrB, 443) {
			t.Error("a does not reach b:443")
		}
		save := l.save(t, 4)
		for _, want := range []string{":weft-pi-t_deny", ":weft-fw-" + l.ifA, "-A FORWARD -m comment --comment \"weft:jump\" -j weft-FORWARD",
			"--match-set weft4-s-a src", "-A weft-POSTROUTING", "MASQUERADE --random-fully", "--dports 4789 -m comment", "-p ipencap"} {
			if !strings.Contains(save, want) {
				t.Errorf("iptables-save lacks %q:\n%s", want, save)
			}
		}
		if out := l.node.Run("ipset", "list", "weft4-s-a"); !strings.Contains(out, l.addrA.String()) {
			t.Errorf("ipset weft4-s-a lacks a:\n%s", out)
		}

		// A restarted agent adopts the chains: nothing is written.
		before := l.chainRules(t, "weft-pi-t_deny")
		b2 := l.backend(t, lock)
		if st := apply(t, b2, s1, nil); st.Writes != 0 {
			t.Fatalf("adoption wrote %d transactions", st.Writes)
		}
		// The counters survive only if the chain was not rewritten.
		if !dial(l.a, l.addrB, 443) {
			t.Fatal("a does not reach b:443 after adoption")
		}
		counted := l.save(t, 4, "-c", "-t", "filter")
		if !strings.Contains(counted, "weft:") {
			t.Fatal("no tagged rules")
		}

		// A set member change is an ipset change only.
		aSet2 := map[string]*dataplane.AddrSet{"s-a": {Members: []netip.Prefix{netip.PrefixFrom(l.addrA, 32), netip.MustParsePrefix("192.0.2.0/24")}, Comment: "role == 'a'"}}
		s2 := state(l, aSet2, deny80, []string{"pi-t_deny"})
		fwBefore := l.chainRules(t, "weft-fw-"+l.ifA)
		if st := apply(t, b2, s2, s1); st.Writes != 1 {
			t.Errorf("a set change took %d transactions, want 1 (ipset)", st.Writes)
		}
		if after := l.chainRules(t, "weft-pi-t_deny"); after != before {
			t.Fatalf("a set change rewrote the policy chain")
		}
		if after := l.chainRules(t, "weft-fw-"+l.ifA); after != fwBefore {
			t.Fatalf("a set change rewrote a workload chain")
		}
		if out := l.node.Run("ipset", "list", "weft4-s-a"); !strings.Contains(out, "192.0.2.0/24") {
			t.Fatalf("set not updated:\n%s", out)
		}

		// A policy edit rewrites its chains only (one table per family).
		edited := map[string]*dataplane.PolicyChain{"pi-t_deny": {
			Policy: deny80["pi-t_deny"].Policy, Direction: dataplane.Ingress,
			Rules: []dataplane.PolicyRule{
				{Index: 0, Action: dataplane.ActionDeny, Protocol: dataplane.ProtoTCP, Src: dataplane.AddrMatch{Sets: []string{"s-a"}}, Dst: dataplane.AddrMatch{Ports: []dataplane.PortRange{{Min: 443, Max: 443}}}},
				{Index: 1, Action: dataplane.ActionAllow},
			},
		}}
		s3 := state(l, aSet2, edited, []string{"pi-t_deny"})
		tb := l.chainRules(t, "weft-tw-"+l.ifB)
		if st := apply(t, b2, s3, s2); st.Writes != 2 {
			t.Errorf("a policy edit took %d transactions, want 2 (filter, IPv4 and IPv6)", st.Writes)
		}
		if l.chainRules(t, "weft-tw-"+l.ifB) != tb {
			t.Error("a policy edit rewrote the endpoint chain")
		}
		if !dial(l.a, l.addrB, 80) || dial(l.a, l.addrB, 443) {
			t.Error("the edit is not enforced")
		}

		// Drift: a chain flushed by hand, then a jump deleted; a resync
		// (prev nil) repairs only what differs.
		l.ipt(t, "-F", "weft-pi-t_deny")
		if dial(l.a, l.addrB, 80) {
			t.Fatal("the flushed chain still allows")
		}
		twBefore := l.chainRules(t, "weft-tw-"+l.ifB)
		if st := apply(t, b2, s3, nil); st.Writes != 1 {
			t.Errorf("repairing one chain took %d transactions, want 1", st.Writes)
		}
		if l.chainRules(t, "weft-tw-"+l.ifB) != twBefore {
			t.Error("the repair rewrote a chain that was as wanted")
		}
		if !dial(l.a, l.addrB, 80) || dial(l.a, l.addrB, 443) {
			t.Error("drift not repaired")
		}
		l.ipt(t, "-D", "FORWARD", "-m", "comment", "--comment", jumpTag, "-j", "weft-FORWARD")
		apply(t, b2, s3, nil)
		if !strings.Contains(l.save(t, 4, "-t", "filter"), "-A FORWARD -m comment --comment \"weft:jump\" -j weft-FORWARD") {
			t.Error("the jump was not restored")
		}
		if dial(l.a, l.addrB, 443) {
			t.Error("policy not enforced after the jump was restored")
		}
	})
}

// An unknown workload interface is dropped (fail closed); one that the
// state names passes.
func TestKernelFailClosed(t *testing.T) {
	forVariants(t, func(t *testing.T, variant string) {
		l := newLab(t, variant)
		l.serve(t, l.b, 80)
		b := l.backend(t, lockFile(t))
		s := state(l, nil, nil, nil)
		only, _ := s.Policy.Workloads.Get(l.ifA)
		s.Policy.Workloads = dataplane.MapOf(map[string]*dataplane.EndpointPolicy{l.ifA: only})
		apply(t, b, s, nil)
		if dial(l.a, l.addrB, 80) {
			t.Fatal("traffic to an unknown workload interface passes")
		}
		full := state(l, nil, nil, nil)
		apply(t, b, full, s)
		if !dial(l.a, l.addrB, 80) {
			t.Fatal("traffic to a known workload does not pass")
		}
		// An interface that starts with the prefix and a '.' (weft.vxlan,
		// weft.ipip) is not a workload's: its traffic is not dropped.
		c := nstest.New(t, "c")
		nstest.Veth(t, l.node, "weft.c0", netip.MustParsePrefix("10.77.3.1/24"), c, "eth0", netip.MustParsePrefix("10.77.3.2/24"))
		c.Run("ip", "route", "add", "default", "via", "10.77.3.1")
		l.serve(t, c, 80)
		if !dial(l.a, netip.MustParseAddr("10.77.3.2"), 80) || !dial(c, l.addrB, 80) {
			t.Fatal("traffic through weft.c0 (not workload-shaped) is dropped")
		}
		apply(t, b, &firewall.State{}, full)
		if dial(l.a, l.addrB, 80) {
			t.Fatal("with no policy, workload-shaped interfaces pass")
		}
	})
}

// Foreign rules, chains and sets survive everything weft does, removal
// included; weft's jumps stay where they are.
func TestKernelForeignRulesSurvive(t *testing.T) {
	forVariants(t, func(t *testing.T, variant string) {
		l := newLab(t, variant)
		l.serve(t, l.b, 80)
		l.node.Run("ipset", "create", "foreign", "hash:ip")
		l.node.Run("ipset", "create", "weftish", "hash:ip") // a prefix weft does not own
		l.ipt(t, "-N", "foreign-chain")
		l.ipt(t, "-A", "foreign-chain", "-m", "set", "--match-set", "foreign", "src", "-j", "RETURN")
		l.ipt(t, "-A", "FORWARD", "-j", "foreign-chain")
		l.ipt(t, "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "MASQUERADE")
		b := l.backend(t, lockFile(t))
		aSet, deny80 := denyPolicy(l)
		s1 := state(l, aSet, deny80, []string{"pi-t_deny"})
		apply(t, b, s1, nil)
		// Someone inserts a rule above weft's jump: weft leaves it there.
		l.ipt(t, "-I", "FORWARD", "1", "-s", "198.51.100.1", "-j", "DROP")
		apply(t, b, s1, nil)
		fwd := l.save(t, 4, "-t", "filter")
		i1 := strings.Index(fwd, "-A FORWARD -s 198.51.100.1/32 -j DROP")
		i2 := strings.Index(fwd, "-A FORWARD -m comment --comment \"weft:jump\" -j weft-FORWARD")
		i3 := strings.Index(fwd, "-A FORWARD -j foreign-chain")
		if i1 < 0 || i2 < 0 || i3 < 0 || !(i1 < i2 && i2 < i3) {
			t.Fatalf("built-in chain not as expected (foreign, weft, foreign):\n%s", fwd)
		}
		apply(t, b, &firewall.State{}, s1)
		if err := RemoveAll(context.Background(), l.node.Path); err != nil {
			t.Fatal(err)
		}
		all := l.save(t, 4) + l.save(t, 6)
		if strings.Contains(all, "weft") {
			t.Errorf("weft's rules left after RemoveAll:\n%s", all)
		}
		for _, want := range []string{"-A foreign-chain -m set --match-set foreign src -j RETURN", "-A FORWARD -j foreign-chain",
			"-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE", "-A FORWARD -s 198.51.100.1/32 -j DROP"} {
			if !strings.Contains(all, want) {
				t.Errorf("foreign rule %q is gone:\n%s", want, all)
			}
		}
		sets := l.node.Run("ipset", "list", "-n")
		if !strings.Contains(sets, "foreign") || !strings.Contains(sets, "weftish") || strings.Contains(sets, "weft4-") {
			t.Errorf("ipsets after RemoveAll: %s", sets)
		}
	})
}

// iptables-restore failing (the xtables lock held by someone else) keeps
// the last good ruleset; the next apply completes.
func TestKernelLockHeldKeepsLastGood(t *testing.T) {
	// Only iptables-legacy takes the xtables lock.
	testtier.Kernel(t, "ipset", "iptables-legacy-restore", "flock")
	l := newLab(t, "legacy")
	l.serve(t, l.b, 80)
	l.serve(t, l.b, 443)
	lock := lockFile(t)
	b := l.backend(t, lock)
	aSet, deny80 := denyPolicy(l)
	good := state(l, aSet, deny80, []string{"pi-t_deny"})
	apply(t, b, good, nil)

	// Hold the lock with flock(1), as another program would.
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("flock", lock, "sleep", "30")
	// A group of its own: flock and its sleep (which inherits the locked
	// descriptor) end together.
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	release := func() {
		_ = syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
		_ = holder.Wait()
	}
	t.Cleanup(release)
	deadline := time.Now().Add(5 * time.Second)
	for exec.Command("flock", "-n", lock, "true").Run() == nil {
		if time.Now().After(deadline) {
			t.Fatal("flock did not take the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	deny443 := map[string]*dataplane.PolicyChain{"pi-t_deny": {
		Policy: deny80["pi-t_deny"].Policy, Direction: dataplane.Ingress,
		Rules: []dataplane.PolicyRule{{Index: 0, Action: dataplane.ActionDeny, Protocol: dataplane.ProtoTCP, Dst: dataplane.AddrMatch{Ports: []dataplane.PortRange{{Min: 443, Max: 443}}}}, {Index: 1, Action: dataplane.ActionAllow}},
	}}
	next := state(l, aSet, deny443, []string{"pi-t_deny"})
	_, err := b.Apply(context.Background(), next, good)
	if err == nil || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("apply with the lock held: %v, want an error naming the lock", err)
	}
	if dial(l.a, l.addrB, 80) || !dial(l.a, l.addrB, 443) {
		t.Fatal("the last good ruleset is not in force")
	}
	release()
	// The manager resyncs after a failure: prev nil.
	apply(t, b, next, nil)
	if !dial(l.a, l.addrB, 80) || dial(l.a, l.addrB, 443) {
		t.Fatal("the retried apply is not in force")
	}
}

// Outgoing NAT: the pools' sets and the masquerade rule, and SNAT to an
// address with a port range.
func TestKernelNAT(t *testing.T) {
	forVariants(t, func(t *testing.T, variant string) {
		l := newLab(t, variant)
		b := l.backend(t, lockFile(t))
		s := state(l, nil, nil, nil)
		apply(t, b, s, nil)
		nat := l.save(t, 4, "-t", "nat")
		if !strings.Contains(nat, "-A weft-POSTROUTING -m set --match-set weft4-nat-masq src -m set ! --match-set weft4-nat-nomasq dst") {
			t.Fatalf("no masquerade rule:\n%s", nat)
		}
		s2 := state(l, nil, nil, nil)
		s2.NAT.SNATAddress = netip.MustParseAddr("192.0.2.7")
		s2.NAT.PortMin, s2.NAT.PortMax = 20000, 29999
		apply(t, b, s2, s)
		nat = l.save(t, 4, "-t", "nat")
		for _, want := range []string{"-p tcp", "-p udp", "--to-source 192.0.2.7:20000-29999", "-j SNAT --to-source 192.0.2.7 --random-fully"} {
			if !strings.Contains(nat, want) {
				t.Errorf("nat lacks %q:\n%s", want, nat)
			}
		}
		if v6 := l.save(t, 6, "-t", "nat"); !strings.Contains(v6, "MASQUERADE") || strings.Contains(v6, "SNAT") {
			t.Errorf("IPv6 NAT:\n%s", v6)
		}
	})
}

// 10,000 members in one set arrive whole, and one more is one ipset add.
func TestKernelLargeSet(t *testing.T) {
	forVariants(t, func(t *testing.T, variant string) {
		l := newLab(t, variant)
		b := l.backend(t, lockFile(t))
		var members []netip.Prefix
		a := netip.MustParseAddr("10.100.0.0")
		for range 10000 {
			a = a.Next().Next()
			members = append(members, netip.PrefixFrom(a, 32))
		}
		chains := map[string]*dataplane.PolicyChain{"pi-t_big": {
			Policy: dataplane.PolicyRef{Kind: "NetworkPolicy", Namespace: "t", Name: "big"}, Direction: dataplane.Ingress,
			Rules: []dataplane.PolicyRule{{Index: 0, Action: dataplane.ActionAllow, Src: dataplane.AddrMatch{Sets: []string{"s-big"}}}},
		}}
		s := state(l, map[string]*dataplane.AddrSet{"s-big": {Members: members}}, chains, []string{"pi-t_big"})
		apply(t, b, s, nil)
		count := func() int {
			return strings.Count(l.node.Run("ipset", "save", "weft4-s-big"), "\nadd ")
		}
		if n := count(); n != 10000 {
			t.Fatalf("the kernel holds %d members, want 10000", n)
		}
		more := append(slices.Clone(members), netip.MustParsePrefix("10.200.0.1/32"))
		s2 := state(l, map[string]*dataplane.AddrSet{"s-big": {Members: more}}, chains, []string{"pi-t_big"})
		if st := apply(t, b, s2, s); st.Writes != 1 {
			t.Errorf("one member took %d transactions", st.Writes)
		}
		if n := count(); n != 10001 {
			t.Fatalf("the kernel holds %d members, want 10001", n)
		}
		// A resync reads them back and finds nothing to do.
		if st := apply(t, b, s2, nil); st.Writes != 0 {
			t.Errorf("a resync of an unchanged large set wrote %d transactions", st.Writes)
		}
	})
}
