package main

// BenchmarkStoreVsEtcd compares weft's datastore with etcd the way users
// reach each: three server processes, each in its own network namespace of
// the test bed, replicating to each other over mutual TLS, and a client in a
// separate process talking to the local server over a unix socket without
// TLS (weft: the agent's local API, as `weft`, the CNI plugin and
// orchestrators use it; etcd: its gRPC API on a unix client URL, measured
// by ../shared/tools/etcdbench). Every round starts fresh clusters of both,
// alternating which runs first. See README.md and run.sh.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

var (
	cmpRounds    = flag.Int("compare.rounds", 3, "rounds; each starts fresh clusters of both stores, alternating which runs first")
	cmpEtcdbench = flag.String("compare.etcdbench", "", "etcdbench binary (built from ../shared/tools/etcdbench; run.sh builds it)")
	cmpEtcd      = flag.String("compare.etcd", "etcd", "etcd server binary")
	cmpTests     = flag.String("compare.tests", "put1,putN,watch,read", "tests, in etcdbench's order")
	cmpDuration  = flag.Duration("compare.duration", 10*time.Second, "measured duration of each throughput test")
	cmpWarmup    = flag.Duration("compare.warmup", 2*time.Second, "unmeasured warm-up before each throughput test")
	cmpClients   = flag.Int("compare.clients", 64, "concurrent clients of putN and read (client i uses server i mod 3)")
	cmpWatchKeys = flag.Int("compare.watch-keys", 2000, "measured writes of the watch test")
	cmpWatchRate = flag.Float64("compare.watch-rate", 200, "writes per second in the watch test")
	cmpReadKeys  = flag.Int("compare.read-keys", 1000, "objects written before the read test")
	cmpOnly      = flag.String("compare.only", "", "etcd or weft: measure one store only (to try the bench)")
)

// benchResult is one test of one store in one round, as etcdbench prints it.
type benchResult struct {
	rate     float64 // ops/s (put, read) or writes/s (watch)
	p50, p99 float64 // ms
	n, errs  int
}

// roundResults maps a test (put1, putN, watch, read) to its result.
type roundResults map[string]benchResult

func BenchmarkStoreVsEtcd(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime=1x: one iteration is the whole measurement")
	}
	tests := strings.Split(*cmpTests, ",")
	stores := []string{"etcd", "weft"}
	if *cmpOnly != "" {
		stores = []string{*cmpOnly}
	}
	if slices.Contains(stores, "etcd") && *cmpEtcdbench == "" {
		b.Fatal("-compare.etcdbench is required (run.sh builds it)")
	}
	results := map[string][]roundResults{}
	fmt.Printf("# machine: %d CPUs; load at start: %s\n", runtime.NumCPU(), loadavg())
	for r := 1; r <= *cmpRounds; r++ {
		order := slices.Clone(stores)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, s := range order {
			start := time.Now()
			var res roundResults
			var err error
			switch s {
			case "etcd":
				res, err = runEtcdRound(b, tests)
			case "weft":
				res, err = runWeftRound(b, tests)
			default:
				err = fmt.Errorf("unknown store %q", s)
			}
			if err != nil {
				b.Fatalf("round %d, %s: %v", r, s, err)
			}
			results[s] = append(results[s], res)
			fmt.Printf("# round %d %s: %s (%.0f s), load %s\n", r, s, res, time.Since(start).Seconds(), loadavg())
		}
	}
	fmt.Printf("# load at end: %s\n\n", loadavg())
	report(tests, results)
}

