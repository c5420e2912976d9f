package demo

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/site"
	"github.com/weftnet/weft/node/config"
)

func TestNewLayout(t *testing.T) {
	l, err := NewLayout(DefaultUnderlay, DefaultPool)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range l.Hosts {
		got = append(got, h.Name+"="+h.Address.String()+"@"+h.Netns)
	}
	want := "h1=10.250.77.11@weft-demo-h1 h2=10.250.77.12@weft-demo-h2 h3=10.250.77.13@weft-demo-h3"
	if strings.Join(got, " ") != want {
		t.Errorf("hosts %v, want %s", got, want)
	}
	var ws []string
	for _, w := range l.Workloads() {
		ws = append(ws, w.Name+"@"+w.NetnsPath())
	}
	if len(ws) != 6 || ws[0] != "h1-w1@/run/netns/weft-demo-h1-w1" || ws[5] != "h3-w2@/run/netns/weft-demo-h3-w2" {
		t.Errorf("workloads %v", ws)
	}
	ns := l.Namespaces()
	if len(ns) != 10 || ns[0] != SiteNetns {
		t.Errorf("namespaces %v", ns)
	}
	for _, n := range ns {
		if !strings.HasPrefix(n, NetnsPrefix) {
			t.Errorf("namespace %s lacks the prefix teardown looks for", n)
		}
	}
	if h := l.Hosts[1]; h.Socket() != "/run/weft-demo/h2/weft.sock" || h.ConfigPath() != "/run/weft-demo/h2/weft.toml" ||
		h.DataDir() != "/run/weft-demo/h2/data" || h.LogPath() != "/run/weft-demo/h2/agent.log" {
		t.Errorf("paths of h2: %s %s %s %s", h.Socket(), h.ConfigPath(), h.DataDir(), h.LogPath())
	}
}

func TestNewLayoutRejects(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		underlay, pool netip.Prefix
		want           string
	}{
		{p("10.250.77.0/29"), DefaultPool, "underlay"},
		{p("10.250.77.1/24"), DefaultPool, "underlay"},
		{p("fd00::/64"), DefaultPool, "underlay"},
		{DefaultUnderlay, p("10.250.80.0/25"), "pool"},
		{DefaultUnderlay, p("fd00::/48"), "pool"},
		{DefaultUnderlay, p("10.250.0.0/16"), "overlap"},
		{netip.Prefix{}, DefaultPool, "underlay"},
	} {
		if _, err := NewLayout(tc.underlay, tc.pool); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewLayout(%s, %s) = %v, want an error about %s", tc.underlay, tc.pool, err, tc.want)
		}
	}
}

// The generated configurations pass the agent's own validation and say
// what the demo relies on: the first host bootstraps, the others join it
// with its token, every host seeds the same VXLAN pool.
func TestAgentConfigIsValid(t *testing.T) {
	l, err := NewLayout(DefaultUnderlay, DefaultPool)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range l.Hosts {
		cfg, err := config.Parse(l.AgentConfig(h), h.ConfigPath())
		if err != nil {
			t.Fatalf("%s: %v\n%s", h.Name, err, l.AgentConfig(h))
		}
		if cfg.Node.Name != h.Name || cfg.Node.Address != h.Address.String() || cfg.Node.DataDir != h.DataDir() ||
			cfg.API.Socket != h.Socket() || cfg.Cluster.Listen != h.Address.String()+":7700" {
			t.Errorf("%s: node/cluster/api %+v %+v %+v", h.Name, cfg.Node, cfg.Cluster, cfg.API)
		}
		if i == 0 && (len(cfg.Cluster.Join) != 0 || cfg.Cluster.TokenFile != "") {
			t.Errorf("h1 must bootstrap: join %v token %q", cfg.Cluster.Join, cfg.Cluster.TokenFile)
		}
		if i > 0 && (len(cfg.Cluster.Join) != 1 || cfg.Cluster.Join[0] != "10.250.77.11:7700" ||
			cfg.Cluster.TokenFile != "/run/weft-demo/h1/data/token") {
			t.Errorf("%s must join h1: join %v token %q", h.Name, cfg.Cluster.Join, cfg.Cluster.TokenFile)
		}
		if len(cfg.Network.Pools) != 1 || cfg.Network.Pools[0].CIDR != DefaultPool.String() ||
			cfg.Network.Pools[0].VXLANMode != "Always" || cfg.Network.Pools[0].BlockSize != 26 {
			t.Errorf("%s: pools %+v", h.Name, cfg.Network.Pools)
		}
	}
}

