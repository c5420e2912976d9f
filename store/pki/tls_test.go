package pki

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// handshakeResult is what each side of a test handshake saw.
type handshakeResult struct {
	serverErr   error
	serverState tls.ConnectionState
	clientErr   error
	clientState tls.ConnectionState
}

// handshake runs one TLS connection over loopback TCP. After its handshake
// the server writes one byte, and the client reads it: in TLS 1.3 the client
// finishes its handshake before the server has checked the client's
// certificate, so a refusal by the server only shows up on that read.
func handshake(t *testing.T, server, client *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var res handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(conn, server)
		if res.serverErr = tc.Handshake(); res.serverErr != nil {
			return
		}
		res.serverState = tc.ConnectionState()
		_, res.serverErr = tc.Write([]byte{1})
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, client)
	res.clientErr = tc.Handshake()
	if res.clientErr == nil {
		res.clientState = tc.ConnectionState()
		_, res.clientErr = tc.Read(make([]byte, 1))
	}
	_ = conn.Close() // unblock the server if the client gave up first
	<-done
	return res
}

func TestMutualTLSBetweenNodes(t *testing.T) {
	ca := newTestCA(t, time.Now())
	a := newTestIdentity(t, ca, "node-a", time.Now())
	b := newTestIdentity(t, ca, "node-b", time.Now())
	for _, alpn := range []string{ALPNRaft, ALPNRPC} {
		t.Run(alpn, func(t *testing.T) {
			res := handshake(t, ServerConfig(a), ClientConfig(b, alpn))
			if res.serverErr != nil || res.clientErr != nil {
				t.Fatalf("handshake failed: server %v, client %v", res.serverErr, res.clientErr)
			}
			if res.serverState.Version != tls.VersionTLS13 {
				t.Errorf("version %x, want TLS 1.3", res.serverState.Version)
			}
			if res.serverState.NegotiatedProtocol != alpn {
				t.Errorf("ALPN %q, want %q", res.serverState.NegotiatedProtocol, alpn)
			}
			if name, _ := NodeName(res.serverState.PeerCertificates[0]); name != "node-b" {
				t.Errorf("server sees peer %q, want node-b", name)
			}
			if len(res.serverState.VerifiedChains) == 0 {
				t.Error("server has no verified client chain")
			}
			if name, _ := NodeName(res.clientState.PeerCertificates[0]); name != "node-a" {
				t.Errorf("client sees peer %q, want node-a", name)
			}
			if len(res.clientState.PeerCertificates) != 2 || Fingerprint(res.clientState.PeerCertificates[1]) != ca.Fingerprint() {
				t.Error("server did not present its CA after its certificate")
			}
		})
	}
}

func TestForeignCertificatesRefused(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	foreignCA := newTestCA(t, now)
	member := newTestIdentity(t, ca, "node-a", now)
	outsider := newTestIdentity(t, foreignCA, "node-a", now) // same name, other cluster

	for _, alpn := range []string{ALPNRaft, ALPNRPC} {
		t.Run("server refuses foreign client "+alpn, func(t *testing.T) {
			// The outsider skips checking the server, so the refusal must
			// come from the server.
			client := ClientConfig(outsider, alpn)
			client.VerifyConnection = nil
			res := handshake(t, ServerConfig(member), client)
			if res.serverErr == nil || res.clientErr == nil {
				t.Fatalf("foreign client accepted: server %v, client %v", res.serverErr, res.clientErr)
			}
			var verr *tls.CertificateVerificationError
			if !errors.As(res.serverErr, &verr) {
				t.Errorf("server error %v, want a certificate verification error", res.serverErr)
			}
		})
		t.Run("client refuses foreign server "+alpn, func(t *testing.T) {
			res := handshake(t, ServerConfig(outsider), ClientConfig(member, alpn))
			if !errors.Is(res.clientErr, ErrPeerRejected) {
				t.Fatalf("client error %v, want ErrPeerRejected", res.clientErr)
			}
		})
		t.Run("server refuses client without certificate "+alpn, func(t *testing.T) {
			res := handshake(t, ServerConfig(member), &tls.Config{
				MinVersion: tls.VersionTLS13, NextProtos: []string{alpn}, InsecureSkipVerify: true,
			})
			if res.serverErr == nil || res.clientErr == nil {
				t.Fatalf("anonymous client accepted on %s", alpn)
			}
		})
	}
}

