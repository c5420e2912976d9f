package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane/wireguard"
	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/internal/testtier"
)

// Three WireGuard nodes on a VXLAN pool: every workload pair is reachable;
// a capture on the underlay bridge shows only WireGuard between the hosts
// (no workload address in clear, no VXLAN packet: one path only); `wg show`
// on each host has the other two nodes as peers with the keys, endpoints
// and blocks the store holds; `weft node status` and `weft get node` show
// the device and the keys.
func TestWireGuardEncryptsEveryPair(t *testing.T) {
	testtier.EndToEnd(t, "wg", "tcpdump", "ping", "nsenter")
	site := wlStartCluster(t, testbed.Options{Hosts: 3, ExtraTOML: wgTOML})
	hosts := site.Hosts()
	ws := wlAttachTwoEach(t, site)
	wgWaitMesh(t, hosts)

	capture := startUnderlayCapture(t, site)
	site.Expect(wlPairChecks(ws)...)
	clear := capture.read(t, fmt.Sprintf("net %s or udp port 4789", poolOf))
	encrypted := capture.read(t, "udp port 51820")
	if len(clear) > 0 {
		t.Fatalf("%d packets crossed the underlay in clear or over VXLAN, e.g.:\n%s", len(clear), strings.Join(clear[:min(10, len(clear))], "\n"))
	}
	if len(encrypted) == 0 {
		all := capture.read(t, "")
		t.Fatalf("no WireGuard packet crossed the underlay; %d packets: %s", len(all), strings.Join(all[:min(20, len(all))], "\n"))
	}
	t.Logf("underlay capture: %d WireGuard packets, 0 in clear, 0 VXLAN; e.g. %s", len(encrypted), encrypted[0])

	keys := wgNodeKeys(t, hosts[0])
	blocks := wlClusterBlocks(t, hosts[0])
	for _, h := range hosts {
		d := wgShow(t, h)
		if d.PublicKey != keys[h.Name()] || d.Port != 51820 {
			t.Errorf("%s: device key %s port %d, the store says %s", h.Name(), d.PublicKey, d.Port, keys[h.Name()])
		}
		if len(d.Peers) != len(hosts)-1 {
			t.Errorf("%s: %d peers, want %d", h.Name(), len(d.Peers), len(hosts)-1)
		}
		for _, o := range hosts {
			if o == h {
				continue
			}
			p, ok := d.Peers[keys[o.Name()]]
			if !ok {
				t.Errorf("%s: no peer with %s's key", h.Name(), o.Name())
				continue
			}
			if p.Endpoint != o.Address()+":51820" {
				t.Errorf("%s: peer %s endpoint %s", h.Name(), o.Name(), p.Endpoint)
			}
			for cidr, owner := range blocks {
				if owner == o.Name() && !slices.Contains(p.AllowedIPs, cidr) {
					t.Errorf("%s: peer %s lacks its block %s in %v", h.Name(), o.Name(), cidr, p.AllowedIPs)
				}
				if owner != o.Name() && slices.Contains(p.AllowedIPs, cidr) {
					t.Errorf("%s: peer %s has %s's block %s", h.Name(), o.Name(), owner, cidr)
				}
			}
		}
		// One path: no VXLAN neighbour or FDB entry towards a WireGuard node.
		if out, err := h.Exec("bridge", "fdb", "show", "dev", wlVXLAN); err == nil && strings.Contains(out, "dst") {
			t.Errorf("%s: VXLAN FDB entries towards WireGuard nodes:\n%s", h.Name(), out)
		}
		st := wgStatus(t, h)
		if st == nil || st.Kind != "userspace" || st.DevicePID == 0 || len(st.Peers) != 2 || st.MTU != 1440 || st.Problem != "" {
			t.Errorf("%s: node status wireguard %+v", h.Name(), st)
		}
	}
	// Metrics as Calico names them, prefixed: the device's meta line, and
	// per peer the bytes each way and the latest handshake (the pairs
	// above have just talked).
	m := wgMetrics(t, site, hosts[0])
	metric := func(name string, labels ...string) (float64, bool) {
		for k, v := range m {
			if !strings.HasPrefix(k, name+"{") {
				continue
			}
			all := true
			for _, l := range labels {
				all = all && strings.Contains(k, l)
			}
			if all {
				return v, true
			}
		}
		return 0, false
	}
	if v, ok := metric("weft_wireguard_meta", `hostname="h1"`, `iface="weft.wg"`, `public_key="`+keys["h1"]+`"`, `listen_port="51820"`, `kind="userspace"`); !ok || v != 1 {
		t.Errorf("weft_wireguard_meta on h1 = %v (present %v)", v, ok)
	}
	for _, o := range hosts[1:] {
		peer := []string{`peer_node="` + o.Name() + `"`, `peer_key="` + keys[o.Name()] + `"`, `peer_endpoint="` + o.Address() + `:51820"`}
		for _, name := range []string{"weft_wireguard_bytes_sent", "weft_wireguard_bytes_rcvd", "weft_wireguard_latest_handshake_seconds"} {
			if v, ok := metric(name, peer...); !ok || v <= 0 {
				t.Errorf("%s for peer %s on h1 = %v (present %v)", name, o.Name(), v, ok)
			}
		}
	}
	out, err := hosts[0].Weft("node", "status")
	if err != nil || !strings.Contains(out, "WireGuard: weft.wg (userspace") || !strings.Contains(out, "PEER NODE") || !strings.Contains(out, "h2") {
		t.Errorf("weft node status: %v\n%s", err, out)
	}
	out, err = hosts[0].Weft("get", "node", "h2")
	if err != nil || !strings.Contains(out, keys["h2"]) {
		t.Errorf("weft get node h2 does not show its key %s: %v\n%s", keys["h2"], err, out)
	}
	if logs := hosts[0].Logs(); !strings.Contains(logs, `kind=userspace how="started the userspace wireguard-go device process (the kernel has no WireGuard: creating a wireguard link failed: operation not supported)"`) {
		t.Errorf("no start line saying which device runs and why in h1's log")
	}
}

