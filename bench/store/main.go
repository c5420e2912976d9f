// Command store measures weft's datastore alone, in-process: three voters
// in one process over real TCP + mutual TLS on loopback, their clients
// calling store.Node directly (no agent, no local API, no socket). It runs
// etcdbench's tests (../shared/tools/etcdbench: same client counts, value
// sizes and watch method) but is NOT comparable with etcdbench's figures,
// whose clients go over gRPC from another process: for the like-for-like
// comparison with etcd use run.sh (BenchmarkStoreVsEtcd). This is the
// store's own ceiling, and the only place for the join test:
//
//   - put1: commit latency of one writer (requests round-robin over the
//     nodes, so two thirds are forwarded by a follower);
//   - putN: throughput of N concurrent writers (writer i uses node i mod 3);
//   - watch: write-to-visible latency, the slowest of one watcher per node,
//     for 2,000 writes at 200/s (open loop; the send time leads the value);
//   - read: linearizable reads (ConsistentRevision, then a local Get) by N
//     clients;
//   - join: time from a fourth node's Open to WaitInSync when the store
//     holds 10,000 objects;
//   - idle: CPU the three idle nodes use (heartbeats, commit-index
//     propagation, autopilot).
//
// Usage: go run ./bench/store [-tests put1,putN,watch,read,join] [-duration 10s]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/pki"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	clients     int
	valSize     int
	watchKeys   int
	watchRate   float64
	readKeys    int
	joinObjects int
	tests       string
	logLevel    string
	cpuProfile  string
	leaderOnly  bool
	commitTO    time.Duration
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration of each throughput test")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up before each throughput test")
	flag.IntVar(&o.clients, "clients", 64, "concurrent clients for the many-client put and read tests")
	flag.IntVar(&o.valSize, "valsize", 100, "value size in bytes")
	flag.IntVar(&o.watchKeys, "watch-keys", 2000, "keys written in the watch test (measured)")
	flag.Float64Var(&o.watchRate, "watch-rate", 200, "writes per second in the watch test")
	flag.IntVar(&o.readKeys, "read-keys", 1000, "keys pre-populated for the read test")
	flag.IntVar(&o.joinObjects, "join-objects", 10000, "objects in the store when the join test's node joins")
	flag.StringVar(&o.tests, "tests", "put1,putN,watch,read,join", "tests to run (comma-separated)")
	flag.StringVar(&o.logLevel, "log", "error", "store log level (debug|info|warn|error)")
	flag.DurationVar(&o.commitTO, "commit-timeout", 0, "override Tuning.CommitTimeout (0: the default)")
	flag.BoolVar(&o.leaderOnly, "leader-only", false, "send every request to the leader (no forwarding)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured tests to this file")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/store:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "weft-bench-store-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c := &cluster{dir: dir, log: newLogger(o.logLevel), tuning: store.Tuning{CommitTimeout: o.commitTO}}
	defer c.close()
	start := time.Now()
	if err := c.start(3); err != nil {
		return err
	}
	fmt.Printf("# 3 voters over TCP+TLS on loopback, ready in %v; leader=%s\n", time.Since(start).Round(time.Millisecond), c.leader())
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for _, t := range strings.Split(o.tests, ",") {
		var err error
		switch t {
		case "put1":
			err = putTest(c, o, 1)
		case "putN":
			err = putTest(c, o, o.clients)
		case "watch":
			err = watchTest(c, o)
		case "read":
			err = readTest(c, o)
		case "join":
			err = joinTest(c, o)
		case "idle":
			err = idleTest(o)
		default:
			err = fmt.Errorf("unknown test %q", t)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
	}
	return nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// cluster is the nodes under test.
type cluster struct {
	tuning store.Tuning
	dir    string
	log    *slog.Logger
	nodes  []*store.Node
	token  string
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (c *cluster) open(name string, join []string) (*store.Node, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return store.Open(ctx, store.Config{
		NodeName:  name,
		DataDir:   filepath.Join(c.dir, name),
		Listen:    addr,
		Advertise: addr,
		Join:      join,
		Token:     c.token,
		Voters:    3,
		Logger:    c.log.With("node", name),
		Tuning:    c.tuning,
	})
}

func (c *cluster) start(n int) error {
	first, err := c.open("n1", nil)
	if err != nil {
		return err
	}
	c.nodes = append(c.nodes, first)
	tok, err := pki.LoadToken(filepath.Join(c.dir, "n1", "token"))
	if err != nil {
		return err
	}
	c.token = tok.String()
	for i := 2; i <= n; i++ {
		node, err := c.open(fmt.Sprintf("n%d", i), []string{first.Advertise()})
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, node)
	}
	// Wait for autopilot to promote everyone to voter.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		ms, err := first.Members(ctx)
		if err != nil {
			return err
		}
		voters := 0
		for _, m := range ms {
			if m.Role != store.RoleNonVoter && m.Healthy {
				voters++
			}
		}
		if voters == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d healthy voters of %d: %v", voters, n, ms)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *cluster) leader() string {
	name, _ := c.nodes[0].Leader()
	return name
}

func (c *cluster) leaderNode() *store.Node {
	name := c.leader()
	for _, n := range c.nodes {
		if n.Name() == name {
			return n
		}
	}
	return c.nodes[0]
}

func (c *cluster) close() {
	for _, n := range c.nodes {
		_ = n.Close()
	}
}

func value(n int, head string) []byte {
	if len(head) >= n {
		return []byte(head)
	}
	return []byte(head + strings.Repeat("x", n-len(head)))
}

func pct(lats []time.Duration, p float64) float64 {
	if len(lats) == 0 {
		return 0
	}
	i := int(p*float64(len(lats))+0.5) - 1
	i = max(0, min(i, len(lats)-1))
	return float64(lats[i]) / float64(time.Millisecond)
}

// closedLoop runs op back-to-back in each client for warmup+duration and
// returns the latencies of operations completing in the measured window.
func closedLoop(o options, clients int, op func(ctx context.Context, worker, seq int) error) ([]time.Duration, int) {
	start := time.Now()
	measStart := start.Add(o.warmup)
	measEnd := measStart.Add(o.duration)
	lats := make([][]time.Duration, clients)
	errs := make([]int, clients)
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for seq := 0; ; seq++ {
				t0 := time.Now()
				if !t0.Before(measEnd) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := op(ctx, w, seq)
				cancel()
				t1 := time.Now()
				if t1.Before(measStart) || t1.After(measEnd) {
					continue
				}
				if err != nil {
					errs[w]++
					continue
				}
				lats[w] = append(lats[w], t1.Sub(t0))
			}
		}(w)
	}
	wg.Wait()
	var all []time.Duration
	nerr := 0
	for w := range lats {
		all = append(all, lats[w]...)
		nerr += errs[w]
	}
	return all, nerr
}