func TestConflict(t *testing.T) {
	l, err := NewLayout(DefaultUnderlay, DefaultPool)
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		used []inUse
		want string // "" = no conflict
	}{
		{"nothing", nil, ""},
		{"elsewhere", []inUse{{p("192.168.1.0/24"), "address 192.168.1.5/24 on eth0"}, {p("10.244.0.0/16"), "route 10.244.0.0/16"}}, ""},
		{"address in underlay", []inUse{{p("10.250.77.0/24"), "address 10.250.77.5/24 on eth0"}}, "underlay 10.250.77.0/24 overlaps this machine's address 10.250.77.5/24 on eth0"},
		{"wide route", []inUse{{p("10.0.0.0/8"), "route 10.0.0.0/8 dev tun0"}}, "underlay 10.250.77.0/24 overlaps this machine's route 10.0.0.0/8 dev tun0"},
		{"route in pool", []inUse{{p("10.250.88.0/24"), "route 10.250.88.0/24 dev docker0"}}, "pool 10.250.80.0/20 overlaps"},
	} {
		err := conflict(l, tc.used)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		case err != nil && !strings.Contains(err.Error(), "--underlay and --pool"):
			t.Errorf("%s: %v does not say how to fix it", tc.name, err)
		}
	}
}

func TestRouteFormat(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	for _, tc := range []struct {
		r    route
		want string
	}{
		{route{Type: unix.RTN_BLACKHOLE, Dst: p("10.250.80.0/26"), Protocol: 87}, "blackhole 10.250.80.0/26 proto 87"},
		{route{Type: unix.RTN_UNICAST, Dst: p("10.250.80.1/32"), Dev: "weft0123456789a", Protocol: 87, Scope: netlink.SCOPE_LINK},
			"10.250.80.1 dev weft0123456789a proto 87 scope link"},
		{route{Type: unix.RTN_UNICAST, Dst: p("10.250.80.64/26"), Gw: a("10.250.80.64"), Dev: "weft.vxlan", Protocol: 87, OnLink: true},
			"10.250.80.64/26 via 10.250.80.64 dev weft.vxlan proto 87 onlink"},
		{route{Type: unix.RTN_UNICAST, Dst: p("0.0.0.0/0"), Gw: a("10.0.0.1"), Dev: "eth0", Protocol: 4, Src: a("10.0.0.5"), Metric: 100},
			"default via 10.0.0.1 dev eth0 proto 4 src 10.0.0.5 metric 100"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
	r := route{Type: unix.RTN_BLACKHOLE, Dst: p("10.250.80.0/26"), Protocol: 87}
	if got := r.format(false); got != "blackhole 10.250.80.0/26" {
		t.Errorf("without protocol: %q", got)
	}
}

func TestFromNetlink(t *testing.T) {
	nl := netlink.Route{
		Type: unix.RTN_UNICAST, LinkIndex: 7, Protocol: 87, Flags: int(netlink.FLAG_ONLINK),
		Dst: site.IPNet(netip.MustParsePrefix("10.250.80.64/26")), Gw: netip.MustParseAddr("10.250.80.64").AsSlice(),
	}
	got := fromNetlink(nl, map[int]string{7: "weft.vxlan"}).String()
	if want := "10.250.80.64/26 via 10.250.80.64 dev weft.vxlan proto 87 onlink"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := fromNetlink(netlink.Route{LinkIndex: 9, Dst: site.IPNet(netip.MustParsePrefix("10.1.0.0/16"))}, nil).Dev; got != "if9" {
		t.Errorf("unknown link named %q", got)
	}
}

func TestForwards(t *testing.T) {
	p := netip.MustParsePrefix
	routes := []route{
		{Type: unix.RTN_BLACKHOLE, Dst: p("10.250.80.0/26")},
		{Type: unix.RTN_UNICAST, Dst: p("10.250.80.1/32"), Dev: "weftx"},
		{Type: unix.RTN_UNICAST, Dst: p("10.250.80.64/26"), Dev: "weft.vxlan"},
	}
	for addr, want := range map[string]bool{
		"10.250.80.1":   true,  // a local workload's /32 beats the blackhole
		"10.250.80.2":   false, // into the own block's blackhole
		"10.250.80.66":  true,  // another node's block
		"10.250.80.130": false, // no route at all
	} {
		if got := forwards(nil, routes, netip.MustParseAddr(addr)); got != want {
			t.Errorf("forwards(%s) = %v, want %v", addr, got, want)
		}
	}
	// With WireGuard: the main table blackholes the other node's block,
	// table 87 routes it through the device, and throws an address inside
	// it that is not the other node's.
	main := []route{
		{Type: unix.RTN_BLACKHOLE, Dst: p("10.250.80.0/26")},
		{Type: unix.RTN_UNICAST, Dst: p("10.250.80.1/32"), Dev: "weftx"},
		{Type: unix.RTN_BLACKHOLE, Dst: p("10.250.80.64/26")},
		{Type: unix.RTN_UNICAST, Dst: p("10.250.80.70/32"), Dev: "weft.vxlan", Gw: netip.MustParseAddr("10.250.80.128")},
	}
	wg := []route{
		{Type: unix.RTN_UNICAST, Dst: p("10.250.80.64/26"), Dev: "weft.wg", Table: 87},
		{Type: unix.RTN_THROW, Dst: p("10.250.80.70/32"), Table: 87},
		{Type: unix.RTN_THROW, Dst: p("10.250.80.71/32"), Table: 87},
	}
	for addr, want := range map[string]bool{
		"10.250.80.66": true,  // through WireGuard
		"10.250.80.70": true,  // thrown back to the main table's route
		"10.250.80.71": false, // thrown into the main table's blackhole
		"10.250.80.2":  false, // the own block
	} {
		if got := forwards(wg, main, netip.MustParseAddr(addr)); got != want {
			t.Errorf("forwards with WireGuard (%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestMatrix(t *testing.T) {
	eps := []endpoint{{Name: "h1-w1", Addr: netip.MustParseAddr("10.0.0.1")}, {Name: "h2-w1", Addr: netip.MustParseAddr("10.0.0.2")},
		{Name: "h3-w1", Addr: netip.MustParseAddr("10.0.0.3")}}
	m := matrix{Endpoints: eps, Results: map[[2]int]site.PingResult{}}
	for i := range eps {
		for j := range eps {
			if i != j {
				m.Results[[2]int{i, j}] = site.PingResult{OK: true}
			}
		}
	}
	if got := m.Summary(); got != "6/6 pairs reachable" {
		t.Errorf("summary %q", got)
	}
	m.Results[[2]int{0, 2}] = site.PingResult{Err: "no answer"}
	if got, want := m.Summary(), "5/6 pairs reachable; not reachable: h1-w1 -> h3-w1 (10.0.0.3): no answer"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	want := "" +
		"from \\ to  h1-w1      h2-w1      h3-w1\n" +
		"h1-w1      -          ok         FAIL\n" +
		"h2-w1      ok         -          ok\n" +
		"h3-w1      ok         ok         -\n"
	if got := m.Table(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestIsDemoAgent(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		host    string
		want    bool
	}{
		{"/usr/local/bin/weft\x00agent\x00--config\x00/run/weft-demo/h1/weft.toml\x00", "h1", true},
		{"/usr/local/bin/weft\x00agent\x00--config\x00/run/weft-demo/h1/weft.toml\x00", "h2", false},
		{"/usr/local/bin/weft\x00agent\x00--config\x00/etc/weft/weft.toml\x00", "h1", false},
		{"sleep\x00infinity\x00", "h1", false},
		{"", "h1", false},
	} {
		if got := isDemoAgent([]byte(tc.cmdline), tc.host); got != tc.want {
			t.Errorf("isDemoAgent(%q, %s) = %v", tc.cmdline, tc.host, got)
		}
	}
}

func TestRemovedString(t *testing.T) {
	if got := (Removed{}).String(); got != "nothing to remove" {
		t.Errorf("%q", got)
	}
	got := Removed{Agents: 3, Stragglers: 1, Namespaces: 10, StateDir: true}.String()
	if want := "3 agents stopped, 1 other process killed, 10 network namespaces deleted, /run/weft-demo removed"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestAgentEnv(t *testing.T) {
	got := agentEnv([]string{"PATH=/bin", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=1", "WEFT_SOCKET=/x", "HOME=/root"})
	if strings.Join(got, " ") != "PATH=/bin HOME=/root" {
		t.Errorf("agent environment %v", got)
	}
}

func TestFirstIPv4(t *testing.T) {
	a, err := firstIPv4([]string{"fd00::1/128", "10.250.80.1/32"})
	if err != nil || a.String() != "10.250.80.1" {
		t.Errorf("%v %v", a, err)
	}
	if _, err := firstIPv4([]string{"fd00::1/128"}); err == nil {
		t.Error("no error without an IPv4 address")
	}
}

func TestWaitReadyFailsFast(t *testing.T) {
	failing := exec.Command("sh", "-c", "exit 1")
	if err := failing.Start(); err != nil {
		t.Skip("no sh:", err)
	}
	exited := &agent{host: Host{Name: "h9"}, proc: site.Watch(failing)}
	err := exited.waitReady(context.Background(), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "agent of h9 exited during start-up (exit status 1)") {
		t.Errorf("exited agent: %v", err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	silent := &agent{host: Host{Name: "h9"}, proc: site.Watch(sleeper)}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); <-silent.proc.Done() })
	err = silent.waitReady(context.Background(), 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "agent of h9 not ready after 300ms") {
		t.Errorf("agent that never answers: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := silent.waitReady(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
}
