package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/testtier"
	"github.com/weftnet/weft/node/calc"
)

// The tests run the speaker against plain in-process gobgp servers
// ("routers") on loopback addresses: no root needed. Each test takes its
// own port.

var nextPort = struct {
	sync.Mutex
	n int
}{n: 20000 + os.Getpid()%20000}

func freePort(t *testing.T) uint16 {
	t.Helper()
	nextPort.Lock()
	defer nextPort.Unlock()
	for {
		nextPort.n++
		p := nextPort.n
		ok := true
		for _, a := range []string{"127.0.0.1", "127.0.0.10", "127.0.0.11", "127.0.0.20"} {
			l, err := net.Listen("tcp", net.JoinHostPort(a, fmt.Sprint(p)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return uint16(p)
		}
	}
}

func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// router is a plain gobgp server standing for a site's router or another
// node.
type router struct {
	t   *testing.T
	srv *server.BgpServer
	as  uint32
	id  string
}

type quietLogger struct{ level gobgplog.LogLevel }

func (quietLogger) Panic(string, gobgplog.Fields) {}
func (quietLogger) Fatal(string, gobgplog.Fields) {}
func (quietLogger) Error(string, gobgplog.Fields) {}
func (quietLogger) Warn(string, gobgplog.Fields)  {}
func (quietLogger) Info(string, gobgplog.Fields)  {}
func (quietLogger) Debug(string, gobgplog.Fields) {}
func (quietLogger) SetLevel(gobgplog.LogLevel)    {}
func (q quietLogger) GetLevel() gobgplog.LogLevel { return q.level }

func newRouter(t *testing.T, id string, as uint32, port uint16) *router {
	t.Helper()
	var lg gobgplog.Logger = quietLogger{level: gobgplog.ErrorLevel}
	if os.Getenv("WEFT_TEST_ROUTER_LOG") != "" {
		lg = newLogger(testLog(t).With("router", id), nil)
	}
	s := server.NewBgpServer(server.LoggerOption(lg))
	go s.Serve()
	err := s.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: as, RouterId: id, ListenPort: int32(port), ListenAddresses: []string{id},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	return &router{t: t, srv: s, as: as, id: id}
}

// peer configures a session toward a speaker at addr:port.
func (r *router) peer(neighbor string, as uint32, port uint16, passive bool) {
	r.t.Helper()
	err := r.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
		Conf:            &api.PeerConf{NeighborAddress: neighbor, PeerAsn: as},
		Timers:          &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, IdleHoldTimeAfterReset: 1, HoldTime: 3, KeepaliveInterval: 1}},
		Transport:       &api.Transport{LocalAddress: r.id, RemotePort: uint32(port), PassiveMode: passive},
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: 120},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: familyV4, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}},
	}})
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *router) announce(prefix, nextHop string) {
	r.t.Helper()
	p := calc.BGPPath{Prefix: pfx(prefix), NextHop: addr(nextHop)}
	ap, err := toAPIPath(p)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: ap}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *router) withdraw(prefix, nextHop string) {
	r.t.Helper()
	ap, _ := toAPIPath(calc.BGPPath{Prefix: pfx(prefix), NextHop: addr(nextHop)})
	if err := r.srv.DeletePath(context.Background(), &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: familyV4, Path: ap}); err != nil {
		r.t.Fatal(err)
	}
}

// received lists the prefixes the router holds from peers, with next hops.
func (r *router) received() []string {
	var out []string
	_ = r.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: familyV4}, func(d *api.Destination) {
		for _, p := range d.Paths {
			if p.NeighborIp != "" && p.NeighborIp != "<nil>" {
				out = append(out, d.Prefix+" via "+nextHopOf(p))
			}
		}
	})
	slices.Sort(out)
	return out
}

func (r *router) established(neighbor string) bool {
	up := false
	_ = r.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: neighbor}, func(p *api.Peer) {
		up = p.State != nil && p.State.SessionState == api.PeerState_ESTABLISHED
	})
	return up
}

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
		time.Sleep(50 * time.Millisecond)
	}
}

func startSpeaker(t *testing.T, cfg Config) *Speaker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLog(t)
	}
	s := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	})
	return s
}

func nodeConfig(port uint16, peers ...calc.BGPPeerConfig) *calc.BGPConfig {
	return &calc.BGPConfig{AS: 64512, RouterID: addr("127.0.0.1"), ListenPort: port, ListenAddrs: []netip.Addr{addr("127.0.0.1")},
		LogLevel: "info", Peers: peers, ExportPrefixes: []netip.Prefix{pfx("10.244.0.0/16")}}
}

