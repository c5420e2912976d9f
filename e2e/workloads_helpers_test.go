package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// The workload e2e tests share these helpers: a cluster whose first host
// bootstraps and whose others join with its token, workloads attached with
// `weft workload add`, and the kernel state of weft's routes, VXLAN device,
// neighbours and FDB as `ip`/`bridge` show it, compared against what the
// cluster's Nodes and IPAM blocks call for.

// wlPort is the TCP port every test workload listens on.
const wlPort = 8080

// wlVXLAN is the VXLAN device's default name (SPEC §2).
const wlVXLAN = "weft.vxlan"

// wlStartCluster builds a site of opts.Hosts hosts (NoStart is forced), starts
// the first host's agent (it bootstraps the cluster), then the others with
// its token and waits until every agent is ready.
func wlStartCluster(t *testing.T, opts testbed.Options) *testbed.Site {
	t.Helper()
	opts.NoStart = true
	site := testbed.New(t, opts)
	if err := site.StartCluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	return site
}

// wlWorkload is a workload attached by weft.
type wlWorkload struct {
	*testbed.Workload
	info localapi.Workload
	ip   string // its IPv4 address
}

// wlWeftAdd runs `weft workload add name --netns path [extra...] -o json` on h.
func wlWeftAdd(h *testbed.Host, name, netns string, extra ...string) (localapi.Workload, error) {
	args := append([]string{"workload", "add", name, "--netns", netns}, extra...)
	out, err := h.Weft(append(args, "-o", "json")...)
	if err != nil {
		return localapi.Workload{}, err
	}
	var w localapi.Workload
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		return localapi.Workload{}, fmt.Errorf("weft workload add -o json printed %q: %w", out, err)
	}
	return w, nil
}

// wlAttach creates workload name's namespace on h, attaches it with weft
// (extra flags appended) and starts a TCP listener on wlPort inside it.
func wlAttach(t *testing.T, site *testbed.Site, h *testbed.Host, name string, extra ...string) *wlWorkload {
	t.Helper()
	w := site.AddWorkload(h, name)
	info, err := wlWeftAdd(h, name, w.Path(), extra...)
	if err != nil {
		t.Fatalf("%s: weft workload add %s: %v", h.Name(), name, err)
	}
	ip := ""
	for _, p := range info.IPs {
		if pp, err := netip.ParsePrefix(p); err == nil && pp.Addr().Is4() {
			ip = pp.Addr().String()
		}
	}
	if ip == "" || info.HostIface == "" || info.Node != h.Name() {
		t.Fatalf("%s: weft workload add %s answered %+v: want an IPv4 address, a host interface and node %s", h.Name(), name, info, h.Name())
	}
	w.Netns().ServeTCP(fmt.Sprintf("0.0.0.0:%d", wlPort))
	return &wlWorkload{Workload: w, info: info, ip: ip}
}

// wlAttachTwoEach attaches workloads <host>-a and <host>-b on every host.
func wlAttachTwoEach(t *testing.T, site *testbed.Site, extra ...string) []*wlWorkload {
	t.Helper()
	var ws []*wlWorkload
	for _, h := range site.Hosts() {
		for _, s := range []string{"a", "b"} {
			ws = append(ws, wlAttach(t, site, h, h.Name()+"-"+s, extra...))
		}
	}
	return ws
}

// wlPairChecks expects every workload to reach every other one by ping and
// by TCP.
func wlPairChecks(ws []*wlWorkload) []testbed.Check {
	var cs []testbed.Check
	for _, a := range ws {
		for _, b := range ws {
			if a != b {
				cs = append(cs,
					testbed.Reach(a.Netns(), b.ip, testbed.Ping()),
					testbed.Reach(a.Netns(), b.ip, testbed.TCP(wlPort)))
			}
		}
	}
	return cs
}

