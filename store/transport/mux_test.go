package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/weftnet/weft/store/pki"
)

// countingListener counts the connections handed to the HTTP server.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// hitRecorder is an HTTP handler that remembers whether, and by whom, it
// was called.
type hitRecorder struct {
	hits     atomic.Int32
	lastPeer atomic.Value // string; "" when PeerNode reported false
}

func (h *hitRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.hits.Add(1)
	name, ok := PeerNode(r)
	if !ok {
		name = ""
	}
	h.lastPeer.Store(name)
	_, _ = io.WriteString(w, "ok")
}

// serveHTTP serves ln with h until the test ends.
func serveHTTP(t *testing.T, ln net.Listener, h http.Handler) *countingListener {
	t.Helper()
	cl := &countingListener{Listener: ln}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(cl)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return cl
}

func get(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("proof-of-the-token-secret"))
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestJoinWithWrongFingerprintSendsNothing(t *testing.T) {
	cluster := newTestCluster(t, "node-a")
	other := newTestCluster(t)
	m := startMux(t, cluster.ids["node-a"], Options{})
	h := &hitRecorder{}
	ln := serveHTTP(t, m.Join(), h)
	url := "https://" + m.Addr().String() + "/v1/join"

	bad := NewJoinClient(other.ca.Fingerprint())
	defer bad.CloseIdleConnections()
	_, err := get(testContext(t), bad, url)
	if !errors.Is(err, pki.ErrPeerRejected) {
		t.Fatalf("join with a wrong fingerprint: err = %v, want pki.ErrPeerRejected", err)
	}
	// The client aborted inside the handshake, so the server never got a
	// connection to read from, let alone a request.
	if n := ln.accepted.Load(); n != 0 {
		t.Errorf("join listener accepted %d connections, want 0", n)
	}
	if n := h.hits.Load(); n != 0 {
		t.Fatalf("handler was hit %d times: the request (and the proof) reached an unverified server", n)
	}

	// Positive control: the right fingerprint gets through, without a
	// client certificate.
	good := NewJoinClient(cluster.ca.Fingerprint())
	defer good.CloseIdleConnections()
	body, err := get(testContext(t), good, url)
	if err != nil || body != "ok" {
		t.Fatalf("join with the right fingerprint: %q, %v", body, err)
	}
	if h.hits.Load() != 1 {
		t.Fatalf("handler hits = %d, want 1", h.hits.Load())
	}
	if peer := h.lastPeer.Load(); peer != "" {
		t.Errorf("join request has peer node %q, want none (no client certificate)", peer)
	}
}

