package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
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

// The BGP tests share these helpers: BIRD 2 and FRR run as the site's
// router in the router namespace (started by the test, with their own
// config and socket paths, killed by PID when the test ends), and weft's
// BGP state read back through `weft node status -o json`, `weft bgp
// routes -o json` and the kernel.

// routerAS is the site router's AS; the nodes keep weft's default 64512.
const routerAS = 65000

// bgpNativeTOML is a cluster whose only pool is routed natively (no
// encapsulation): between subnets only BGP can route its blocks.
const bgpNativeTOML = `
[[network.pool]]
name = "native"
cidr = "10.246.0.0/16"
vxlan_mode = "Never"
nat_outgoing = false
`

// bgpStatusOf is h's BGP status.
func bgpStatusOf(h *testbed.Host) (*localapi.BGPStatus, error) {
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

// peerOf finds the session to addr in h's status.
func peerOf(st *localapi.BGPStatus, addr string) (localapi.BGPPeerStatus, bool) {
	for _, p := range st.Peers {
		if p.PeerAddress == addr {
			return p, true
		}
	}
	return localapi.BGPPeerStatus{}, false
}

// waitSessions waits until h's sessions to every address are up.
func waitSessions(t *testing.T, h *testbed.Host, timeout time.Duration, addrs ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s: BGP sessions to %v established", h.Name(), addrs), timeout, func() error {
		st, err := bgpStatusOf(h)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			p, ok := peerOf(st, a)
			if !ok {
				return fmt.Errorf("no session to %s: %+v", a, st.Peers)
			}
			if p.State != "up" {
				return fmt.Errorf("session to %s: %s %s", a, p.State, p.Info)
			}
		}
		return nil
	})
}

// eventually retries cond until it succeeds or the timeout passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() error) {
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

