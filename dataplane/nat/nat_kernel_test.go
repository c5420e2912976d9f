package nat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

var testNAT = dataplane.NATConfig{
	MasqPools:    prefixes("10.244.0.0/16", "fd00:244::/48"),
	AllPools:     prefixes("10.244.0.0/16", "10.96.0.0/12", "fd00:244::/48"),
	ExcludeDests: prefixes("192.168.70.1/32", "192.168.70.2/32"),
}

func newManager(t *testing.T, ns *nstest.NS) *Manager {
	t.Helper()
	m, err := New(Config{NetNS: ns.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func apply(t *testing.T, m *Manager) {
	t.Helper()
	for _, ph := range []dataplane.Phase{dataplane.PhaseUpdate, dataplane.PhaseRemove} {
		if err := m.Apply(context.Background(), ph); err != nil {
			t.Fatalf("%s: %v", ph, err)
		}
	}
}

func listWeft(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	return ns.Run("nft", "list", "table", "inet", "weft")
}

func mustContain(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("lacks %q:\n%s", w, out)
		}
	}
}

var handleRE = regexp.MustCompile(`# handle (\d+)`)

func ruleHandles(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	out := ns.Run("nft", "-a", "list", "chain", "inet", "weft", ChainName)
	return fmt.Sprint(handleRE.FindAllString(out, -1))
}

func TestNATLifecycle(t *testing.T) {
	ns := nstest.New(t, "n")
	// Foreign state: another table, and another driver's object in weft's
	// table. Both must survive everything below.
	ns.Run("nft", "add table inet other; add chain inet other c { type filter hook forward priority 0; }; add rule inet other c counter accept")
	ns.Run("nft", "add table inet weft; add set inet weft policy-x { type ipv4_addr; }")

	m := newManager(t, ns)
	m.Set(&dataplane.Desired{NAT: testNAT})
	apply(t, m)
	out := listWeft(t, ns)
	mustContain(t, out,
		"set nat-masq-v4", "elements = { 10.244.0.0/16 }",
		"elements = { 10.96.0.0/12, 10.244.0.0/16,", "192.168.70.1-192.168.70.2 }",
		"elements = { fd00:244::/48 }",
		"type nat hook postrouting priority srcnat; policy accept;",
		"ip saddr @nat-masq-v4 ip daddr != @nat-nomasq-v4 counter packets 0 bytes 0 masquerade fully-random",
		"ip6 saddr @nat-masq-v6 ip6 daddr != @nat-nomasq-v6 counter packets 0 bytes 0 masquerade fully-random",
		"set policy-x",
	)
	if m.KernelWrites() != 1 {
		t.Errorf("%d transactions for the first apply", m.KernelWrites())
	}

	// Idempotent, and adopted by a restarted agent.
	apply(t, m)
	m.QueueResync()
	apply(t, m)
	m2 := newManager(t, ns)
	m2.Set(&dataplane.Desired{NAT: testNAT})
	apply(t, m2)
	if m.KernelWrites() != 1 || m2.KernelWrites() != 0 {
		t.Errorf("re-apply/adoption wrote: %d, %d", m.KernelWrites(), m2.KernelWrites())
	}

	// A pool change is a set update: the rules stay (same handles).
	handles := ruleHandles(t, ns)
	changed := testNAT
	changed.MasqPools = prefixes("10.244.0.0/16", "10.245.0.0/16", "fd00:244::/48")
	changed.AllPools = append(prefixes("10.245.0.0/16"), testNAT.AllPools...)
	m2.Set(&dataplane.Desired{NAT: changed})
	apply(t, m2)
	mustContain(t, listWeft(t, ns), "elements = { 10.244.0.0/15 }")
	if h := ruleHandles(t, ns); h != handles {
		t.Errorf("rules replaced for a set change: %s → %s", handles, h)
	}
	if m2.KernelWrites() != 1 {
		t.Errorf("%d transactions for a set change", m2.KernelWrites())
	}

	// Drift: an element deleted, the table flushed, the table deleted.
	for _, damage := range []string{
		"delete element inet weft nat-masq-v6 { fd00:244::/48 }",
		"flush table inet weft",
		"delete table inet weft",
	} {
		ns.Run("nft", damage)
		m2.QueueResync()
		apply(t, m2)
		mustContain(t, listWeft(t, ns), "elements = { 10.244.0.0/15 }", "elements = { fd00:244::/48 }",
			"ip saddr @nat-masq-v4 ip daddr != @nat-nomasq-v4", "ip6 saddr @nat-masq-v6")
	}
	mustContain(t, ns.Run("nft", "list", "table", "inet", "other"), "counter packets")

	// No masquerading pools: the sets empty, nothing else touched.
	m2.Set(&dataplane.Desired{})
	apply(t, m2)
	if out := listWeft(t, ns); strings.Contains(out, "10.244") {
		t.Errorf("elements left:\n%s", out)
	}
	mustContain(t, ns.Run("nft", "list", "ruleset"), "table inet other", "chain c")
}

func TestNATLargeSetsArriveWhole(t *testing.T) {
	ns := nstest.New(t, "n")
	m := newManager(t, ns)
	// 3,000 separate /32s: 6,000 elements, far above what one message
	// carries without truncation.
	var excl []netip.Prefix
	for i := range 3000 {
		excl = append(excl, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 50, byte(i / 100), byte(2 * (i % 100))}), 32))
	}
	cfg := dataplane.NATConfig{MasqPools: prefixes("10.244.0.0/16"), AllPools: prefixes("10.244.0.0/16"), ExcludeDests: excl}
	m.Set(&dataplane.Desired{NAT: cfg})
	apply(t, m)
	k, err := m.read()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(k.sets.NoMasq4); got != 3001 {
		t.Fatalf("kernel holds %d ranges, want 3001", got)
	}
}