// The device outlives the agent: with a ping every 50 ms both ways between
// workloads on h1 and h2, h1's agent is killed with SIGKILL (only its own
// pid) and started again, then its binary is replaced (an upgrade) and the
// agent restarted: no ping is lost, the device process is the same one,
// the restarted agent adopts the device without writing to it, and no new
// handshake was needed.
func TestWireGuardHitlessRestartAndUpgrade(t *testing.T) {
	testtier.EndToEnd(t, "wg", "ping", "nsenter")
	bin := filepath.Join(t.TempDir(), "weft")
	src := os.Getenv("WEFT_BIN")
	if src == "" {
		t.Skip("needs WEFT_BIN (the upgrade replaces a copy of the binary)")
	}
	copyBinary(t, src, bin)
	site := wlStartCluster(t, testbed.Options{Hosts: 2, ExtraTOML: wgTOML, Binary: bin})
	h1, h2 := site.Hosts()[0], site.Hosts()[1]
	a := wlAttach(t, site, h1, "a")
	b := wlAttach(t, site, h2, "b")
	wgWaitMesh(t, site.Hosts())
	site.Expect(testbed.Reach(a.Netns(), b.ip, testbed.Ping()), testbed.Reach(b.Netns(), a.ip, testbed.Ping()))
	before := wgStatus(t, h1)
	if before == nil || before.DevicePID == 0 || len(before.Peers) != 1 {
		t.Fatalf("h1 device %+v", before)
	}
	hs := before.Peers[0].LatestHandshake

	pings := startPingPair(t, a, b, 50*time.Millisecond)
	time.Sleep(time.Second)
	agentPID := h1.PID()
	if err := h1.Kill9(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", before.DevicePID)); err != nil {
		t.Fatalf("the device process %d died with the agent %d: %v", before.DevicePID, agentPID, err)
	}
	time.Sleep(time.Second) // the agent is down: traffic goes on
	start := time.Now()
	if err := h1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent restarted after kill -9, ready in %s", time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Second)
	after := wgStatus(t, h1)
	if after.DevicePID != before.DevicePID {
		t.Errorf("device process %d after the restart, was %d", after.DevicePID, before.DevicePID)
	}
	if !after.Peers[0].LatestHandshake.Equal(hs) {
		t.Logf("a handshake happened across the restart (%s → %s): WireGuard's own rekey", hs, after.Peers[0].LatestHandshake)
	}
	m := wgMetrics(t, site, h1)
	if w := m.value(`weft_dataplane_kernel_writes_total{manager="wireguard"}`); w != 0 {
		t.Errorf("the restarted agent wrote %v times to the device it adopted", w)
	}

	// An upgrade: a new binary at the same path, the agent restarted.
	copyBinary(t, src, bin)
	if err := h1.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	upgraded := wgStatus(t, h1)
	if upgraded.DevicePID != before.DevicePID || !upgraded.DeviceBinaryReplaced {
		t.Errorf("after the upgrade: device pid %d (was %d), binary replaced %v", upgraded.DevicePID, before.DevicePID, upgraded.DeviceBinaryReplaced)
	}
	sent, lost := pings.stopAndCheck(t, "kill -9, restart and upgrade of h1's agent")
	t.Logf("pings every 50 ms both ways across kill -9 + restart + upgrade: %d sent, %d lost", sent, lost)
}

