package ipt

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/dataplane/internal/fwlab"
	"github.com/weftnet/weft/dataplane/nft"
)

// manager is the firewall manager over a backend, as dataplane/linux
// builds it, with the other backend's removal as its leftovers.
func manager(t *testing.T, be firewall.Backend, leftovers func(context.Context) error) *firewall.Manager {
	t.Helper()
	m, err := firewall.New(firewall.Config{Leftovers: leftovers}, be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func applyManager(t *testing.T, m *firewall.Manager, s *firewall.State, l *lab) {
	t.Helper()
	m.Set(&dataplane.Desired{Policy: s.Policy, NAT: s.NAT, Workloads: []dataplane.Workload{{HostIface: l.ifA}, {HostIface: l.ifB}}})
	if err := m.Apply(context.Background(), dataplane.PhaseUpdate); err != nil {
		t.Fatal(err)
	}
}

// Switching nftables -> iptables -> nftables: each backend removes what
// the other left once its own ruleset is in force, and a connection the
// policy refuses never gets through in between.
func TestKernelSwitchBackends(t *testing.T) {
	forVariants(t, func(t *testing.T, variant string) {
		l := newLab(t, variant)
		l.serve(t, l.b, 80)
		l.serve(t, l.b, 443)
		aSet, deny80 := denyPolicy(l)
		s := state(l, aSet, deny80, []string{"pi-t_deny"})

		// A prober dials the refused port all along.
		var leaks atomic.Int32
		stop := make(chan struct{})
		var wg sync.WaitGroup
		probe := func() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					// A fresh SYN every 20 ms: a gap longer than that
					// lets one through.
					if fwlab.DialWithin(l.a, l.addrB, 80, 20*time.Millisecond) {
						leaks.Add(1)
					}
				}
			}()
		}

		// Foreign objects of both kinds, which no switch may touch.
		l.node.Run("nft", "add", "table", "inet", "foreign")
		l.node.Run("nft", "add", "chain", "inet", "foreign", "c", "{ type filter hook forward priority 10 ; }")
		l.ipt(t, "-N", "foreign-chain")
		l.node.Run("ipset", "create", "foreign", "hash:ip")
		nb, err := nft.New(nft.Config{NetNS: l.node.Path})
		if err != nil {
			t.Fatal(err)
		}
		removeIpt := func(ctx context.Context) error { return RemoveAll(ctx, l.node.Path) }
		removeNft := func(context.Context) error { return nft.RemoveTable(l.node.Path) }
		applyManager(t, manager(t, nb, removeIpt), s, l)
		if dial(l.a, l.addrB, 80) || !dial(l.a, l.addrB, 443) {
			t.Fatal("nftables does not enforce the policy")
		}
		probe()

		// To iptables.
		ib := l.backend(t, lockFile(t))
		applyManager(t, manager(t, ib, removeNft), s, l)
		if out := l.node.Run("nft", "list", "tables"); strings.Contains(out, "inet weft") {
			t.Errorf("the nftables table is left after the switch to iptables:\n%s", out)
		}
		if !strings.Contains(l.save(t, 4), "weft-pi-t_deny") {
			t.Fatal("no iptables chains")
		}
		if dial(l.a, l.addrB, 80) || !dial(l.a, l.addrB, 443) {
			t.Fatal("iptables does not enforce the policy")
		}

		// And back.
		nb2, err := nft.New(nft.Config{NetNS: l.node.Path})
		if err != nil {
			t.Fatal(err)
		}
		applyManager(t, manager(t, nb2, removeIpt), s, l)
		if all := l.save(t, 4) + l.save(t, 6); strings.Contains(all, "weft") {
			t.Errorf("iptables chains left after the switch to nftables:\n%s", all)
		}
		if sets := l.node.Run("ipset", "list", "-n"); strings.Contains(sets, "weft") {
			t.Errorf("ipsets left: %s", sets)
		}
		close(stop)
		wg.Wait()
		if n := leaks.Load(); n > 0 {
			t.Fatalf("%d refused connections got through while switching backends", n)
		}
		if dial(l.a, l.addrB, 80) || !dial(l.a, l.addrB, 443) {
			t.Fatal("nftables does not enforce the policy after switching back")
		}
		if !strings.Contains(l.node.Run("nft", "list", "tables"), "inet foreign") || !strings.Contains(l.save(t, 4), ":foreign-chain") ||
			!strings.Contains(l.node.Run("ipset", "list", "-n"), "foreign") {
			t.Fatal("a foreign table, chain or set did not survive the switches")
		}
	})
}