func TestForeignCAClientRefusedOnRaftAndRPC(t *testing.T) {
	cluster := newTestCluster(t, "node-a", "node-b")
	foreign := newTestCluster(t, "node-b") // same name, other cluster
	m := startMux(t, cluster.ids["node-a"], Options{})
	addr := m.Addr().String()

	// The outsider does not check the server, so any refusal is the
	// server's.
	outsiderTLS := func(alpn string) func(string) *tls.Config {
		return func(string) *tls.Config {
			c := pki.ClientConfig(foreign.ids["node-b"], alpn)
			c.VerifyConnection = nil
			return c
		}
	}

	t.Run("rpc", func(t *testing.T) {
		h := &hitRecorder{}
		serveHTTP(t, m.RPC(), h)
		outsider := NewRPCClient(outsiderTLS(ALPNRPC))
		defer outsider.CloseIdleConnections()
		if _, err := get(testContext(t), outsider, "https://"+addr+"/v1/forward"); err == nil {
			t.Fatal("RPC request with a foreign certificate succeeded")
		}
		if n := h.hits.Load(); n != 0 {
			t.Fatalf("RPC handler hit %d times by a foreign client", n)
		}
		member := NewRPCClient(cluster.clientTLS("node-b", ALPNRPC))
		defer member.CloseIdleConnections()
		if body, err := get(testContext(t), member, "https://"+addr+"/v1/forward"); err != nil || body != "ok" {
			t.Fatalf("member RPC: %q, %v", body, err)
		}
		if peer := h.lastPeer.Load(); peer != "node-b" {
			t.Errorf("PeerNode = %v, want node-b", peer)
		}
	})

	t.Run("raft", func(t *testing.T) {
		stream := m.Raft("127.0.0.1:1", nil)
		outsider := m.Raft("127.0.0.1:1", outsiderTLS(ALPNRaft))
		anonymous := m.Raft("127.0.0.1:1", func(string) *tls.Config {
			return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
		})
		for name, layer := range map[string]interface {
			Dial(string, time.Duration) (net.Conn, error)
		}{"foreign certificate": dialAdapter{outsider}, "no certificate": dialAdapter{anonymous}} {
			c, err := layer.Dial(addr, 5*time.Second)
			if err == nil {
				// TLS 1.3: the client may finish before the server
				// refuses its certificate; the refusal shows on read.
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			if err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
				t.Fatalf("%s: raft connection not refused (err = %v)", name, err)
			}
		}
		// The refused connections never reached the raft listener: the
		// first one it hands out is the member's.
		member := m.Raft("127.0.0.1:1", cluster.clientTLS("node-b", ALPNRaft))
		c, err := member.Dial(addrOf(addr), 5*time.Second)
		if err != nil {
			t.Fatalf("member raft dial: %v", err)
		}
		defer c.Close()
		got, err := acceptWithin(stream, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer got.Close()
		if peer, ok := PeerNodeOfConn(got); !ok || peer != "node-b" {
			t.Fatalf("raft accepted a connection from %q (%v), want node-b", peer, ok)
		}
	})
}

func TestJoinAcceptedWithoutClientCertificate(t *testing.T) {
	cluster := newTestCluster(t, "node-a")
	m := startMux(t, cluster.ids["node-a"], Options{})
	conn, err := tls.Dial("tcp", m.Addr().String(), pki.JoinClientConfig(cluster.ca.Fingerprint()))
	if err != nil {
		t.Fatalf("join handshake: %v", err)
	}
	defer conn.Close()
	got, err := acceptWithin(m.Join(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if _, ok := PeerNodeOfConn(got); ok {
		t.Error("join connection claims a peer node")
	}
	if cs := got.(interface{ ConnectionState() tls.ConnectionState }).ConnectionState(); cs.NegotiatedProtocol != ALPNJoin || cs.Version != tls.VersionTLS13 {
		t.Errorf("join connection: ALPN %q version %x", cs.NegotiatedProtocol, cs.Version)
	}
}

func TestSilentClientDoesNotBlockOthers(t *testing.T) {
	cluster := newTestCluster(t, "node-a", "node-b")
	// A long handshake timeout: the silent client stays stuck for the
	// whole test, so the member only gets through if handshakes run
	// concurrently.
	m := startMux(t, cluster.ids["node-a"], Options{HandshakeTimeout: time.Minute})
	h := &hitRecorder{}
	serveHTTP(t, m.RPC(), h)

	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A second one that starts a TLS record and stalls.
	stalled, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}); err != nil {
		t.Fatal(err)
	}

	member := NewRPCClient(cluster.clientTLS("node-b", ALPNRPC))
	defer member.CloseIdleConnections()
	if body, err := get(testContext(t), member, "https://"+m.Addr().String()+"/v1/x"); err != nil || body != "ok" {
		t.Fatalf("member blocked behind a silent client: %q, %v", body, err)
	}
}

func TestSilentClientIsDisconnectedAfterHandshakeTimeout(t *testing.T) {
	cluster := newTestCluster(t, "node-a")
	m := startMux(t, cluster.ids["node-a"], Options{HandshakeTimeout: 200 * time.Millisecond})
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = silent.Read(make([]byte, 1))
	if err == nil || isTimeout(err) {
		t.Fatalf("silent client still connected (read err = %v), want the mux to hang up", err)
	}
}

func TestCloseUnblocksAcceptAndLeaksNothing(t *testing.T) {
	baseline := runtime.NumGoroutine()
	cluster := newTestCluster(t, "node-a", "node-b")
	m, err := ListenWithOptions("127.0.0.1:0", pki.ServerConfig(cluster.ids["node-a"]), testLogger(t), Options{HandshakeTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	raftLayer := m.Raft("127.0.0.1:1", cluster.clientTLS("node-a", ALPNRaft))

	// A join connection delivered to its listener but never accepted:
	// Close must hang up on it.
	queued, err := tls.Dial("tcp", m.Addr().String(), pki.JoinClientConfig(cluster.ca.Fingerprint()))
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	waitFor(t, 10*time.Second, "the join connection to be queued", func() bool { return len(m.subs[ALPNJoin].conns) == 1 })

	// Accepts blocked on the two other listeners.
	errs := make(chan error, 2)
	for _, ln := range []net.Listener{raftLayer, m.RPC()} {
		go func() {
			c, err := ln.Accept()
			if c != nil {
				c.Close()
			}
			errs <- err
		}()
	}
	// A handshake in flight (for up to a minute) that Close must interrupt,
	// and a refused one.
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if c, err := tls.Dial("tcp", m.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}); err == nil {
		c.Close()
		t.Fatal("h2 client accepted")
	}

	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked behind a handshake in flight")
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("blocked Accept returned %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Accept still blocked after Close")
		}
	}
	for name, ln := range map[string]net.Listener{"raft": raftLayer, "rpc": m.RPC(), "join": m.Join()} {
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s Accept after Close: %v, want net.ErrClosed", name, err)
		}
	}
	for name, c := range map[string]net.Conn{"queued join": queued, "silent": silent} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("%s connection still open after Close (read err = %v)", name, err)
		}
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if c, err := net.Dial("tcp", m.Addr().String()); err == nil {
		c.Close()
		t.Error("mux still accepts TCP after Close")
	}
	silent.Close()
	queued.Close()
	checkNoLeaks(t, baseline)
}