func peerCfg(address string, as uint32, port uint16) calc.BGPPeerConfig {
	return calc.BGPPeerConfig{Address: addr(address), Port: port, AS: as, Type: calc.PeerTypeGlobal, SourceAddr: addr("127.0.0.1"),
		Keepalive: time.Second, HoldTime: 3 * time.Second, RestartTime: 120 * time.Second, MaxPrefixes: 100}
}

func blockPath(prefix string) calc.BGPPath {
	return calc.BGPPath{Prefix: pfx(prefix), NextHop: addr("127.0.0.1"), Needs: dataplane.RouteKey{Table: dataplane.TableMain, Dst: pfx(prefix)}}
}

// reportWith is a dataplane report whose applied state holds blackholes
// for the prefixes.
func reportWith(prefixes ...string) *dataplane.Report {
	d := &dataplane.Desired{}
	for _, p := range prefixes {
		d.Routes = append(d.Routes, dataplane.Route{Dst: pfx(p), Class: dataplane.RouteClassBlock, Type: dataplane.RouteBlackhole})
	}
	return &dataplane.Report{Applied: d}
}

func learned(s *Speaker) []string {
	st, _ := s.State()
	var out []string
	for _, lr := range st.Learned {
		out = append(out, fmt.Sprintf("%s via %s from %s", lr.Prefix, lr.NextHop, lr.Peer))
	}
	slices.Sort(out)
	return out
}

func want[T comparable](got, want []T) error {
	if !slices.Equal(got, want) {
		return fmt.Errorf("got %v, want %v", got, want)
	}
	return nil
}

// A block is announced only once its blackhole is in the kernel, and
// withdrawn when no longer desired; learned routes come and go with the
// router's announcements.
func TestAnnounceOnlyWhatTheKernelRoutes(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	r := newRouter(t, "127.0.0.10", 65000, port)
	r.peer("127.0.0.1", 64512, port, false)
	s := startSpeaker(t, Config{})
	c := nodeConfig(port, peerCfg("127.0.0.10", 65000, port))
	c.Paths = []calc.BGPPath{blockPath("10.244.0.0/26"), blockPath("10.244.0.64/26")}
	s.Set(c)
	s.SetReport(reportWith("10.244.0.0/26"))
	eventually(t, "session up", 10*time.Second, func() error {
		if !r.established("127.0.0.1") {
			return errors.New("not established")
		}
		return nil
	})
	eventually(t, "the applied block announced", 5*time.Second, func() error {
		return want(r.received(), []string{"10.244.0.0/26 via 127.0.0.1"})
	})
	time.Sleep(300 * time.Millisecond)
	if got := r.received(); len(got) != 1 {
		t.Fatalf("a block whose blackhole is not in the kernel was announced: %v", got)
	}
	s.SetReport(reportWith("10.244.0.0/26", "10.244.0.64/26"))
	eventually(t, "the second block announced", 5*time.Second, func() error {
		return want(r.received(), []string{"10.244.0.0/26 via 127.0.0.1", "10.244.0.64/26 via 127.0.0.1"})
	})
	st, _ := s.State()
	if err := want(st.Advertised, []netip.Prefix{pfx("10.244.0.0/26"), pfx("10.244.0.64/26")}); err != nil {
		t.Fatal(err)
	}
	c2 := *c
	c2.Paths = c.Paths[:1]
	s.Set(&c2)
	eventually(t, "the released block withdrawn", 5*time.Second, func() error {
		return want(r.received(), []string{"10.244.0.0/26 via 127.0.0.1"})
	})
	st, _ = s.State()
	if err := want(st.Advertised, []netip.Prefix{pfx("10.244.0.0/26")}); err != nil {
		t.Fatal(err)
	}

	r.announce("198.51.100.0/24", "127.0.0.10")
	eventually(t, "router's route learned", 5*time.Second, func() error {
		return want(learned(s), []string{"198.51.100.0/24 via 127.0.0.10 from 127.0.0.10"})
	})
	r.withdraw("198.51.100.0/24", "127.0.0.10")
	eventually(t, "router's route withdrawn", 5*time.Second, func() error { return want(learned(s), nil) })

	status := s.Status(context.Background())
	if len(status.Peers) != 1 || status.Peers[0].State != "up" || status.Peers[0].Info != "Established" || status.Peers[0].PrefixesAdvertised != 1 {
		t.Errorf("status %+v", status)
	}
}

