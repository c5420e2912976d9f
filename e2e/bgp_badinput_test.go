package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgptest"
	"github.com/weftnet/weft/internal/testbed"
)

// Bad input around BGP, each handled without harming the other sessions
// or the kernel's routes: BGPPeers with a bad IP, AS, selector or port are
// refused naming the field and change nothing; a peer that sends garbage
// and one that resets every connection never come up; a peer address that
// is this node's own is reported and skipped, another node's address is
// that node's session; a router flooding 100,000 prefixes hits the
// session's prefix limit, is shut down with a clear log line, and the
// rest goes on.
func TestBGPBadInput(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 2, ExtraTOML: bgpNativeTOML})
	hosts := site.Hosts()
	h1, h2 := hosts[0], hosts[1]
	peers := []bgptest.Peer{
		{Name: "h1", Addr: h1.Address(), AS: 64512, Export: "where proto != \"flood\""},
		{Name: "h2", Addr: h2.Address(), AS: 64512},
	}
	bgptest.StartBIRD(t, site.Router(), "bird-router", bgptest.RouterConfig{RouterID: site.RouterAddress(), Peers: peers, Flood: 100000, Static: []string{"198.51.100.0/24"}}.Config())
	router := site.RouterAddress()

	// Refused, naming the field, and nothing written.
	for _, bad := range []struct{ spec, field string }{
		{"{peerIP: 10.0.0.300, asNumber: 65000}", "spec.peerIP"},
		{"{peerIP: 10.0.0.1, asNumber: 4294967296}", "spec.asNumber"},
		{"{peerSelector: \"has(\"}", "spec.peerSelector"},
		{"{peerIP: \"10.0.0.1:0\", asNumber: 65000}", "spec.peerIP"},
		{"{peerIP: \"10.0.0.1:70000\", asNumber: 65000}", "spec.peerIP"},
		{"{nodeSelector: \"zone ==\", peerIP: 10.0.0.1, asNumber: 65000}", "spec.nodeSelector"},
	} {
		path := filepath.Join(t.TempDir(), "bad.yaml")
		doc := "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: bad}\nspec: " + bad.spec + "\n"
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := h1.Weft("apply", "-f", path)
		if err == nil || !strings.Contains(err.Error(), bad.field) {
			t.Errorf("apply %s: %v %s (want an error naming %s)", bad.spec, err, out, bad.field)
		}
	}
	if out, _ := h1.Weft("get", "bgppeers", "-o", "json"); strings.Contains(out, `"bad"`) {
		t.Fatalf("a refused BGPPeer was written: %s", out)
	}

	// A peer sending garbage (the router answers on 1790 with a text line)
	// and one resetting every connection (1791); h1's own address; h2's
	// address; and the router.
	// Each on an address of its own: one session per peer address.
	garbage := site.Subnet().Addr()
	for range 250 {
		garbage = garbage.Next()
	}
	resets := garbage.Next()
	for _, a := range []string{garbage.String(), resets.String()} {
		if _, err := site.Router().Exec("ip", "addr", "add", a+"/24", "dev", "br0"); err != nil {
			t.Fatal(err)
		}
	}
	// (BIRD holds port 179 on every address of the router.)
	site.Router().ServeTCP(net.JoinHostPort(garbage.String(), "1790"))
	serveReset(t, site.Router(), net.JoinHostPort(resets.String(), "1790"))
	applyYAML(t, h1, fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: %[1]q, asNumber: 65000}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: garbage}
spec: {peerIP: "%[4]s:1790", asNumber: 65099, node: h1}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: resets}
spec: {peerIP: "%[5]s:1790", asNumber: 65098, node: h1}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: myself}
spec: {peerIP: %[2]q, asNumber: 64512, node: h1}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: to-h2}
spec: {peerIP: %[3]q, node: h1}
`, router, h1.Address(), h2.Address(), garbage.String(), resets.String()))
	bgptest.WaitSessions(t, h1, 30*time.Second, router, h2.Address())
	bgptest.Eventually(t, "h1 reports its own address", 10*time.Second, func() error {
		out, err := h1.Weft("node", "status")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "BGPPeer myself: peerIP "+h1.Address()+" is this node's own address") {
			return fmt.Errorf("no problem reported:\n%s", out)
		}
		return nil
	})
	// For 8 s: the bad peers never come up, the router's session does
	// not flap, and the router's route stays in the kernel.
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		st, err := bgptest.Status(h1)
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := bgptest.PeerOf(st, router); p.State != "up" {
			t.Fatalf("the router's session went down: %+v", p)
		}
		if p, _ := bgptest.PeerOf(st, h2.Address()); p.State != "up" || p.PeerType != "node specific" {
			t.Fatalf("the session to h2 (a BGPPeer to a node's address): %+v", p)
		}
		for _, a := range []string{garbage.String(), resets.String()} {
			if p, ok := bgptest.PeerOf(st, a); !ok || p.State == "up" {
				t.Fatalf("the bad peer %s: %+v", a, p)
			}
		}
		ls, err := bgptest.LearnedRoutes(h1)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(ls, ","), "198.51.100.0/24 via "+router) {
			t.Fatalf("the router's route left the kernel: %v", ls)
		}
		time.Sleep(500 * time.Millisecond)
	}
	st, _ := bgptest.Status(h1)
	for _, a := range []string{garbage.String(), resets.String()} {
		p, _ := bgptest.PeerOf(st, a)
		t.Logf("bad peer %s: %s %s", a, p.State, p.Info)
	}
	metrics := scrapeMetrics(t, h1)
	for _, want := range []string{
		fmt.Sprintf(`weft_bgp_session_flaps_total{peer=%q} 0`, router),
		fmt.Sprintf(`bgp_peer_up{peer=%q,type="global"} 1`, router),
		fmt.Sprintf(`bgp_peer_up{peer=%q,type="node specific"} 0`, garbage),
		fmt.Sprintf(`bgp_peer_up{peer=%q,type="node specific"} 0`, resets),
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// The flood: h2's router session gets 100,000 prefixes; the limit
	// (20,000 by default) shuts it down, h2's mesh session to h1 stays.
	bgptest.Eventually(t, "h2 shuts the flooding router's session down", 60*time.Second, func() error {
		if !strings.Contains(h2.Logs(), "BGP peer sent more prefixes than its limit") {
			return fmt.Errorf("no log line yet")
		}
		st, err := bgptest.Status(h2)
		if err != nil {
			return err
		}
		if p, _ := bgptest.PeerOf(st, router); p.State != "down" || !strings.Contains(p.Info, "limit of 20000 prefixes") {
			return fmt.Errorf("h2's router session: %+v", p)
		}
		return nil
	})
	bgptest.Eventually(t, "h2 keeps none of the flood in its kernel", 30*time.Second, func() error {
		out, err := h2.Exec("ip", "route", "show", "proto", "88")
		if err != nil {
			return err
		}
		if n := strings.Count(out, "\n"); n > 0 {
			return fmt.Errorf("%d learned routes left", n)
		}
		return nil
	})
	bgptest.WaitSessions(t, h2, 10*time.Second, h1.Address())
	bgptest.WaitSessions(t, h1, 10*time.Second, router)
}

// serveReset accepts connections on address inside ns and resets each at
// once, until the test ends.
func serveReset(t *testing.T, ns *testbed.Netns, address string) {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() error {
		l, err := net.Listen("tcp", address)
		ln = l
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
}
