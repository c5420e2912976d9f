package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgptest"
	"github.com/weftnet/weft/internal/testbed"
)

// pingFlow is a ping every 10 ms from a namespace, for counting lost
// packets across an event.
type pingFlow struct {
	what string
	done chan struct{}
	out  string
	err  error
}

// startPing pings to from ns every 10 ms for d.
func startPing(ns *testbed.Netns, to string, d time.Duration) *pingFlow {
	p := &pingFlow{what: fmt.Sprintf("%s → %s", ns.Label(), to), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
		defer cancel()
		p.out, p.err = ns.ExecContext(ctx, "ping", "-n", "-q", "-i", "0.01", "-W", "1", "-w", strconv.Itoa(int(d.Seconds())), to)
	}()
	return p
}

var pingStatsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// result waits for the flow and returns what it sent and what came back.
func (p *pingFlow) result() (sent, received int, err error) {
	<-p.done
	m := pingStatsRE.FindStringSubmatch(p.out)
	if m == nil {
		return 0, 0, fmt.Errorf("%s: no ping statistics (%v): %q", p.what, p.err, p.out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, nil
}

// waitSynced waits until h's speaker has finished its graceful restart
// and its sessions to addrs are up.
func waitSynced(t *testing.T, h *testbed.Host, timeout time.Duration, addrs ...string) time.Duration {
	t.Helper()
	start := time.Now()
	bgptest.WaitSessions(t, h, timeout, addrs...)
	bgptest.Eventually(t, h.Name()+" synced", timeout, func() error {
		st, err := bgptest.Status(h)
		if err != nil {
			return err
		}
		if st.Syncing {
			return fmt.Errorf("still syncing")
		}
		return nil
	})
	return time.Since(start)
}

// Graceful restart across kill -9: an agent killed (its kernel closes its
// sessions) and restarted loses no packet of established cross-node
// traffic, whether the traffic crosses the site's router (BIRD as the
// graceful-restart helper keeps the node's routes as stale) or goes
// between weft peers (the mesh keeps them; the restarted node keeps its
// learned routes in its kernel until its peers sent them again).
func TestBGPGracefulRestartKill9(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 3, Subnets: 2, ExtraTOML: bgpNativeTOML, HostTOML: rackTOML})
	hosts := site.Hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	w1 := wlAttach(t, site, h1, "w1")
	w2 := wlAttach(t, site, h2, "w2")
	w3 := wlAttach(t, site, h3, "w3")
	r := bgptest.StartBIRD(t, site.Router(), "bird-router",
		bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: bgptest.NodePeers(hosts, false), Static: []string{"198.51.100.0/24"}}.Config())
	applyYAML(t, h1, rackPeers(site, false))
	sn := site.Subnets()
	peersOf := map[*testbed.Host][]string{
		h1: {sn[0].RouterAddr().String(), h2.Address(), h3.Address()},
		h2: {sn[0].RouterAddr().String(), h1.Address(), h3.Address()},
		h3: {sn[1].RouterAddr().String(), h1.Address(), h2.Address()},
	}
	for _, h := range hosts {
		bgptest.WaitSessions(t, h, 30*time.Second, peersOf[h]...)
	}
	site.ExpectWithin(30*time.Second,
		testbed.Reach(w3.Netns(), w1.ip, testbed.Ping()),
		testbed.Reach(w2.Netns(), w3.ip, testbed.Ping()),
		testbed.Reach(w1.Netns(), w2.ip, testbed.Ping()))

	for _, victim := range []*testbed.Host{h1, h3} {
		flows := []*pingFlow{
			startPing(w3.Netns(), w1.ip, 40*time.Second), // across the router, both ways
			startPing(w2.Netns(), w3.ip, 40*time.Second),
			startPing(w1.Netns(), w2.ip, 40*time.Second), // one subnet
		}
		time.Sleep(2 * time.Second)
		if err := victim.Kill9(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		// Meanwhile the router keeps the victim's block (stale) and the
		// other nodes keep their routes to it.
		time.Sleep(2 * time.Second)
		routes, err := r.Routes()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []*wlWorkload{w1, w3} {
			if w.Host() == victim && routes[blockOf(w.ip)] != victim.Name() {
				t.Errorf("while %s restarts, BIRD's route to its block %s: %q", victim.Name(), blockOf(w.ip), routes[blockOf(w.ip)])
			}
		}
		if err := victim.StartAgent(); err != nil {
			t.Fatal(err)
		}
		took := waitSynced(t, victim, 120*time.Second, peersOf[victim]...)
		t.Logf("%s: killed, restarted, sessions back and synced %s after the kill", victim.Name(), (time.Since(killed)).Round(100*time.Millisecond))
		_ = took
		for _, f := range flows {
			sent, recv, err := f.result()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("restart of %s: %s: %d sent, %d lost", victim.Name(), f.what, sent, sent-recv)
			// The floor only proves the flow ran across the restart: a busy
			// machine sends far fewer than ping -i 0.01's 100 a second.
			if sent < 250 {
				t.Errorf("restart of %s: %s sent only %d packets: the flow did not cover the restart", victim.Name(), f.what, sent)
			}
			if recv != sent {
				t.Errorf("restart of %s: %s lost %d of %d packets", victim.Name(), f.what, sent-recv, sent)
			}
		}
	}
}

