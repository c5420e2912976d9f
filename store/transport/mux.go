// Package transport serves weft's one cluster port: a TCP listener whose
// TLS 1.3 connections are split by ALPN into raft streams, node-to-node RPC
// (HTTP/1.1) and the join endpoint (HTTP/1.1, no client certificate).
//
// Every handshake runs in its own goroutine under a deadline, so a client
// that connects and says nothing holds up nobody.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/weftnet/weft/store/pki"
)

// ALPN protocol names of the three services on the cluster port.
const (
	ALPNRaft = pki.ALPNRaft
	ALPNRPC  = pki.ALPNRPC
	ALPNJoin = pki.ALPNJoin
)

// Defaults for Options.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultBacklog          = 64
)

// Options tunes a Mux; the zero value means the defaults.
type Options struct {
	// HandshakeTimeout bounds a connection's TLS handshake (and, after
	// it, the wait for a full sub-listener to make room).
	HandshakeTimeout time.Duration
	// Backlog is how many handshaken connections each sub-listener holds
	// before they are accepted.
	Backlog int
}

// Mux owns the cluster listener and hands each connection, once its TLS
// handshake is done, to the sub-listener for its ALPN.
type Mux struct {
	ln               net.Listener
	tlsConf          *tls.Config
	log              *slog.Logger
	handshakeTimeout time.Duration

	// ctx is cancelled by Close; it interrupts handshakes in flight.
	ctx    context.Context
	cancel context.CancelFunc

	subs map[string]*subListener

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Listen listens on addr (cluster.listen) with default Options. tlsConf is
// normally pki.ServerConfig or pki.ServerConfigFunc; to swap certificates at
// runtime give it a GetConfigForClient (ServerConfigFunc does).
func Listen(addr string, tlsConf *tls.Config, log *slog.Logger) (*Mux, error) {
	return ListenWithOptions(addr, tlsConf, log, Options{})
}

// ListenWithOptions is Listen with explicit Options.
func ListenWithOptions(addr string, tlsConf *tls.Config, log *slog.Logger, opts Options) (*Mux, error) {
	if tlsConf == nil {
		return nil, errors.New("transport: no TLS configuration")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.Backlog <= 0 {
		opts.Backlog = DefaultBacklog
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on cluster address %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		ln:               ln,
		tlsConf:          tlsConf,
		log:              log.With("listen", ln.Addr().String()),
		handshakeTimeout: opts.HandshakeTimeout,
		ctx:              ctx,
		cancel:           cancel,
		subs:             make(map[string]*subListener, 3),
	}
	for _, alpn := range []string{ALPNRaft, ALPNRPC, ALPNJoin} {
		m.subs[alpn] = newSubListener(ln.Addr(), opts.Backlog)
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

// Addr is the address the mux listens on.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// RPC is the listener of node-to-node RPC connections (ALPNRPC); serve it
// with net/http (http.Server.Serve). The client certificate of every
// connection has been verified against the cluster CA; PeerNode names the
// peer. Every call returns the same listener; once closed it stays closed.
func (m *Mux) RPC() net.Listener { return m.subs[ALPNRPC] }

// Join is the listener of join connections (ALPNJoin): TLS without a client
// certificate. Serve it with net/http.
func (m *Mux) Join() net.Listener { return m.subs[ALPNJoin] }

// Close stops listening, interrupts handshakes in flight, closes the
// sub-listeners (pending and future Accept calls return an error satisfying
// errors.Is(err, net.ErrClosed)) and waits for the mux's goroutines to end.
// Connections already accepted belong to their acceptor and stay open.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		m.closeErr = m.ln.Close()
		for _, s := range m.subs {
			_ = s.Close()
		}
		m.wg.Wait()
	})
	return m.closeErr
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Probably out of file descriptors: back off as net/http
			// does rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-m.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		m.wg.Add(1)
		go m.serveConn(conn)
	}
}

