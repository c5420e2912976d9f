package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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

	capture := startCapture(t, site)
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
