package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/site"
	"github.com/weftnet/weft/node/localapi"
)

// Time limits of the steps. Generous: the machine may be busy.
const (
	readyTimeout    = 60 * time.Second
	clusterTimeout  = 30 * time.Second
	requestTimeout  = 30 * time.Second
	convergeTimeout = 30 * time.Second
	pingTimeout     = 30 * time.Second
)

// ErrInterrupted is returned when the demo was interrupted (Ctrl-C,
// SIGTERM) and removed what it had built.
var ErrInterrupted = errors.New("interrupted")

// Options configure Run.
type Options struct {
	// Keep leaves the demo running at the end, with instructions.
	Keep bool
	// Underlay and Pool are the demo's address ranges; zero means
	// DefaultUnderlay and DefaultPool.
	Underlay, Pool netip.Prefix
	// Exe is the weft binary: the agents and the commands shown run it;
	// "" means this process's executable.
	Exe string
	// Out receives the walkthrough.
	Out io.Writer
	// WireGuard runs the cluster with WireGuard on and shows the device
	// and a capture of the underlay.
	WireGuard bool
}

// Run builds the demo cluster, walks through it and, unless Keep, removes
// it again, also when it fails or ctx is cancelled. With Keep, a failure
// leaves everything for inspection; an interruption does not.
func Run(ctx context.Context, o Options) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it creates network namespaces (try: sudo weft demo)")
	}
	if !o.Underlay.IsValid() {
		o.Underlay = DefaultUnderlay
	}
	if !o.Pool.IsValid() {
		o.Pool = DefaultPool
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the weft binary: %w", err)
		}
		o.Exe = exe
	}
	l, err := NewLayout(o.Underlay, o.Pool)
	if err != nil {
		return err
	}
	l.WireGuard = o.WireGuard
	if err := checkMachine(l); err != nil {
		return err
	}
	d := &demo{opts: o, layout: l, out: o.Out, weft: displayName(o.Exe)}
	start := time.Now()
	found, err := leftovers()
	if err != nil {
		return err
	}
	if found {
		r, err := teardown()
		if err != nil {
			return fmt.Errorf("remove an earlier demo: %w", err)
		}
		d.say("Removed an earlier demo: %s.", r)
	}

	err = d.run(ctx)
	if d.site != nil {
		// The namespaces and agents stay (for --keep, or for teardown
		// below); only this process's hold on them goes.
		if rerr := d.site.Release(); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil && ctx.Err() != nil {
		err = ErrInterrupted
	}
	switch {
	case err == nil && o.Keep:
		d.instructions()
		return nil
	case err != nil && o.Keep && !errors.Is(err, ErrInterrupted):
		d.say("\nLeft as it is for inspection (agent logs: %s/<host>/agent.log). Remove it with: %s demo down", StateDir, d.weft)
		return err
	}
	d.step("Removing everything")
	r, tdErr := teardown()
	if tdErr != nil {
		if err != nil {
			return fmt.Errorf("%w; then removing it failed: %v", err, tdErr)
		}
		return fmt.Errorf("remove the demo: %w", tdErr)
	}
	d.say("Removed: %s.", r)
	if err != nil {
		return err
	}
	d.say("\nDone in %.1fs. Run `%s demo --keep` to keep the cluster running and explore it.", time.Since(start).Seconds(), d.weft)
	return nil
}

// Down removes a demo left by `weft demo --keep` (or an interrupted one).
func Down(w io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it removes network namespaces (try: sudo weft demo down)")
	}
	r, err := teardown()
	if err != nil {
		return err
	}
	if r.Empty() {
		fmt.Fprintln(w, "No weft demo found: nothing to remove.")
		return nil
	}
	fmt.Fprintf(w, "Removed the weft demo: %s.\n", r)
	return nil
}

// demo is one run of the walkthrough.
type demo struct {
	opts   Options
	layout Layout
	out    io.Writer
	weft   string // how to call the binary in the commands shown
	// site is the demo's network (nil until built).
	site *site.Site
	// workloads are the workloads' namespaces, by workload name.
	workloads map[string]*site.Namespace
	// addrs are the workloads' addresses, by workload name.
	addrs map[string]netip.Addr
	// pids are the agents' pids, by host name.
	pids map[string]int
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) step(title string) { fmt.Fprintf(d.out, "\n==> %s\n", title) }