// wlWaitFor polls cond every 100 ms until it returns nil, failing the test
// with its last error after d.
func wlWaitFor(t *testing.T, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- the cluster's view: Nodes and IPAM blocks ----

type wlClusterNode struct {
	Name      string
	Underlay  string // IPv4 underlay address
	TunnelIP  string // IPv4 VXLAN tunnel address, "" when none
	TunnelMAC string
}

// wlClusterNodes reads the Node resources (`weft get nodes -o json`) on h.
func wlClusterNodes(t *testing.T, h *testbed.Host) map[string]wlClusterNode {
	t.Helper()
	out, err := h.Weft("get", "nodes", "-o", "json")
	if err != nil {
		t.Fatalf("weft get nodes: %v", err)
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				BGP *struct {
					IPv4Address string `json:"ipv4Address"`
				} `json:"bgp"`
				TunnelAddr string `json:"ipv4VXLANTunnelAddr"`
				TunnelMAC  string `json:"vxlanTunnelMACAddr"`
			} `json:"spec"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("weft get nodes -o json printed %q: %v", out, err)
	}
	nodes := map[string]wlClusterNode{}
	for _, it := range list.Items {
		n := wlClusterNode{Name: it.Metadata.Name, TunnelIP: it.Spec.TunnelAddr, TunnelMAC: it.Spec.TunnelMAC}
		if it.Spec.BGP != nil {
			if p, err := netip.ParsePrefix(it.Spec.BGP.IPv4Address); err == nil {
				n.Underlay = p.Addr().String()
			}
		}
		nodes[n.Name] = n
	}
	return nodes
}

// wlClusterBlocks maps each affine IPAM block to its node (`weft ipam show
// --show-blocks -o json` on h).
func wlClusterBlocks(t *testing.T, h *testbed.Host) map[string]string {
	t.Helper()
	out, err := h.Weft("ipam", "show", "--show-blocks", "-o", "json")
	if err != nil {
		t.Fatalf("weft ipam show --show-blocks: %v", err)
	}
	var rep struct {
		Rows []struct {
			Grouping string `json:"grouping"`
			CIDR     string `json:"cidr"`
			Node     string `json:"node"`
		} `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("weft ipam show --show-blocks -o json printed %q: %v", out, err)
	}
	blocks := map[string]string{}
	for _, r := range rep.Rows {
		if r.Grouping == "Block" && r.Node != "" {
			blocks[r.CIDR] = r.Node
		}
	}
	return blocks
}

// wlIpamReport is `weft ipam check -o json`.
type wlIpamReport struct {
	Blocks      int               `json:"blocks"`
	Allocations int               `json:"allocations"`
	InUse       int               `json:"inUse"`
	Problems    []json.RawMessage `json:"problems"`
}

func wlIpamCheck(t *testing.T, h *testbed.Host) wlIpamReport {
	t.Helper()
	out, err := h.Weft("ipam", "check", "-o", "json")
	if err != nil {
		t.Fatalf("weft ipam check: %v", err)
	}
	var rep wlIpamReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Problems == nil {
		t.Fatalf("weft ipam check -o json printed %q (%v)", out, err)
	}
	return rep
}

// wlWorkloadList is `weft workload list -A -o json` on h (its own workloads).
func wlWorkloadList(t *testing.T, h *testbed.Host) []localapi.Workload {
	t.Helper()
	list, err := localapi.NewClient(h.Socket()).ListWorkloads(context.Background(), "", true)
	if err != nil {
		t.Fatalf("%s: listing workloads: %v", h.Name(), err)
	}
	return list.Items
}

// ---- the kernel's view ----

// wlKRoute is one route of `ip -j route`.
type wlKRoute struct {
	Type    string   `json:"type"`
	Dst     string   `json:"dst"`
	Gateway string   `json:"gateway"`
	Dev     string   `json:"dev"`
	Flags   []string `json:"flags"`
}

func (r wlKRoute) String() string {
	s := r.Dst
	if r.Type != "" && r.Type != "unicast" {
		s = r.Type + " " + s
	}
	if r.Gateway != "" {
		s += " via " + r.Gateway
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if slices.Contains(r.Flags, "onlink") {
		s += " onlink"
	}
	return s
}

// wlWeftRoutes lists the routes of weft's protocol (87) in h's main table,
// in the canonical form of wlKRoute.String, sorted.
func wlWeftRoutes(h *testbed.Host) ([]string, error) {
	var rs []wlKRoute
	if err := wlExecJSON(h.Netns(), &rs, "ip", "-j", "route", "show", "proto", "87"); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.String())
	}
	sort.Strings(out)
	return out, nil
}

// wlVXLANNeighbours lists the permanent neighbour entries on weft.vxlan as
// "tunnel-address lladdr".
func wlVXLANNeighbours(h *testbed.Host) ([]string, error) {
	var ns []struct {
		Dst    string   `json:"dst"`
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if err := wlExecJSON(h.Netns(), &ns, "ip", "-j", "neigh", "show", "dev", wlVXLAN); err != nil {
		return nil, err
	}
	var out []string
	for _, n := range ns {
		if slices.Contains(n.State, "PERMANENT") {
			out = append(out, n.Dst+" "+n.LLAddr)
		}
	}
	sort.Strings(out)
	return out, nil
}

// wlVXLANFDB lists the permanent self FDB entries on weft.vxlan as "mac dst".
func wlVXLANFDB(h *testbed.Host) ([]string, error) {
	var fs []struct {
		MAC   string   `json:"mac"`
		Dst   string   `json:"dst"`
		Flags []string `json:"flags"`
		State string   `json:"state"`
	}
	if err := wlExecJSON(h.Netns(), &fs, "bridge", "-j", "fdb", "show", "dev", wlVXLAN); err != nil {
		return nil, err
	}
	var out []string
	for _, f := range fs {
		if f.State == "permanent" && slices.Contains(f.Flags, "self") && f.Dst != "" {
			out = append(out, f.MAC+" "+f.Dst)
		}
	}
	sort.Strings(out)
	return out, nil
}

// wlKLink is the part of `ip -j -d link` the tests look at.
type wlKLink struct {
	Index    int      `json:"ifindex"`
	Name     string   `json:"ifname"`
	MTU      int      `json:"mtu"`
	Address  string   `json:"address"`
	Flags    []string `json:"flags"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
		Data struct {
			ID       int    `json:"id"`
			Local    string `json:"local"`
			Port     int    `json:"port"`
			Learning *bool  `json:"learning"`
		} `json:"info_data"`
	} `json:"linkinfo"`
}

// wlLinks lists h's interfaces.
func wlLinks(n *testbed.Netns) ([]wlKLink, error) {
	var ls []wlKLink
	err := wlExecJSON(n, &ls, "ip", "-j", "-d", "link", "show")
	return ls, err
}

// wlLinkNamed finds an interface by name; nil when absent.
func wlLinkNamed(n *testbed.Netns, name string) (*wlKLink, error) {
	ls, err := wlLinks(n)
	if err != nil {
		return nil, err
	}
	for i := range ls {
		if ls[i].Name == name {
			return &ls[i], nil
		}
	}
	return nil, nil
}

func wlExecJSON(n *testbed.Netns, v any, argv ...string) error {
	out, err := n.Exec(argv...)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) == "" {
		out = "[]"
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("%s printed %q: %w", strings.Join(argv, " "), out, err)
	}
	return nil
}

// ---- expected kernel state ----

// wlWantState is the weft state one host's kernel should hold.
type wlWantState struct {
	routes, neigh, fdb []string
}

// wlExpectState computes, from the cluster's Nodes and blocks and h's own
// workloads, what h's kernel should show: a blackhole per own block, a /32
// per own workload on its veth, and per other node's block a route over
// VXLAN (vxlan: via the peer's tunnel address onlink, plus a neighbour and
// an FDB entry per peer) or natively (via the peer's underlay address on
// the host's eth0).
func wlExpectState(h *testbed.Host, nodes map[string]wlClusterNode, blocks map[string]string, own []localapi.Workload, vxlan bool) wlWantState {
	var w wlWantState
	for cidr, node := range blocks {
		switch peer, ok := nodes[node]; {
		case node == h.Name():
			w.routes = append(w.routes, "blackhole "+cidr)
		case !ok:
		case vxlan:
			w.routes = append(w.routes, cidr+" via "+peer.TunnelIP+" dev "+wlVXLAN+" onlink")
		default:
			w.routes = append(w.routes, cidr+" via "+peer.Underlay+" dev eth0")
		}
	}
	for _, wl := range own {
		for _, ip := range wl.IPs {
			w.routes = append(w.routes, strings.TrimSuffix(ip, "/32")+" dev "+wl.HostIface)
		}
	}
	if vxlan {
		for name, n := range nodes {
			if name != h.Name() {
				w.neigh = append(w.neigh, n.TunnelIP+" "+n.TunnelMAC)
				w.fdb = append(w.fdb, n.TunnelMAC+" "+n.Underlay)
			}
		}
	}
	sort.Strings(w.routes)
	sort.Strings(w.neigh)
	sort.Strings(w.fdb)
	return w
}

// wlStateDiff compares h's kernel with want; nil when they match.
func wlStateDiff(h *testbed.Host, want wlWantState, vxlan bool) error {
	var diffs []string
	routes, err := wlWeftRoutes(h)
	if err != nil {
		return err
	}
	if d := wlSetDiff(want.routes, routes); d != "" {
		diffs = append(diffs, "weft routes: "+d)
	}
	if vxlan {
		neigh, err := wlVXLANNeighbours(h)
		if err != nil {
			return err
		}
		if d := wlSetDiff(want.neigh, neigh); d != "" {
			diffs = append(diffs, "neighbours on "+wlVXLAN+": "+d)
		}
		fdb, err := wlVXLANFDB(h)
		if err != nil {
			return err
		}
		if d := wlSetDiff(want.fdb, fdb); d != "" {
			diffs = append(diffs, "FDB of "+wlVXLAN+": "+d)
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%s:\n  %s", h.Name(), strings.Join(diffs, "\n  "))
}

// wlSetDiff describes what is missing from and extra in got; "" if equal.
func wlSetDiff(want, got []string) string {
	var missing, extra []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return ""
	}
	return fmt.Sprintf("missing %q, unexpected %q (have %q)", missing, extra, got)
}

// wlExpectKernelState waits until every host's kernel holds exactly the
// weft state the cluster calls for.
func wlExpectKernelState(t *testing.T, site *testbed.Site, vxlan bool, d time.Duration) {
	t.Helper()
	hosts := site.Hosts()
	var running []*testbed.Host
	for _, h := range hosts {
		if h.Running() {
			running = append(running, h)
		}
	}
	wlWaitFor(t, d, "kernel state matches the cluster", func() error {
		nodes := wlClusterNodes(t, running[0])
		blocks := wlClusterBlocks(t, running[0])
		var errs []string
		for _, h := range running {
			if err := wlStateDiff(h, wlExpectState(h, nodes, blocks, wlWorkloadList(t, h), vxlan), vxlan); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%s", strings.Join(errs, "\n"))
		}
		return nil
	})
}

// ---- a TCP listener that records who connected ----

// wlSourceRecorder listens inside a namespace and records the source address
// of every connection it accepts.
type wlSourceRecorder struct {
	mu      sync.Mutex
	sources []string
	addr    string
}

// wlRecordSources listens on address inside n until the test ends.
func wlRecordSources(t *testing.T, n *testbed.Netns, address string) *wlSourceRecorder {
	t.Helper()
	r := &wlSourceRecorder{addr: address}
	var ln net.Listener
	if err := n.Do(func() error {
		l, err := net.Listen("tcp", address)
		ln = l
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", address, n.Label(), err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			r.mu.Lock()
			r.sources = append(r.sources, host)
			r.mu.Unlock()
			c.Close()
		}
	}()
	return r
}

// sourceOf connects from n to the recorder and returns the source address
// the recorder saw for that connection.
func (r *wlSourceRecorder) sourceOf(t *testing.T, n *testbed.Netns) string {
	t.Helper()
	var src string
	wlWaitFor(t, 20*time.Second, "connect from "+n.Label()+" to "+r.addr, func() error {
		r.mu.Lock()
		before := len(r.sources)
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := n.DialContext(ctx, "tcp", r.addr)
		if err != nil {
			return err
		}
		// The listener records the connection when it accepts it; wait
		// for the record of this one (it is the only one in flight).
		var buf [1]byte
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Read(buf[:]) // returns when the listener closes it
		c.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.sources) == before {
			return fmt.Errorf("listener did not record the connection")
		}
		src = r.sources[len(r.sources)-1]
		return nil
	})
	return src
}

// wlLogKernelState logs h's weft routes, neighbours and FDB entries.
func wlLogKernelState(t *testing.T, h *testbed.Host) {
	t.Helper()
	routes, _ := wlWeftRoutes(h)
	neigh, _ := wlVXLANNeighbours(h)
	fdb, _ := wlVXLANFDB(h)
	t.Logf("%s: weft routes %q; neighbours on %s %q; FDB %q", h.Name(), routes, wlVXLAN, neigh, fdb)
}

// ---- a long-running ping ----

// wlPing is `ping -i 0.05 -c count` running in a workload, its replies
// followed as they arrive.
type wlPing struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	seq  int // highest icmp_seq answered
	out  strings.Builder
	err  error
}

