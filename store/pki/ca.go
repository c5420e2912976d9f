// Package pki holds weft's cluster public-key infrastructure: the cluster
// CA, node keys and certificates, the join token, the on-disk identity and
// the TLS configurations every node-to-node connection uses.
//
// Identity is the node name carried in a URI SAN (weft://node/<name>), not
// an IP address: a node that comes back with a new address is still itself.
// Only the standard library's crypto is used.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

const (
	// ClockSkew is how far NotBefore is back-dated on every certificate:
	// edge boxes often boot with a clock a little behind the node that
	// signed their certificate, and a certificate that is "not yet valid"
	// for a few minutes would keep them out of the cluster.
	ClockSkew = 5 * time.Minute

	caValidityYears   = 20
	nodeValidityYears = 10

	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
	pemECKey       = "EC PRIVATE KEY"
	pemCSR         = "CERTIFICATE REQUEST"
)

// CA is the cluster certificate authority: a self-signed ECDSA P-256
// certificate and its key. Every member holds it (it is replicated in the
// store) so any member can admit a joining node.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// NewCA creates a cluster CA valid for 20 years from now (NotBefore is
// back-dated by ClockSkew).
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "weft cluster CA", Organization: []string{"weft"}},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.AddDate(caValidityYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Node certificates are signed directly by the CA; there are
		// no intermediates, so forbid them.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return LoadCA(pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), keyPEM)
}

// LoadCA parses a CA from its PEM certificate and PEM private key and checks
// that they belong together and that the certificate is a CA.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("CA certificate: want exactly one certificate, got %d", len(certs))
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, errors.New("CA certificate: not a CA (basic constraints)")
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("CA certificate: key usage does not allow signing certificates")
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	return &CA{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw}),
		keyPEM:  append([]byte(nil), keyPEM...),
	}, nil
}

// CertPEM returns the CA certificate in PEM form (safe to share).
func (c *CA) CertPEM() []byte { return append([]byte(nil), c.certPEM...) }

// KeyPEM returns the CA private key in PEM form. It is a secret.
func (c *CA) KeyPEM() []byte { return append([]byte(nil), c.keyPEM...) }

// Certificate returns the parsed CA certificate. Callers must not modify it.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Fingerprint is the SHA-256 of the CA certificate's DER encoding: what a
// join token pins.
func (c *CA) Fingerprint() [32]byte { return Fingerprint(c.cert) }

// Fingerprint returns the SHA-256 of a certificate's DER encoding.
func Fingerprint(cert *x509.Certificate) [32]byte { return sha256.Sum256(cert.Raw) }

// SignNode issues a node certificate for the public key in a PKCS#10 CSR
// (DER). The CSR's own signature must verify (proof that the requester holds
// the key) and its CommonName, if set, must equal nodeName. The certificate
// has CommonName = nodeName, the URI SAN weft://node/<nodeName>, server and
// client auth, and is valid for 10 years (but never beyond the CA) with
// NotBefore back-dated by ClockSkew. Anything else the CSR asks for (other
// SANs, extensions) is ignored.
func (c *CA) SignNode(csrDER []byte, nodeName string, now time.Time) (certPEM []byte, err error) {
	if err := ValidateNodeName(nodeName); err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	if err := checkNodePublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	if csr.Subject.CommonName != "" && csr.Subject.CommonName != nodeName {
		return nil, fmt.Errorf("CSR is for %q, not for node %q", csr.Subject.CommonName, nodeName)
	}
	if !now.Before(c.cert.NotAfter) {
		return nil, fmt.Errorf("cluster CA expired at %s", c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.AddDate(nodeValidityYears, 0, 0)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeName, Organization: []string{"weft"}},
		URIs:         []*url.URL{NodeURI(nodeName)},
		NotBefore:    now.Add(-ClockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		// Explicitly not a CA: a node certificate must never sign others.
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("sign node certificate for %q: %w", nodeName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), nil
}

// NewNodeKey generates a node's private key (ECDSA P-256) as PKCS#8 PEM. It
// never leaves the node; only a CSR for it is sent.
func NewNodeKey() (keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate node key: %w", err)
	}
	return encodeKey(key)
}

// NewCSR builds a PKCS#10 certificate request (DER) for nodeName signed with
// the given PEM private key.
func NewCSR(keyPEM []byte, nodeName string) ([]byte, error) {
	if err := ValidateNodeName(nodeName); err != nil {
		return nil, err
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: nodeName},
		URIs:    []*url.URL{NodeURI(nodeName)},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR for %q: %w", nodeName, err)
	}
	return der, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	// Serial numbers must be positive; zero is possible (if astronomically
	// unlikely) from rand.Int.
	return serial.Add(serial, big.NewInt(1)), nil
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// parsePrivateKey accepts PKCS#8 ("PRIVATE KEY") and SEC 1 ("EC PRIVATE
// KEY") PEM, so keys made by openssl work too.
func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case pemPrivateKey:
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 key: %w", err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		if err := checkNodePublicKey(signer.Public()); err != nil {
			return nil, err
		}
		return signer, nil
	case pemECKey:
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse EC key: %w", err)
		}
		if err := checkNodePublicKey(key.Public()); err != nil {
			return nil, err
		}
		return key, nil
	default:
		return nil, fmt.Errorf("unexpected PEM block %q, want %q", block.Type, pemPrivateKey)
	}
}

// checkNodePublicKey restricts keys to the modern, small ones TLS 1.3 handles
// well; RSA and weak curves are refused.
func checkNodePublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("unsupported ECDSA curve %s (want P-256 or P-384)", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("unsupported public key type %T (want ECDSA P-256/P-384 or Ed25519)", pub)
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// parseCertificates decodes every CERTIFICATE block; other blocks are an
// error so a key pasted into a certificate file is noticed.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("unexpected PEM block %q, want %q", block.Type, pemCertificate)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}
