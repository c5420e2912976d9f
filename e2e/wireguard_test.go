package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

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