func TestClosingOneListenerKeepsTheOthers(t *testing.T) {
	cluster := newTestCluster(t, "node-a", "node-b")
	m := startMux(t, cluster.ids["node-a"], Options{})
	if err := m.RPC().Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.RPC().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on closed RPC listener: %v", err)
	}
	// New RPC connections are hung up on...
	c, err := tls.Dial("tcp", m.Addr().String(), pki.ClientConfig(cluster.ids["node-b"], ALPNRPC))
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil || isTimeout(err) {
		t.Fatalf("RPC connection to a closed listener not closed (err = %v)", err)
	}
	// ...while raft still works.
	stream := m.Raft("127.0.0.1:1", cluster.clientTLS("node-b", ALPNRaft))
	rc, err := stream.Dial(addrOf(m.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatalf("raft dial after RPC listener closed: %v", err)
	}
	defer rc.Close()
	got, err := acceptWithin(stream, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got.Close()
}

// TestMuxRoutesOnlyWeftProtocols gives the mux TLS configurations that
// are not pki's, to check its own defences: an unknown ALPN and a raft
// connection without a verified client certificate are both closed.
func TestMuxRoutesOnlyWeftProtocols(t *testing.T) {
	cluster := newTestCluster(t, "node-a")
	cert, err := tls.X509KeyPair(cluster.ids["node-a"].CertPEM(), cluster.ids["node-a"].KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"other/1", ALPNRaft} {
		t.Run(proto, func(t *testing.T) {
			m := startMuxWithConfig(t, &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{cert},
				NextProtos:   []string{proto},
				ClientAuth:   tls.NoClientCert, // the mux must not trust this
			}, Options{})
			c, err := tls.Dial("tcp", m.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("connection not closed by the mux (err = %v)", err)
			}
			if proto == ALPNRaft {
				if _, err := acceptWithin(m.Raft("127.0.0.1:1", nil), 200*time.Millisecond); err == nil {
					t.Fatal("unverified raft connection was handed to raft")
				}
			}
		})
	}
}

func TestRPCClientRefusesPlainHTTP(t *testing.T) {
	cluster := newTestCluster(t, "node-a")
	c := NewRPCClient(cluster.clientTLS("node-a", ALPNRPC))
	if _, err := get(testContext(t), c, "http://127.0.0.1:1/v1/x"); !errors.Is(err, errPlaintext) {
		t.Fatalf("plain http: err = %v, want errPlaintext", err)
	}
	noIdentity := NewRPCClient(func(string) *tls.Config { return nil })
	if _, err := get(testContext(t), noIdentity, "https://127.0.0.1:1/v1/x"); err == nil || !strings.Contains(err.Error(), "no certificate yet") {
		t.Fatalf("client without identity: err = %v", err)
	}
}

func TestListenRejectsNilConfig(t *testing.T) {
	if _, err := Listen("127.0.0.1:0", nil, nil); err == nil {
		t.Fatal("Listen without TLS configuration succeeded")
	}
}