// Key rotation under a ping every 50 ms both ways: nothing lost; the new
// key is published, h1's device and every peer use it, the old key is
// nowhere; the key file changed and is still 0600.
func TestWireGuardKeyRotationUnderPing(t *testing.T) {
	testtier.EndToEnd(t, "wg", "ping", "nsenter")
	site := wlStartCluster(t, testbed.Options{Hosts: 3, ExtraTOML: wgTOML})
	h1 := site.Hosts()[0]
	ws := wlAttachTwoEach(t, site)
	wgWaitMesh(t, site.Hosts())
	site.Expect(wlPairChecks(ws)...)
	old := wgNodeKeys(t, h1)["h1"]
	var pairs []*wgPingPair
	for _, other := range ws[2:] {
		if other.info.Node != "h1" {
			pairs = append(pairs, startPingPair(t, ws[0], other, 50*time.Millisecond))
		}
	}
	time.Sleep(time.Second)
	out, err := h1.Weft("wireguard", "rotate-key")
	if err != nil {
		t.Fatalf("weft wireguard rotate-key: %v", err)
	}
	time.Sleep(2 * time.Second)
	for i, p := range pairs {
		sent, lost := p.stopAndCheck(t, fmt.Sprintf("rotation, pair %d", i))
		t.Logf("pair %d: %d pings, %d lost across the rotation", i, sent, lost)
	}
	keys := wgNodeKeys(t, h1)
	if keys["h1"] == old || !strings.Contains(out, old+" -> "+keys["h1"]) {
		t.Fatalf("rotate-key said %q; the store has %s (was %s)", out, keys["h1"], old)
	}
	for _, h := range site.Hosts() {
		d := wgShow(t, h)
		if h == h1 {
			if d.PublicKey != keys["h1"] {
				t.Errorf("h1's device uses %s, not the new key", d.PublicKey)
			}
			continue
		}
		if _, ok := d.Peers[keys["h1"]]; !ok {
			t.Errorf("%s has no peer with h1's new key", h.Name())
		}
		if _, ok := d.Peers[old]; ok {
			t.Errorf("%s still has h1's old key as a peer", h.Name())
		}
	}
	fi, err := os.Stat(filepath.Join(h1.DataDir(), "wireguard.key"))
	if err != nil || fi.Mode().Perm() != 0o600 || fileExists(filepath.Join(h1.DataDir(), "wireguard.key.next")) {
		t.Errorf("key files after the rotation: %v %v", fi, err)
	}
	site.Expect(wlPairChecks(ws)...)
}