func summary(o options, name string, lats []time.Duration, errs int) {
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	fmt.Printf("%-28s ops/s=%9.1f p50_ms=%7.2f p99_ms=%7.2f n=%d errors=%d\n",
		name, float64(len(lats))/o.duration.Seconds(), pct(lats, 0.50), pct(lats, 0.99), len(lats), errs)
}

// node returns the node a client uses: pinned (i mod 3) with many clients,
// round-robin per request with one.
func (c *cluster) node(clients, worker, seq int) *store.Node {
	if clients >= len(c.nodes) {
		return c.nodes[worker%len(c.nodes)]
	}
	return c.nodes[seq%len(c.nodes)]
}

func putTest(c *cluster, o options, clients int) error {
	val := value(o.valSize, "")
	prefix := fmt.Sprintf("put%d-%d", clients, time.Now().UnixNano())
	lats, errs := closedLoop(o, clients, func(ctx context.Context, w, seq int) error {
		k := store.Key{Kind: "Bench", Name: fmt.Sprintf("%s-%03d-%09d", prefix, w, seq)}
		n := c.node(clients, w, seq)
		if o.leaderOnly {
			n = c.leaderNode()
		}
		_, err := n.Txn(ctx, []store.Op{{Type: store.OpPut, Key: k, Value: val}})
		return err
	})
	summary(o, fmt.Sprintf("put clients=%d", clients), lats, errs)
	return nil
}

func readTest(c *cluster, o options) error {
	val := value(o.valSize, "")
	keys := make([]store.Key, o.readKeys)
	for i := range keys {
		keys[i] = store.Key{Kind: "BenchRead", Name: fmt.Sprintf("%06d", i)}
	}
	for i := 0; i < len(keys); i += 100 {
		var ops []store.Op
		for _, k := range keys[i:min(i+100, len(keys))] {
			ops = append(ops, store.Op{Type: store.OpPut, Key: k, Value: val})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.nodes[0].Txn(ctx, ops)
		cancel()
		if err != nil {
			return err
		}
	}
	rngs := make([]*rand.Rand, o.clients)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewSource(int64(i)))
	}
	lats, errs := closedLoop(o, o.clients, func(ctx context.Context, w, seq int) error {
		n := c.node(o.clients, w, seq)
		if _, err := n.ConsistentRevision(ctx); err != nil {
			return err
		}
		if _, ok := n.Get(keys[rngs[w].Intn(len(keys))]); !ok {
			return errors.New("missing key")
		}
		return nil
	})
	summary(o, fmt.Sprintf("get-linearizable clients=%d", o.clients), lats, errs)
	return nil
}

// watchTest: one watcher per node on kind BenchWatch; one writer (requests
// round-robin over the nodes) writes warm-up keys, then watchKeys keys at
// watchRate/s, the send time (unix ns) leading the value. It reports the
// latency until the last watcher has seen each measured write.
func watchTest(c *cluster, o options) error {
	kind := fmt.Sprintf("BenchWatch%d", time.Now().UnixNano())
	nwarm := int(o.watchRate)
	total := nwarm + o.watchKeys
	recv := make([][]int64, len(c.nodes))
	sent := make([][]int64, len(c.nodes))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for m, n := range c.nodes {
		recv[m], sent[m] = make([]int64, total), make([]int64, total)
		ch, err := n.Watch(ctx, n.Revision(), store.WatchFilter{Kinds: []string{kind}})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func(m int) {
			defer wg.Done()
			seen := 0
			for ev := range ch {
				now := time.Now().UnixNano()
				if ev.Type != store.EventPut {
					continue
				}
				idx, err := strconv.Atoi(ev.Object.Name)
				if err != nil || idx < 0 || idx >= total || recv[m][idx] != 0 {
					continue
				}
				v := string(ev.Object.Value)
				if j := strings.IndexByte(v, 'x'); j >= 0 {
					v = v[:j]
				}
				st, _ := strconv.ParseInt(v, 10, 64)
				recv[m][idx], sent[m][idx] = now, st
				if seen++; seen == total {
					return
				}
			}
		}(m)
	}
	elapsed, perr := openLoop(total, o.watchRate, func(ctx context.Context, i int) error {
		v := value(o.valSize, strconv.FormatInt(time.Now().UnixNano(), 10))
		_, err := c.nodes[i%len(c.nodes)].Txn(ctx, []store.Op{{Type: store.OpPut, Key: store.Key{Kind: kind, Name: fmt.Sprintf("%06d", i)}, Value: v}})
		return err
	})
	waitWatchers(&wg, cancel)
	last, perNode, missing := lastOf(recv, sent, nwarm, total)
	var pm []string
	for m, n := range c.nodes {
		pm = append(pm, fmt.Sprintf("%s:%.2f", n.Name(), pct(perNode[m], 0.5)))
	}
	fmt.Printf("%-28s rate/s=%7.1f p50_ms=%7.2f p99_ms=%7.2f n=%d missing=%d put_errors=%d per-node_p50_ms=%s\n",
		fmt.Sprintf("watch last-of-%d", len(c.nodes)), float64(total)/elapsed.Seconds(),
		pct(last, 0.50), pct(last, 0.99), len(last), missing, perr, strings.Join(pm, ","))
	return nil
}

// openLoop sends total writes at rate/s, each in its own goroutine so that
// a slow write does not delay the schedule (as etcdbench's watch test), and
// returns how long the schedule took and how many writes failed.
func openLoop(total int, rate float64, write func(ctx context.Context, i int) error) (time.Duration, int) {
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for i := 0; i < total; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := write(ctx, i)
			cancel()
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	return time.Since(start), failed
}

// waitWatchers waits for the watchers to see everything, at most 30 s
// after the last write; then it cancels them and waits for them to stop.
func waitWatchers(wg *sync.WaitGroup, cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cancel()
		<-done
	}
}

// lastOf turns what each watcher saw (recv[w][i]: when watcher w saw write
// i; sent[w][i]: when write i was sent, unix ns) into the sorted latencies
// of the measured writes (from nwarm) until the last watcher saw each, each
// watcher's own sorted latencies, and how many writes some watcher missed.
func lastOf(recv, sent [][]int64, nwarm, total int) (last []time.Duration, perWatcher [][]time.Duration, missing int) {
	perWatcher = make([][]time.Duration, len(recv))
	for i := nwarm; i < total; i++ {
		var mx int64
		ok := true
		for m := range recv {
			if recv[m][i] == 0 {
				ok = false
				continue
			}
			d := recv[m][i] - sent[m][i]
			perWatcher[m] = append(perWatcher[m], time.Duration(d))
			mx = max(mx, d)
		}
		if !ok {
			missing++
			continue
		}
		last = append(last, time.Duration(mx))
	}
	sort.Slice(last, func(i, j int) bool { return last[i] < last[j] })
	for _, l := range perWatcher {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	return last, perWatcher, missing
}

// joinTest fills the store to joinObjects objects, then times a new node
// from Open to WaitInSync.
func joinTest(c *cluster, o options) error {
	val := value(o.valSize, "")
	have := 0
	for _, n := range c.nodes[:1] {
		objs, _ := n.List("BenchJoin", "")
		have = len(objs)
	}
	for i := have; i < o.joinObjects; i += 200 {
		var ops []store.Op
		for j := i; j < min(i+200, o.joinObjects); j++ {
			ops = append(ops, store.Op{Type: store.OpPut, Key: store.Key{Kind: "BenchJoin", Name: fmt.Sprintf("%06d", j)}, Value: val})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.nodes[0].Txn(ctx, ops)
		cancel()
		if err != nil {
			return err
		}
	}
	total := 0
	for kind, n := range countKinds(c.nodes[0]) {
		_ = kind
		total += n
	}
	start := time.Now()
	n, err := c.open(fmt.Sprintf("n%d", len(c.nodes)+1), []string{c.nodes[0].Advertise()})
	if err != nil {
		return err
	}
	c.nodes = append(c.nodes, n)
	opened := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.WaitInSync(ctx); err != nil {
		return err
	}
	synced := time.Since(start)
	objs, _ := n.List("BenchJoin", "")
	fmt.Printf("%-28s objects=%d open_ms=%.1f in_sync_ms=%.1f replicated=%d\n",
		"join-to-in-sync", total, float64(opened)/float64(time.Millisecond), float64(synced)/float64(time.Millisecond), len(objs))
	// The joiner is a non-voter: keep the voters as they were for later tests.
	c.nodes = c.nodes[:len(c.nodes)-1]
	return n.Close()
}

func idleTest(o options) error {
	var before, after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		return err
	}
	time.Sleep(o.duration)
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		return err
	}
	cpu := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	used := cpu(after) - cpu(before)
	fmt.Printf("%-28s cpu_percent=%.2f (of one core, all three nodes)\n", "idle", 100*used.Seconds()/o.duration.Seconds())
	return nil
}

func countKinds(n *store.Node) map[string]int {
	out := map[string]int{}
	for _, kind := range []string{"Bench", "BenchRead", "BenchJoin"} {
		objs, _ := n.List(kind, "")
		out[kind] = len(objs)
	}
	return out
}