// run is the walkthrough; every step fails with a clear error.
func (d *demo) run(ctx context.Context) error {
	l := d.layout
	d.say("weft demo: a 3-node weft cluster in network namespaces on this machine.")

	d.step(fmt.Sprintf("Building the site: underlay %s on bridge %s in namespace %s (router %s); hosts %s; workload pool %s",
		l.Underlay, site.BridgeName(0), SiteNetns, l.RouterAddress(), d.hostList(), l.Pool))
	if err := os.MkdirAll(StateDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", StateDir, err)
	}
	for _, h := range l.Hosts {
		if err := os.MkdirAll(h.Dir(), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", h.Dir(), err)
		}
	}
	if err := d.buildSite(); err != nil {
		return err
	}
	for _, h := range l.Hosts {
		d.say("  %-3s namespace %-13s eth0 %s/%d", h.Name, h.Netns, h.Address, l.Underlay.Bits())
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	d.step(fmt.Sprintf("Starting the agents: %s bootstraps the cluster, the others join it with its token", l.Hosts[0].Name))
	if err := d.startAgents(ctx); err != nil {
		return err
	}

	d.step("Two workloads per host: `weft workload add` through each host's local API")
	if err := d.addWorkloads(ctx); err != nil {
		return err
	}
	routes, err := d.waitRoutes(ctx)
	if err != nil {
		return err
	}

	d.step("The cluster: every node holds a replica of the raft datastore")
	d.say("(a node joins as a non-voter and is promoted to voter once it has been healthy for a few seconds)")
	if err := d.waitMembers(ctx); err != nil {
		return err
	}
	if err := d.show(ctx, l.Hosts[0], "cluster", "members"); err != nil {
		return err
	}

	d.step("IP address management: each node claims a block of the pool for its workloads and tunnel addresses")
	if err := d.show(ctx, l.Hosts[1], "ipam", "show", "--show-blocks"); err != nil {
		return err
	}

	if l.WireGuard {
		d.step(fmt.Sprintf("Routes weft programmed (route protocol %d): in the main table a blackhole for its own block and for every other node's (fail closed), a /32 per local workload; the other nodes' blocks through WireGuard in table %d, which every packet not from the device itself looks up first (rule %d)",
			dataplane.RouteProtocol, dataplane.TableWireGuard, dataplane.RulePriorityWireGuard))
	} else {
		d.step(fmt.Sprintf("Routes weft programmed (route protocol %d): a blackhole for its own block, a /32 per local workload, the other nodes' blocks over VXLAN", dataplane.RouteProtocol))
	}
	for _, h := range l.Hosts {
		d.say("%s (ip netns exec %s ip route show proto %d):", h.Name, h.Netns, dataplane.RouteProtocol)
		for _, r := range routes[h.Name] {
			d.say("  %s", r.format(false))
		}
	}
	if l.WireGuard {
		if err := d.showWireGuard(ctx); err != nil {
			return err
		}
	}

	d.step("Pinging every workload from every other (ICMP echo from inside the workload namespaces)")
	var capture *underlayCapture
	if l.WireGuard {
		var ports []string
		for _, h := range l.Hosts {
			ports = append(ports, h.BridgePort)
		}
		c, err := startCapture(d.site.Router(), ports, l.Pool)
		if err != nil {
			return err
		}
		capture = c
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	m := pingAll(pctx, d.endpoints())
	cancel()
	captured, example, onlyWG := "", "", true
	if capture != nil {
		captured, example, onlyWG = capture.stop()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fmt.Fprint(d.out, m.Table())
	summary := m.Summary()
	d.say("%s", summary)
	if capture != nil {
		d.say("%s", captured)
		d.say("  %s", example)
		if !onlyWG {
			return errors.New("the underlay carried more than WireGuard between the hosts: " + example)
		}
		d.say("The underlay carried the workloads' traffic only inside WireGuard: no VXLAN, no workload address in clear.")
	}
	if ok, total := m.Reachable(); ok != total {
		return errors.New(summary)
	}
	if err := d.showRouter(ctx); err != nil {
		return err
	}
	return d.policy(ctx)
}

// showWireGuard shows h1's device as `wg show` prints it and the
// WireGuard table of `weft node status`.
func (d *demo) showWireGuard(ctx context.Context) error {
	h1 := d.layout.Hosts[0]
	d.step("WireGuard: every node has the others as peers, their blocks as allowed IPs (the kernel's device where it has WireGuard, else a wireguard-go device process that outlives the agent)")
	d.say("$ nsenter --target %d --mount --net wg show %s   (inside %s, whose /run/wireguard is its own)", d.pids[h1.Name], wgIface, h1.Name)
	out, err := wgShow(d.pids[h1.Name])
	if err != nil {
		return fmt.Errorf("wg show on %s: %w", h1.Name, err)
	}
	fmt.Fprint(d.out, out)
	return d.show(ctx, h1, "node", "status")
}

func (d *demo) hostList() string {
	var names []string
	for _, h := range d.layout.Hosts {
		names = append(names, h.Name)
	}
	return strings.Join(names, ", ")
}

// buildSite builds the underlay, the hosts and the workloads' namespaces
// (internal/site): workload namespaces get loopback only, the agents
// attach them.
func (d *demo) buildSite() error {
	s, err := site.Build(d.layout.Spec())
	if s != nil {
		d.site = s
	}
	if err != nil {
		return err
	}
	d.workloads = map[string]*site.Namespace{}
	for _, h := range d.layout.Hosts {
		for _, w := range h.Workloads {
			ns, err := s.AddWorkload(s.Host(h.Name), w.Short)
			if err != nil {
				return err
			}
			d.workloads[w.Name] = ns
		}
	}
	return nil
}

// startAgents writes each host's config, starts the first host's agent
// and waits for it (it writes the join token), then the others.
func (d *demo) startAgents(ctx context.Context) error {
	for _, h := range d.layout.Hosts {
		if err := writeConfig(d.layout, h); err != nil {
			return err
		}
	}
	first, rest := d.layout.Hosts[0], d.layout.Hosts[1:]
	if err := d.startAndWait(ctx, []Host{first}); err != nil {
		return err
	}
	return d.startAndWait(ctx, rest)
}

func (d *demo) startAndWait(ctx context.Context, hosts []Host) error {
	var started []*agent
	for _, h := range hosts {
		a, err := startAgent(d.opts.Exe, h, d.site.Host(h.Name))
		if err != nil {
			return err
		}
		started = append(started, a)
	}
	for _, a := range started {
		t0 := time.Now()
		if err := a.waitReady(ctx, readyTimeout); err != nil {
			d.logTail(a.host)
			return err
		}
		d.say("  %-3s agent pid %d ready after %.1fs (log: %s)", a.host.Name, a.proc.Pid(), time.Since(t0).Seconds(), a.host.LogPath())
		if d.pids == nil {
			d.pids = map[string]int{}
		}
		d.pids[a.host.Name] = a.proc.Pid()
	}
	return nil
}

// logTail prints the end of a host's agent log, the likeliest explanation
// of a failure, before teardown removes it.
func (d *demo) logTail(h Host) {
	b, err := os.ReadFile(h.LogPath())
	if err != nil || len(b) == 0 {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	d.say("  last lines of %s:", h.LogPath())
	for _, line := range lines {
		d.say("    %s", line)
	}
}

// writeConfig writes a host's agent configuration.
func writeConfig(l Layout, h Host) error {
	if err := os.WriteFile(h.ConfigPath(), l.AgentConfig(h), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", h.ConfigPath(), err)
	}
	return nil
}

// waitMembers waits until the first host sees every host as a healthy
// voter (the default cluster.voters is 3) or the leader.
func (d *demo) waitMembers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	client := localapi.NewClient(d.layout.Hosts[0].Socket())
	var last string
	for {
		resp, err := client.Members(ctx)
		if err == nil {
			healthy, voters := 0, 0
			for _, m := range resp.Members {
				if m.Healthy {
					healthy++
				}
				if m.Role == "leader" || m.Role == "voter" {
					voters++
				}
			}
			want := len(d.layout.Hosts)
			if len(resp.Members) == want && healthy == want && voters == want {
				return nil
			}
			last = fmt.Sprintf("%d members, %d healthy, %d voters (want %d of each)", len(resp.Members), healthy, voters, want)
		} else {
			last = err.Error()
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			if parent := context.Cause(ctx); !errors.Is(parent, context.DeadlineExceeded) {
				return parent
			}
			return fmt.Errorf("the cluster did not form within %s: %s", clusterTimeout, last)
		}
	}
}

// addWorkloads attaches every workload namespace to its host through the
// host's local API, as `weft workload add` does, and lists the result.
func (d *demo) addWorkloads(ctx context.Context) error {
	d.addrs = map[string]netip.Addr{}
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  WORKLOAD\tHOST\tADDRESS\tNETNS\tHOST SIDE")
	for _, h := range d.layout.Hosts {
		client := localapi.NewClient(h.Socket())
		for _, w := range h.Workloads {
			req := localapi.WorkloadAddRequest{
				Name:      w.Name,
				Namespace: w.Namespace,
				NetNS:     w.NetnsPath(),
				Labels:    w.Labels,
			}
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			got, err := client.AddWorkload(rctx, req)
			cancel()
			if err != nil {
				return fmt.Errorf("add workload %s on %s: %w", w.Name, h.Name, err)
			}
			addr, err := firstIPv4(got.IPs)
			if err != nil {
				return fmt.Errorf("workload %s on %s: %w", w.Name, h.Name, err)
			}
			d.addrs[w.Name] = addr
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", w.Name, h.Name, addr, w.NetnsPath(), got.HostIface)
		}
	}
	return tw.Flush()
}

// firstIPv4 picks the IPv4 address out of a workload's CIDRs.
func firstIPv4(cidrs []string) (netip.Addr, error) {
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
			return p.Addr(), nil
		}
		if a, err := netip.ParseAddr(c); err == nil && a.Is4() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no IPv4 address among %v", cidrs)
}

// endpoints lists the workloads with their addresses, in layout order.
func (d *demo) endpoints() []endpoint {
	var eps []endpoint
	for _, w := range d.layout.Workloads() {
		eps = append(eps, endpoint{Name: w.Name, NS: d.workloads[w.Name], Addr: d.addrs[w.Name]})
	}
	return eps
}

// waitRoutes waits until every host routes every workload address (its
// own through the workload's veth, the others' through VXLAN) and returns
// each host's weft routes.
func (d *demo) waitRoutes(ctx context.Context) (map[string][]route, error) {
	ctx, cancel := context.WithTimeout(ctx, convergeTimeout)
	defer cancel()
	for {
		routes := map[string][]route{}
		missing := ""
		for _, h := range d.layout.Hosts {
			var rs, wg []route
			err := d.site.Host(h.Name).Netlink(func(nl *netlink.Handle) (err error) {
				if rs, err = weftRoutes(nl, unix.RT_TABLE_MAIN); err != nil || !d.layout.WireGuard {
					return err
				}
				wg, err = weftRoutes(nl, dataplane.TableWireGuard)
				return err
			})
			if err != nil {
				return nil, err
			}
			routes[h.Name] = append(rs, wg...)
			for _, w := range d.layout.Workloads() {
				if missing == "" && !forwards(wg, rs, d.addrs[w.Name]) {
					missing = fmt.Sprintf("%s has no route to %s (%s)", h.Name, w.Name, d.addrs[w.Name])
				}
			}
		}
		if missing == "" {
			return routes, nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			if parent := context.Cause(ctx); !errors.Is(parent, context.DeadlineExceeded) {
				return nil, parent
			}
			return nil, fmt.Errorf("routes did not converge within %s: %s", convergeTimeout, missing)
		}
	}
}

// show runs a weft command against a host's socket and prints it with its
// output, as the operator would type it.
func (d *demo) show(ctx context.Context, h Host, args ...string) error {
	argv := append([]string{"--socket", h.Socket()}, args...)
	d.say("$ %s %s", d.weft, strings.Join(argv, " "))
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.opts.Exe, argv...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = d.out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("weft %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// instructions tell the operator how to explore a kept demo.
func (d *demo) instructions() {
	l := d.layout
	h1, h2 := l.Hosts[0], l.Hosts[1]
	w := l.Hosts[0].Workloads[0]
	far := l.Hosts[len(l.Hosts)-1].Workloads[len(l.Hosts[len(l.Hosts)-1].Workloads)-1]
	extra := h2.Name + "-w" + fmt.Sprint(len(h2.Workloads)+1)
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("\nThe demo keeps running. Explore it (as root):")
	p("\n  The datastore, from any host's local API socket (%s/<host>/weft.sock):", StateDir)
	p("    $ %s --socket %s cluster members", d.weft, h1.Socket())
	p("    $ %s --socket %s get nodes -o wide", d.weft, h2.Socket())
	p("    $ %s --socket %s get workloadendpoints -A", d.weft, h1.Socket())
	p("    $ %s --socket %s ipam show --show-blocks", d.weft, h1.Socket())
	p("    $ %s --socket %s workload list", d.weft, h1.Socket())
	p("\n  Network policy: why a packet is refused, and what each rule counted on a node:")
	p("    $ %s --socket %s policy trace --from %s --to %s/%s-%s --proto tcp --port %d", d.weft, h1.Socket(), w.Name, dbNamespace, dbHost, dbShort, demoTCPPort)
	p("    $ %s --socket %s get globalnetworkpolicy deny-db-access -o wide", d.weft, h2.Socket())
	p("    $ ip netns exec %s nft list table inet weft", h2.Netns)
	p("\n  Inside a host (network namespaces %s):", strings.Join(hostNetnsNames(l), ", "))
	p("    $ ip netns exec %s ip route show proto %d", h1.Netns, dataplane.RouteProtocol)
	p("    $ ip netns exec %s ip -d link show weft.vxlan", h1.Netns)
	p("    $ ip netns exec %s bridge fdb show dev weft.vxlan", h1.Netns)
	if l.WireGuard {
		p("    $ ip netns exec %s ip route show table %d", h1.Netns, dataplane.TableWireGuard)
		p("    $ ip netns exec %s ip rule", h1.Netns)
		p("    $ nsenter --target $(cat %s) --mount --net wg show %s   (the host's own /run/wireguard)", pidPath(h1.Name), wgIface)
		p("    $ %s --socket %s wireguard rotate-key", d.weft, h1.Socket())
	}
	p("\n  From a workload (network namespaces %s<host>-w1, -w2):", NetnsPrefix)
	p("    $ ip netns exec %s ping -c 3 %s", w.Netns, d.addrs[far.Name])
	p("\n  Attach a workload of your own (a name starting %s is removed by `demo down`):", NetnsPrefix)
	p("    $ ip netns add %s%s", NetnsPrefix, extra)
	p("    $ %s --socket %s workload add %s --netns %s", d.weft, h2.Socket(), extra, netns.PathOf(NetnsPrefix+extra))
	p("\n  BGP: the sessions (calicoctl's layout) and the BGP table of a host:")
	p("    $ %s --socket %s node status", d.weft, h1.Socket())
	p("    $ %s --socket %s bgp routes", d.weft, h1.Socket())
	if _, birdc, ok := birdInstalled(); ok {
		p("  and the site's router, BIRD:")
		p("    $ %s -s %s show route", birdc, birdSocket())
		p("    $ %s -s %s show protocols", birdc, birdSocket())
	}
	p("\n  Configs and logs: %s/<host>/weft.toml and agent.log", StateDir)
	p("\n  Remove everything:")
	p("    $ %s demo down", d.weft)
	fmt.Fprint(d.out, b.String())
}

func hostNetnsNames(l Layout) []string {
	var names []string
	for _, h := range l.Hosts {
		names = append(names, h.Netns)
	}
	return names
}

// displayName is how the commands shown call the binary: "weft" when that
// is what the PATH finds, else its full path.
func displayName(exe string) string {
	found, err := exec.LookPath("weft")
	if err == nil && sameFile(found, exe) {
		return "weft"
	}
	return exe
}

func sameFile(a, b string) bool {
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	if errA != nil || errB != nil {
		return false
	}
	sa, errA := os.Stat(ra)
	sb, errB := os.Stat(rb)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// sleepCtx waits d or until ctx ends, whichever comes first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
