package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane/ipip"
	"github.com/weftnet/weft/internal/testbed"
)

// TestFelixConfigurationTakesEffectLive: a FelixConfiguration applied to a
// running cluster changes the running dataplane. vxlanPort 4790 and
// vxlanVNI 4097 recreate every node's VXLAN device with them and the
// workloads reach each other again through it; routeRefreshInterval and
// logSeverityScreen reach every node's apply loop; a node.<name>
// mtuIfacePattern that matches no interface gives that node's workloads
// and VXLAN device the fallback underlay MTU (1460 − 50), live, and
// deleting it brings back 1500 − 50, while default's VXLAN settings stay
// (node.<name> merges over default).
func TestFelixConfigurationTakesEffectLive(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 2})
	hosts := site.Hosts()
	ws := []*wlWorkload{wlAttach(t, site, hosts[0], "h1-a"), wlAttach(t, site, hosts[1], "h2-a")}
	site.ExpectWithin(30*time.Second, wlPairChecks(ws)...)

	felixMustSucceed(t, felixCLI(t, site, hosts[0], `apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  vxlanPort: 4790
  vxlanVNI: 4097
  routeRefreshInterval: 10s
  logSeverityScreen: Warning
`, "apply", "-f", "-"))
	vxlanDevice := func(h *testbed.Host, vni, port, mtu int) func() error {
		return func() error {
			l, err := wlLinkNamed(h.Netns(), wlVXLAN)
			switch {
			case err != nil:
				return err
			case l == nil:
				return errors.New("no " + wlVXLAN)
			case l.LinkInfo.Data.ID != vni || l.LinkInfo.Data.Port != port || l.MTU != mtu:
				return fmt.Errorf("%s: %s is id %d port %d mtu %d, want id %d port %d mtu %d",
					h.Name(), wlVXLAN, l.LinkInfo.Data.ID, l.LinkInfo.Data.Port, l.MTU, vni, port, mtu)
			}
			return nil
		}
	}
	for _, h := range hosts {
		wlWaitFor(t, 30*time.Second, h.Name()+" VXLAN device on VNI 4097, port 4790", vxlanDevice(h, 4097, 4790, 1450))
	}
	site.ExpectWithin(30*time.Second, wlPairChecks(ws)...)
	wlExpectKernelState(t, site, true, 20*time.Second)
	for _, h := range hosts {
		wlWaitFor(t, 10*time.Second, h.Name()+" log lines of the loop settings", func() error {
			for _, want := range [][2]string{{`msg="dataplane resync period"`, "period=10s"}, {`msg="dataplane log level"`, "level=WARN"}} {
				if grepLines(h.Logs(), want[0], want[1]) == "" {
					return fmt.Errorf("no line with %q and %q in the log", want[0], want[1])
				}
			}
			return nil
		})
	}

	// mtuIfacePattern on h1 only.
	h1 := hosts[0]
	felixMustSucceed(t, felixCLI(t, site, h1, `apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.h1}
spec:
  mtuIfacePattern: ^nomatch$
`, "apply", "-f", "-"))
	workloadMTU := func(w *wlWorkload, want int) func() error {
		return func() error {
			l, err := wlLinkNamed(w.Netns(), "eth0")
			if err != nil || l == nil || l.MTU != want {
				return fmt.Errorf("%s eth0 %+v (%v), want MTU %d", w.Name(), l, err, want)
			}
			return nil
		}
	}
	wlWaitFor(t, 30*time.Second, "h1's workload at the fallback MTU", workloadMTU(ws[0], 1410))
	wlWaitFor(t, 10*time.Second, "h1's VXLAN device at the fallback MTU", vxlanDevice(h1, 4097, 4790, 1410))
	if err := workloadMTU(ws[1], 1450)(); err != nil {
		t.Errorf("h2 changed too: %v", err)
	}
	site.ExpectWithin(20*time.Second, wlPairChecks(ws)...)
	felixMustSucceed(t, felixCLI(t, site, h1, "", "delete", "felixconfiguration", "node.h1"))
	wlWaitFor(t, 30*time.Second, "h1's workload back at 1450", workloadMTU(ws[0], 1450))
	wlWaitFor(t, 10*time.Second, "h1's VXLAN device back at 1450, VNI and port kept", vxlanDevice(h1, 4097, 4790, 1450))
}

