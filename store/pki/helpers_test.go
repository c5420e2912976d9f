package pki

import (
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

// testNow is a fixed instant so certificate dates are predictable.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestCA(t *testing.T, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

// newTestIdentity runs the real issuance path: local key, CSR, CA signature.
func newTestIdentity(t *testing.T, ca *CA, name string, now time.Time) *Identity {
	t.Helper()
	keyPEM, err := NewNodeKey()
	if err != nil {
		t.Fatalf("NewNodeKey: %v", err)
	}
	csr, err := NewCSR(keyPEM, name)
	if err != nil {
		t.Fatalf("NewCSR: %v", err)
	}
	certPEM, err := ca.SignNode(csr, name, now)
	if err != nil {
		t.Fatalf("SignNode: %v", err)
	}
	id, err := NewIdentity(certPEM, keyPEM, ca.CertPEM())
	if err != nil {
		t.Fatalf("NewIdentity: %v", err)
	}
	return id
}

func mustParseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	certs, err := parseCertificates(certPEM)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return certs[0]
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func big1() *big.Int { return big.NewInt(1) }
