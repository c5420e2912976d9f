package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/testbed"
)

// polServeEcho echoes every connection to port inside ns until the test
// ends.
func polServeEcho(t *testing.T, ns *testbed.Netns, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		l, err := net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
		ln = l
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// polLongLived holds one TCP connection and sends a line every 20 ms,
// waiting for its echo; it records the first error and the longest
// round trip.
type polLongLived struct {
	stop    chan struct{}
	done    chan struct{}
	err     atomic.Value // string
	maxRTT  atomic.Int64 // ns
	rounds  atomic.Int64
	started time.Time
}

func polStartLongLived(t *testing.T, from *testbed.Netns, to string) *polLongLived {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c net.Conn
	var err error
	for {
		c, err = from.DialContext(ctx, "tcp", to)
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("long-lived connection to %s: %v", to, err)
	}
	l := &polLongLived{stop: make(chan struct{}), done: make(chan struct{}), started: time.Now()}
	l.err.Store("")
	go func() {
		defer close(l.done)
		defer c.Close()
		buf := make([]byte, 64)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			msg := fmt.Sprintf("%08d\n", i)
			start := time.Now()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				l.err.Store(fmt.Sprintf("write %d: %v", i, err))
				return
			}
			if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || string(buf[:len(msg)]) != msg {
				l.err.Store(fmt.Sprintf("echo %d: %v (%q)", i, err, buf[:len(msg)]))
				return
			}
			if rtt := time.Since(start).Nanoseconds(); rtt > l.maxRTT.Load() {
				l.maxRTT.Store(rtt)
			}
			l.rounds.Add(1)
		}
	}()
	return l
}

// check fails the test if the connection broke or stalled for more than
// maxStall.
func (l *polLongLived) check(t *testing.T, what string, maxStall time.Duration) {
	t.Helper()
	if e := l.err.Load().(string); e != "" {
		t.Fatalf("%s: the long-lived connection broke: %s", what, e)
	}
	if rtt := time.Duration(l.maxRTT.Load()); rtt > maxStall {
		t.Fatalf("%s: the long-lived connection stalled for %s", what, rtt)
	}
	if l.rounds.Load() == 0 {
		t.Fatalf("%s: the long-lived connection exchanged nothing", what)
	}
}

func (l *polLongLived) close() {
	close(l.stop)
	<-l.done
}

func polApply(t *testing.T, h *testbed.Host, doc string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Weft("apply", "-f", f); err != nil {
		t.Fatalf("weft apply: %v\n%s\n%s", err, out, doc)
	}
}

var polCounterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// polTable is the host's weft table without its counters: equal tables
// mean no rule was rewritten. For the iptables backend: weft's rules in
// both variants and families and weft's ipsets, and the number of writes
// the agents made (their "iptables apply" log lines), which a restart
// that adopts the kernel's rules leaves unchanged.
func polTable(t *testing.T, h *testbed.Host, backend string) string {
	t.Helper()
	if backend == "iptables" {
		var b strings.Builder
		for _, cmd := range []string{"iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save", "ipset save"} {
			out, err := h.Exec(strings.Fields(cmd)...)
			if err != nil {
				t.Fatalf("%s: %v\n%s", cmd, err, out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "weft") && !strings.Contains(line, "initval") {
					b.WriteString(line + "\n")
				}
			}
		}
		fmt.Fprintf(&b, "writes: %d\n", strings.Count(h.Logs(), `msg="iptables apply"`))
		return b.String()
	}
	out, err := h.Exec("nft", "-a", "list", "table", "inet", "weft")
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	return polCounterRE.ReplaceAllString(out, "counter")
}

// A long-lived TCP connection survives unrelated policy changes with no
// reset and no stall; an agent restart (SIGTERM, and kill -9) adopts the
// ruleset in the kernel without rewriting it, the connection survives it,
// and while the agent is down and starting no new connection is wrongly
// allowed or refused.
func TestPolicyLongLivedAndRestart(t *testing.T) { policyLongLivedAndRestart(t, "nftables") }

