// Package bgptest runs real routers beside weft's test bed (BIRD 2, FRR's
// zebra and bgpd) and reads weft's BGP state back, for the end-to-end BGP
// tests and the BGP benchmarks.
//
// The daemons run in one of the site's namespaces (the router namespace,
// normally), in the foreground, with their own configuration, control
// sockets and pid files in a directory of the test's; they are killed by
// PID when the test ends (and die with the test process). Nothing runs in
// the machine's own namespace.
package bgptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// RouterAS is the site router's AS in the tests; the nodes keep weft's
// default 64512.
const (
	RouterAS = 65000
	NodeAS   = 64512
)

// Eventually retries cond every 100 ms until it succeeds, failing the test
// after timeout with cond's last error.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Status is h's BGP status (`weft node status -o json`).
func Status(h *testbed.Host) (*localapi.BGPStatus, error) {
	out, err := h.Weft("node", "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var st localapi.NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("node status -o json: %w", err)
	}
	if st.BGP == nil {
		return nil, fmt.Errorf("%s: no BGP status yet", h.Name())
	}
	return st.BGP, nil
}

// PeerOf finds the session to addr.
func PeerOf(st *localapi.BGPStatus, addr string) (localapi.BGPPeerStatus, bool) {
	for _, p := range st.Peers {
		if p.PeerAddress == addr {
			return p, true
		}
	}
	return localapi.BGPPeerStatus{}, false
}

// SessionsUp reports nil once h's sessions to every address are up.
func SessionsUp(h *testbed.Host, addrs ...string) error {
	st, err := Status(h)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		p, ok := PeerOf(st, a)
		if !ok {
			return fmt.Errorf("%s: no session to %s: %+v", h.Name(), a, st.Peers)
		}
		if p.State != "up" {
			return fmt.Errorf("%s: session to %s: %s %s", h.Name(), a, p.State, p.Info)
		}
	}
	return nil
}

// WaitSessions waits until h's sessions to every address are up.
func WaitSessions(t testing.TB, h *testbed.Host, timeout time.Duration, addrs ...string) {
	t.Helper()
	Eventually(t, fmt.Sprintf("%s: BGP sessions to %v established", h.Name(), addrs), timeout, func() error {
		return SessionsUp(h, addrs...)
	})
}

// LearnedRoutes lists h's kernel routes of weft's BGP protocol (88) as
// "prefix via gateway", IPv4 and IPv6.
func LearnedRoutes(h *testbed.Host) ([]string, error) {
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		s, err := h.Exec("ip", fam, "route", "show", "proto", "88")
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[1] == "via" {
				out = append(out, f[0]+" via "+f[2])
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// RouteVia returns the gateway of h's kernel route to exactly dst ("" when
// there is none, the route itself when it has no gateway), whatever its
// protocol.
func RouteVia(h *testbed.Host, dst string) (string, error) {
	fam := "-4"
	if strings.Contains(dst, ":") {
		fam = "-6"
	}
	out, err := h.Exec("ip", fam, "route", "show", "exact", dst)
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "via" && i+1 < len(f) {
			return f[i+1], nil
		}
	}
	return strings.TrimSpace(out), nil
}

// daemon is one process the test started.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func launch(ns *testbed.Netns, cmd *exec.Cmd) (*daemon, error) {
	if err := ns.Launch(cmd); err != nil {
		return nil, err
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.done) }()
	return d, nil
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// kill kills the daemon by its PID and reaps it.
func (d *daemon) kill() {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}

// output collects a daemon's standard output and error.
type output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// LastLines returns at most n trailing lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// BIRD is a BIRD 2 daemon the test runs.
type BIRD struct {
	t    testing.TB
	name string
	dir  string
	sock string
	d    *daemon
	out  output
}

// StartBIRD writes config into a directory of the test's and starts bird
// in ns in the foreground; it waits until bird answers on its socket.
func StartBIRD(t testing.TB, ns *testbed.Netns, name, config string) *BIRD {
	t.Helper()
	dir := t.TempDir()
	b := &BIRD{t: t, name: name, dir: dir, sock: filepath.Join(dir, "bird.ctl")}
	conf := filepath.Join(dir, "bird.conf")
	config = strings.ReplaceAll(config, "@LOG@", filepath.Join(dir, "bird.log"))
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bird", "-f", "-c", conf, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"))
	cmd.Stdout, cmd.Stderr = &b.out, &b.out
	d, err := launch(ns, cmd)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	b.d = d
	t.Cleanup(b.Stop)
	Eventually(t, name+" answers on its socket", 20*time.Second, func() error {
		if b.d.exited() {
			return fmt.Errorf("bird exited: %s", b.out.String())
		}
		_, err := b.Birdc("show", "status")
		return err
	})
	return b
}