// TestIPIPPoolOnAKernelWithoutIPIP: on this machine's kernel (no ipip
// module) an IP pool with ipipMode Always is accepted, and every node says
// loudly that it cannot honour it: a start line, `weft apply` prints a
// warning, `weft node status` shows the ipip component unavailable and the
// pool's problem, weft_ipip_available is 0. Its workloads on two nodes of
// one subnet — which weft used to route natively, unencapsulated — do not
// reach each other: the other node's block is a blackhole here, and not one
// of their packets shows up in plain text on the other node or the router.
// No node allocates an IP-in-IP tunnel address or creates weft.ipip.
func TestIPIPPoolOnAKernelWithoutIPIP(t *testing.T) {
	if s := ipip.ProbeSystem(); s.Available {
		t.Skipf("this kernel has IP-in-IP (%s): the test proves the path of kernels without it (TestIPIPLifecycle in dataplane/ipip covers the device)", s.Reason)
	}
	site := wlStartCluster(t, testbed.Options{Hosts: 2})
	hosts := site.Hosts()
	h1, h2 := hosts[0], hosts[1]
	for _, h := range hosts {
		if !strings.Contains(h.Logs(), "IP-in-IP is not available on this node") {
			t.Errorf("%s: no start line saying IP-in-IP is not available", h.Name())
		}
	}
	r := felixCLI(t, site, h1, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ipip-pool}
spec:
  cidr: 10.246.0.0/16
  ipipMode: Always
  natOutgoing: false
`, "apply", "-f", "-")
	felixMustSucceed(t, r)
	if !strings.Contains(r.stderr, "Warning: IPPool ipip-pool: ipipMode Always: this node (h1) cannot honour IP-in-IP") ||
		!strings.Contains(r.stdout, "Successfully applied 1 'IPPool' resource(s)") {
		t.Errorf("weft apply of an ipipMode pool: %s", r)
	}

	w1 := wlAttach(t, site, h1, "h1-i", "--pool", "ipip-pool")
	w2 := wlAttach(t, site, h2, "h2-i", "--pool", "ipip-pool")
	block2 := netip.PrefixFrom(netip.MustParseAddr(w2.ip), 26).Masked().String()
	wlWaitFor(t, 30*time.Second, "a blackhole for h2's block on h1", func() error {
		rs, err := wlWeftRoutes(h1)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if strings.Contains(r, block2) || strings.Contains(r, w2.ip) {
				if r != "blackhole "+block2 {
					return fmt.Errorf("h1 routes %s: %q", block2, r)
				}
				return nil
			}
		}
		return fmt.Errorf("no route to %s on h1: %v", block2, rs)
	})

	// Nothing of w1's leaves h1 in plain text: not to h2 (same subnet),
	// not to the router (the default route).
	captures := []*capture{startCapture(t, h2.Netns(), w1.ip), startCapture(t, site.Router(), w1.ip)}
	site.Expect(
		testbed.NoReach(w1.Netns(), w2.ip, testbed.Ping()),
		testbed.NoReach(w1.Netns(), w2.ip, testbed.TCP(wlPort)),
	)
	for _, c := range captures {
		if pkts := c.stop(); pkts != "" {
			t.Errorf("packets from %s seen unencapsulated on %s:\n%s", w1.ip, c.where, pkts)
		}
	}

	st, err := h1.NodeStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := h1.Weft("node", "status")
	ipipLine, problem := "", false
	for _, l := range strings.Split(raw, "\n") {
		if strings.HasPrefix(l, "ipip ") {
			ipipLine = l
		}
		if strings.Contains(l, "pool ipip-pool uses IP-in-IP (ipipMode Always) but this node cannot honour IP-in-IP") && strings.Contains(l, "never sent unencapsulated") {
			problem = true
		}
	}
	if !strings.Contains(ipipLine, "unavailable") || !problem || !st.Ready {
		t.Errorf("weft node status (ready %v):\n%s", st.Ready, raw)
	}
	metrics := scrape(t, h1)
	if !strings.Contains(metrics, "\nweft_ipip_available 0\n") || strings.Contains(metrics, "\nweft_calc_problems 0\n") {
		t.Errorf("metrics: weft_ipip_available / weft_calc_problems not as expected:\n%s\n%s", grepLines(metrics, "weft_ipip_available"), grepLines(metrics, "weft_calc_problems"))
	}
	if out := felixCLI(t, site, h1, "", "get", "nodes", "-o", "yaml").stdout; strings.Contains(out, "ipv4IPIPTunnelAddr") {
		t.Errorf("a node holds an IP-in-IP tunnel address on a kernel without IP-in-IP:\n%s", out)
	}
	for _, h := range hosts {
		if l, err := wlLinkNamed(h.Netns(), "weft.ipip"); err != nil || l != nil {
			t.Errorf("%s: weft.ipip %+v (%v)", h.Name(), l, err)
		}
	}
}

// felixCLI runs the weft CLI against h's socket with stdin, keeping stdout
// and stderr apart (datastoreCluster.weft).
func felixCLI(t *testing.T, site *testbed.Site, h *testbed.Host, stdin string, args ...string) cliResult {
	t.Helper()
	return (&datastoreCluster{t: t, site: site}).weft(h, stdin, args...)
}

func felixMustSucceed(t *testing.T, r cliResult) {
	t.Helper()
	if r.code != 0 {
		t.Fatal(r)
	}
}

// capture is a running tcpdump for packets from one source address.
type capture struct {
	where  string
	cmd    *exec.Cmd
	out    bytes.Buffer
	cancel context.CancelFunc
}

// startCapture starts tcpdump on every interface of ns for packets from
// src and waits until it listens.
func startCapture(t *testing.T, ns *testbed.Netns, src string) *capture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c := &capture{where: ns.Name(), cancel: cancel}
	c.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name(), "tcpdump", "-n", "-l", "-i", "any", "src", "host", src)
	c.cmd.Stdout = &c.out
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("tcpdump in %s: %v", ns.Name(), err)
	}
	t.Cleanup(func() { c.stop() })
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(listening)
				break
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case <-listening:
	case <-time.After(20 * time.Second):
		t.Fatalf("tcpdump in %s did not start listening", ns.Name())
	}
	return c
}

// stop ends the capture and returns what it printed.
func (c *capture) stop() string {
	if c.cancel != nil {
		c.cancel()
		c.cmd.Wait()
		c.cancel = nil
	}
	return strings.TrimSpace(c.out.String())
}

// scrape reads h's metrics.
func scrape(t *testing.T, h *testbed.Host) string {
	t.Helper()
	client := h.Netns().HTTPClient(10 * time.Second)
	resp, err := client.Get("http://" + net.JoinHostPort(h.Address(), fmt.Sprint(testbed.MetricsPort)) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// grepLines returns the lines of s that contain every word.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(l, w)
		}
		if all {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