// Only this node's own paths go to an eBGP peer; a route reflector's
// clients get each other's in-pool routes; a router's routes outside the
// pools are not passed on.
func TestExportPolicy(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	ebgp := newRouter(t, "127.0.0.10", 65000, port)
	ebgp.peer("127.0.0.1", 64512, port, false)
	ibgp := newRouter(t, "127.0.0.11", 64512, port)
	ibgp.peer("127.0.0.1", 64512, port, false)
	s := startSpeaker(t, Config{})
	c := nodeConfig(port, peerCfg("127.0.0.10", 65000, port), peerCfg("127.0.0.11", 64512, port))
	c.Peers[1].RRClient = true
	c.RRClusterID = addr("127.0.0.1")
	c.Paths = []calc.BGPPath{blockPath("10.244.0.0/26")}
	s.Set(c)
	s.SetReport(reportWith("10.244.0.0/26"))
	ibgp.announce("10.244.9.0/26", "127.0.0.11")  // another node's block
	ibgp.announce("203.0.113.0/24", "127.0.0.11") // outside the pools
	ebgp.announce("198.51.100.0/24", "127.0.0.10")
	eventually(t, "all learned", 10*time.Second, func() error {
		return want(learned(s), []string{
			"10.244.9.0/26 via 127.0.0.11 from 127.0.0.11",
			"198.51.100.0/24 via 127.0.0.10 from 127.0.0.10",
			"203.0.113.0/24 via 127.0.0.11 from 127.0.0.11",
		})
	})
	eventually(t, "the eBGP router has our block only", 5*time.Second, func() error {
		return want(ebgp.received(), []string{"10.244.0.0/26 via 127.0.0.1"})
	})
	eventually(t, "the iBGP client has our block only (nothing of the router's)", 5*time.Second, func() error {
		return want(ibgp.received(), []string{"10.244.0.0/26 via 127.0.0.1"})
	})
	time.Sleep(500 * time.Millisecond)
	if got := ebgp.received(); len(got) != 1 {
		t.Errorf("eBGP router got %v", got)
	}
}

// proxy relays one BGP session and can freeze it (a silent peer: a cut
// cable) or reset it (a killed process: its kernel closes the socket).
type proxy struct {
	l      net.Listener
	dial   string
	from   string
	mu     sync.Mutex
	frozen bool
	conns  []*net.TCPConn
}

func newProxy(t *testing.T, listen, from, to string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, dial: to, from: from}
	t.Cleanup(func() { l.Close(); p.reset() })
	go p.serve()
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(p.from)}}
		up, err := d.Dial("tcp", p.dial)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c.(*net.TCPConn), up.(*net.TCPConn))
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	// One side ending ends both, as a router in between would.
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		for {
			p.mu.Lock()
			f := p.frozen
			p.mu.Unlock()
			if !f {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *proxy) freeze(on bool) {
	p.mu.Lock()
	p.frozen = on
	p.mu.Unlock()
}

// reset closes every relayed connection with a RST.
func (p *proxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.SetLinger(0)
		c.Close()
	}
	p.conns = nil
}

// A peer that closes its session (an agent killed: graceful restart) keeps
// its routes as stale; a peer that goes silent (hold timer) loses them at
// once and is reported dead until it is back.
func TestSilentPeerLosesItsRoutesClosedSessionKeepsThem(t *testing.T) {
	testtier.Long(t)
	t.Parallel()
	port := freePort(t)
	r := newRouter(t, "127.0.0.10", 64512, port)
	// The speaker talks to the proxy at 127.0.0.20; the router sees the
	// proxy's 127.0.0.20 too (the relay dials from it).
	r.peer("127.0.0.20", 64512, port, true)
	px := newProxy(t, fmt.Sprintf("127.0.0.20:%d", port), "127.0.0.20", fmt.Sprintf("127.0.0.10:%d", port))
	s := startSpeaker(t, Config{})
	s.Set(nodeConfig(port, peerCfg("127.0.0.20", 64512, port)))
	s.SetReport(reportWith())
	r.announce("10.244.7.0/26", "127.0.0.10")
	eventually(t, "learned", 10*time.Second, func() error {
		return want(learned(s), []string{"10.244.7.0/26 via 127.0.0.10 from 127.0.0.20"})
	})

	// Closed: graceful restart, the route stays (stale), the peer is not dead.
	px.reset()
	time.Sleep(500 * time.Millisecond)
	if got := learned(s); len(got) != 1 {
		t.Fatalf("a closed session dropped its routes: %v", got)
	}
	if st, _ := s.State(); len(st.Dead) != 0 {
		t.Fatalf("a closed session counts as dead: %v", st.Dead)
	}
	eventually(t, "session back", 10*time.Second, func() error {
		if !r.established("127.0.0.20") {
			return errors.New("router: not established")
		}
		return nil
	})

	// Silent: the hold timer expires after 3 s and the route goes at once.
	px.freeze(true)
	start := time.Now()
	eventually(t, "a silent peer's routes dropped", 8*time.Second, func() error { return want(learned(s), nil) })
	took := time.Since(start)
	st, _ := s.State()
	if err := want(st.Dead, []netip.Addr{addr("127.0.0.20")}); err != nil {
		t.Fatal(err)
	}
	if took > 5*time.Second {
		t.Errorf("dropping the silent peer's routes took %s (hold time 3s)", took)
	}
	t.Logf("silent peer's routes dropped after %s", took.Round(10*time.Millisecond))
	px.freeze(false)
	px.reset()
	eventually(t, "back and alive", 15*time.Second, func() error {
		if st, _ := s.State(); len(st.Dead) != 0 {
			return fmt.Errorf("dead: %v", st.Dead)
		}
		return want(learned(s), []string{"10.244.7.0/26 via 127.0.0.10 from 127.0.0.20"})
	})
}