// watchGone polls cond every 20 ms from start and reports how long after
// start it first held (cond reports whether the route is gone).
func watchGone(start time.Time, timeout time.Duration, cond func() bool) <-chan time.Duration {
	ch := make(chan time.Duration, 1)
	go func() {
		for time.Since(start) < timeout {
			if cond() {
				ch <- time.Since(start)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		ch <- -1
	}()
	return ch
}

// A node that dies (its cable cut: it goes silent, unlike a restarting
// agent) loses its routes within the hold time everywhere: the routes the
// other nodes derive from the store (h2 routes h1's block natively on
// their shared subnet), the routes they learned over BGP (h3 on the other
// subnet), and the site's router, BIRD on its defaults (it offers a 240 s
// hold time; the node's 3 s wins). When the cable is back, so are they.
func TestBGPNodeDeathRoutesGoWithinHoldTime(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 3, Subnets: 2, ExtraTOML: bgpNativeTOML, HostTOML: rackTOML})
	hosts := site.Hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	w1 := wlAttach(t, site, h1, "w1")
	w2 := wlAttach(t, site, h2, "w2")
	w3 := wlAttach(t, site, h3, "w3")
	r := bgptest.StartBIRD(t, site.Router(), "bird-router",
		bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: bgptest.NodePeers(hosts, false)}.Config())
	applyYAML(t, h1, rackPeers(site, false))
	sn := site.Subnets()
	bgptest.WaitSessions(t, h1, 30*time.Second, sn[0].RouterAddr().String(), h2.Address(), h3.Address())
	bgptest.WaitSessions(t, h3, 30*time.Second, sn[1].RouterAddr().String())
	site.ExpectWithin(30*time.Second,
		testbed.Reach(w3.Netns(), w1.ip, testbed.Ping()),
		testbed.Reach(w2.Netns(), w1.ip, testbed.Ping()),
		testbed.Reach(w2.Netns(), w3.ip, testbed.Ping()))
	block := blockOf(w1.ip)
	if via, _ := bgptest.RouteVia(h2, block); via != h1.Address() {
		t.Fatalf("h2's route to h1's block: via %q, want the native route via %s", via, h1.Address())
	}
	if via, _ := bgptest.RouteVia(h3, block); via != h3.Gateway() {
		t.Fatalf("h3's route to h1's block: via %q, want the learned route via %s", via, h3.Gateway())
	}

	if err := h1.CutLink(); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	gone := func(h *testbed.Host) func() bool {
		return func() bool { via, err := bgptest.RouteVia(h, block); return err == nil && via == "" }
	}
	onH2 := watchGone(cut, 30*time.Second, gone(h2))
	onH3 := watchGone(cut, 30*time.Second, gone(h3))
	onBIRD := watchGone(cut, 30*time.Second, func() bool {
		routes, err := r.Routes()
		_, has := routes[block]
		return err == nil && !has
	})
	d2, d3, dr := <-onH2, <-onH3, <-onBIRD
	t.Logf("h1's cable cut: its block's routes gone from h2 (derived) after %s, from h3 (learned) after %s, from BIRD after %s",
		d2.Round(10*time.Millisecond), d3.Round(10*time.Millisecond), dr.Round(10*time.Millisecond))
	for what, d := range map[string]time.Duration{"h2 (derived route)": d2, "h3 (learned route)": d3, "BIRD": dr} {
		if d < 0 {
			t.Errorf("%s: the dead node's route never went", what)
		} else if d > 4*time.Second {
			t.Errorf("%s: the dead node's route went only after %s (hold time 3 s)", what, d)
		}
	}
	// The other routes stay; the dead peer shows as such.
	if via, _ := bgptest.RouteVia(h2, blockOf(w3.ip)); via == "" {
		t.Error("h2 lost its route to h3's block")
	}
	st, err := bgptest.Status(h2)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := bgptest.PeerOf(st, h1.Address()); p.State == "up" || !regexp.MustCompile(`peer dead`).MatchString(p.Info) {
		t.Errorf("h2's session to the dead h1: %+v", p)
	}

	if err := h1.HealLink(); err != nil {
		t.Fatal(err)
	}
	bgptest.WaitSessions(t, h2, 60*time.Second, h1.Address())
	site.ExpectWithin(60*time.Second,
		testbed.Reach(w3.Netns(), w1.ip, testbed.Ping()),
		testbed.Reach(w2.Netns(), w1.ip, testbed.Ping()))
}