func TestClientRefusesAnotherMemberThanExpected(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	a := newTestIdentity(t, ca, "node-a", now)
	b := newTestIdentity(t, ca, "node-b", now)
	c := newTestIdentity(t, ca, "node-c", now)
	for _, alpn := range []string{ALPNRaft, ALPNRPC} {
		// node-c sits where node-b was expected: refused, and not mistaken
		// for a node of another cluster.
		res := handshake(t, ServerConfig(c), ClientConfigFor(a, alpn, "node-b"))
		if !errors.Is(res.clientErr, ErrWrongPeer) || errors.Is(res.clientErr, ErrPeerRejected) {
			t.Errorf("%s: client error %v, want ErrWrongPeer only", alpn, res.clientErr)
		}
		if res.serverErr == nil {
			t.Errorf("%s: the server completed a connection the client refused", alpn)
		}
		if res := handshake(t, ServerConfig(b), ClientConfigFor(a, alpn, "node-b")); res.clientErr != nil || res.serverErr != nil {
			t.Errorf("%s: the expected member refused: client %v, server %v", alpn, res.clientErr, res.serverErr)
		}
		if res := handshake(t, ServerConfig(c), ClientConfigFor(a, alpn, "")); res.clientErr != nil || res.serverErr != nil {
			t.Errorf("%s: any member should do without an expectation: client %v, server %v", alpn, res.clientErr, res.serverErr)
		}
	}
}

func TestExpiredServerCertificateRefused(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now.AddDate(-15, 0, 0))
	old := newTestIdentity(t, ca, "node-old", now.AddDate(-11, 0, 0)) // expired a year ago
	client := newTestIdentity(t, ca, "node-b", now)
	res := handshake(t, ServerConfig(old), ClientConfig(client, ALPNRaft))
	if !errors.Is(res.clientErr, ErrPeerRejected) || !strings.Contains(res.clientErr.Error(), "expired") {
		t.Fatalf("client error %v, want an expiry refusal", res.clientErr)
	}
}

func TestJoinHandshake(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	other := newTestCA(t, now)
	member := newTestIdentity(t, ca, "node-a", now)

	t.Run("right fingerprint, no client certificate", func(t *testing.T) {
		res := handshake(t, ServerConfig(member), JoinClientConfig(ca.Fingerprint()))
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("join handshake failed: server %v, client %v", res.serverErr, res.clientErr)
		}
		if len(res.serverState.PeerCertificates) != 0 {
			t.Error("joiner sent a client certificate")
		}
		if res.serverState.NegotiatedProtocol != ALPNJoin {
			t.Errorf("ALPN %q", res.serverState.NegotiatedProtocol)
		}
	})
	t.Run("wrong fingerprint", func(t *testing.T) {
		res := handshake(t, ServerConfig(member), JoinClientConfig(other.Fingerprint()))
		if !errors.Is(res.clientErr, ErrPeerRejected) {
			t.Fatalf("client error %v, want ErrPeerRejected", res.clientErr)
		}
		if res.serverErr == nil {
			t.Fatal("server completed a handshake the client aborted")
		}
	})
	t.Run("impostor presenting the real CA certificate", func(t *testing.T) {
		// An impostor can copy the cluster CA certificate into its chain,
		// but cannot have its own certificate signed by it.
		impostor := newTestIdentity(t, other, "node-a", now)
		cfg := ServerConfig(impostor)
		inner := cfg.GetConfigForClient
		cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := inner(h)
			if err != nil {
				return nil, err
			}
			cert := c.Certificates[0]
			cert.Certificate = [][]byte{cert.Certificate[0], ca.Certificate().Raw}
			c.Certificates = []tls.Certificate{cert}
			return c, nil
		}
		res := handshake(t, cfg, JoinClientConfig(ca.Fingerprint()))
		if !errors.Is(res.clientErr, ErrPeerRejected) {
			t.Fatalf("client error %v, want ErrPeerRejected", res.clientErr)
		}
	})
}

func TestServerRefusesMissingOrUnknownALPN(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	member := newTestIdentity(t, ca, "node-a", now)
	for _, protos := range [][]string{nil, {"h2", "http/1.1"}} {
		client := ClientConfig(member, ALPNRaft)
		client.NextProtos = protos
		res := handshake(t, ServerConfig(member), client)
		if res.serverErr == nil || res.clientErr == nil {
			t.Errorf("ALPN %q accepted", protos)
		}
	}
}

func TestServerConfigFuncSwapsIdentity(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	first := newTestIdentity(t, ca, "node-a", now)
	renewed := newTestIdentity(t, ca, "node-a", now)
	client := newTestIdentity(t, ca, "node-b", now)
	var current atomic.Pointer[Identity]
	cfg := ServerConfigFunc(current.Load)

	res := handshake(t, cfg, ClientConfig(client, ALPNRPC))
	if res.serverErr == nil || res.clientErr == nil {
		t.Fatal("handshake succeeded without a server identity")
	}
	for _, id := range []*Identity{first, renewed} {
		current.Store(id)
		res := handshake(t, cfg, ClientConfig(client, ALPNRPC))
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake failed: server %v, client %v", res.serverErr, res.clientErr)
		}
		if !res.clientState.PeerCertificates[0].Equal(id.Certificate()) {
			t.Fatal("server did not present the current certificate")
		}
	}
}