// A mixed cluster: h1 runs WireGuard with require, h2 WireGuard, h3 none.
// h1 and h2 talk encrypted, h2 and h3 unencrypted over VXLAN (Calico's
// default), and h1 and h3 not at all: h1 never sends h3 anything
// unencrypted (its addresses are blackholed, and h1 has no VXLAN device,
// so h3's VXLAN is refused), and says so in its status, its log and its
// metrics.
func TestWireGuardMixedClusterWithRequire(t *testing.T) {
	testtier.EndToEnd(t, "wg", "tcpdump", "nsenter")
	site := wlStartCluster(t, testbed.Options{Hosts: 3, HostTOML: func(h *testbed.Host) string {
		switch h.Name() {
		case "h1":
			return "[wireguard]\nenabled = true\nrequire = true\n"
		case "h2":
			return wgTOML
		}
		return ""
	}})
	h1, h2, h3 := site.Hosts()[0], site.Hosts()[1], site.Hosts()[2]
	w1 := wlAttach(t, site, h1, "w1")
	w2 := wlAttach(t, site, h2, "w2")
	w3 := wlAttach(t, site, h3, "w3")
	wgWaitMesh(t, []*testbed.Host{h1, h2})

	capture := startUnderlayCapture(t, site)
	site.Expect(
		testbed.Reach(w1.Netns(), w2.ip, testbed.TCP(wlPort)), testbed.Reach(w2.Netns(), w1.ip, testbed.TCP(wlPort)),
		testbed.Reach(w2.Netns(), w3.ip, testbed.TCP(wlPort)), testbed.Reach(w3.Netns(), w2.ip, testbed.TCP(wlPort)),
		testbed.NoReach(w1.Netns(), w3.ip, testbed.TCP(wlPort)), testbed.NoReach(w3.Netns(), w1.ip, testbed.TCP(wlPort)),
		testbed.NoReach(w1.Netns(), w3.ip, testbed.Ping()), testbed.NoReach(w3.Netns(), w1.ip, testbed.Ping()),
	)
	// h1's workload's address as an outer source is h1 sending in clear;
	// VXLAN from h1 is h1 reaching h3 unencrypted. (h3, without WireGuard,
	// does send in clear: it has no route to h1, which has no VXLAN
	// address under require, so its packets follow its default route; h1
	// answers none.)
	fromH1 := capture.read(t, fmt.Sprintf("src host %s or (src host %s and udp port 4789)", w1.ip, h1.Address()))
	if len(fromH1) > 0 {
		t.Errorf("%d packets in clear or VXLAN from h1, e.g.:\n%s", len(fromH1), strings.Join(fromH1[:min(5, len(fromH1))], "\n"))
	}
	h1h2 := capture.read(t, fmt.Sprintf("(host %s and host %s) and (udp port 4789 or net %s)", h1.Address(), h2.Address(), poolOf))
	if len(h1h2) > 0 {
		t.Errorf("%d packets between the two WireGuard nodes in clear or over VXLAN", len(h1h2))
	}
	if n := len(capture.read(t, fmt.Sprintf("host %s and host %s and udp port 4789", h2.Address(), h3.Address()))); n == 0 {
		t.Error("h2 and h3 did not use VXLAN (they should: h3 has no WireGuard)")
	}

	st := wgStatus(t, h1)
	if st == nil || len(st.Blocked) != 1 || st.Blocked[0] != "h3" || len(st.Peers) != 1 {
		t.Fatalf("h1 status wireguard %+v: want h2 as peer and h3 blocked", st)
	}
	if out, err := h1.Exec("ip", "link", "show", wlVXLAN); err == nil {
		t.Errorf("h1 has a VXLAN device under require:\n%s", out)
	}
	m := wgMetrics(t, site, h1)
	if v := m.value(`weft_wireguard_blocked_nodes{hostname="h1"}`); v != 1 {
		t.Errorf("weft_wireguard_blocked_nodes = %v, want 1", v)
	}
	if !strings.Contains(h1.Logs(), `problem="wireguard: node h3 is not reached (wireguard.require is set): it publishes no WireGuard key"`) {
		t.Error("no log line on h1 saying h3 is not reached")
	}
	if st2 := wgStatus(t, h2); st2 == nil || len(st2.Blocked) != 0 || len(st2.Peers) != 1 {
		t.Errorf("h2 status wireguard %+v", st2)
	}
}

