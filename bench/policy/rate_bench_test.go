package policybench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/internal/netns/nstest"
)

var (
	rateSeconds = flag.Float64("pol.rate-seconds", 3, "seconds per packet-rate run")
	rateRounds  = flag.Int("pol.rate-rounds", 5, "packet-rate rounds (each runs both configurations)")
)

// BenchmarkPacketRate measures 64-byte UDP packets per second from
// workload a to workload b through their node, whose firewall holds either
// the allow-all profiles only ("no policy") or a policy on b whose rule
// allows from a set of 10,000 members that holds a's address ("10,000 set
// members"). The stream is one-way, so connection tracking never sees it
// established: every packet runs b's whole policy path, set lookup
// included. Rounds alternate which configuration runs first; the rate is
// what b's interface received.
func BenchmarkPacketRate(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x")
	}
	node, wa, wb := nstest.New(b, "n"), nstest.New(b, "a"), nstest.New(b, "b")
	ifA, _ := dataplane.WorkloadIfaceName("weft", "default", "a")
	ifB, _ := dataplane.WorkloadIfaceName("weft", "default", "b")
	nstest.Veth(b, node, ifA, netip.MustParsePrefix("10.77.1.1/24"), wa, "eth0", netip.MustParsePrefix("10.77.1.2/24"))
	nstest.Veth(b, node, ifB, netip.MustParsePrefix("10.77.2.1/24"), wb, "eth0", netip.MustParsePrefix("10.77.2.2/24"))
	node.Sysctl("net/ipv4/ip_forward", "1")
	wa.Run("ip", "route", "add", "default", "via", "10.77.1.1")
	wb.Run("ip", "route", "add", "default", "via", "10.77.2.1")
	// b drops the packets at its socket layer cheaply: nothing listens.

	for _, name := range backendNames() {
		b.Run(name, func(b *testing.B) { packetRate(b, newBackend(b, name, node.Path), ifA, ifB, wa, wb) })
		// The next backend measures its own rules only.
		if err := removeBackend(name, node.Path); err != nil {
			b.Fatal(err)
		}
	}
}