func (r roundResults) String() string {
	var parts []string
	for _, t := range sortedKeys(r) {
		x := r[t]
		parts = append(parts, fmt.Sprintf("%s %.0f/s p50 %.2f p99 %.2f ms n=%d errors=%d", t, x.rate, x.p50, x.p99, x.n, x.errs))
	}
	return strings.Join(parts, "; ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// report prints, per test and figure, each store's median with its range
// over the rounds, and weft's ratio to etcd: the median (and range) of the
// per-round ratios, so a round's load hits both sides of its ratio.
func report(tests []string, results map[string][]roundResults) {
	fmt.Println("| test | figure | etcd median (min–max) | weft median (min–max) | weft / etcd, median of rounds (min–max) |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	for _, t := range tests {
		for _, fig := range []struct {
			name string
			prec int
			get  func(benchResult) float64
			rate bool
		}{
			{"ops/s (higher is better)", 0, func(x benchResult) float64 { return x.rate }, true},
			{"p50 ms (lower is better)", 2, func(x benchResult) float64 { return x.p50 }, false},
			{"p99 ms (lower is better)", 2, func(x benchResult) float64 { return x.p99 }, false},
		} {
			if t == "watch" && fig.rate {
				continue // the watch test's rate is its schedule's
			}
			cell := func(store string) (string, []float64) {
				var vs []float64
				for _, rr := range results[store] {
					if x, ok := rr[t]; ok {
						vs = append(vs, fig.get(x))
					}
				}
				if len(vs) == 0 {
					return "–", nil
				}
				return spread(vs, fig.prec), vs
			}
			e, ev := cell("etcd")
			w, wv := cell("weft")
			ratio := "–"
			if len(ev) == len(wv) && len(ev) > 0 {
				rs := make([]float64, len(ev))
				for i := range ev {
					rs[i] = wv[i] / ev[i]
				}
				ratio = spread(rs, 2) + "×"
			}
			fmt.Printf("| %s | %s | %s | %s | %s |\n", t, fig.name, e, w, ratio)
		}
	}
	for _, s := range sortedKeys(results) {
		for _, rr := range results[s] {
			for _, t := range tests {
				if x := rr[t]; x.errs > 0 {
					fmt.Printf("\n%s %s: %d errors in a round\n", s, t, x.errs)
				}
			}
		}
	}
}

// spread formats the median of vs and its range.
func spread(vs []float64, prec int) string {
	s := slices.Sorted(slices.Values(vs))
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, med, prec, s[0], prec, s[len(s)-1])
}

// newSite builds three hosts of the test bed (network namespaces on one
// bridge) without starting agents.
func newSite(b *testing.B) *testbed.Site {
	return testbed.New(b, testbed.Options{
		Hosts: 3, NoStart: true, ReadyTimeout: 90 * time.Second,
		// Production log level (the test bed defaults to debug); BGP
		// plays no part in the datastore.
		ExtraTOML: "[log]\nlevel = \"info\"\n[bgp]\nenabled = false\n",
	})
}

// ---- etcd ----

// runEtcdRound starts three etcd members in the site's hosts (peer traffic
// over mutual TLS, the client URL a unix socket) and runs etcdbench against
// them as a separate process.
func runEtcdRound(b *testing.B, tests []string) (roundResults, error) {
	site := newSite(b)
	defer site.Close()
	hosts := site.Hosts()
	if err := writeEtcdTLS(hosts); err != nil {
		return nil, err
	}
	var cluster, endpoints []string
	for _, h := range hosts {
		cluster = append(cluster, fmt.Sprintf("%s=https://%s:2380", h.Name(), h.Address()))
		endpoints = append(endpoints, "unix://"+filepath.Join(h.Dir(), "etcd:2379"))
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			stopProcess(p)
		}
	}()
	for _, h := range hosts {
		tlsDir := filepath.Join(h.Dir(), "etcd-tls")
		args := []string{"--net=" + h.Netns().Path(), *cmpEtcd,
			"--name", h.Name(), "--data-dir", filepath.Join(h.Dir(), "etcd-data"),
			// etcd 3.4 wants host:port: the socket is ./etcd:2379.
			"--listen-client-urls", "unix://etcd:2379", "--advertise-client-urls", "unix://etcd:2379",
			"--listen-peer-urls", "https://" + h.Address() + ":2380",
			"--initial-advertise-peer-urls", "https://" + h.Address() + ":2380",
			"--initial-cluster", strings.Join(cluster, ","),
			"--initial-cluster-token", "bench", "--initial-cluster-state", "new",
			"--peer-cert-file", filepath.Join(tlsDir, "member.pem"),
			"--peer-key-file", filepath.Join(tlsDir, "member-key.pem"),
			"--peer-trusted-ca-file", filepath.Join(tlsDir, "ca.pem"),
			"--peer-client-cert-auth",
		}
		cmd := exec.Command("nsenter", args...)
		cmd.Dir = h.Dir()
		logf, err := os.Create(filepath.Join(h.Dir(), "etcd.log"))
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		err = cmd.Start()
		logf.Close()
		if err != nil {
			return nil, fmt.Errorf("starting etcd on %s: %w", h.Name(), err)
		}
		procs = append(procs, cmd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, h := range hosts {
		if err := waitEtcdHealthy(ctx, filepath.Join(h.Dir(), "etcd:2379")); err != nil {
			log, _ := os.ReadFile(filepath.Join(h.Dir(), "etcd.log"))
			return nil, fmt.Errorf("etcd %d: %w\n%s", i+1, err, lastLines(string(log), 20))
		}
	}
	out, err := exec.Command(*cmpEtcdbench,
		"-endpoints", strings.Join(endpoints, ","), "-tests", strings.Join(tests, ","),
		"-duration", cmpDuration.String(), "-warmup", cmpWarmup.String(), "-clients", strconv.Itoa(*cmpClients),
		"-watch-keys", strconv.Itoa(*cmpWatchKeys), "-watch-rate", strconv.FormatFloat(*cmpWatchRate, 'f', -1, 64),
		"-read-keys", strconv.Itoa(*cmpReadKeys)).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("etcdbench: %w\n%s", err, out)
	}
	return parseEtcdbench(string(out))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// stopProcess sends SIGTERM to a process this benchmark started and waits
// for it (SIGKILL after 10 s).
func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// waitEtcdHealthy polls the member's /health over its unix socket until it
// reports a leader.
func waitEtcdHealthy(ctx context.Context, socket string) error {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}, Timeout: 2 * time.Second}
	var last error
	for {
		resp, err := c.Get("http://etcd/health")
		if err == nil {
			var h struct{ Health string }
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err == nil && h.Health == "true" {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("health %q", h.Health)
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %v", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeEtcdTLS writes a CA and one certificate per member (its underlay
// address as IP SAN, usable as server and client, ECDSA P-256 like weft's
// node certificates) into <host dir>/etcd-tls.
func writeEtcdTLS(hosts []*testbed.Host) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench etcd CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	for i, h := range hosts {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		addr, err := netip.ParseAddr(h.Address())
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: h.Name()},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{addr.AsSlice()},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		dir := filepath.Join(h.Dir(), "etcd-tls")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		for name, blk := range map[string]*pem.Block{
			"ca.pem":         {Type: "CERTIFICATE", Bytes: caDER},
			"member.pem":     {Type: "CERTIFICATE", Bytes: der},
			"member-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER},
		} {
			if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(blk), 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

var etcdbenchLine = regexp.MustCompile(`^(put clients=(\d+)|get-linearizable clients=\d+|watch last-of-\d+)\s+(.*)$`)

// parseEtcdbench reads etcdbench's report lines.
func parseEtcdbench(out string) (roundResults, error) {
	res := roundResults{}
	for _, line := range strings.Split(out, "\n") {
		m := etcdbenchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(regexp.MustCompile(`=\s+`).ReplaceAllString(m[3], "=")) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		num := func(k string) float64 { f, _ := strconv.ParseFloat(kv[k], 64); return f }
		x := benchResult{p50: num("p50_ms"), p99: num("p99_ms"), n: int(num("n"))}
		var test string
		switch {
		case strings.HasPrefix(m[1], "put"):
			test = "putN"
			if m[2] == "1" {
				test = "put1"
			}
			x.rate, x.errs = num("ops/s"), int(num("errors"))
		case strings.HasPrefix(m[1], "get"):
			test = "read"
			x.rate, x.errs = num("ops/s"), int(num("errors"))
		default:
			test = "watch"
			x.rate, x.errs = num("rate/s"), int(num("missing")+num("put_errors"))
		}
		res[test] = x
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("no results in etcdbench's output:\n%s", out)
	}
	return res, nil
}

// ---- weft ----

// weftNode is one agent as the clients see it.
type weftNode struct {
	name   string
	socket string
}

// runWeftRound starts three agents as one cluster (h1 bootstraps, h2 and
// h3 join; all healthy voters) and runs etcdbench's tests through their
// local sockets from this process.
func runWeftRound(b *testing.B, tests []string) (roundResults, error) {
	site := newSite(b)
	defer site.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fmt.Fprintf(os.Stderr, "# %s weft: starting 3 agents\n", time.Now().Format(time.TimeOnly))
	if err := site.StartCluster(ctx); err != nil {
		return nil, err
	}
	hosts := site.Hosts()
	if err := site.WaitVoters(ctx, hosts[0], 3); err != nil {
		return nil, err
	}
	var nodes []weftNode
	for _, h := range hosts {
		nodes = append(nodes, weftNode{name: h.Name(), socket: h.Socket()})
	}
	o := options{duration: *cmpDuration, warmup: *cmpWarmup, clients: *cmpClients}
	prefix := fmt.Sprintf("b%d", time.Now().UnixNano()%1e9)
	res := roundResults{}
	for _, t := range tests {
		fmt.Fprintf(os.Stderr, "# %s weft %s\n", time.Now().Format(time.TimeOnly), t)
		var x benchResult
		var err error
		switch t {
		case "put1":
			x = weftPut(o, nodes, 1, prefix)
		case "putN":
			x = weftPut(o, nodes, o.clients, prefix)
		case "watch":
			x, err = weftWatch(nodes, prefix)
		case "read":
			x, err = weftRead(o, nodes, prefix)
		default:
			err = fmt.Errorf("unknown test %q", t)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
		res[t] = x
	}
	return res, nil
}

// weftClients returns n clients, as etcdbench's newClients: with n >= 3
// client i uses node i mod 3 (its own connection); with fewer, each client
// holds one connection per node and requests round-robin over them.
func weftClients(nodes []weftNode, n int) [][]*localapi.Client {
	cs := make([][]*localapi.Client, n)
	for i := range cs {
		if n >= len(nodes) {
			cs[i] = []*localapi.Client{localapi.NewClient(nodes[i%len(nodes)].socket)}
			continue
		}
		for _, nd := range nodes {
			cs[i] = append(cs[i], localapi.NewClient(nd.socket))
		}
	}
	return cs
}

// networkSet is what every write applies: a small GlobalNetworkSet, as
// `weft apply -f` sends it (YAML). Its stored value is about 150 bytes
// (etcdbench writes 100-byte values).
func networkSet(name string, i int, annotations string) string {
	return fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: %s\n%sspec:\n  nets:\n  - 192.0.2.%d/32\n",
		name, annotations, i%256)
}

func apply(ctx context.Context, c *localapi.Client, doc string) error {
	_, err := c.Write(ctx, localapi.WriteRequest{Mode: localapi.ModeApply, Data: doc})
	return err
}

func summarize(o options, lats []time.Duration, errs int) benchResult {
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	return benchResult{rate: float64(len(lats)) / o.duration.Seconds(), p50: pct(lats, 0.5), p99: pct(lats, 0.99), n: len(lats), errs: errs}
}

func weftPut(o options, nodes []weftNode, clients int, prefix string) benchResult {
	cs := weftClients(nodes, clients)
	lats, errs := closedLoop(o, clients, func(ctx context.Context, w, seq int) error {
		c := cs[w][seq%len(cs[w])]
		return apply(ctx, c, networkSet(fmt.Sprintf("%s-put%d-%03d-%09d", prefix, clients, w, seq), seq, ""))
	})
	return summarize(o, lats, errs)
}

func weftRead(o options, nodes []weftNode, prefix string) (benchResult, error) {
	names := make([]string, *cmpReadKeys)
	for i := range names {
		names[i] = fmt.Sprintf("%s-read-%06d", prefix, i)
	}
	wc := localapi.NewClient(nodes[0].socket)
	for i := 0; i < len(names); i += 100 {
		var docs []string
		for j := i; j < min(i+100, len(names)); j++ {
			docs = append(docs, networkSet(names[j], j, ""))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := apply(ctx, wc, strings.Join(docs, "---\n"))
		cancel()
		if err != nil {
			return benchResult{}, err
		}
	}
	cs := weftClients(nodes, o.clients)
	rngs := make([]*mrand.Rand, o.clients)
	for i := range rngs {
		rngs[i] = mrand.New(mrand.NewSource(int64(i)))
	}
	lats, errs := closedLoop(o, o.clients, func(ctx context.Context, w, seq int) error {
		// consistent=true: a linearizable read (a read barrier through
		// the leader), as etcd's default Get.
		name := names[rngs[w].Intn(len(names))]
		resp, err := cs[w][0].List(ctx, "GlobalNetworkSet", localapi.ListOptions{Name: name, Consistent: true})
		if err != nil {
			return err
		}
		if len(resp.Items) != 1 {
			return errors.New("missing object")
		}
		return nil
	})
	return summarize(o, lats, errs), nil
}

const sentAnnotation = "bench.weft.io/sent"

// weftWatch mirrors etcdbench's watch test: one watcher per node (on its
// own socket, from the node's current revision); one writer round-robins
// warm-up writes, then watch-keys writes at watch-rate/s, each carrying its
// send time; the latency of a write is until the last watcher saw it.
func weftWatch(nodes []weftNode, prefix string) (benchResult, error) {
	wprefix := prefix + "-watch-"
	nwarm := int(*cmpWatchRate)
	total := nwarm + *cmpWatchKeys
	recv := make([][]int64, len(nodes))
	sent := make([][]int64, len(nodes))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resumes := make([]int, len(nodes))
	var wg sync.WaitGroup
	for m, nd := range nodes {
		recv[m], sent[m] = make([]int64, total), make([]int64, total)
		c := localapi.NewClient(nd.socket)
		st, err := c.Status(ctx)
		if err != nil {
			return benchResult{}, err
		}
		if st.Datastore == nil {
			return benchResult{}, fmt.Errorf("%s: no datastore status", nd.name)
		}
		from := st.Datastore.Revision
		open := func() (io.ReadCloser, error) {
			return c.Watch(ctx, localapi.WatchOptions{Kinds: []string{"GlobalNetworkSet"}, Revision: from})
		}
		body, err := open() // established before the first write
		if err != nil {
			return benchResult{}, err
		}
		wg.Add(1)
		go func(m int) {
			defer wg.Done()
			seen := 0
			for {
				sc := bufio.NewScanner(body)
				sc.Buffer(make([]byte, 64<<10), 1<<20)
				for sc.Scan() && seen < total {
					now := time.Now().UnixNano()
					var ev localapi.WatchEvent
					if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Type != "PUT" {
						continue
					}
					from = max(from, ev.Revision)
					var obj struct {
						Metadata struct {
							Name        string            `json:"name"`
							Annotations map[string]string `json:"annotations"`
						} `json:"metadata"`
					}
					if json.Unmarshal(ev.Object, &obj) != nil {
						continue
					}
					idx, err := strconv.Atoi(strings.TrimPrefix(obj.Metadata.Name, wprefix))
					if err != nil || !strings.HasPrefix(obj.Metadata.Name, wprefix) || idx < 0 || idx >= total || recv[m][idx] != 0 {
						continue
					}
					st, _ := strconv.ParseInt(obj.Metadata.Annotations[sentAnnotation], 10, 64)
					recv[m][idx], sent[m][idx] = now, st
					seen++
				}
				body.Close()
				if seen == total || ctx.Err() != nil {
					return
				}
				// The agent closes a watch that falls too far behind;
				// a client resumes from the last revision it saw.
				resumes[m]++
				for body, err = open(); err != nil; body, err = open() {
					if ctx.Err() != nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}(m)
	}
	writers := weftClients(nodes, 1)[0]
	elapsed, perr := openLoop(total, *cmpWatchRate, func(ctx context.Context, i int) error {
		ann := fmt.Sprintf("  annotations:\n    %s: %q\n", sentAnnotation, strconv.FormatInt(time.Now().UnixNano(), 10))
		return apply(ctx, writers[i%len(writers)], networkSet(fmt.Sprintf("%s%06d", wprefix, i), i, ann))
	})
	waitWatchers(&wg, cancel)
	last, _, missing := lastOf(recv, sent, nwarm, total)
	if slices.ContainsFunc(resumes, func(n int) bool { return n > 0 }) || missing+perr > 0 {
		fmt.Fprintf(os.Stderr, "# weft watch: %d writes failed, %d missed by some watcher, watches resumed per node %v\n", perr, missing, resumes)
	}
	return benchResult{rate: float64(total) / elapsed.Seconds(), p50: pct(last, 0.5), p99: pct(last, 0.99), n: len(last), errs: missing + perr}, nil
}