// A node removed from the cluster (`weft cluster remove`) stops being a
// peer everywhere within 5 s.
func TestWireGuardRemovedNodePeerGoes(t *testing.T) {
	testtier.EndToEnd(t, "wg")
	site := wlStartCluster(t, testbed.Options{Hosts: 3, ExtraTOML: wgTOML})
	h1, h2, h3 := site.Hosts()[0], site.Hosts()[1], site.Hosts()[2]
	wgWaitMesh(t, site.Hosts())
	gone := wgShow(t, h3).PublicKey
	if err := h3.StopAgent(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := h1.Weft("cluster", "remove", "h3"); err != nil {
		t.Fatalf("weft cluster remove h3: %v", err)
	}
	took := wlWaitFor(t, 5*time.Second, "h3's peer gone from h1 and h2", func() error {
		for _, h := range []*testbed.Host{h1, h2} {
			d, err := wgShowErr(h)
			if err != nil {
				return err
			}
			if _, ok := d.Peers[gone]; ok {
				return fmt.Errorf("%s still has h3 (%s) as a peer", h.Name(), gone)
			}
		}
		return nil
	})
	t.Logf("h3's peer gone from every node %s after `weft cluster remove` returned (%s after it was called)", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for _, h := range []*testbed.Host{h1, h2} {
		if out, _ := h.Exec("ip", "route", "show", "table", "87"); strings.Count(out, "dev "+wgIface) == 0 {
			t.Errorf("%s: table 87 lost its routes:\n%s", h.Name(), out)
		}
	}
}

// Bad input gives one clear error and leaves the other nodes' tunnels
// intact: a key file others can read (the agent refuses to start), the
// listen port in use and no /dev/net/tun (the device cannot be made; the
// node fails closed and says why), a malformed key (refused at the store's
// entrance) and a key two nodes publish (neither is used, with a log
// line, as in Calico).
func TestWireGuardBadInput(t *testing.T) {
	testtier.EndToEnd(t, "wg", "mount", "umount")
	site := wlStartCluster(t, testbed.Options{Hosts: 3, ExtraTOML: wgTOML})
	h1, h2, h3 := site.Hosts()[0], site.Hosts()[1], site.Hosts()[2]
	w1 := wlAttach(t, site, h1, "w1")
	w2 := wlAttach(t, site, h2, "w2")
	wgWaitMesh(t, site.Hosts())
	intact := func(what string) {
		t.Helper()
		site.Expect(testbed.Reach(w1.Netns(), w2.ip, testbed.TCP(wlPort)), testbed.Reach(w2.Netns(), w1.ip, testbed.TCP(wlPort)))
		d := wgShow(t, h1)
		if _, ok := d.Peers[wgShow(t, h2).PublicKey]; !ok {
			t.Fatalf("%s: h1 lost its peer h2", what)
		}
	}
	// stopH3 stops h3's agent and its device process (a fresh start).
	stopH3 := func() {
		t.Helper()
		pid := wgStatus(t, h3).DevicePID
		if err := h3.StopAgent(); err != nil {
			t.Fatal(err)
		}
		if pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			wlWaitFor(t, 5*time.Second, "h3's device process gone", func() error {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
					return fmt.Errorf("pid %d still there", pid)
				}
				return nil
			})
		}
	}
	startH3 := func() {
		t.Helper()
		if err := h3.StartAgent(); err != nil {
			t.Fatal(err)
		}
		if err := h3.WaitReady(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	problem := func(want string) {
		t.Helper()
		wlWaitFor(t, 10*time.Second, "h3 reports "+want, func() error {
			st := wgStatus(t, h3)
			if st == nil || !strings.Contains(st.Problem, want) {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
	}

	t.Run("key file readable by others", func(t *testing.T) {
		stopH3()
		key := filepath.Join(h3.DataDir(), "wireguard.key")
		if err := os.Chmod(key, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := h3.StartAgent(); err != nil {
			t.Fatal(err)
		}
		err := h3.WaitReady(context.Background())
		want := fmt.Sprintf("weft: wireguard key file %s has mode 0644: it holds this node's private key and must be readable by its owner only (chmod 600 %s)", key, key)
		if err == nil || !strings.Contains(h3.Logs(), want) {
			t.Fatalf("agent with a 0644 key file: %v; log lacks %q", err, want)
		}
		intact("key file")
		if err := os.Chmod(key, 0o600); err != nil {
			t.Fatal(err)
		}
		startH3()
	})

	t.Run("listen port in use", func(t *testing.T) {
		stopH3()
		var udp *net.UDPConn
		if err := h3.Netns().Do(func() error {
			var err error
			udp, err = net.ListenUDP("udp", &net.UDPAddr{Port: 51820})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		startH3()
		problem("listen port 51820: address already in use (another program holds UDP 51820; free it or set wireguard.listen_port)")
		intact("port in use")
		udp.Close()
		wgWaitMesh(t, site.Hosts())
	})

	t.Run("no /dev/net/tun", func(t *testing.T) {
		stopH3()
		if _, err := h3.Exec("mount", "-t", "tmpfs", "-o", "size=1k", "notun", "/dev/net"); err != nil {
			t.Fatal(err)
		}
		startH3()
		problem("/dev/net/tun does not exist: the userspace WireGuard device needs the tun driver")
		intact("no tun")
		if _, err := h3.Exec("umount", "/dev/net"); err != nil {
			t.Fatal(err)
		}
		wgWaitMesh(t, site.Hosts())
	})

	t.Run("malformed key", func(t *testing.T) {
		doc, err := h1.Weft("get", "node", "h3", "-o", "yaml")
		if err != nil {
			t.Fatal(err)
		}
		bad := regexp.MustCompile(`wireguardPublicKey: \S+`).ReplaceAllString(doc, "wireguardPublicKey: not-a-key")
		_, err = wlWeftStdin(h1, bad, "apply", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "status.wireguardPublicKey: is not a base64-encoded 32-byte WireGuard key") {
			t.Fatalf("applying a malformed key: %v", err)
		}
		intact("malformed key")
	})

	t.Run("duplicate key", func(t *testing.T) {
		stopH3() // or it publishes its own key again at once
		doc, err := h1.Weft("get", "node", "h3", "-o", "yaml")
		if err != nil {
			t.Fatal(err)
		}
		k2 := wgShow(t, h2).PublicKey
		dup := regexp.MustCompile(`wireguardPublicKey: \S+`).ReplaceAllString(doc, "wireguardPublicKey: "+k2)
		if _, err := wlWeftStdin(h1, dup, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		wlWaitFor(t, 10*time.Second, "h1 uses neither h2 nor h3", func() error {
			if n := len(wgShow(t, h1).Peers); n != 0 {
				return fmt.Errorf("h1 has %d peers", n)
			}
			return nil
		})
		if !strings.Contains(h1.Logs(), "wireguard: node h2 is reached unencrypted: its public key is also published by h3 (a key claimed twice is used by neither)") {
			t.Error("no log line on h1 about the duplicate key")
		}
		// As in Calico, h1 and h2 then talk unencrypted, over VXLAN.
		site.Expect(testbed.Reach(w1.Netns(), w2.ip, testbed.TCP(wlPort)))
		startH3() // publishes its own key again
		wgWaitMesh(t, site.Hosts())
		intact("duplicate key resolved")
	})
}

// `weft demo --wireguard` runs the demo on WireGuard: it shows a host's
// device with `wg show`, every pair reachable, and a capture line proving
// the underlay carried the workloads' traffic inside WireGuard only; it
// leaves nothing behind.
func TestDemoWireGuard(t *testing.T) {
	bin := demoBinary(t)
	out := runWeft(t, bin, "demo", "--wireguard")
	for _, c := range []struct{ what, re string }{
		{"all pairs reachable", `(?m)^30/30 pairs reachable$`},
		{"wg show on h1", `(?s)wg show weft\.wg.*\ninterface: weft\.wg\n  public key: \S+\n  private key: \(hidden\)\n  listening port: 51820\n  fwmark: 0x100000\n(\npeer: \S+\n  endpoint: 10\.250\.77\.1[23]:51820\n  allowed ips: 10\.250\.8\d\.\d+/26\n.*){2}`},
		{"table 87 routes", `(?m)^  10\.250\.\d+\.\d+/26 dev weft\.wg table 87 scope link$`},
		{"the node status WireGuard table", `(?s)WireGuard: weft\.wg \(userspace, device process \d+\), port 51820, MTU 1440.*PEER NODE\s+ENDPOINT.*\nh2 .*\nh3 `},
		{"the capture line", `(?m)^underlay capture \(every host's port on the site bridge, during the pings\): \d+ IPv4 packets: [1-9]\d* WireGuard \(udp/51820\), \d+ datastore \(tcp/7700, TLS\), \d+ BGP \(tcp/179\), 0 other; VXLAN: 0; workload addresses in clear: 0$`},
		{"the verdict", `The underlay carried the workloads' traffic only inside WireGuard`},
	} {
		if !regexp.MustCompile(c.re).MatchString(out) {
			t.Errorf("the WireGuard walkthrough shows no %s (%s):\n%s", c.what, c.re, out)
		}
	}
	assertNoDemoLeft(t)
}

// The kernel's WireGuard, where the kernel has it: the same cluster runs
// on kernel devices (configured through genetlink), reachable, and a
// restarted agent adopts its device without writing to it. This machine's
// kernel has no WireGuard module (platform notes): skipped, saying so.
func TestWireGuardKernelDevice(t *testing.T) {
	testtier.EndToEnd(t, "wg")
	site := testbed.New(t, testbed.Options{Hosts: 2, NoStart: true, ExtraTOML: wgTOML})
	var kernel bool
	var why string
	if err := site.Hosts()[0].Netns().Do(func() error {
		var err error
		kernel, why, err = wireguard.KernelSupported()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !kernel {
		t.Skip("the kernel device path needs a kernel with WireGuard; here " + why)
	}
	if err := site.StartCluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	h1, h2 := site.Hosts()[0], site.Hosts()[1]
	a := wlAttach(t, site, h1, "a")
	b := wlAttach(t, site, h2, "b")
	wgWaitMesh(t, site.Hosts())
	site.Expect(testbed.Reach(a.Netns(), b.ip, testbed.TCP(wlPort)), testbed.Reach(b.Netns(), a.ip, testbed.TCP(wlPort)))
	for _, h := range site.Hosts() {
		if st := wgStatus(t, h); st == nil || st.Kind != "kernel" || st.DevicePID != 0 {
			t.Errorf("%s: device %+v, want the kernel's", h.Name(), st)
		}
	}
	pings := startPingPair(t, a, b, 50*time.Millisecond)
	if err := h1.Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := h1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w := wgMetrics(t, site, h1).value(`weft_dataplane_kernel_writes_total{manager="wireguard"}`); w != 0 {
		t.Errorf("the restarted agent wrote %v times to the kernel device it adopted", w)
	}
	pings.stopAndCheck(t, "kill -9 and restart on the kernel device")
}

// Fail closed: with h1's agent stopped and its device process gone (its
// routes go with it), h1's workloads reach nothing on h2 — and nothing
// leaves h1 in clear or over VXLAN instead (h1 has a VXLAN device for the
// VXLAN pool, and the main table's blackholes keep it from being used).
// The agent started again rebuilds the device.
func TestWireGuardFailsClosed(t *testing.T) {
	testtier.EndToEnd(t, "wg", "tcpdump", "nsenter")
	site := wlStartCluster(t, testbed.Options{Hosts: 2, ExtraTOML: wgTOML})
	h1, h2 := site.Hosts()[0], site.Hosts()[1]
	a := wlAttach(t, site, h1, "a")
	b := wlAttach(t, site, h2, "b")
	wgWaitMesh(t, site.Hosts())
	site.Expect(testbed.Reach(a.Netns(), b.ip, testbed.TCP(wlPort)))
	pid := wgStatus(t, h1).DevicePID
	if err := h1.StopAgent(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wlWaitFor(t, 5*time.Second, "h1's device gone", func() error {
		if _, err := h1.Exec("ip", "link", "show", wgIface); err == nil {
			return fmt.Errorf("%s still there", wgIface)
		}
		return nil
	})
	if _, err := h1.Exec("ip", "link", "show", wlVXLAN); err != nil {
		t.Fatalf("h1 has no VXLAN device (the test needs one to prove it is not used): %v", err)
	}
	capture := startUnderlayCapture(t, site)
	site.Expect(
		testbed.NoReach(a.Netns(), b.ip, testbed.TCP(wlPort)), testbed.NoReach(a.Netns(), b.ip, testbed.Ping()),
		testbed.NoReach(b.Netns(), a.ip, testbed.TCP(wlPort)),
	)
	if leaked := capture.read(t, fmt.Sprintf("net %s or (src host %s and udp port 4789)", poolOf, h1.Address())); len(leaked) > 0 {
		t.Fatalf("with its device gone h1 sent %d packets in clear or over VXLAN, e.g.:\n%s", len(leaked), strings.Join(leaked[:min(5, len(leaked))], "\n"))
	}
	if err := h1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	site.Expect(testbed.Reach(a.Netns(), b.ip, testbed.TCP(wlPort)), testbed.Reach(b.Netns(), a.ip, testbed.TCP(wlPort)))
}

// The FelixConfiguration wireguard* fields weft applies take effect live on
// every node: the listen port (each device, and the endpoint the others
// use), the keepalive and the rule's priority; every workload pair stays
// reachable over WireGuard; deleting the configuration brings back the
// config file's values. A field weft does not apply (wireguardEnabled) is
// refused with its reason and nothing is stored.
func TestWireGuardFelixFieldsLive(t *testing.T) {
	testtier.EndToEnd(t, "wg", "ping", "nsenter", "ip")
	site := wlStartCluster(t, testbed.Options{Hosts: 3, ExtraTOML: wgTOML})
	hosts := site.Hosts()
	ws := wlAttachTwoEach(t, site)
	wgWaitMesh(t, hosts)
	h1 := hosts[0]

	if r := felixCLI(t, site, h1, `apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  wireguardEnabled: true
`, "apply", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "spec.wireguardEnabled: is not applied by weft: WireGuard is switched on per node by the config file's [wireguard] enabled") {
		t.Fatalf("wireguardEnabled not refused with its reason: %s", r)
	}

	// applied waits until every device listens on port, every peer's
	// endpoint uses it with that keepalive, and the rule to table 87 has
	// that priority (and no other).
	applied := func(port int, keepalive string, prio int) {
		t.Helper()
		wlWaitFor(t, 30*time.Second, fmt.Sprintf("port %d, keepalive %s, rule priority %d on every node", port, keepalive, prio), func() error {
			for _, h := range hosts {
				d, err := wgShowErr(h)
				if err != nil {
					return err
				}
				if d.Port != port {
					return fmt.Errorf("%s listens on %d", h.Name(), d.Port)
				}
				if len(d.Peers) != len(hosts)-1 {
					return fmt.Errorf("%s has %d peers", h.Name(), len(d.Peers))
				}
				for _, p := range d.Peers {
					if !strings.HasSuffix(p.Endpoint, fmt.Sprintf(":%d", port)) || p.Keepalive != keepalive {
						return fmt.Errorf("%s: peer endpoint %s keepalive %s", h.Name(), p.Endpoint, p.Keepalive)
					}
				}
				out, err := h.Exec("ip", "-4", "rule", "show")
				if err != nil {
					return err
				}
				var prios []string
				for _, l := range strings.Split(out, "\n") {
					if strings.Contains(l, "lookup 87") {
						prios = append(prios, strings.TrimSuffix(strings.Fields(l)[0], ":"))
					}
				}
				if !slices.Equal(prios, []string{fmt.Sprint(prio)}) {
					return fmt.Errorf("%s: rules to table 87 at %v:\n%s", h.Name(), prios, out)
				}
			}
			return nil
		})
	}

	felixMustSucceed(t, felixCLI(t, site, h1, `apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  wireguardListeningPort: 51830
  wireguardKeepAlive: 25s
  wireguardRoutingRulePriority: 98
`, "apply", "-f", "-"))
	applied(51830, "25", 98)
	site.Expect(wlPairChecks(ws)...)

	felixMustSucceed(t, felixCLI(t, site, h1, "", "delete", "felixconfiguration", "default"))
	applied(51820, "off", 99)
	site.Expect(wlPairChecks(ws)...)
}
