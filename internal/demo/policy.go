package demo

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/site"
)

// demoTCPPort is the port every demo workload listens on (in this
// process, inside the workload's namespace) for the TCP matrix.
const demoTCPPort = 8080

// denyDBAccess is the seed's example policy: workloads labelled role=db
// refuse ingress from namespace default.
const denyDBAccess = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: deny-db-access
spec:
  selector: role == 'db'
  ingress:
  - action: Deny
    source:
      namespaceSelector: name == 'default'
  - action: Allow
`

// policy is the walkthrough's policy step: the TCP matrix before, the
// seed's deny-db-access policy applied, the ping and TCP matrices after
// (every pair from namespace default to the database refused, nothing
// else), and `weft policy trace` for one refused pair.
func (d *demo) policy(ctx context.Context) error {
	l := d.layout
	h1 := l.Hosts[0]
	var db Workload
	for _, w := range l.Workloads() {
		if w.Namespace == dbNamespace {
			db = w
		}
	}
	stop, err := d.listenTCP()
	if err != nil {
		return err
	}
	defer stop()

	d.step(fmt.Sprintf("Network policy: TCP to port %d between every pair of workloads, before any policy", demoTCPPort))
	tctx, cancel := context.WithTimeout(ctx, pingTimeout)
	tm := tcpAll(tctx, d.endpoints(), demoTCPPort)
	cancel()
	fmt.Fprint(d.out, tm.Table())
	d.say("%s", tm.Summary())
	if ok, total := tm.Reachable(); ok != total {
		return fmt.Errorf("before any policy: %s", tm.Summary())
	}

	d.step(fmt.Sprintf("The seed's policy deny-db-access: workloads labelled role=db (%s, namespace %s) refuse ingress from namespace default", db.Name, dbNamespace))
	d.say("A namespace's labels are the labels of its profile kns.<namespace>; label namespace default:")
	if err := d.show(ctx, h1, "label", "namespace", "default", "name=default"); err != nil {
		return err
	}
	file := filepath.Join(StateDir, "deny-db-access.yaml")
	if err := os.WriteFile(file, []byte(denyDBAccess), 0o600); err != nil {
		return err
	}
	d.say("%s:\n%s", file, denyDBAccess)
	if err := d.show(ctx, h1, "apply", "-f", file); err != nil {
		return err
	}

	// Every pair is still reachable except those from namespace default
	// to the database: wait until the matrices show exactly that.
	refused := func(from, to endpoint) bool { return to.Name == db.Name && from.Name != db.Name }
	deadline := time.Now().Add(convergeTimeout)
	var pm, tcp matrix
	for {
		// Pairs that never answer use up their context: one each.
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		pm = pingAll(pctx, d.endpoints())
		cancel()
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		tcp = tcpAll(tctx, d.endpoints(), demoTCPPort)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if pm.Matches(refused) && tcp.Matches(refused) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the policy is not enforced as expected within %s: ping %s; tcp %s", convergeTimeout, pm.Summary(), tcp.Summary())
		}
	}
	d.step("After the policy: ping")
	fmt.Fprint(d.out, pm.Table())
	d.say("%s", pm.Summary())
	d.step(fmt.Sprintf("After the policy: TCP to port %d", demoTCPPort))
	fmt.Fprint(d.out, tcp.Table())
	d.say("%s", tcp.Summary())

	d.step("Why is one pair refused? `weft policy trace` evaluates the model for that packet")
	return d.show(ctx, h1, "policy", "trace", "--from", l.Hosts[0].Workloads[0].Name, "--to", dbNamespace+"/"+db.Name,
		"--proto", "tcp", "--port", fmt.Sprint(demoTCPPort))
}

// listenTCP accepts connections on demoTCPPort inside every workload's
// namespace until stop is called.
func (d *demo) listenTCP() (stop func(), err error) {
	var lns []net.Listener
	stop = func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, ep := range d.endpoints() {
		var ln net.Listener
		err := ep.NS.Do(func() error {
			var err error
			ln, err = net.Listen("tcp", fmt.Sprintf(":%d", demoTCPPort))
			return err
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("listen in %s: %w", ep.Name, err)
		}
		lns = append(lns, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	return stop, nil
}

// tcpAll opens a TCP connection from inside every endpoint's namespace to
// every other endpoint's port, retrying until each pair has connected or
// ctx ends.
func tcpAll(ctx context.Context, eps []endpoint, port int) matrix {
	m := matrix{Endpoints: eps, Results: map[[2]int]site.PingResult{}}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i := range eps {
		for j := range eps {
			if i == j {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := dialUntil(ctx, eps[i].NS, netip.AddrPortFrom(eps[j].Addr, uint16(port)))
				mu.Lock()
				m.Results[[2]int{i, j}] = r
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return m
}

func dialUntil(ctx context.Context, ns *site.Namespace, to netip.AddrPort) site.PingResult {
	var last error
	for {
		var conn net.Conn
		err := ns.Do(func() error {
			dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			var d net.Dialer
			c, err := d.DialContext(dctx, "tcp", to.String())
			conn = c
			return err
		})
		if err == nil {
			conn.Close()
			return site.PingResult{OK: true}
		}
		last = err
		if ctx.Err() != nil {
			return site.PingResult{Err: last.Error()}
		}
		select {
		case <-ctx.Done():
			return site.PingResult{Err: last.Error()}
		case <-time.After(100 * time.Millisecond):
		}
	}
}
