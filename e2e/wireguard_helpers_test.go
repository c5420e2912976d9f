package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// The WireGuard e2e tests share these helpers: the device as `wg show`
// reports it inside a host (its network and mount namespaces: the UAPI
// socket is in the host's private /run/wireguard), the Nodes' keys, a
// capture on the underlay bridge, and a continuous ping between workloads.

// wgIface is the WireGuard device's default name (SPEC §2).
const wgIface = "weft.wg"

// wgTOML turns WireGuard on.
const wgTOML = "[wireguard]\nenabled = true\n"

// wgPeer is one peer of `wg show weft.wg dump`.
type wgPeer struct {
	Key, Endpoint string
	AllowedIPs    []string
	Handshake     int64
	Rx, Tx        int64
	// Keepalive is the persistent keepalive: seconds, or "off".
	Keepalive string
}

// wgDevice is `wg show weft.wg dump` on h.
type wgDevice struct {
	PublicKey string
	Port      int
	Peers     map[string]wgPeer // by public key
}

func wgShow(t *testing.T, h *testbed.Host) wgDevice {
	t.Helper()
	d, err := wgShowErr(h)
	if err != nil {
		t.Fatalf("%s: %v", h.Name(), err)
	}
	return d
}

func wgShowErr(h *testbed.Host) (wgDevice, error) {
	out, err := h.Exec("wg", "show", wgIface, "dump")
	if err != nil {
		return wgDevice{}, fmt.Errorf("wg show %s dump: %v", wgIface, err)
	}
	d := wgDevice{Peers: map[string]wgPeer{}}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if i == 0 {
			if len(f) < 4 {
				return d, fmt.Errorf("wg dump interface line %q", line)
			}
			d.PublicKey = f[1]
			d.Port, _ = strconv.Atoi(f[2])
			continue
		}
		if len(f) < 8 {
			return d, fmt.Errorf("wg dump peer line %q", line)
		}
		p := wgPeer{Key: f[0], Endpoint: f[2]}
		if f[3] != "(none)" {
			p.AllowedIPs = strings.Split(f[3], ",")
		}
		p.Handshake, _ = strconv.ParseInt(f[4], 10, 64)
		p.Rx, _ = strconv.ParseInt(f[5], 10, 64)
		p.Tx, _ = strconv.ParseInt(f[6], 10, 64)
		p.Keepalive = f[7]
		d.Peers[p.Key] = p
	}
	return d, nil
}

// wgNodeKeys maps node names to their published WireGuard keys.
func wgNodeKeys(t *testing.T, h *testbed.Host) map[string]string {
	t.Helper()
	out, err := h.Weft("get", "nodes", "-o", "json")
	if err != nil {
		t.Fatalf("weft get nodes: %v", err)
	}
	keys := map[string]string{}
	re := regexp.MustCompile(`"name": "([^"]+)"|"wireguardPublicKey": "([^"]+)"`)
	name := ""
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if m[1] != "" {
			name = m[1]
		} else if name != "" {
			keys[name] = m[2]
		}
	}
	return keys
}

// wgStatus is the WireGuard part of `weft node status -o json` on h.
func wgStatus(t *testing.T, h *testbed.Host) *localapi.WireGuardStatus {
	t.Helper()
	st, err := localapi.NewClient(h.Socket()).Status(context.Background())
	if err != nil {
		t.Fatalf("%s: node status: %v", h.Name(), err)
	}
	return st.WireGuard
}

// wgWaitMesh waits until every host's device has every other host as a
// peer with its published key.
func wgWaitMesh(t *testing.T, hosts []*testbed.Host) {
	t.Helper()
	wlWaitFor(t, 30*time.Second, "every node a WireGuard peer of every other", func() error {
		keys := map[string]string{}
		for _, h := range hosts {
			d, err := wgShowErr(h)
			if err != nil {
				return err
			}
			keys[h.Name()] = d.PublicKey
		}
		for _, h := range hosts {
			d, _ := wgShowErr(h)
			for _, o := range hosts {
				if o == h {
					continue
				}
				p, ok := d.Peers[keys[o.Name()]]
				if !ok || p.Endpoint != o.Address()+":51820" {
					return fmt.Errorf("%s has no peer %s (%s) at %s:51820: %+v", h.Name(), o.Name(), keys[o.Name()], o.Address(), d.Peers)
				}
			}
		}
		return nil
	})
}

// underlayCapture is tcpdump on the site's underlay bridge.
type underlayCapture struct {
	cmd    *exec.Cmd
	file   string
	stderr *strings.Builder
}

