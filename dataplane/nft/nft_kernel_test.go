package nft

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/dataplane/internal/fwlab"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// lab is the firewall backends' kernel-test bench (dataplane/internal/fwlab)
// under the short names these tests use.
type lab struct {
	*fwlab.Lab
	node, a, b   *nstest.NS
	ifA, ifB     string
	addrA, addrB netip.Addr
}

func newLab(t *testing.T) *lab {
	t.Helper()
	fl := fwlab.New(t)
	return &lab{Lab: fl, node: fl.Node, a: fl.A, b: fl.B, ifA: fl.IfA, ifB: fl.IfB, addrA: fl.AddrA, addrB: fl.AddrB}
}

// serve accepts TCP connections on port in ns until the test ends.
func (l *lab) serve(t *testing.T, ns *nstest.NS, port int) { l.Serve(t, ns, port) }

// dial reports whether a TCP handshake from ns to addr:port succeeds.
func dial(ns *nstest.NS, addr netip.Addr, port int) bool { return fwlab.Dial(ns, addr, port) }

func newBackend(t *testing.T, ns *nstest.NS) *Backend {
	t.Helper()
	b, err := New(Config{NetNS: ns.Path})
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

// state builds a policy state: both workloads with the allow-all profile,
// plus the given chains in b's ingress tier "default" (fwlab.Lab.State).
func state(l *lab, sets map[string]*dataplane.AddrSet, chains map[string]*dataplane.PolicyChain, bIngress []string) *firewall.State {
	return l.State(sets, chains, bIngress)
}

func prefixes(ss ...string) []netip.Prefix { return fwlab.Prefixes(ss...) }

var handleRE = regexp.MustCompile(`# handle (\d+)`)

// handles lists the rule handles of a chain: unchanged handles mean the
// chain was not rewritten.
func handles(t *testing.T, ns *nstest.NS, chain string) string {
	t.Helper()
	out := ns.Run("nft", "-a", "list", "chain", "inet", "weft", chain)
	return fmt.Sprint(handleRE.FindAllString(out, -1))
}

func TestEnforceAdoptAndRepair(t *testing.T) {
	l := newLab(t)
	l.serve(t, l.b, 80)
	l.serve(t, l.b, 443)
	b := newBackend(t, l.node)

	// Deny from a's address to port 80; everything else allowed.
	aSet := map[string]*dataplane.AddrSet{"s-a": {Members: []netip.Prefix{netip.PrefixFrom(l.addrA, 32)}, Comment: "role == 'a'"}}
	deny80 := map[string]*dataplane.PolicyChain{"pi-t_deny": {
		Policy: dataplane.PolicyRef{Kind: "NetworkPolicy", Namespace: "t", Name: "deny"}, Direction: dataplane.Ingress,
		Rules: []dataplane.PolicyRule{
			{Index: 0, Action: dataplane.ActionDeny, Protocol: dataplane.ProtoTCP, Src: dataplane.AddrMatch{Sets: []string{"s-a"}}, Dst: dataplane.AddrMatch{Ports: []dataplane.PortRange{{Min: 80, Max: 80}}}},
			{Index: 1, Action: dataplane.ActionAllow},
		},
	}}
	s1 := state(l, aSet, deny80, []string{"pi-t_deny"})
	apply(t, b, s1, nil)
	if dial(l.a, l.addrB, 80) {
		t.Error("a reaches b:80 through a Deny")
	}
	if !dial(l.a, l.addrB, 443) {
		t.Error("a does not reach b:443")
	}
	list := l.node.Run("nft", "list", "table", "inet", "weft")
	for _, want := range []string{"chain pi-t_deny", "chain fw-" + l.ifA, "map wl-from", "set s-a-4", "chain nat-postrouting", "masquerade"} {
		if !strings.Contains(list, want) {
			t.Errorf("table lacks %q:\n%s", want, list)
		}
	}
	// Workloads may send neither VXLAN nor IP-in-IP.
	from := l.node.Run("nft", "list", "chain", "inet", "weft", "fw-"+l.ifA)
	for _, want := range []string{"udp dport 4789", "meta l4proto"} {
		if !strings.Contains(from, want) {
			t.Errorf("chain fw-%s lacks %q:\n%s", l.ifA, want, from)
		}
	}

	// A restarted agent adopts the table: nothing is written.
	before := handles(t, l.node, "pi-t_deny")
	b2 := newBackend(t, l.node)
	if st := apply(t, b2, s1, nil); st.Writes != 0 {
		t.Fatalf("adoption wrote %d transactions", st.Writes)
	}
	if after := handles(t, l.node, "pi-t_deny"); after != before {
		t.Fatalf("adoption rewrote the chain: %s -> %s", before, after)
	}

	// An incremental change of a set's members changes only the set.
	aSet2 := map[string]*dataplane.AddrSet{"s-a": {Members: []netip.Prefix{netip.PrefixFrom(l.addrA, 32), netip.MustParsePrefix("192.0.2.0/24")}, Comment: "role == 'a'"}}
	s2 := state(l, aSet2, deny80, []string{"pi-t_deny"})
	fwBefore := handles(t, l.node, "fw-"+l.ifA)
	apply(t, b2, s2, s1)
	if after := handles(t, l.node, "pi-t_deny"); after != before {
		t.Fatalf("a set change rewrote the policy chain")
	}
	if after := handles(t, l.node, "fw-"+l.ifA); after != fwBefore {
		t.Fatalf("a set change rewrote a workload chain")
	}
	if out := l.node.Run("nft", "list", "set", "inet", "weft", "s-a-4"); !strings.Contains(out, "192.0.2.0/24") {
		t.Fatalf("set not updated:\n%s", out)
	}

	// Drift: a rule deleted by hand, then the whole ruleset flushed; each
	// time a resync (prev nil) repairs it.
	l.node.Run("nft", "flush", "chain", "inet", "weft", "pi-t_deny")
	if dial(l.a, l.addrB, 443) {
		// The policy still applies to b (its tier ends with a drop) but
		// its Allow rule is gone.
		t.Fatal("the flushed chain still allows")
	}
	apply(t, b2, s2, nil)
	if dial(l.a, l.addrB, 80) || !dial(l.a, l.addrB, 443) {
		t.Error("drift not repaired")
	}
	l.node.Run("nft", "flush", "ruleset")
	apply(t, b2, s2, nil)
	if dial(l.a, l.addrB, 80) || !dial(l.a, l.addrB, 443) {
		t.Error("not restored after nft flush ruleset")
	}
}

// An unknown workload interface is dropped (fail closed); one that the
// state names passes.
func TestFailClosed(t *testing.T) {
	l := newLab(t)
	l.serve(t, l.b, 80)
	b := newBackend(t, l.node)
	s := state(l, nil, nil, nil)
	// Only a is known.
	s.Policy.Workloads = dataplane.MapOf(map[string]*dataplane.EndpointPolicy{l.ifA: func() *dataplane.EndpointPolicy { e, _ := s.Policy.Workloads.Get(l.ifA); return e }()})
	apply(t, b, s, nil)
	if dial(l.a, l.addrB, 80) {
		t.Fatal("traffic to an unknown workload interface passes")
	}
	full := state(l, nil, nil, nil)
	apply(t, b, full, s)
	if !dial(l.a, l.addrB, 80) {
		t.Fatal("traffic to a known workload does not pass")
	}
	// The empty policy keeps the base: both interfaces unknown again.
	apply(t, b, &firewall.State{}, full)
	if dial(l.a, l.addrB, 80) {
		t.Fatal("with no policy, workload-shaped interfaces pass")
	}
	// A non-workload interface name with the prefix is not dropped.
	if !strings.Contains(l.node.Run("nft", "list", "chain", "inet", "weft", "filter-forward"), `iifname "weft00000000000"-"weftfffffffffff"`) {
		t.Fatal("no fail-closed rule")
	}
}

// A transaction the kernel refuses changes nothing: the last good ruleset
// stays.
func TestFailedTransactionKeepsLastGood(t *testing.T) {
	l := newLab(t)
	l.serve(t, l.b, 80)
	b := newBackend(t, l.node)
	deny := map[string]*dataplane.PolicyChain{"pi-t_deny": {
		Policy: dataplane.PolicyRef{Kind: "NetworkPolicy", Namespace: "t", Name: "deny"}, Direction: dataplane.Ingress,
		Rules: []dataplane.PolicyRule{{Index: 0, Action: dataplane.ActionDeny}},
	}}
	good := state(l, nil, deny, []string{"pi-t_deny"})
	apply(t, b, good, nil)
	// A chain naming a set that does not exist: the kernel refuses the
	// whole batch (which also drops the Deny).
	bad := state(l, nil, map[string]*dataplane.PolicyChain{"pi-t_deny": {
		Policy: dataplane.PolicyRef{Kind: "NetworkPolicy", Namespace: "t", Name: "deny"}, Direction: dataplane.Ingress,
		Rules: []dataplane.PolicyRule{{Index: 0, Action: dataplane.ActionAllow, Src: dataplane.AddrMatch{Sets: []string{"s-missing"}}}},
	}}, []string{"pi-t_deny"})
	if _, err := b.Apply(context.Background(), bad, good); err == nil {
		t.Fatal("a batch naming a missing set was accepted")
	}
	if dial(l.a, l.addrB, 80) {
		t.Fatal("a failed transaction changed the ruleset")
	}
	if !strings.Contains(l.node.Run("nft", "list", "chain", "inet", "weft", "pi-t_deny"), "drop") {
		t.Fatal("the last good chain is gone")
	}
}

// 10,000 addresses in one set arrive whole (many element messages in one
// transaction) and a change of one member is one element.
func TestLargeSet(t *testing.T) {
	l := newLab(t)
	b := newBackend(t, l.node)
	var members []netip.Prefix
	a := netip.MustParseAddr("10.100.0.0")
	for range 10000 {
		a = a.Next().Next() // every other address: no merging into ranges
		members = append(members, netip.PrefixFrom(a, 32))
	}
	sets := map[string]*dataplane.AddrSet{"s-big": {Members: members}}
	chains := map[string]*dataplane.PolicyChain{"pi-t_big": {
		Policy: dataplane.PolicyRef{Kind: "NetworkPolicy", Namespace: "t", Name: "big"}, Direction: dataplane.Ingress,
		Rules: []dataplane.PolicyRule{{Index: 0, Action: dataplane.ActionAllow, Src: dataplane.AddrMatch{Sets: []string{"s-big"}}}},
	}}
	s := state(l, sets, chains, []string{"pi-t_big"})
	apply(t, b, s, nil)
	ns, err := b.readSet(b.nftSet(&nset{name: "s-big-4", kind: setAddr4}))
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.spans) != 10000 {
		t.Fatalf("the kernel holds %d ranges, want 10000", len(ns.spans))
	}
	more := slices.Clone(members)
	more = append(more, netip.MustParsePrefix("10.200.0.1/32"))
	s2 := state(l, map[string]*dataplane.AddrSet{"s-big": {Members: more}}, chains, []string{"pi-t_big"})
	start := time.Now()
	apply(t, b, s2, s)
	t.Logf("one member added to a 10,000-member set in %s", time.Since(start))
	ns, _ = b.readSet(b.nftSet(&nset{name: "s-big-4", kind: setAddr4}))
	if len(ns.spans) != 10001 {
		t.Fatalf("the kernel holds %d ranges, want 10001", len(ns.spans))
	}
}

// The netlink handle of the lab's node must not leak into the test: a
// sanity check that the backend programs the given namespace only.
func TestOnlyItsNamespace(t *testing.T) {
	l := newLab(t)
	b := newBackend(t, l.node)
	apply(t, b, state(l, nil, nil, nil), nil)
	if out, _ := l.a.Try("nft", "list", "tables"); strings.Contains(out, "weft") {
		t.Fatal("the table appeared in another namespace")
	}
	_ = netlink.FAMILY_ALL
}