// learnedRoutesOf lists h's kernel routes of weft's BGP protocol (88) as
// "prefix via gateway", IPv4 and IPv6.
func learnedRoutesOf(h *testbed.Host) ([]string, error) {
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

// routeVia returns the gateway of h's kernel route to dst ("" when there is
// none), whatever its protocol.
func routeVia(h *testbed.Host, dst string) (string, error) {
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
	if strings.TrimSpace(out) != "" {
		return strings.TrimSpace(out), nil
	}
	return "", nil
}

// blockOf is the IPAM block (of the pool's block size 26) holding addr.
func blockOf(addr string) string {
	return netip.PrefixFrom(netip.MustParseAddr(addr), 26).Masked().String()
}

// bird is a BIRD 2 daemon the test runs in one of the site's namespaces.
type bird struct {
	t    *testing.T
	name string
	ns   *testbed.Netns
	dir  string
	sock string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

// startBIRD writes config into a directory of its own and starts bird in
// ns in the foreground; it is killed (by PID) when the test ends.
func startBIRD(t *testing.T, ns *testbed.Netns, name, config string) *bird {
	t.Helper()
	dir := t.TempDir()
	b := &bird{t: t, name: name, ns: ns, dir: dir, sock: filepath.Join(dir, "bird.ctl"), done: make(chan struct{})}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command("bird", "-f", "-c", conf, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = &lockedWriter{mu: &b.mu, w: &b.out}, &lockedWriter{mu: &b.mu, w: &b.out}
	if err := ns.Launch(b.cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(b.stop)
	eventually(t, name+" answers on its socket", 10*time.Second, func() error {
		select {
		case <-b.done:
			return fmt.Errorf("bird exited: %s", b.output())
		default:
		}
		_, err := b.birdc("show", "status")
		return err
	})
	return b
}

func (b *bird) output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// stop kills bird by its PID and reaps it.
func (b *bird) stop() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Kill()
	<-b.done
	if b.t.Failed() {
		log, _ := os.ReadFile(filepath.Join(b.dir, "bird.log"))
		b.t.Logf("%s log (tail):\n%s", b.name, lastLines(string(log), 40))
	}
}

// birdc runs a birdc command against this daemon's socket.
func (b *bird) birdc(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

var birdRouteRE = regexp.MustCompile(`^([0-9a-f:.]+/\d+)\s+\S+\s+\[(\S+)`)

// routes lists BIRD's best routes as prefix → the protocol it came from.
func (b *bird) routes() (map[string]string, error) {
	out, err := b.birdc("show", "route")
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

// protocolState is a BGP protocol's state as `birdc show protocols` says
// it ("Established", "Active", ...).
func (b *bird) protocolState(proto string) string {
	out, err := b.birdc("show", "protocols", proto)
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && f[0] == proto {
			return strings.Join(f[5:], " ")
		}
	}
	return "unknown"
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// birdPeer is one weft node as a neighbour of the BIRD router.
type birdPeer struct {
	Name     string // protocol name
	Addr     string
	AS       int
	V6       bool
	Password string
	// Export is the BIRD export filter toward the node ("all" if empty).
	Export string
}

// birdRouterConfig is the site router's BIRD configuration: eBGP with the
// nodes on BIRD's defaults (240 s hold offered, graceful restart helper, no
// BFD), the learned routes programmed into the router's kernel, and
// extraStatic routes of its own announced to the nodes.
func birdRouterConfig(routerID string, log string, peers []birdPeer, extraStatic ...string) string {
	return birdRouterConfigFlood(routerID, log, peers, 0, extraStatic...)
}

// birdRouterConfigFlood is birdRouterConfig with a static protocol "flood"
// of n /32 routes in 100.64.0.0/10 (none when n is 0).
func birdRouterConfigFlood(routerID string, log string, peers []birdPeer, n int, extraStatic ...string) string {
	var b strings.Builder
	tmpl := template.Must(template.New("bird").Parse(`router id {{.RouterID}};
log "{{.Log}}" all;
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
	data := struct {
		RouterID, Log    string
		AS               int
		Peers            []birdPeer
		Static4, Static6 []string
	}{RouterID: routerID, Log: log, AS: routerAS, Peers: peers}
	for _, s := range extraStatic {
		if strings.Contains(s, ":") {
			data.Static6 = append(data.Static6, s)
		} else {
			data.Static4 = append(data.Static4, s)
		}
	}
	if err := tmpl.Execute(&b, data); err != nil {
		panic(err)
	}
	if n > 0 {
		b.WriteString("protocol static flood {\n\tipv4;\n")
		for i := range n {
			fmt.Fprintf(&b, "\troute 100.%d.%d.%d/32 blackhole;\n", 64+i>>16, (i>>8)&0xff, i&0xff)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// nodePeers are the hosts as BIRD neighbours (IPv4, and IPv6 when v6).
func nodePeers(hosts []*testbed.Host, v6 bool) []birdPeer {
	var ps []birdPeer
	for _, h := range hosts {
		ps = append(ps, birdPeer{Name: h.Name(), Addr: h.Address(), AS: 64512})
		if v6 && h.Address6() != "" {
			ps = append(ps, birdPeer{Name: h.Name() + "_v6", Addr: h.Address6(), AS: 64512, V6: true})
		}
	}
	return ps
}

// rackPeers are BGPPeers making every node peer with the router on its own
// subnet: nodes carry the label rack=r<subnet> (rackTOML).
func rackPeers(site *testbed.Site, v6 bool) string {
	var b strings.Builder
	for i, sn := range site.Subnets() {
		fmt.Fprintf(&b, "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rack-%d}\nspec: {nodeSelector: \"rack == 'r%d'\", peerIP: %q, asNumber: %d}\n---\n",
			i, i, sn.RouterAddr().String(), routerAS)
		if v6 && sn.RouterAddr6().IsValid() {
			fmt.Fprintf(&b, "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rack-%d-v6}\nspec: {nodeSelector: \"rack == 'r%d'\", peerIP: %q, asNumber: %d}\n---\n",
				i, i, sn.RouterAddr6().String(), routerAS)
		}
	}
	return b.String()
}

// rackTOML labels each host with its subnet.
func rackTOML(h *testbed.Host) string {
	return fmt.Sprintf("[node]\nlabels = { rack = \"r%d\" }\n", h.Subnet())
}

// applyYAML runs `weft apply -f -` on h with the documents.
func applyYAML(t *testing.T, h *testbed.Host, docs string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resources.yaml")
	if err := os.WriteFile(path, []byte(docs), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Weft("apply", "-f", path); err != nil {
		t.Fatalf("weft apply on %s: %v\n%s", h.Name(), err, out)
	}
}

// bgpRoutesOf is h's BGP table (`weft bgp routes -o json`).
func bgpRoutesOf(h *testbed.Host) ([]localapi.BGPRoute, error) {
	out, err := h.Weft("bgp", "routes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var r localapi.BGPRoutesResponse
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, err
	}
	return r.Routes, nil
}

// netipPrefix is the /bits prefix holding addr, as a string.
func netipPrefix(addr string, bits int) (string, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "", err
	}
	p, err := a.Prefix(bits)
	return p.String(), err
}

// frr is FRR (zebra and bgpd) as the site's router, run by the test in
// the foreground with its own config, sockets and pid files.
type frr struct {
	t    *testing.T
	dir  string
	cmds []*exec.Cmd
	done []chan struct{}
}

// startFRR starts zebra then bgpd in ns with config; both are killed (by
// PID) when the test ends.
func startFRR(t *testing.T, ns *testbed.Netns, config string) *frr {
	t.Helper()
	// FRR drops to its own user: its directory must be reachable by it
	// (t.TempDir's parent is root's alone).
	dir, err := os.MkdirTemp("", "weft-e2e-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("chown", "frr:frr", dir).Run(); err != nil {
		t.Fatalf("chown frr: %v", err)
	}
	conf := filepath.Join(dir, "frr.conf")
	config = strings.Replace(config, "log file frr.log", "log file "+filepath.Join(dir, "frr.log"), 1)
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &frr{t: t, dir: dir}
	t.Cleanup(f.stop)
	var stderr lockedWriter
	stderr.mu, stderr.w = &sync.Mutex{}, &bytes.Buffer{}
	for _, d := range []string{"zebra", "bgpd"} {
		cmd := exec.Command("/usr/lib/frr/"+d, "-f", conf, "-i", filepath.Join(dir, d+".pid"), "-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir)
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := ns.Launch(cmd); err != nil {
			t.Fatalf("start FRR %s: %v", d, err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		f.cmds, f.done = append(f.cmds, cmd), append(f.done, done)
		eventually(t, "FRR "+d+" answers", 15*time.Second, func() error {
			select {
			case <-done:
				stderr.mu.Lock()
				defer stderr.mu.Unlock()
				return fmt.Errorf("%s exited: %s", d, stderr.w.String())
			default:
			}
			_, err := f.vtysh("show version")
			return err
		})
	}
	return f
}

func (f *frr) stop() {
	for i := len(f.cmds) - 1; i >= 0; i-- {
		select {
		case <-f.done[i]:
			continue
		default:
		}
		_ = f.cmds[i].Process.Kill()
		<-f.done[i]
	}
	if f.t.Failed() {
		log, _ := os.ReadFile(filepath.Join(f.dir, "frr.log"))
		f.t.Logf("FRR log (tail):\n%s", lastLines(string(log), 40))
	}
}

func (f *frr) vtysh(cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", f.dir, "-c", cmd).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh -c %q: %w: %s", cmd, err, out)
	}
	return string(out), nil
}

// routes lists FRR's best IPv4 BGP routes: prefix → the peer it came from
// ("" for its own).
func (f *frr) routes() (map[string]string, error) {
	out, err := f.vtysh("show bgp ipv4 unicast json")
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

// frrRouterConfig is FRR's configuration as the site's router: eBGP with
// the nodes on FRR's defaults (180 s hold offered), graceful restart, and
// networks of its own announced.
func frrRouterConfig(routerID, log string, peers []birdPeer, networks ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr version 8.4\nhostname router\nlog file %s informational\n!\nrouter bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp network import-check\n bgp graceful-restart\n", log, routerAS, routerID)
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