// serveConn handshakes one connection and routes it by ALPN.
func (m *Mux) serveConn(raw net.Conn) {
	defer m.wg.Done()
	deadline := time.Now().Add(m.handshakeTimeout)
	ctx, cancel := context.WithDeadline(m.ctx, deadline)
	defer cancel()
	// The context interrupts the handshake; the conn deadline is a second
	// line of defence that also covers writes blocked on a full socket.
	_ = raw.SetDeadline(deadline)

	remote := raw.RemoteAddr().String()
	tc := tls.Server(raw, m.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		m.logHandshakeError(remote, err)
		return
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		_ = tc.Close()
		return
	}
	cs := tc.ConnectionState()
	sub, ok := m.subs[cs.NegotiatedProtocol]
	if !ok {
		m.log.Debug("closing connection without a weft protocol", "remote", remote, "alpn", cs.NegotiatedProtocol)
		_ = tc.Close()
		return
	}
	// Defence in depth: whatever TLS configuration the mux was given, raft
	// and RPC connections are only ever handed over with a verified client
	// certificate.
	if cs.NegotiatedProtocol != ALPNJoin && len(cs.VerifiedChains) == 0 {
		m.log.Warn("refusing connection without a verified client certificate", "remote", remote, "alpn", cs.NegotiatedProtocol)
		_ = tc.Close()
		return
	}
	if err := sub.deliver(ctx, &acceptedConn{tc}); errors.Is(err, errBacklogFull) && m.ctx.Err() == nil {
		m.log.Warn("dropping connection: not accepted in time", "remote", remote, "alpn", cs.NegotiatedProtocol)
	}
}

func (m *Mux) logHandshakeError(remote string, err error) {
	if m.ctx.Err() != nil {
		return
	}
	// A certificate refusal is worth an operator's attention (a node of
	// another cluster, an expired certificate); timeouts and port scans are
	// not.
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) || errors.Is(err, pki.ErrPeerRejected) {
		m.log.Warn("refused TLS peer", "remote", remote, "err", err)
		return
	}
	m.log.Debug("TLS handshake failed", "remote", remote, "err", err)
}

// acceptedConn is a handshaken TLS connection. It deliberately is not a
// *tls.Conn: net/http's server, given a *tls.Conn whose ALPN is anything but
// http/1.x, looks only for a TLSNextProto handler and otherwise drops the
// connection; a conn that merely has ConnectionState is served as HTTP/1.1
// with Request.TLS filled in.
type acceptedConn struct {
	*tls.Conn
}

// subListener is the net.Listener of one ALPN.
type subListener struct {
	addr      net.Addr
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newSubListener(addr net.Addr, backlog int) *subListener {
	return &subListener{addr: addr, conns: make(chan net.Conn, backlog), done: make(chan struct{})}
}

// Accept returns the next connection, or net.ErrClosed once the listener or
// the mux is closed.
func (l *subListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, l.closedErr()
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.closedErr()
	}
}

func (l *subListener) closedErr() error {
	return &net.OpError{Op: "accept", Net: l.addr.Network(), Addr: l.addr, Err: net.ErrClosed}
}

// Close closes this listener only; the mux and its other listeners go on.
// Connections waiting to be accepted are closed.
func (l *subListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.drain()
	})
	return nil
}

func (l *subListener) Addr() net.Addr { return l.addr }

// errBacklogFull means a connection waited in vain for a sub-listener to
// make room.
var errBacklogFull = errors.New("sub-listener backlog full")

// deliver queues c for Accept, waiting for room until ctx ends. If c is not
// handed over it is closed, and the error says why.
func (l *subListener) deliver(ctx context.Context, c net.Conn) error {
	select {
	case l.conns <- c:
		// Close may have drained the queue just before c landed in it;
		// then nobody else will ever take c out.
		select {
		case <-l.done:
			l.drain()
		default:
		}
		return nil
	case <-l.done:
		_ = c.Close()
		return net.ErrClosed
	case <-ctx.Done():
		_ = c.Close()
		return errBacklogFull
	}
}

func (l *subListener) drain() {
	for {
		select {
		case c := <-l.conns:
			_ = c.Close()
		default:
			return
		}
	}
}
