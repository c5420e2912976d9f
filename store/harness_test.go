package store

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/store/pki"
)

var (
	soak       = flag.Bool("soak", false, "run the long linearizability soak")
	verboseLog = flag.Bool("store-log", false, "log store/raft output at debug level")
)

// testTuning shrinks every timer so that in-process clusters react in
// tens of milliseconds (and still hold up under -race on 2 cores).
func testTuning() Tuning {
	return Tuning{
		HeartbeatTimeout:     200 * time.Millisecond,
		ElectionTimeout:      200 * time.Millisecond,
		LeaderLeaseTimeout:   100 * time.Millisecond,
		CommitTimeout:        5 * time.Millisecond,
		SnapshotInterval:     time.Second,
		SnapshotThreshold:    8192,
		TrailingLogs:         10240,
		AutopilotInterval:    50 * time.Millisecond,
		ReconcileInterval:    100 * time.Millisecond,
		LastContactThreshold: 600 * time.Millisecond,
		ServerStabilization:  200 * time.Millisecond,
		VoterFailover:        time.Second,
		DeadServerAfter:      -1,
		RetryInterval:        50 * time.Millisecond,
	}
}

// partitions is the test faultInjector: it cuts links between node pairs.
type partitions struct {
	mu      sync.Mutex
	byAddr  map[string]string // advertise address -> node
	blocked map[[2]string]bool
	conns   map[[2]string][]net.Conn // dialer, target
}

func newPartitions() *partitions {
	return &partitions{byAddr: map[string]string{}, blocked: map[[2]string]bool{}, conns: map[[2]string][]net.Conn{}}
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (p *partitions) setAddr(node, addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, n := range p.byAddr {
		if n == node {
			delete(p.byAddr, a)
		}
	}
	p.byAddr[addr] = node
}

func (p *partitions) allow(from, toAddr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	to, ok := p.byAddr[toAddr]
	return !ok || !p.blocked[pair(from, to)]
}

func (p *partitions) track(from, toAddr string, c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	to := p.byAddr[toAddr]
	k := [2]string{from, to}
	live := p.conns[k][:0]
	for _, old := range p.conns[k] {
		if old != nil {
			live = append(live, old)
		}
	}
	p.conns[k] = append(live, c)
	if p.blocked[pair(from, to)] {
		_ = c.Close()
	}
}

// cut separates a from b (both directions) and closes their open links.
func (p *partitions) cut(a, b string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked[pair(a, b)] = true
	for _, k := range [][2]string{{a, b}, {b, a}} {
		for _, c := range p.conns[k] {
			_ = c.Close()
		}
		delete(p.conns, k)
	}
}

func (p *partitions) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = map[[2]string]bool{}
}

// cluster is an in-process weft datastore cluster over real TCP + TLS on
// loopback.
type cluster struct {
	t        *testing.T
	mu       sync.Mutex
	nodes    map[string]*Node
	addrs    map[string]string
	dirs     map[string]string
	disks    map[string]*crashDisk // of each node's current run
	opens    int64
	base     string
	token    string
	voters   int
	tuning   Tuning
	registry Registry
	faults   *partitions
}

func newCluster(t *testing.T, voters int) *cluster {
	t.Helper()
	c := &cluster{
		t:      t,
		nodes:  map[string]*Node{},
		addrs:  map[string]string{},
		dirs:   map[string]string{},
		disks:  map[string]*crashDisk{},
		base:   t.TempDir(),
		voters: voters,
		tuning: testTuning(),
		faults: newPartitions(),
	}
	t.Cleanup(c.closeAll)
	return c
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (c *cluster) logger(name string) *slog.Logger {
	level := slog.LevelWarn
	if *verboseLog {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(c.t.Output(), &slog.HandlerOptions{Level: level})).With("test-node", name)
}

func (c *cluster) config(name string) Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr, ok := c.addrs[name]
	if !ok {
		addr = freeAddr(c.t)
		c.addrs[name] = addr
		c.dirs[name] = filepath.Join(c.base, name)
	}
	c.faults.setAddr(name, addr)
	c.opens++
	disk := newCrashDisk(c.opens)
	var join []string
	for n := range c.nodes {
		if n != name {
			join = append(join, c.addrs[n])
		}
	}
	sort.Strings(join)
	return Config{
		NodeName:  name,
		DataDir:   c.dirs[name],
		Listen:    addr,
		Advertise: addr,
		Join:      join,
		Token:     c.token,
		Voters:    c.voters,
		Registry:  c.registry,
		Logger:    c.logger(name),
		Tuning:    c.tuning,
		faults:    c.faults,
		disk:      disk,
	}
}

// open starts (or restarts) a node with cfg.
func (c *cluster) open(cfg Config) *Node {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Open(ctx, cfg)
	if err != nil {
		c.t.Fatalf("open %s: %v", cfg.NodeName, err)
	}
	c.mu.Lock()
	c.nodes[cfg.NodeName] = n
	if d, ok := cfg.disk.(*crashDisk); ok {
		c.disks[cfg.NodeName] = d
	}
	c.mu.Unlock()
	return n
}

// bootstrap starts the first node and reads the token it wrote.
func (c *cluster) bootstrap(name string) *Node {
	c.t.Helper()
	cfg := c.config(name)
	cfg.Join = nil
	n := c.open(cfg)
	tok, err := pki.LoadToken(tokenPath(cfg.DataDir))
	if err != nil {
		c.t.Fatal(err)
	}
	c.token = tok.String()
	return n
}

// join starts a new node that joins through the others.
func (c *cluster) join(name string) *Node {
	c.t.Helper()
	return c.open(c.config(name))
}