// startUnderlayCapture captures everything crossing the underlay (every port of
// the bridge in the router's namespace: a capture on the bridge device
// itself sees only what is addressed to the router) into a file.
func startUnderlayCapture(t *testing.T, site *testbed.Site) *underlayCapture {
	t.Helper()
	file := filepath.Join(t.TempDir(), "underlay.pcap")
	cmd := exec.Command("nsenter", "--net="+site.Router().Path(), "tcpdump", "-i", "any", "-nn", "-U", "--immediate-mode", "-s", "128", "-w", file)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &underlayCapture{cmd: cmd, file: file, stderr: &stderr}
	t.Cleanup(func() { c.stop() })
	// tcpdump says "listening on br0" once it captures.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

func (c *underlayCapture) stop() {
	if c.cmd.Process != nil && c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGINT)
		_ = c.cmd.Wait()
	}
}

// read stops the capture and returns the packets matching a tcpdump
// filter, one line each.
func (c *underlayCapture) read(t *testing.T, filter string) []string {
	t.Helper()
	c.stop()
	out, err := exec.Command("tcpdump", "-r", c.file, "-nn", filter).Output()
	if err != nil {
		t.Fatalf("tcpdump -r %s %q: %v (capture: %s)", c.file, filter, err, c.stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// pinger is a continuous ping from a workload.
type pinger struct {
	cmd *exec.Cmd
	out strings.Builder
}

// startWGPing pings to from the workload namespace every interval until
// stopped.
func startWGPing(t *testing.T, from *testbed.Netns, to string, interval time.Duration) *pinger {
	t.Helper()
	p := &pinger{}
	p.cmd = exec.Command("nsenter", "--net="+from.Path(), "ping", "-n", "-D", "-O", "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "5", to)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop() })
	return p
}

var (
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingReply   = regexp.MustCompile(`bytes from .* icmp_seq=(\d+) `)
)

// stop ends the ping (SIGINT: it prints its summary) and returns how many
// requests it sent and how many of them got no reply. The requests after
// the last one answered may still be in flight when ping is interrupted
// (several, when the machine is loaded): they are not counted; every
// event a test looks at is over well before it stops the ping.
func (p *pinger) stop() (sent, lost int, out string) {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		_ = p.cmd.Wait()
	}
	out = p.out.String()
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, out
	}
	sent, _ = strconv.Atoi(m[1])
	replied := map[int]bool{}
	for _, r := range pingReply.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(r[1])
		replied[n] = true
	}
	for sent > 0 && !replied[sent] {
		sent-- // in flight when interrupted
	}
	for seq := 1; seq <= sent; seq++ {
		if !replied[seq] {
			lost++
		}
	}
	return sent, lost, out
}

// poolOf is the default pool (the test bed seeds 10.244.0.0/16).
var poolOf = netip.MustParsePrefix("10.244.0.0/16")

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// wgMetrics scrapes h's /metrics over the underlay from the router.
func wgMetrics(t *testing.T, site *testbed.Site, h *testbed.Host) metricsSample {
	t.Helper()
	resp, err := site.Router().HTTPClient(5 * time.Second).Get(fmt.Sprintf("http://%s:%d/metrics", h.Address(), testbed.MetricsPort))
	if err != nil {
		t.Fatalf("%s: GET /metrics: %v", h.Name(), err)
	}
	defer resp.Body.Close()
	m := metricsSample{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				m[line[:i]] = v
			}
		}
	}
	return m
}

// copyBinary copies the weft binary to dst through a temporary file and a
// rename: a new file at the path, as a package upgrade makes.
func copyBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// wgPingPair pings a→b and b→a every interval until stopped; stop reports
// both directions.
type wgPingPair struct{ ab, ba *pinger }

func startPingPair(t *testing.T, a, b *wlWorkload, interval time.Duration) *wgPingPair {
	t.Helper()
	return &wgPingPair{ab: startWGPing(t, a.Netns(), b.ip, interval), ba: startWGPing(t, b.Netns(), a.ip, interval)}
}

// stopAndCheck stops both pings and fails the test if one lost a packet.
func (p *wgPingPair) stopAndCheck(t *testing.T, what string) (sent, lost int) {
	t.Helper()
	for _, pg := range []*pinger{p.ab, p.ba} {
		s, l, out := pg.stop()
		if s == 0 {
			t.Fatalf("%s: ping printed no summary:\n%s", what, out)
		}
		sent += s
		lost += l
		if l > 0 {
			t.Errorf("%s: %d of %d pings lost:\n%s", what, l, s, out)
		}
	}
	return sent, lost
}

// wlWeftStdin runs the weft CLI against h's socket with stdin (in the
// test's namespaces: the CLI only talks to the socket); the error carries
// its stderr.
func wlWeftStdin(h *testbed.Host, stdin string, args ...string) (string, error) {
	bin := os.Getenv("WEFT_BIN")
	if bin == "" {
		return "", fmt.Errorf("needs WEFT_BIN")
	}
	cmd := exec.Command(bin, append([]string{"--socket", h.Socket()}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return stdout.String(), nil
}
