package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ALPN protocol names: they split the one cluster port into raft streams,
// node-to-node RPC and the join endpoint. transport re-exports them.
const (
	ALPNRaft = "weft-raft/1"
	ALPNRPC  = "weft-rpc/1"
	ALPNJoin = "weft-join/1"
)

// ErrPeerRejected is wrapped by every refusal of a peer certificate (wrong
// CA, expired, no node name, CA fingerprint not the pinned one).
var ErrPeerRejected = errors.New("peer rejected")

// VerifyNodeChain verifies a certificate chain as presented in TLS (leaf
// first, then any intermediates/CA) against roots at time now, for the given
// extended key usage, and returns the node name of the leaf. Host names are
// not checked: a node's identity is its name, not its address.
func VerifyNodeChain(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", fmt.Errorf("%w: no certificate presented", ErrPeerRejected)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return "", fmt.Errorf("%w: %w", ErrPeerRejected, err)
	}
	name, err := NodeName(chain[0])
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrPeerRejected, err)
	}
	return name, nil
}

// ServerConfig is the TLS configuration of the cluster port for a node with
// identity id. See ServerConfigFunc.
func ServerConfig(id *Identity) *tls.Config {
	return ServerConfigFunc(func() *Identity { return id })
}

// ServerConfigFunc is the TLS configuration of the cluster port; current is
// asked for the node's identity on every handshake, so a renewed certificate
// (or one obtained after start) takes effect without restarting the
// listener. current may return nil while the node has none: handshakes then
// fail.
//
// TLS 1.3 only. The client must offer one of the weft ALPNs. For ALPNRaft
// and ALPNRPC the client must present a certificate that chains to the
// cluster CA and carries a node name; for ALPNJoin no client certificate is
// asked for (the joiner has none yet). The server always presents its node
// certificate followed by its CA so a joiner can check the CA fingerprint.
// Session tickets are off so every connection is verified afresh.
func ServerConfigFunc(current func() *Identity) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{ALPNRaft, ALPNRPC, ALPNJoin},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			alpn, ok := pickALPN(hello.SupportedProtos)
			if !ok {
				return nil, fmt.Errorf("client offered no weft protocol (ALPN %q)", hello.SupportedProtos)
			}
			id := current()
			if id == nil {
				return nil, errors.New("this node has no certificate yet")
			}
			return serverConfigFor(id, alpn), nil
		},
	}
}

// pickALPN returns the client's most preferred weft protocol.
func pickALPN(offered []string) (string, bool) {
	for _, p := range offered {
		switch p {
		case ALPNRaft, ALPNRPC, ALPNJoin:
			return p, true
		}
	}
	return "", false
}

func serverConfigFor(id *Identity, alpn string) *tls.Config {
	c := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{id.tlsCert},
		NextProtos:             []string{alpn},
		SessionTicketsDisabled: true,
	}
	if alpn == ALPNJoin {
		c.ClientAuth = tls.NoClientCert
		return c
	}
	// Client certificates carry no host name, so the standard chain
	// verification (roots = cluster CAs, client-auth usage) is all that
	// is needed; the node name is checked on top.
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.ClientCAs = id.pool
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol != alpn {
			return fmt.Errorf("negotiated protocol %q, want %q", cs.NegotiatedProtocol, alpn)
		}
		if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: no verified client certificate", ErrPeerRejected)
		}
		if _, err := NodeName(cs.PeerCertificates[0]); err != nil {
			return fmt.Errorf("%w: %w", ErrPeerRejected, err)
		}
		return nil
	}
	return c
}

// ErrWrongPeer is wrapped when the member that answered at an address is
// not the one the caller expected there (ClientConfigFor): a valid member
// of the cluster, but another one. It is not an ErrPeerRejected: the peer
// does belong to this cluster.
var ErrWrongPeer = errors.New("another member answered")

// ClientConfig is the TLS configuration for dialing another member with the
// given ALPN (ALPNRaft or ALPNRPC) when any member may answer: see
// ClientConfigFor.
func ClientConfig(id *Identity, alpn string) *tls.Config {
	return ClientConfigFor(id, alpn, "")
}

// ClientConfigFor is the TLS configuration for dialing the member named
// want (empty: any member) with the given ALPN (ALPNRaft or ALPNRPC): it
// presents this node's certificate and accepts the server only if its
// chain verifies against the cluster CA bundle, allows server auth and
// carries a node name, and, when want is set, that name is want (so that a
// node that took over another member's address cannot pose as it).
// Standard host name verification is replaced by that check
// (InsecureSkipVerify only turns off the host name based default;
// VerifyConnection does the real work), and as it runs inside the
// handshake, nothing is sent to a refused server.
func ClientConfigFor(id *Identity, alpn, want string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		// Always send our certificate, even if the server's list of
		// acceptable CAs does not name ours: the server then logs a clear
		// "unknown authority" instead of "no certificate".
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &id.tlsCert, nil
		},
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != alpn {
				return fmt.Errorf("server negotiated protocol %q, want %q", cs.NegotiatedProtocol, alpn)
			}
			name, err := VerifyNodeChain(cs.PeerCertificates, id.pool, x509.ExtKeyUsageServerAuth, time.Now())
			if err != nil {
				return err
			}
			if want != "" && name != want {
				return fmt.Errorf("%w: node %q answered where member %q was expected", ErrWrongPeer, name, want)
			}
			return nil
		},
	}
}

// JoinClientConfig is the TLS configuration of a joining node, which has no
// certificate yet. It accepts the server only if the chain it presents
// contains a CA whose fingerprint is the one pinned in the join token and
// the server's certificate verifies against that CA. The check runs inside
// the handshake (VerifyConnection), so against an impostor the handshake
// fails and not one application byte — in particular no proof of the token
// secret — is sent.
func JoinClientConfig(fingerprint [32]byte) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPNJoin},
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != ALPNJoin {
				return fmt.Errorf("server negotiated protocol %q, want %q", cs.NegotiatedProtocol, ALPNJoin)
			}
			_, err := VerifyPinnedChain(cs.PeerCertificates, fingerprint, time.Now())
			return err
		},
	}
}

// VerifyPinnedChain verifies a server chain (leaf first) against the CA
// among the rest of the chain whose fingerprint is pinned, and returns the
// server's node name.
func VerifyPinnedChain(chain []*x509.Certificate, pinned [32]byte, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", fmt.Errorf("%w: no certificate presented", ErrPeerRejected)
	}
	for _, c := range chain[1:] {
		if c.IsCA && Fingerprint(c) == pinned {
			roots := x509.NewCertPool()
			roots.AddCert(c)
			return VerifyNodeChain(chain, roots, x509.ExtKeyUsageServerAuth, now)
		}
	}
	return "", fmt.Errorf("%w: the server's CA is not the one pinned by the join token (wrong cluster, or not a weft member)", ErrPeerRejected)
}