// TestNATAddressAndPortRange: natOutgoingAddress and natPortRange take
// effect on a running manager. A workload's UDP packets to a router are
// seen from the node's address (masquerade), then from the SNAT address,
// then from it with a source port in the range; the rules hold what the
// tags say. Each step sends from a new source port (conntrack keeps a
// flow's translation).
func TestNATAddressAndPortRange(t *testing.T) {
	node, router, wl := nstest.New(t, "n"), nstest.New(t, "r"), nstest.New(t, "w")
	nstest.Veth(t, node, "upl", netip.MustParsePrefix("192.168.70.1/24"), router, "upl", netip.MustParsePrefix("192.168.70.2/24"))
	nstest.Veth(t, node, "wl0", netip.MustParsePrefix("10.244.0.1/24"), wl, "eth0", netip.MustParsePrefix("10.244.0.5/24"))
	wl.Run("ip", "route", "add", "default", "via", "10.244.0.1")
	node.Sysctl("net/ipv4/ip_forward", "1")
	router.Run("ip", "route", "add", "192.168.71.0/24", "dev", "upl") // the SNAT address's replies would come back here

	var conn *net.UDPConn
	if err := router.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("192.168.70.2"), Port: 9999})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srcPort := 20000
	seen := func() *net.UDPAddr {
		t.Helper()
		srcPort++
		if err := wl.Do(func() error {
			c, err := net.DialUDP("udp4", &net.UDPAddr{Port: srcPort}, &net.UDPAddr{IP: net.ParseIP("192.168.70.2"), Port: 9999})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("x"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		_, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("the router received nothing: %v", err)
		}
		return from
	}

	m := newManager(t, node)
	cfg := dataplane.NATConfig{MasqPools: prefixes("10.244.0.0/16"), AllPools: prefixes("10.244.0.0/16")}
	set := func(c dataplane.NATConfig) {
		t.Helper()
		m.Set(&dataplane.Desired{NAT: c})
		apply(t, m)
	}
	set(cfg)
	if from := seen(); from.IP.String() != "192.168.70.1" {
		t.Errorf("masqueraded: the router saw %s, want the node's 192.168.70.1", from)
	}

	cfg.SNATAddress = netip.MustParseAddr("192.168.71.9")
	set(cfg)
	mustContain(t, listWeft(t, node), "snat ip to 192.168.71.9 fully-random", "masquerade fully-random")
	if from := seen(); from.IP.String() != "192.168.71.9" {
		t.Errorf("SNAT: the router saw %s, want 192.168.71.9", from)
	}

	cfg.PortMin, cfg.PortMax = 40000, 40010
	set(cfg)
	mustContain(t, listWeft(t, node), "meta l4proto tcp", "meta l4proto udp", "snat ip to 192.168.71.9:40000-40010")
	if from := seen(); from.IP.String() != "192.168.71.9" || from.Port < 40000 || from.Port > 40010 {
		t.Errorf("SNAT with ports: the router saw %s, want 192.168.71.9:40000-40010", from)
	}

	// Adopted as it is by a restarted agent.
	m2 := newManager(t, node)
	m2.Set(&dataplane.Desired{NAT: cfg})
	apply(t, m2)
	if m2.KernelWrites() != 0 {
		t.Errorf("adoption wrote %d transactions", m2.KernelWrites())
	}

	cfg.PortMin, cfg.PortMax, cfg.SNATAddress = 0, 0, netip.Addr{}
	set(cfg)
	if out := listWeft(t, node); strings.Contains(out, "l4proto") || strings.Contains(out, "snat") {
		t.Errorf("back to masquerade, rules left:\n%s", out)
	}
}