// PID is bird's process id.
func (b *BIRD) PID() int { return b.d.cmd.Process.Pid }

// Stop kills bird (by its PID); after a failure it logs the end of its log.
func (b *BIRD) Stop() {
	if b.d.exited() {
		return
	}
	b.d.kill()
	if b.t.Failed() {
		log, _ := os.ReadFile(filepath.Join(b.dir, "bird.log"))
		b.t.Logf("%s log (tail):\n%s", b.name, LastLines(string(log), 40))
	}
}

// Birdc runs a birdc command against this daemon's socket.
func (b *BIRD) Birdc(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

var birdRouteRE = regexp.MustCompile(`^([0-9a-f:.]+/\d+)\s+\S+\s+\[(\S+)`)

// Routes lists BIRD's best routes: prefix → the protocol it came from.
func (b *BIRD) Routes() (map[string]string, error) {
	out, err := b.Birdc("show", "route")
	if err != nil {
		return nil, err
	}
	routes := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if m := birdRouteRE.FindStringSubmatch(l); m != nil {
			routes[m[1]] = m[2]
		}
	}
	return routes, nil
}

// Peer is one neighbour of a test router.
type Peer struct {
	Name     string // BIRD protocol name
	Addr     string
	AS       int
	V6       bool
	Password string
	// Export is BIRD's export filter toward the peer ("all" if empty).
	Export string
}

// NodePeers are the hosts as the router's neighbours (IPv4, and IPv6 when
// v6), named after the hosts (IPv6 ones "<host>_v6").
func NodePeers(hosts []*testbed.Host, v6 bool) []Peer {
	var ps []Peer
	for _, h := range hosts {
		ps = append(ps, Peer{Name: h.Name(), Addr: h.Address(), AS: NodeAS})
		if v6 && h.Address6() != "" {
			ps = append(ps, Peer{Name: h.Name() + "_v6", Addr: h.Address6(), AS: NodeAS, V6: true})
		}
	}
	return ps
}

// RouterConfig configures BIRD as the site's router.
type RouterConfig struct {
	RouterID string
	// AS is the router's AS (default RouterAS).
	AS    int
	Peers []Peer
	// Static are networks of the router's own, announced to the peers.
	Static []string
	// Flood adds a static protocol "flood" of that many /32 routes in
	// 100.64.0.0/10; FloodDisabled starts it disabled (`birdc enable
	// flood` announces them at once).
	Flood         int
	FloodDisabled bool
}

var birdTemplate = template.Must(template.New("bird").Parse(`router id {{.RouterID}};
log "@LOG@" all;
debug protocols { states, events };
protocol device { scan time 1; }
protocol kernel k4 {
	ipv4 { import none; export where source = RTS_BGP; };
	merge paths on;
}
protocol kernel k6 {
	ipv6 { import none; export where source = RTS_BGP; };
	merge paths on;
}
protocol static s4 {
	ipv4;
{{- range .Static4}}
	route {{.}} blackhole;
{{- end}}
}
protocol static s6 {
	ipv6;
{{- range .Static6}}
	route {{.}} blackhole;
{{- end}}
}
{{range .Peers}}
protocol bgp {{.Name}} {
	local as {{$.AS}};
	neighbor {{.Addr}} as {{.AS}};
	graceful restart on;
{{- if .Password}}
	password "{{.Password}}";
{{- end}}
{{- if .V6}}
	ipv6 { import all; export {{if .Export}}{{.Export}}{{else}}all{{end}}; };
{{- else}}
	ipv4 { import all; export {{if .Export}}{{.Export}}{{else}}all{{end}}; };
{{- end}}
}
{{end}}`))

