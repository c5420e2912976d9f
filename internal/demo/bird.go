package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/node/localapi"
)

// The site's router: when BIRD 2 is installed, the demo runs it in the site
// namespace (the hosts' gateway) as an eBGP peer of every host, with its own
// configuration, control socket and pid file under StateDir/bird. The
// hosts peer with it through one global BGPPeer.

// Router settings of the demo.
const (
	birdAS = 65000
	// birdNetwork is a network of the site's own that BIRD announces to
	// the hosts (weft installs it, proto 88).
	birdNetwork = "198.51.100.0/24"
)

func birdDir() string     { return filepath.Join(StateDir, "bird") }
func birdSocket() string  { return filepath.Join(birdDir(), "bird.ctl") }
func birdConfig() string  { return filepath.Join(birdDir(), "bird.conf") }
func birdPidPath() string { return filepath.Join(birdDir(), "bird.pid") }

// birdInstalled reports whether bird and birdc are on the PATH (or in
// /usr/sbin, where Debian's bird2 puts them).
func birdInstalled() (bird, birdc string, ok bool) {
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		if _, err := os.Stat("/usr/sbin/" + name); err == nil {
			return "/usr/sbin/" + name
		}
		return ""
	}
	bird, birdc = find("bird"), find("birdc")
	return bird, birdc, bird != "" && birdc != ""
}

// BIRDConfig is the router's configuration: every host an eBGP neighbour
// (BIRD 2 needs explicit filters for eBGP), graceful restart, the hosts'
// blocks kept in BIRD's table, and birdNetwork announced.
func (l Layout) BIRDConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# weft demo: the site's router, in network namespace %s.\n", SiteNetns)
	fmt.Fprintf(&b, "router id %s;\nlog %q all;\nprotocol device { scan time 1; }\n", l.RouterAddress(), filepath.Join(birdDir(), "bird.log"))
	fmt.Fprintf(&b, "protocol static site { ipv4; route %s blackhole; }\n", birdNetwork)
	for _, h := range l.Hosts {
		fmt.Fprintf(&b, "protocol bgp %s {\n\tlocal as %d;\n\tneighbor %s as 64512;\n\tgraceful restart on;\n\tipv4 { import all; export where proto = \"site\"; };\n}\n",
			h.Name, birdAS, h.Address)
	}
	return b.String()
}

// startBIRD starts BIRD in the site namespace, in its own session and not
// tied to the demo's lifetime (--keep leaves it running), and records its
// pid for the teardown.
func (d *demo) startBIRD(bird string) error {
	if err := os.MkdirAll(birdDir(), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(birdConfig(), []byte(d.layout.BIRDConfig()), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bird, "-f", "-c", birdConfig(), "-s", birdSocket(), "-P", birdPidPath())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.site.Router().Start(cmd); err != nil {
		return fmt.Errorf("start BIRD: %w", err)
	}
	// Reap it if it exits while the demo runs; the pid file names it.
	go func() { _ = cmd.Wait() }()
	return nil
}

// showRouter runs the BGP step: BIRD as the site's router, a global
// BGPPeer, the sessions in calicoctl's layout, BIRD's table and the route
// the hosts learned from it.
func (d *demo) showRouter(ctx context.Context) error {
	bird, birdc, ok := birdInstalled()
	if !ok {
		d.step("BGP: the hosts' node-to-node mesh (install bird2 to add BIRD as the site's router)")
		return d.show(ctx, d.layout.Hosts[0], "node", "status")
	}
	l := d.layout
	d.step(fmt.Sprintf("BGP: BIRD 2 as the site's router (AS %d, in %s at %s); the hosts peer with it through one BGPPeer", birdAS, SiteNetns, l.RouterAddress()))
	if err := d.startBIRD(bird); err != nil {
		return err
	}
	peer := fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: site-router}\nspec: {peerIP: %q, asNumber: %d}\n", l.RouterAddress(), birdAS)
	d.say("  $ %s --socket %s apply -f - <<EOF\n%sEOF", d.weft, l.Hosts[0].Socket(), indent(peer, "    "))
	client := localapi.NewClient(l.Hosts[0].Socket())
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	_, err := client.Write(rctx, localapi.WriteRequest{Mode: localapi.ModeApply, Data: peer})
	cancel()
	if err != nil {
		return fmt.Errorf("apply the BGPPeer: %w", err)
	}
	if err := d.waitBGP(ctx); err != nil {
		return err
	}
	if err := d.show(ctx, l.Hosts[0], "node", "status"); err != nil {
		return err
	}
	d.say("\nBIRD's table: each host's block, learned from that host ($ birdc -s %s show route):", birdSocket())
	out, err := exec.CommandContext(ctx, birdc, "-s", birdSocket(), "show", "route").CombinedOutput()
	if err != nil {
		return fmt.Errorf("birdc show route: %w: %s", err, out)
	}
	d.say("%s", indent(strings.TrimSpace(string(out)), "  "))
	d.say("\nThe router's network in the hosts' kernels (route protocol %d, BGP-learned):", dataplane.RouteProtocolBGP)
	for _, h := range l.Hosts {
		out, err := d.site.Host(h.Name).Output(ctx, "", "ip", "route", "show", "proto", strconv.Itoa(dataplane.RouteProtocolBGP))
		if err != nil {
			return err
		}
		d.say("  %s: %s", h.Name, strings.TrimSpace(out))
	}
	return nil
}

// waitBGP waits until every host's session to the router is up and the
// router's network is in every host's kernel.
func (d *demo) waitBGP(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, convergeTimeout)
	defer cancel()
	router := d.layout.RouterAddress().String()
	var last string
	for {
		last = ""
		for _, h := range d.layout.Hosts {
			st, err := localapi.NewClient(h.Socket()).Status(ctx)
			switch {
			case err != nil:
				last = err.Error()
			case st.BGP == nil:
				last = h.Name + ": no BGP status"
			default:
				up := false
				for _, p := range st.BGP.Peers {
					up = up || (p.PeerAddress == router && p.State == "up")
				}
				if !up {
					last = h.Name + ": the session to the router is not up yet"
				}
			}
			if last == "" {
				out, err := d.site.Host(h.Name).Output(ctx, "", "ip", "route", "show", birdNetwork)
				if err != nil || !strings.Contains(out, "proto "+strconv.Itoa(dataplane.RouteProtocolBGP)) {
					last = fmt.Sprintf("%s has no BGP route to %s yet", h.Name, birdNetwork)
				}
			}
			if last != "" {
				break
			}
		}
		if last == "" {
			return nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			if parent := context.Cause(ctx); !errors.Is(parent, context.DeadlineExceeded) {
				return parent
			}
			return fmt.Errorf("BGP with the router did not converge within %s: %s", convergeTimeout, last)
		}
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

// stopBIRD stops the demo's BIRD (recorded in its pid file, verified by its
// command line so that a recycled pid is never signalled).
func stopBIRD() (bool, error) {
	b, err := os.ReadFile(birdPidPath())
	if err != nil {
		return false, nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !netns.Alive(pid) {
		return false, nil
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), birdConfig()) {
		return false, nil
	}
	return true, netns.Kill([]int{pid}, syscall.SIGTERM, stopGrace)
}