// TestDialFailuresAreDialErrors: whatever stops a dial (no listener, a
// refused CA pin, no identity), the error is a *net.OpError with Op "dial",
// so callers know the request never left and may retry elsewhere.
func TestDialFailuresAreDialErrors(t *testing.T) {
	cluster := newTestCluster(t, "node-a")
	other := newTestCluster(t)
	m := startMux(t, cluster.ids["node-a"], Options{})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name   string
		client *http.Client
		addr   string
		is     error
	}{
		{"nobody listening", NewRPCClient(cluster.clientTLS("node-a", ALPNRPC)), deadAddr, nil},
		{"wrong CA pin", NewJoinClient(other.ca.Fingerprint()), m.Addr().String(), pki.ErrPeerRejected},
		{"no identity", NewRPCClient(func(string) *tls.Config { return nil }), m.Addr().String(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.client.CloseIdleConnections()
			_, err := get(testContext(t), tt.client, "https://"+tt.addr+"/v1/x")
			var op *net.OpError
			if !errors.As(err, &op) || op.Op != "dial" {
				t.Fatalf("err = %v, want a *net.OpError with Op dial", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want it to wrap %v", err, tt.is)
			}
		})
	}
}

// TestDialChecksTheMemberExpectedAtTheAddress: the per-dial configuration
// is asked with the address dialled, so it can name the member expected
// there; another member answering is refused as a dial error, and its
// server never gets a request or a raft stream.
func TestDialChecksTheMemberExpectedAtTheAddress(t *testing.T) {
	cluster := newTestCluster(t, "node-a", "node-b")
	m := startMux(t, cluster.ids["node-b"], Options{})
	addr := m.Addr().String()
	rec := &hitRecorder{}
	serveHTTP(t, m.RPC(), rec)
	expecting := func(alpn, want string, asked *atomic.Value) ClientTLS {
		return func(a string) *tls.Config {
			asked.Store(a)
			return pki.ClientConfigFor(cluster.ids["node-a"], alpn, want)
		}
	}

	var asked atomic.Value
	wrong := NewRPCClient(expecting(ALPNRPC, "node-c", &asked))
	defer wrong.CloseIdleConnections()
	_, err := get(testContext(t), wrong, "https://"+addr+"/v1/x")
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" || !errors.Is(err, pki.ErrWrongPeer) {
		t.Fatalf("RPC to the wrong member: err = %v, want a dial error wrapping ErrWrongPeer", err)
	}
	if got, _ := asked.Load().(string); got != addr {
		t.Errorf("clientTLS asked for %q, want %q", got, addr)
	}
	right := NewRPCClient(expecting(ALPNRPC, "node-b", &asked))
	defer right.CloseIdleConnections()
	if _, err := get(testContext(t), right, "https://"+addr+"/v1/x"); err != nil {
		t.Fatalf("RPC to the expected member: %v", err)
	}
	if n := rec.hits.Load(); n != 1 {
		t.Errorf("the server got %d requests, want only the expected client's", n)
	}

	stream := m.Raft(addrOf(addr), expecting(ALPNRaft, "node-c", &asked))
	if _, err := stream.Dial(addrOf(addr), time.Second); !errors.Is(err, pki.ErrWrongPeer) {
		t.Fatalf("raft dial to the wrong member: %v", err)
	}
	if c, err := acceptWithin(stream, 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a refused raft dial reached the raft listener")
	}
}

// A raft dial to a peer that never answers (the handshake hangs, as a dial
// to a silent address on the local subnet does for seconds) ends as soon
// as the layer's context ends: a stopping node does not wait for it (raft
// closes its transport only after its goroutines have stopped).
func TestRaftDialEndsWithItsContext(t *testing.T) {
	cluster := newTestCluster(t, "node-a", "node-b")
	m, err := ListenWithOptions("127.0.0.1:0", pki.ServerConfig(cluster.ids["node-a"]), testLogger(t), Options{HandshakeTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never speaks TLS
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithCancel(context.Background())
	layer := m.RaftWithContext(ctx, "127.0.0.1:1", cluster.clientTLS("node-a", ALPNRaft))
	done := make(chan error, 1)
	go func() {
		_, err := layer.Dial(raft.ServerAddress(silent.Addr().String()), time.Minute)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("dial ended before the context: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("dial succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the dial went on after its context ended")
	}
}