// start builds a cluster of the named nodes and waits until they are all
// members with min(len, voters) voters.
func (c *cluster) start(names ...string) {
	c.t.Helper()
	c.bootstrap(names[0])
	for _, n := range names[1:] {
		c.join(n)
	}
	c.waitVoters(min(len(names), c.voters), names...)
}

func (c *cluster) node(name string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[name]
	if n == nil {
		c.t.Fatalf("node %s is not running", name)
	}
	return n
}

func (c *cluster) running() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// kill stops a node abruptly: no leadership transfer (like kill -9, raft
// keeps only what it fsynced).
func (c *cluster) kill(name string) {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[name]
	delete(c.nodes, name)
	c.mu.Unlock()
	if n != nil {
		n.shutdown(false)
	}
}

// restart starts a killed node again from its data dir.
func (c *cluster) restart(name string) *Node {
	c.t.Helper()
	return c.open(c.config(name))
}

// closeAll stops every node and checks that nothing of theirs keeps
// running (tests run one at a time, so any goroutine left is this test's).
func (c *cluster) closeAll() {
	for _, n := range c.running() {
		c.kill(n.name)
	}
	if leaked := storeGoroutines(); len(leaked) > 0 {
		c.t.Errorf("%d goroutines still running after closing every node:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leader waits until the running nodes agree on a leader among them.
func (c *cluster) leader() *Node {
	c.t.Helper()
	var lead *Node
	waitFor(c.t, 15*time.Second, "a leader", func() error {
		lead = nil
		for _, n := range c.running() {
			if n.raft.State().String() == "Leader" && n.established.Load() == n.raft.CurrentTerm() {
				lead = n
			}
		}
		if lead == nil {
			return errors.New("no established leader")
		}
		return nil
	})
	return lead
}

func (c *cluster) followers() []*Node {
	lead := c.leader()
	var out []*Node
	for _, n := range c.running() {
		if n != lead {
			out = append(out, n)
		}
	}
	return out
}

// waitVoters waits until the leader's configuration has the named nodes,
// exactly want of them voters.
//
// Every running node must hold that configuration, not only the leader: a
// promotion the leader has appended but a follower has not is not
// committed yet, and a test that cuts the leader off then faces a
// majority whose members disagree on who votes, which raft rightly
// cannot resolve.
func (c *cluster) waitVoters(want int, names ...string) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, fmt.Sprintf("%d voters among %v", want, names), func() error {
		lead := c.leader()
		for _, n := range c.running() {
			servers, err := n.raftServers()
			if err != nil {
				return err
			}
			have := map[string]bool{}
			voters := 0
			for _, s := range servers {
				have[string(s.ID)] = true
				if s.Suffrage.String() == "Voter" {
					voters++
				}
			}
			for _, name := range names {
				if !have[name] {
					return fmt.Errorf("%s: %s not a member yet (%v)", n.name, name, servers)
				}
			}
			if voters != want && (n == lead || slices.Contains(names, n.name)) {
				return fmt.Errorf("%s sees %d voters, want %d (%v)", n.name, voters, want, servers)
			}
		}
		return nil
	})
}

// roles returns name -> "Voter"/"Nonvoter" from the leader's configuration.
func (c *cluster) roles() map[string]string {
	servers, err := c.leader().raftServers()
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range servers {
		out[string(s.ID)] = s.Suffrage.String()
	}
	return out
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A put whose outcome is unknown because leadership moved while it
// committed (the tests' timers are 100-200 ms, and a busy 2-core machine
// misses them) is sent again: a put is idempotent, and the tests using
// mustPut check states, not that a write took exactly one attempt.
func mustPut(t *testing.T, n *Node, k Key, v string) TxnResult {
	t.Helper()
	ctx := ctxTimeout(t, 10*time.Second)
	for {
		r, err := n.Txn(ctx, []Op{{Type: OpPut, Key: k, Value: []byte(v)}})
		if err == nil {
			return r
		}
		if errors.Is(err, ErrIndeterminate) && ctx.Err() == nil {
			t.Logf("put %v on %s: %v; sending it again", k, n.name, err)
			continue
		}
		t.Fatalf("put %v on %s: %v", k, n.name, err)
	}
}

// dumpNode lists every object of a node's replica, reserved kinds included.
func dumpNode(n *Node) (map[Key]Object, uint64) { return dump(n.fsm) }

// waitConverged waits until every running node holds the same state at the
// same revision.
func (c *cluster) waitConverged() {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, "replicas to converge", func() error {
		nodes := c.running()
		want, wantRev := dumpNode(nodes[0])
		for _, n := range nodes[1:] {
			got, rev := dumpNode(n)
			if rev != wantRev || len(got) != len(want) {
				return fmt.Errorf("%s at %d with %d objects, %s at %d with %d", n.name, rev, len(got), nodes[0].name, wantRev, len(want))
			}
			for k, o := range want {
				if g, ok := got[k]; !ok || g.Revision != o.Revision || string(g.Value) != string(o.Value) || g.UID != o.UID {
					return fmt.Errorf("%s differs on %v", n.name, k)
				}
			}
		}
		return nil
	})
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code == 0 {
		if leaked := storeGoroutines(); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "goroutines of package store still running after the tests:\n%s\n", strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// storeGoroutines waits up to 5 s for goroutines of this package or of raft
// to end, and returns those still running.
func storeGoroutines() []string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "testing.(*M)") || strings.Contains(g, "storeGoroutines") {
				continue
			}
			// A raft future that raft never answered (see Node.await):
			// raft's loss, bounded for the caller, not a leak of ours.
			if strings.Contains(g, "(*Node).await.func1") && strings.Contains(g, "raft.(*deferError).Error") {
				continue
			}
			if strings.Contains(g, "github.com/weftnet/weft/store.") || strings.Contains(g, "github.com/hashicorp/raft") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(20 * time.Millisecond)
	}
}