var wlIcmpSeqRE = regexp.MustCompile(`icmp_seq=(\d+)`)

// wlStartPing starts the ping from w's namespace to addr; the test's
// cleanup kills it if it is still running.
func wlStartPing(t *testing.T, w *wlWorkload, addr string, count int) *wlPing {
	t.Helper()
	p := &wlPing{done: make(chan struct{})}
	// `ip netns exec` execs ping itself: the process is ping.
	p.cmd = exec.Command("ip", "netns", "exec", w.Netns().Name(), "ping", "-n", "-i", "0.05", "-W", "1", "-c", strconv.Itoa(count), addr)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			if m := wlIcmpSeqRE.FindStringSubmatch(line); m != nil && strings.Contains(line, "bytes from") {
				if n, _ := strconv.Atoi(m[1]); n > p.seq {
					p.seq = n
				}
			}
			p.mu.Unlock()
		}
		err := p.cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
	}()
	return p
}

func (p *wlPing) lastSeq() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seq
}

// waitSeq waits until the reply to icmp_seq n (or a later one) arrived.
func (p *wlPing) waitSeq(t *testing.T, n int) {
	t.Helper()
	wlWaitFor(t, 30*time.Second, fmt.Sprintf("ping reply icmp_seq >= %d", n), func() error {
		select {
		case <-p.done:
			if p.lastSeq() >= n {
				return nil
			}
			t.Fatalf("ping ended before icmp_seq %d:\n%s", n, p.output())
		default:
		}
		if s := p.lastSeq(); s < n {
			return fmt.Errorf("last reply icmp_seq %d", s)
		}
		return nil
	})
}

func (p *wlPing) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wlPingSummary is ping's "N packets transmitted, M received" line.
type wlPingSummary struct {
	transmitted, received int
	line                  string
}

var wlPingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received.*`)

// wait waits for ping to end and parses its summary.
func (p *wlPing) wait(t *testing.T) wlPingSummary {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("ping still running after 2 minutes:\n%s", p.output())
	}
	out := p.output()
	m := wlPingSummaryRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in ping's output (%v):\n%s", p.err, out)
	}
	s := wlPingSummary{line: m[0]}
	s.transmitted, _ = strconv.Atoi(m[1])
	s.received, _ = strconv.Atoi(m[2])
	return s
}