// Config is the router's BIRD configuration: eBGP with every peer on
// BIRD's defaults (240 s hold offered, graceful-restart helper, no BFD;
// BIRD 2 needs explicit filters for eBGP), the learned routes programmed
// into the router's kernel.
func (c RouterConfig) Config() string {
	if c.AS == 0 {
		c.AS = RouterAS
	}
	data := struct {
		RouterConfig
		Static4, Static6 []string
	}{RouterConfig: c}
	for _, s := range c.Static {
		if strings.Contains(s, ":") {
			data.Static6 = append(data.Static6, s)
		} else {
			data.Static4 = append(data.Static4, s)
		}
	}
	var b strings.Builder
	if err := birdTemplate.Execute(&b, data); err != nil {
		panic(err)
	}
	if c.Flood > 0 {
		b.WriteString("protocol static flood {\n")
		if c.FloodDisabled {
			b.WriteString("\tdisabled;\n")
		}
		b.WriteString("\tipv4;\n")
		for _, p := range FloodPrefixes(c.Flood) {
			fmt.Fprintf(&b, "\troute %s blackhole;\n", p)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// FloodPrefixes are n /32s in 100.64.0.0/10.
func FloodPrefixes(n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = fmt.Sprintf("100.%d.%d.%d/32", 64+i>>16, (i>>8)&0xff, i&0xff)
	}
	return out
}

// ClientConfig is a BIRD acting as a node would: one iBGP or eBGP session
// to the router (AS NodeAS), every learned route programmed into its
// kernel by BIRD's own kernel protocol (the baseline weft's import is
// measured against).
func ClientConfig(routerID, neighbor string, neighborAS int) string {
	return fmt.Sprintf(`router id %s;
log "@LOG@" { warning, error, fatal };
protocol device { scan time 1; }
protocol kernel k4 { ipv4 { import none; export all; }; merge paths on; }
protocol bgp uplink {
	local as %d;
	neighbor %s as %d;
	graceful restart on;
	ipv4 { import all; export none; };
}
`, routerID, NodeAS, neighbor, neighborAS)
}

// FRR is FRR (zebra and bgpd) run by the test.
type FRR struct {
	t   testing.TB
	dir string
	ds  []*daemon
	out output
}

// StartFRR starts zebra then bgpd in ns with config; both are killed (by
// PID) when the test ends. "@LOG@" in config is replaced by its log file.
func StartFRR(t testing.TB, ns *testbed.Netns, config string) *FRR {
	t.Helper()
	// FRR drops to its own user: its directory must be reachable by it
	// (t.TempDir's parent is root's alone).
	dir, err := os.MkdirTemp("", "weft-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "frr:frr", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown frr: %v: %s", err, out)
	}
	conf := filepath.Join(dir, "frr.conf")
	config = strings.ReplaceAll(config, "@LOG@", filepath.Join(dir, "frr.log"))
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &FRR{t: t, dir: dir}
	t.Cleanup(f.Stop)
	for _, name := range []string{"zebra", "bgpd"} {
		cmd := exec.Command("/usr/lib/frr/"+name, "-f", conf, "-i", filepath.Join(dir, name+".pid"),
			"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir)
		cmd.Stdout, cmd.Stderr = &f.out, &f.out
		d, err := launch(ns, cmd)
		if err != nil {
			t.Fatalf("start FRR %s: %v", name, err)
		}
		f.ds = append(f.ds, d)
		Eventually(t, "FRR "+name+" answers", 20*time.Second, func() error {
			if d.exited() {
				return fmt.Errorf("%s exited: %s", name, f.out.String())
			}
			_, err := f.Vtysh("show version")
			return err
		})
	}
	return f
}

// Stop kills bgpd and zebra (by PID).
func (f *FRR) Stop() {
	for i := len(f.ds) - 1; i >= 0; i-- {
		f.ds[i].kill()
	}
	if f.t.Failed() {
		log, _ := os.ReadFile(filepath.Join(f.dir, "frr.log"))
		f.t.Logf("FRR log (tail):\n%s", LastLines(string(log), 40))
	}
}

// Vtysh runs one vtysh command.
func (f *FRR) Vtysh(cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", f.dir, "-c", cmd).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh -c %q: %w: %s", cmd, err, out)
	}
	return string(out), nil
}

// Routes lists FRR's best IPv4 BGP routes: prefix → the peer it came from.
func (f *FRR) Routes() (map[string]string, error) {
	out, err := f.Vtysh("show bgp ipv4 unicast json")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Routes map[string][]struct {
			Valid    bool   `json:"valid"`
			Bestpath bool   `json:"bestpath"`
			PeerID   string `json:"peerId"`
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("show bgp json: %w", err)
	}
	routes := map[string]string{}
	for p, paths := range doc.Routes {
		for _, path := range paths {
			if path.Valid && path.Bestpath {
				routes[p] = path.PeerID
			}
		}
	}
	return routes, nil
}

// FRRConfig is FRR's configuration as the site's router: eBGP with the
// peers on FRR's defaults (180 s hold offered), graceful restart, and
// networks of its own announced.
func FRRConfig(routerID string, peers []Peer, networks ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr version 8.4\nhostname router\nlog file @LOG@ informational\n!\nrouter bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp network import-check\n bgp graceful-restart\n", RouterAS, routerID)
	for _, p := range peers {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", p.Addr, p.AS)
	}
	b.WriteString(" address-family ipv4 unicast\n")
	for _, n := range networks {
		fmt.Fprintf(&b, "  network %s\n", n)
	}
	b.WriteString(" exit-address-family\n!\n")
	return b.String()
}
