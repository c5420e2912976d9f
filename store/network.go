package store

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/weftnet/weft/store/pki"
	"github.com/weftnet/weft/store/transport"
)

// faultInjector lets in-process tests partition nodes: every outgoing raft
// connection and RPC request asks it first, and raft connections are
// registered so that a partition can cut the ones already open. Cutting
// from the dialing side is enough: every connection has a dialer.
type faultInjector interface {
	allow(from, toAddr string) bool
	track(from, toAddr string, c net.Conn)
}

// errPartitioned is what a test partition makes dials fail with.
var errPartitioned = errors.New("link cut by the test harness")

// faultyStream filters a raft StreamLayer through a faultInjector.
type faultyStream struct {
	raft.StreamLayer
	self   string
	faults faultInjector
}

func (s *faultyStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if !s.faults.allow(s.self, string(addr)) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errPartitioned}
	}
	c, err := s.StreamLayer.Dial(addr, timeout)
	if err == nil {
		s.faults.track(s.self, string(addr), c)
	}
	return c, err
}

// faultyRoundTripper refuses requests across a test partition as if the
// dial had failed (so callers treat them as never sent).
type faultyRoundTripper struct {
	http.RoundTripper
	self   string
	faults faultInjector
}

func (rt *faultyRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if !rt.faults.allow(rt.self, r.URL.Host) {
		if ci, ok := rt.RoundTripper.(interface{ CloseIdleConnections() }); ok {
			ci.CloseIdleConnections()
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errPartitioned}
	}
	return rt.RoundTripper.RoundTrip(r)
}

// rpcConnsPerPeer is how many idle RPC connections to one member are kept:
// enough for every concurrent forwarded write to reuse a connection instead
// of paying a TLS handshake.
const rpcConnsPerPeer = 128

// rpcIdleTimeout closes an RPC connection unused this long. Every follower
// that forwarded a write holds such connections to the leader, which keeps
// a goroutine, buffers and the peer's certificate for each: at 50 nodes,
// after the joins, 100 idle connections held about 4 MB of the idle
// leader's 41 MB. The leader's server keeps them longer (5 min), so it is
// always the client that closes, never a request racing a server-side
// close.
const rpcIdleTimeout = 30 * time.Second

// newRPCClient is the mutual-TLS HTTP client for other members' RPC.
func (n *Node) newRPCClient() *http.Client {
	c := transport.NewRPCClient(n.peerTLS(transport.ALPNRPC))
	if t, ok := c.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = rpcConnsPerPeer
		t.MaxIdleConns = 4 * rpcConnsPerPeer
		t.IdleConnTimeout = rpcIdleTimeout
	}
	if n.cfg.faults != nil {
		c.Transport = &faultyRoundTripper{RoundTripper: c.Transport, self: n.name, faults: n.cfg.faults}
	}
	return c
}

// peerTLS is the per-dial client TLS configuration for raft and RPC
// connections to addr. Any certificate of the cluster CA proves membership,
// not which member answers: when the raft configuration lists a member at
// addr, the server must be that member. Otherwise a node that took over a
// dead member's address would receive its replication and status checks,
// be seen as healthy in its place and have its acknowledgements counted
// as the dead member's. Addresses not in the configuration (join hints,
// a node that has no configuration yet) accept any member.
func (n *Node) peerTLS(alpn string) transport.ClientTLS {
	return func(addr string) *tls.Config {
		id := n.identity.Load()
		if id == nil {
			return nil
		}
		return pki.ClientConfigFor(id, alpn, n.memberAt(addr))
	}
}

// memberAt names the member the raft configuration lists at addr, or ""
// when none is (or more than one: a stale configuration cannot say which).
func (n *Node) memberAt(addr string) string {
	r := n.dialRaft.Load()
	if r == nil {
		return ""
	}
	f := r.GetConfiguration() // a copy of raft's latest configuration: no round trip through raft's loop
	if f.Error() != nil {
		return ""
	}
	name := ""
	for _, s := range f.Configuration().Servers {
		if string(s.Address) != addr {
			continue
		}
		if name != "" {
			return ""
		}
		name = string(s.ID)
	}
	return name
}

// raftStream is the StreamLayer raft runs over.
func (n *Node) raftStream() raft.StreamLayer {
	s := n.mux.RaftWithContext(n.ctx, raft.ServerAddress(n.advertise), n.peerTLS(transport.ALPNRaft))
	if n.cfg.faults != nil {
		s = &faultyStream{StreamLayer: s, self: n.name, faults: n.cfg.faults}
	}
	return s
}

// notSent reports whether err means the request never reached the peer (the
// dial failed), so that retrying it elsewhere cannot apply it twice.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, errPartitioned)
}

func peerURL(addr, path string) string { return fmt.Sprintf("https://%s%s", addr, path) }
