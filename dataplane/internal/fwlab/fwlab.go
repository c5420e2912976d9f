// Package fwlab is the kernel-test bench of the firewall backends: a node
// namespace with two workload namespaces behind veths named like weft
// workload interfaces, TCP listeners and dials with deadlines.
package fwlab

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// Lab is a node namespace with two workload namespaces, A (10.77.1.2) and
// B (10.77.2.2), each behind a veth whose host side is named like a weft
// workload interface (prefix "weft"), routed through the node.
type Lab struct {
	Node, A, B   *nstest.NS
	IfA, IfB     string
	AddrA, AddrB netip.Addr

	mu      sync.Mutex
	closers []func()
}

// New builds a lab; everything goes when the test ends.
func New(t testing.TB) *Lab {
	t.Helper()
	l := &Lab{Node: nstest.New(t, "n"), A: nstest.New(t, "a"), B: nstest.New(t, "b")}
	var err error
	if l.IfA, err = dataplane.WorkloadIfaceName("weft", "t", "a"); err != nil {
		t.Fatal(err)
	}
	l.IfB, _ = dataplane.WorkloadIfaceName("weft", "t", "b")
	l.AddrA, l.AddrB = netip.MustParseAddr("10.77.1.2"), netip.MustParseAddr("10.77.2.2")
	nstest.Veth(t, l.Node, l.IfA, netip.MustParsePrefix("10.77.1.1/24"), l.A, "eth0", netip.MustParsePrefix("10.77.1.2/24"))
	nstest.Veth(t, l.Node, l.IfB, netip.MustParsePrefix("10.77.2.1/24"), l.B, "eth0", netip.MustParsePrefix("10.77.2.2/24"))
	l.Node.Sysctl("net/ipv4/ip_forward", "1")
	l.A.Run("ip", "route", "add", "default", "via", "10.77.1.1")
	l.B.Run("ip", "route", "add", "default", "via", "10.77.2.1")
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, c := range l.closers {
			c()
		}
	})
	return l
}

// Serve accepts TCP connections on port in ns, echoing what they send,
// until the test ends.
func (l *Lab) Serve(t testing.TB, ns *nstest.NS, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.closers = append(l.closers, func() { ln.Close() })
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						c.Close()
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
}

// Dial reports whether a TCP handshake from ns to addr:port succeeds
// within 1.5 s (SYNs are resent at 1 s: a loaded machine may need the
// second).
func Dial(ns *nstest.NS, addr netip.Addr, port int) bool {
	return DialWithin(ns, addr, port, 1500*time.Millisecond)
}

// DialWithin reports whether a TCP handshake from ns to addr:port
// succeeds within d.
func DialWithin(ns *nstest.NS, addr netip.Addr, port int, d time.Duration) bool {
	var ok bool
	ns.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(addr, uint16(port)).String(), d)
		if err == nil {
			ok = true
			c.Close()
		}
		return nil
	})
	return ok
}

// State builds a policy state: both workloads with the allow-all profile,
// plus the given chains in b's ingress tier "default".
func (l *Lab) State(sets map[string]*dataplane.AddrSet, chains map[string]*dataplane.PolicyChain, bIngress []string) *firewall.State {
	all := map[string]*dataplane.PolicyChain{
		"pri-_p": {Policy: dataplane.PolicyRef{Kind: "Profile", Name: "p"}, Direction: dataplane.Ingress, Rules: []dataplane.PolicyRule{{Action: dataplane.ActionAllow}}},
		"pro-_p": {Policy: dataplane.PolicyRef{Kind: "Profile", Name: "p"}, Direction: dataplane.Egress, Rules: []dataplane.PolicyRule{{Action: dataplane.ActionAllow}}},
	}
	for k, v := range chains {
		all[k] = v
	}
	ep := func(name string, in []string) *dataplane.EndpointPolicy {
		e := &dataplane.EndpointPolicy{Name: name,
			Ingress: dataplane.DirectionPolicy{Profiles: []string{"pri-_p"}},
			Egress:  dataplane.DirectionPolicy{Profiles: []string{"pro-_p"}},
		}
		if len(in) > 0 {
			e.Ingress.Tiers = []dataplane.TierPolicies{{Name: "default", Policies: in}}
		}
		return e
	}
	return &firewall.State{
		Policy: &dataplane.PolicyState{
			AddrSets:  dataplane.MapOf(sets),
			Chains:    dataplane.MapOf(all),
			Workloads: dataplane.MapOf(map[string]*dataplane.EndpointPolicy{l.IfA: ep("t/a", nil), l.IfB: ep("t/b", bIngress)}),
			Settings:  dataplane.PolicySettings{VXLANPort: 4789, DropIPIP: true},
		},
		NAT: dataplane.NATConfig{MasqPools: Prefixes("10.77.0.0/16"), AllPools: Prefixes("10.77.0.0/16")},
	}
}

// Prefixes parses prefixes.
func Prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}
