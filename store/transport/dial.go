package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// ClientTLS returns the TLS configuration for one dial to addr (a member's
// cluster address as written in the raft configuration), or nil when this
// node has no certificate yet (the dial then fails).
type ClientTLS func(addr string) *tls.Config

// DefaultDialTimeout bounds dial plus handshake when the caller gives no
// timeout of its own.
const DefaultDialTimeout = 10 * time.Second

// dialTLS dials addr and completes a TLS handshake offering only alpn, all
// within ctx. The configuration comes from conf(addr) (called per dial, so
// a renewed certificate is used at once, and the configuration may expect
// a particular member at addr); its NextProtos are overridden.
//
// Every failure is a *net.OpError with Op "dial": nothing was sent to the
// peer, so callers (and net/http) may safely retry elsewhere. It returns
// net.Conn (holding a *tls.Conn, which net/http looks for) and a nil
// interface on error, never a typed nil.
func dialTLS(ctx context.Context, addr string, conf ClientTLS, alpn string) (net.Conn, error) {
	dialErr := func(err error) error {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return err // the TCP dial failed; it already says where
		}
		return &net.OpError{Op: "dial", Net: "tcp", Addr: stringAddr(addr), Err: fmt.Errorf("%s: %w", alpn, err)}
	}
	base := conf(addr)
	if base == nil {
		return nil, dialErr(errors.New("no client TLS configuration (node has no certificate yet)"))
	}
	c := base.Clone()
	c.NextProtos = []string{alpn}
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: c}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, dialErr(err)
	}
	tc := conn.(*tls.Conn)
	if got := tc.ConnectionState().NegotiatedProtocol; got != alpn {
		_ = tc.Close()
		return nil, dialErr(fmt.Errorf("server negotiated protocol %q", got))
	}
	return tc, nil
}

// Raft returns the raft StreamLayer of the mux, for
// raft.NewNetworkTransportWithConfig. advertise is this node's raft address
// as the other members dial it (Addr reports it). clientTLS gives the
// configuration for outgoing raft connections, normally
// pki.ClientConfigFor(id, ALPNRaft, <the member expected at addr>); it is
// called per dial.
//
// Closing the StreamLayer (raft does when its transport closes) closes the
// raft sub-listener only, not the mux. Every call shares that one
// sub-listener, so there is one raft transport per mux.
func (m *Mux) Raft(advertise raft.ServerAddress, clientTLS ClientTLS) raft.StreamLayer {
	return m.RaftWithContext(context.Background(), advertise, clientTLS)
}

// RaftWithContext is [Mux.Raft] whose dials are cut off when ctx ends.
// raft closes its transport only after its goroutines have stopped, and a
// replication goroutine may be dialing a peer that is gone (on a local
// subnet a dial to a silent address takes seconds to fail): ending ctx
// first lets a stopping node stop at once.
func (m *Mux) RaftWithContext(ctx context.Context, advertise raft.ServerAddress, clientTLS ClientTLS) raft.StreamLayer {
	return &raftLayer{subListener: m.subs[ALPNRaft], ctx: ctx, advertise: advertise, clientTLS: clientTLS}
}

type raftLayer struct {
	*subListener
	ctx       context.Context
	advertise raft.ServerAddress
	clientTLS ClientTLS
}

// Addr is the advertised address: raft uses it as this node's address.
func (r *raftLayer) Addr() net.Addr { return stringAddr(r.advertise) }

// Dial connects to another member's raft; timeout covers both the TCP dial
// and the TLS handshake.
func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	return dialTLS(ctx, string(address), r.clientTLS, ALPNRaft)
}

// stringAddr is a TCP address kept as written (a host name stays a name).
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }
