package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Names inside the identity directory, <data_dir>/pki.
const (
	DirName  = "pki"
	CAFile   = "ca.crt"
	CertFile = "node.crt"
	KeyFile  = "node.key"
)

// Dir is the identity directory inside a data directory: <dataDir>/pki.
func Dir(dataDir string) string { return filepath.Join(dataDir, DirName) }

// Identity is what a node presents and trusts: its certificate and key and
// the cluster CA bundle. It is immutable; a renewed certificate is a new
// Identity.
type Identity struct {
	name    string
	cert    *x509.Certificate
	issuer  *x509.Certificate
	pool    *x509.CertPool
	tlsCert tls.Certificate
	certPEM []byte
	keyPEM  []byte
	caPEM   []byte
}

// NewIdentity builds an identity from PEM: the node certificate (first
// CERTIFICATE block), its private key and the CA bundle (one or more CA
// certificates: several are trusted at once so a CA can be rotated). It
// checks that the key matches the certificate, that the certificate carries
// a node name and that one of the CAs signed it. Validity dates are not
// checked here — a node whose clock is off must still be able to start and
// report the problem; the TLS handshakes check them.
func NewIdentity(certPEM, keyPEM, caPEM []byte) (*Identity, error) {
	certs, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	cert := certs[0]
	name, err := NodeName(cert)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("node key does not match the node certificate")
	}
	cas, err := parseCertificates(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	var issuer *x509.Certificate
	for _, ca := range cas {
		if !ca.IsCA {
			return nil, fmt.Errorf("CA bundle: certificate %q is not a CA", ca.Subject.CommonName)
		}
		pool.AddCert(ca)
		if issuer == nil && cert.CheckSignatureFrom(ca) == nil {
			issuer = ca
		}
	}
	if issuer == nil {
		return nil, fmt.Errorf("node certificate for %q is not signed by any CA in the bundle", name)
	}
	return &Identity{
		name:   name,
		cert:   cert,
		issuer: issuer,
		pool:   pool,
		// The chain includes the CA so a joiner can compute the CA
		// fingerprint from what the server presents.
		tlsCert: tls.Certificate{
			Certificate: [][]byte{cert.Raw, issuer.Raw},
			PrivateKey:  crypto.PrivateKey(key),
			Leaf:        cert,
		},
		certPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw}),
		keyPEM:  append([]byte(nil), keyPEM...),
		caPEM:   append([]byte(nil), caPEM...),
	}, nil
}

// LoadIdentity reads ca.crt, node.crt and node.key from dir (the identity
// directory, normally Dir(dataDir)). When the node has no identity yet the
// error satisfies errors.Is(err, fs.ErrNotExist).
func LoadIdentity(dir string) (*Identity, error) {
	read := func(name string) ([]byte, error) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("load identity: %w", err)
		}
		return data, nil
	}
	// node.crt is written last by Save, so read it first: if it is missing
	// the node never finished getting an identity.
	certPEM, err := read(CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(KeyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := read(CAFile)
	if err != nil {
		return nil, err
	}
	id, err := NewIdentity(certPEM, keyPEM, caPEM)
	if err != nil {
		return nil, fmt.Errorf("load identity from %s: %w", dir, err)
	}
	return id, nil
}

// Save writes the identity into dir (created 0700; its mode is forced to
// 0700 if it already existed), each file atomically with mode 0600. node.crt
// goes last so that LoadIdentity never sees a certificate without its key.
func (id *Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{CAFile, id.caPEM}, {KeyFile, id.keyPEM}, {CertFile, id.certPEM}} {
		if err := WriteFileAtomic(filepath.Join(dir, f.name), f.data); err != nil {
			return fmt.Errorf("save identity: %w", err)
		}
	}
	return nil
}

// Name is the node name from the certificate.
func (id *Identity) Name() string { return id.name }

// Certificate is the parsed node certificate. Callers must not modify it.
func (id *Identity) Certificate() *x509.Certificate { return id.cert }

// CAPool is the pool of trusted cluster CAs. Callers must not modify it.
func (id *Identity) CAPool() *x509.CertPool { return id.pool }

// CAFingerprint is the fingerprint of the CA that signed this node's
// certificate.
func (id *Identity) CAFingerprint() [32]byte { return Fingerprint(id.issuer) }

// CertPEM, KeyPEM and CAPEM return the PEM the identity was built from (the
// key is a secret).
func (id *Identity) CertPEM() []byte { return append([]byte(nil), id.certPEM...) }
func (id *Identity) KeyPEM() []byte  { return append([]byte(nil), id.keyPEM...) }
func (id *Identity) CAPEM() []byte   { return append([]byte(nil), id.caPEM...) }