// The same with the iptables backend: its restart adopts the chains and
// sets in the kernel (nothing rewritten, the connection goes on).
func TestPolicyLongLivedAndRestartIptables(t *testing.T) { policyLongLivedAndRestart(t, "iptables") }

func policyLongLivedAndRestart(t *testing.T, backend string) {
	site := wlStartCluster(t, testbed.Options{Hosts: 3, ExtraTOML: fmt.Sprintf("[dataplane]\nbackend = %q\n", backend)})
	hosts := site.Hosts()
	h1, h2 := hosts[0], hosts[1]
	a := wlAttach(t, site, h1, "pol-a", "--label", "role=client")
	b := wlAttach(t, site, h2, "pol-b", "--label", "role=server")
	other := wlAttach(t, site, hosts[2], "pol-c", "--label", "role=other")
	polServeEcho(t, b.Netns(), 5000)
	b.Netns().ServeTCP("[::]:443")

	// b admits clients on 5000 and 8080, nothing else.
	polApply(t, h1, `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: server, namespace: default}
spec:
  selector: role == 'server'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'client'}
    destination: {ports: [5000, 8080]}
`)
	site.Expect(
		testbed.Reach(a.Netns(), b.ip, testbed.TCP(wlPort)),
		testbed.NoReach(a.Netns(), b.ip, testbed.TCP(443)),
		testbed.NoReach(other.Netns(), b.ip, testbed.TCP(wlPort)),
	)
	ll := polStartLongLived(t, a.Netns(), net.JoinHostPort(b.ip, "5000"))
	defer ll.close()

	// Unrelated changes: policies on other workloads, labels of others,
	// a network set, a higher-order policy on b that still allows a.
	for i := range 5 {
		polApply(t, h1, fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: unrelated-%d, namespace: default}
spec:
  selector: role == 'other'
  ingress: [{action: Deny, protocol: UDP}, {action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: set-%d, labels: {n: "%d"}}
spec: {nets: [192.0.2.%d/32]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: early-%d, namespace: default}
spec:
  order: %d
  selector: role == 'server'
  ingress: [{action: Allow, source: {selector: role == 'client'}}]
`, i, i, i, i+1, i, i+1))
		if out, err := h1.Weft("label", "workload", "pol-c", "tick="+fmt.Sprint(i), "--overwrite"); err != nil {
			t.Fatalf("label: %v\n%s", err, out)
		}
	}
	for i := range 5 {
		if out, err := h1.Weft("delete", "networkpolicy", fmt.Sprintf("early-%d", i)); err != nil {
			t.Fatalf("delete: %v\n%s", err, out)
		}
	}
	site.Expect(testbed.NoReach(a.Netns(), b.ip, testbed.TCP(443)), testbed.Reach(a.Netns(), b.ip, testbed.TCP(wlPort)))
	ll.check(t, "after unrelated policy changes", time.Second)

	// Restarts of b's agent: SIGTERM, then kill -9.
	for _, how := range []string{"SIGTERM", "kill -9"} {
		before := polTable(t, h2, backend)
		var (
			mu         sync.Mutex
			violations []string
			stop       = make(chan struct{})
			probed     sync.WaitGroup
		)
		probed.Add(1)
		go func() {
			defer probed.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, c := range []struct {
					port int
					want bool
				}{{wlPort, true}, {443, false}} {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					conn, err := a.Netns().DialContext(ctx, "tcp", net.JoinHostPort(b.ip, fmt.Sprint(c.port)))
					cancel()
					if err == nil {
						conn.Close()
					}
					if (err == nil) != c.want {
						mu.Lock()
						violations = append(violations, fmt.Sprintf("port %d: reachable=%v at %s (%v)", c.port, err == nil, time.Now().Format("15:04:05.000"), err))
						mu.Unlock()
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		var err error
		if how == "SIGTERM" {
			err = h2.StopAgent()
		} else {
			err = h2.Kill9()
		}
		if err != nil {
			t.Fatal(err)
		}
		// Down for a while: the kernel keeps enforcing.
		time.Sleep(2 * time.Second)
		if err := h2.StartAgent(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := h2.WaitReady(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()
		time.Sleep(2 * time.Second) // a few passes after ready
		close(stop)
		probed.Wait()
		if len(violations) > 0 {
			t.Fatalf("%s: new connections wrongly allowed or refused while the agent was down or starting:\n%s", how, strings.Join(violations, "\n"))
		}
		if after := polTable(t, h2, backend); after != before {
			t.Fatalf("%s: the restarted agent rewrote the table:\nbefore:\n%s\nafter:\n%s", how, before, after)
		}
		ll.check(t, "across an agent restart ("+how+")", 2*time.Second)
	}
}

// A workload-shaped interface the agent does not know passes no traffic
// (fail closed): it is dropped by the base chains, also while the agent is
// stopped; an interface of another shape is not touched.
func TestPolicyFailClosed(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 1})
	h := site.Hosts()[0]
	target := wlAttach(t, site, h, "target")
	if err := h.StopAgent(); err != nil {
		t.Fatal(err)
	}
	rogueIface, err := dataplane.WorkloadIfaceName("weft", "default", "rogue")
	if err != nil {
		t.Fatal(err)
	}
	rogue := polHandVeth(t, site, h, "rogue", rogueIface, "10.99.0")
	plain := polHandVeth(t, site, h, "plain", "plainveth0", "10.99.1")
	site.Expect(
		testbed.NoReach(rogue.Netns(), target.ip, testbed.Ping()),
		testbed.NoReach(rogue.Netns(), target.ip, testbed.TCP(wlPort)),
		testbed.Reach(plain.Netns(), target.ip, testbed.TCP(wlPort)),
	)
	// The rule that dropped them: the fail-closed drop of filter-forward.
	out, err := h.Exec("nft", "list", "chain", "inet", "weft", "filter-forward")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`"weftfffffffffff".* counter packets (\d+) bytes \d+ drop`).FindStringSubmatch(out)
	if m == nil || m[1] == "0" {
		t.Fatalf("the fail-closed rule counted nothing:\n%s", out)
	}
}

// polHandVeth wires a namespace to host h by hand (no weft): a veth whose
// host side is hostIface with prefix.1/30, the namespace side prefix.2/30
// and a default route through it.
func polHandVeth(t *testing.T, site *testbed.Site, h *testbed.Host, name, hostIface, prefix string) *testbed.Workload {
	t.Helper()
	w := site.AddWorkload(h, name)
	hostAddr := netip.MustParsePrefix(prefix + ".1/30")
	wlAddr := netip.MustParsePrefix(prefix + ".2/30")
	err := h.Netns().Do(func() error {
		nsh, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer nsh.Close()
		target, err := os.Open(w.Path())
		if err != nil {
			return err
		}
		defer target.Close()
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIface}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(target.Fd()))}
		if err := nsh.LinkAdd(v); err != nil {
			return err
		}
		l, err := nsh.LinkByName(hostIface)
		if err != nil {
			return err
		}
		if err := nsh.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: hostAddr.Addr().AsSlice(), Mask: net.CIDRMask(30, 32)}}); err != nil {
			return err
		}
		return nsh.LinkSetUp(l)
	})
	if err != nil {
		t.Fatalf("hand veth %s: %v", hostIface, err)
	}
	err = w.Netns().Do(func() error {
		nsh, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer nsh.Close()
		l, err := nsh.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := nsh.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: wlAddr.Addr().AsSlice(), Mask: net.CIDRMask(30, 32)}}); err != nil {
			return err
		}
		if err := nsh.LinkSetUp(l); err != nil {
			return err
		}
		return nsh.RouteAdd(&netlink.Route{Gw: hostAddr.Addr().AsSlice(), LinkIndex: l.Attrs().Index})
	})
	if err != nil {
		t.Fatalf("hand veth %s (workload side): %v", hostIface, err)
	}
	return w
}