func packetRate(b *testing.B, be firewall.Backend, ifA, ifB string, wa, wb *nstest.NS) {
	profile := dataplane.PolicyRef{Kind: "Profile", Name: "allow-all"}
	base := func() map[string]*dataplane.PolicyChain {
		return map[string]*dataplane.PolicyChain{
			"pri-allow-all": {Policy: profile, Direction: dataplane.Ingress, Rules: []dataplane.PolicyRule{{Action: dataplane.ActionAllow}}},
			"pro-allow-all": {Policy: profile, Direction: dataplane.Egress, Rules: []dataplane.PolicyRule{{Action: dataplane.ActionAllow}}},
		}
	}
	ep := func(name string, in []string) *dataplane.EndpointPolicy {
		e := &dataplane.EndpointPolicy{Name: name,
			Ingress: dataplane.DirectionPolicy{Profiles: []string{"pri-allow-all"}},
			Egress:  dataplane.DirectionPolicy{Profiles: []string{"pro-allow-all"}}}
		if in != nil {
			e.Ingress = dataplane.DirectionPolicy{Tiers: []dataplane.TierPolicies{{Name: "default", Policies: in}}}
		}
		return e
	}
	noPolicy := &firewall.State{Policy: &dataplane.PolicyState{Chains: dataplane.MapOf(base()),
		Workloads: dataplane.MapOf(map[string]*dataplane.EndpointPolicy{ifA: ep("a", nil), ifB: ep("b", nil)})}}
	members := []netip.Prefix{netip.MustParsePrefix("10.77.1.2/32")}
	a := netip.MustParseAddr("10.100.0.0")
	for range nSetMembers - 1 {
		a = a.Next().Next()
		members = append(members, netip.PrefixFrom(a, 32))
	}
	slices.SortFunc(members, dataplane.ComparePrefix)
	chains := base()
	chains["pi-default_from-set"] = &dataplane.PolicyChain{Policy: dataplane.PolicyRef{Kind: "NetworkPolicy", Namespace: "default", Name: "from-set"},
		Direction: dataplane.Ingress, Rules: []dataplane.PolicyRule{{Action: dataplane.ActionAllow, Protocol: dataplane.ProtoUDP,
			Src: dataplane.AddrMatch{Sets: []string{"s-big"}}, Dst: dataplane.AddrMatch{Ports: []dataplane.PortRange{{Min: 9, Max: 9}}}}}}
	withPolicy := &firewall.State{Policy: &dataplane.PolicyState{
		AddrSets: dataplane.MapOf(map[string]*dataplane.AddrSet{"s-big": {Members: members}}),
		Chains:   dataplane.MapOf(chains),
		Workloads: dataplane.MapOf(map[string]*dataplane.EndpointPolicy{ifA: ep("a", nil),
			ifB: ep("b", []string{"pi-default_from-set"})}),
	}}

	var applied *firewall.State
	set := func(st *firewall.State) {
		if _, err := be.Apply(context.Background(), st, applied); err != nil {
			b.Fatal(err)
		}
		applied = st
	}
	nlB := wb.Netlink()
	rxB := func() uint64 {
		l, err := nlB.LinkByName("eth0")
		if err != nil {
			b.Fatal(err)
		}
		return l.Attrs().Statistics.RxPackets
	}
	// blast sends 64-byte UDP payloads from a to b:9 for d and returns
	// b's received rate.
	blast := func(d time.Duration) float64 {
		var conn net.Conn
		if err := wa.Do(func() error {
			c, err := net.Dial("udp", "10.77.2.2:9")
			conn = c
			return err
		}); err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		payload := make([]byte, 64-28) // a 64-byte IPv4 packet
		var stop atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			for !stop.Load() {
				_, _ = conn.Write(payload)
			}
		}()
		time.Sleep(200 * time.Millisecond) // warm up
		before, t0 := rxB(), time.Now()
		time.Sleep(d)
		after, t1 := rxB(), time.Now()
		stop.Store(true)
		<-done
		return float64(after-before) / t1.Sub(t0).Seconds()
	}

	dur := time.Duration(*rateSeconds * float64(time.Second))
	var none, pol []float64
	for r := range *rateRounds {
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, withSet := range order {
			if withSet {
				set(withPolicy)
				pol = append(pol, blast(dur))
			} else {
				set(noPolicy)
				none = append(none, blast(dur))
			}
		}
	}
	// The policy really applies: with a's address out of the set, b gets
	// nothing.
	denied := *withPolicy.Policy
	denied.AddrSets = dataplane.MapOf(map[string]*dataplane.AddrSet{"s-big": {Members: slices.DeleteFunc(slices.Clone(members),
		func(p netip.Prefix) bool { return p.Addr() == netip.MustParseAddr("10.77.1.2") })}})
	set(&firewall.State{Policy: &denied})
	if r := blast(time.Second); r > 100 {
		b.Fatalf("with a's address out of the set b still receives %.0f pkt/s: the policy is not in the path", r)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| round | no policy (pkt/s) | 10,000 set members (pkt/s) | ratio |\n|---|---|---|---|\n")
	for i := range none {
		fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.3f |\n", i+1, none[i], pol[i], pol[i]/none[i])
	}
	mn, mp := medianF(none), medianF(pol)
	fmt.Fprintf(&sb, "\nmedians: %.0f vs %.0f pkt/s: ratio %.3f (spread of the per-round ratios %.3f-%.3f)\n", mn, mp, mp/mn, minRatio(none, pol), maxRatio(none, pol))
	b.Log(sb.String())
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func minRatio(a, b []float64) float64 {
	m := 1e9
	for i := range a {
		m = min(m, b[i]/a[i])
	}
	return m
}

func maxRatio(a, b []float64) float64 {
	m := 0.0
	for i := range a {
		m = max(m, b[i]/a[i])
	}
	return m
}
