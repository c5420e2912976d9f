package transport

import (
	"crypto/tls"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/store/pki"
)

// testCluster is a CA and the identities issued by it.
type testCluster struct {
	ca  *pki.CA
	ids map[string]*pki.Identity
}

func newTestCluster(t *testing.T, names ...string) *testCluster {
	t.Helper()
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{ca: ca, ids: map[string]*pki.Identity{}}
	for _, n := range names {
		c.ids[n] = c.issue(t, n)
	}
	return c
}

// issue runs the real issuance path: local key, CSR, CA signature.
func (c *testCluster) issue(t *testing.T, name string) *pki.Identity {
	t.Helper()
	keyPEM, err := pki.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(keyPEM, name)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.ca.SignNode(csr, name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(certPEM, keyPEM, c.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// clientTLS returns the per-dial TLS configuration of a member.
func (c *testCluster) clientTLS(name, alpn string) func(string) *tls.Config {
	id := c.ids[name]
	return func(string) *tls.Config { return pki.ClientConfig(id, alpn) }
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startMux listens on loopback for a member and closes the mux when the
// test ends.
func startMux(t *testing.T, id *pki.Identity, opts Options) *Mux {
	t.Helper()
	return startMuxWithConfig(t, pki.ServerConfig(id), opts)
}

func startMuxWithConfig(t *testing.T, conf *tls.Config, opts Options) *Mux {
	t.Helper()
	m, err := ListenWithOptions("127.0.0.1:0", conf, testLogger(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// transportGoroutines lists the stacks of goroutines (other than the
// caller) running code of this package outside its tests.
func transportGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaked []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the calling goroutine comes first
			continue
		}
		for _, line := range strings.Split(g, "\n") {
			if strings.HasPrefix(line, "github.com/weftnet/weft/store/transport.") &&
				!strings.HasPrefix(line, "github.com/weftnet/weft/store/transport.Test") {
				leaked = append(leaked, g)
				break
			}
		}
	}
	return leaked
}

// checkNoLeaks waits until no goroutine of this package is left and the
// goroutine count is back to baseline.
func checkNoLeaks(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked := transportGoroutines()
		n := runtime.NumGoroutine()
		if len(leaked) == 0 && n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutine leak: %d goroutines (baseline %d), %d in transport:\n%s", n, baseline, len(leaked), buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
