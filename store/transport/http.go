package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/weftnet/weft/store/pki"
)

// NewRPCClient returns an HTTP client for other members' RPC (ALPNRPC):
// HTTP/1.1 over mutual TLS, connections pooled and kept alive. Use https://
// URLs with the member's cluster address; plain http:// is refused. clientTLS
// is normally pki.ClientConfigFor(id, ALPNRPC, <the member expected at
// addr>) and is called per new connection. The client has no overall timeout (watch streams are long):
// bound each request with its context.
func NewRPCClient(clientTLS ClientTLS) *http.Client {
	return &http.Client{Transport: newTransport(clientTLS, ALPNRPC)}
}

// NewJoinClient returns the HTTP client of a joining node (ALPNJoin): no
// client certificate, and the server must present a chain whose CA has the
// pinned fingerprint (checked during the handshake, before any request byte
// is sent). Use https:// URLs; bound requests with their context.
func NewJoinClient(fingerprint [32]byte) *http.Client {
	conf := pki.JoinClientConfig(fingerprint)
	return &http.Client{Transport: newTransport(func(string) *tls.Config { return conf }, ALPNJoin)}
}

// errPlaintext refuses any attempt to talk to a member without TLS.
var errPlaintext = errors.New("weft node-to-node HTTP requires https:// URLs")

func newTransport(clientTLS ClientTLS, alpn string) *http.Transport {
	return &http.Transport{
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
			defer cancel()
			return dialTLS(ctx, addr, clientTLS, alpn)
		},
		// Only used for http:// URLs (DialTLSContext serves https://).
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return nil, errPlaintext
		},
		Proxy:                 nil, // node-to-node traffic never goes through an HTTP proxy
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// PeerNode is the node name of the member that sent an RPC request: the
// name in its verified client certificate. It reports false for a request
// that did not come over a verified mutual TLS connection (e.g. the join
// listener).
func PeerNode(r *http.Request) (string, bool) {
	if r.TLS == nil {
		return "", false
	}
	return peerNode(*r.TLS)
}

// PeerNodeOfConn is PeerNode for a connection accepted from the mux.
func PeerNodeOfConn(c net.Conn) (string, bool) {
	s, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return "", false
	}
	return peerNode(s.ConnectionState())
}

func peerNode(cs tls.ConnectionState) (string, bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return "", false
	}
	name, err := pki.NodeName(cs.PeerCertificates[0])
	if err != nil {
		return "", false
	}
	return name, true
}