// A peer flooding more prefixes than its limit is shut down with a clear
// log line; the other session and its routes are untouched.
func TestPrefixLimit(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	flood := newRouter(t, "127.0.0.10", 65000, port)
	flood.peer("127.0.0.1", 64512, port, false)
	good := newRouter(t, "127.0.0.11", 65001, port)
	good.peer("127.0.0.1", 64512, port, false)
	var logs syncBuffer
	s := startSpeaker(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := nodeConfig(port, peerCfg("127.0.0.10", 65000, port), peerCfg("127.0.0.11", 65001, port))
	c.Peers[0].MaxPrefixes = 50
	s.Set(c)
	s.SetReport(reportWith())
	good.announce("198.51.100.0/24", "127.0.0.11")
	eventually(t, "good route learned", 10*time.Second, func() error {
		return want(learned(s), []string{"198.51.100.0/24 via 127.0.0.11 from 127.0.0.11"})
	})
	for i := range 80 {
		flood.announce(fmt.Sprintf("172.16.%d.0/24", i), "127.0.0.10")
	}
	eventually(t, "flooding peer shut down", 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "BGP peer sent more prefixes than its limit") {
			return errors.New("no log line")
		}
		st := s.Status(context.Background())
		for _, p := range st.Peers {
			if p.PeerAddress == "127.0.0.10" && p.State != "down" {
				return fmt.Errorf("flooding peer %+v", p)
			}
		}
		return want(learned(s), []string{"198.51.100.0/24 via 127.0.0.11 from 127.0.0.11"})
	})
	time.Sleep(2 * time.Second) // longer than a reconnect would take
	if flood.established("127.0.0.1") {
		t.Error("the flooding peer reconnected during its pause")
	}
	if !good.established("127.0.0.1") {
		t.Error("the other session went down")
	}
	if got := learned(s); len(got) != 1 {
		t.Errorf("learned %v", got)
	}
}

// After a restart the speaker says it is syncing until its peers are back
// and sent End-of-RIB.
func TestRestartingSpeakerSyncs(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	r := newRouter(t, "127.0.0.10", 65000, port)
	r.peer("127.0.0.1", 64512, port, false)
	r.announce("198.51.100.0/24", "127.0.0.10")
	s := startSpeaker(t, Config{Restarting: true, SyncGrace: 200 * time.Millisecond})
	if st, _ := s.State(); !st.Syncing {
		t.Fatal("a restarting speaker does not start syncing")
	}
	start := time.Now()
	s.Set(nodeConfig(port, peerCfg("127.0.0.10", 65000, port)))
	s.SetReport(reportWith())
	eventually(t, "synced", 15*time.Second, func() error {
		st, _ := s.State()
		if st.Syncing {
			return errors.New("still syncing")
		}
		if len(st.Learned) != 1 {
			return fmt.Errorf("synced without the router's route: %v", st.Learned)
		}
		return nil
	})
	t.Logf("synced after %s", time.Since(start).Round(10*time.Millisecond))

	// Without peers, and with a peer that never comes, the wait ends too.
	s2 := startSpeaker(t, Config{Restarting: true, SyncTimeout: 2 * time.Second, SyncGrace: 100 * time.Millisecond})
	s2.Set(nodeConfig(freePort(t), peerCfg("127.0.0.11", 65000, port)))
	eventually(t, "the wait ran out", 5*time.Second, func() error {
		if st, _ := s2.State(); st.Syncing {
			return errors.New("still syncing")
		}
		return nil
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var _ = anypb.New
