package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCAAndLoadCARoundTrip(t *testing.T) {
	ca := newTestCA(t, testNow)
	cert := ca.Certificate()
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("CA certificate is not a signing CA: IsCA=%v usage=%v", cert.IsCA, cert.KeyUsage)
	}
	if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || cert.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Fatalf("CA key is %T, want ECDSA P-256", cert.PublicKey)
	}
	if want := testNow.Add(-ClockSkew); !cert.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %s, want %s (back-dated by the clock skew)", cert.NotBefore, want)
	}
	if want := testNow.AddDate(20, 0, 0); !cert.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %s, want %s", cert.NotAfter, want)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}

	loaded, err := LoadCA(ca.CertPEM(), ca.KeyPEM())
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() {
		t.Error("loaded CA has a different fingerprint")
	}
	if !bytes.Equal(loaded.KeyPEM(), ca.KeyPEM()) || !bytes.Equal(loaded.CertPEM(), ca.CertPEM()) {
		t.Error("loaded CA PEM differs from the original")
	}
	// The loaded CA must be able to sign certificates the original's
	// pool accepts.
	id := newTestIdentity(t, loaded, "node-a", testNow)
	if _, err := VerifyNodeChain([]*x509.Certificate{id.Certificate()}, poolOf(ca.Certificate()), x509.ExtKeyUsageClientAuth, testNow); err != nil {
		t.Errorf("certificate signed by loaded CA does not verify: %v", err)
	}
	if ca.Fingerprint() != Fingerprint(cert) {
		t.Error("CA.Fingerprint differs from Fingerprint(cert)")
	}
}

func TestLoadCARejects(t *testing.T) {
	ca := newTestCA(t, testNow)
	other := newTestCA(t, testNow)
	node := newTestIdentity(t, ca, "node-a", testNow)
	tests := []struct {
		name    string
		certPEM []byte
		keyPEM  []byte
		want    string
	}{
		{"key of another CA", ca.CertPEM(), other.KeyPEM(), "does not match"},
		{"node certificate is not a CA", node.CertPEM(), node.KeyPEM(), "not a CA"},
		{"garbage certificate", []byte("hello"), ca.KeyPEM(), "no PEM certificate"},
		{"key in the certificate slot", ca.KeyPEM(), ca.KeyPEM(), "unexpected PEM block"},
		{"two certificates", append(ca.CertPEM(), other.CertPEM()...), ca.KeyPEM(), "exactly one"},
		{"garbage key", ca.CertPEM(), []byte("nope"), "no PEM block"},
		{"certificate in the key slot", ca.CertPEM(), ca.CertPEM(), "unexpected PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadCA(tt.certPEM, tt.keyPEM)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadCA error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSignNodeIssuesNodeCertificate(t *testing.T) {
	ca := newTestCA(t, testNow)
	keyPEM, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(keyPEM, "edge-01.site-a")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignNode(csr, "edge-01.site-a", testNow)
	if err != nil {
		t.Fatalf("SignNode: %v", err)
	}
	cert := mustParseCert(t, certPEM)
	if cert.Subject.CommonName != "edge-01.site-a" {
		t.Errorf("CommonName = %q", cert.Subject.CommonName)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "weft://node/edge-01.site-a" {
		t.Errorf("URIs = %v, want [weft://node/edge-01.site-a]", cert.URIs)
	}
	if cert.IsCA {
		t.Error("node certificate is a CA")
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("ExtKeyUsage = %v, want server and client auth", cert.ExtKeyUsage)
	}
	if want := testNow.Add(-ClockSkew); !cert.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %s, want %s", cert.NotBefore, want)
	}
	if want := testNow.AddDate(10, 0, 0); !cert.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %s, want %s", cert.NotAfter, want)
	}
	name, err := NodeName(cert)
	if err != nil || name != "edge-01.site-a" {
		t.Errorf("NodeName = %q, %v", name, err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		t.Error("certificate is not for the CSR's key")
	}
}

func TestVerifyNodeChainTimes(t *testing.T) {
	ca := newTestCA(t, testNow)
	id := newTestIdentity(t, ca, "node-a", testNow)
	chain := []*x509.Certificate{id.Certificate()}
	tests := []struct {
		name string
		now  time.Time
		ok   bool
	}{
		{"at issue", testNow, true},
		{"verifier clock 4 minutes behind (skew allowance)", testNow.Add(-4 * time.Minute), true},
		{"verifier clock 6 minutes behind", testNow.Add(-6 * time.Minute), false},
		{"nine years later", testNow.AddDate(9, 0, 0), true},
		{"after expiry", testNow.AddDate(10, 0, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, err := VerifyNodeChain(chain, poolOf(ca.Certificate()), x509.ExtKeyUsageServerAuth, tt.now)
			if tt.ok && (err != nil || name != "node-a") {
				t.Fatalf("VerifyNodeChain = %q, %v; want node-a", name, err)
			}
			if !tt.ok && !errors.Is(err, ErrPeerRejected) {
				t.Fatalf("VerifyNodeChain error = %v, want ErrPeerRejected", err)
			}
		})
	}
}

func TestNodeCertificateNeverOutlivesCA(t *testing.T) {
	ca := newTestCA(t, testNow)
	late := testNow.AddDate(15, 0, 0) // CA has 5 years left
	id := newTestIdentity(t, ca, "node-a", late)
	if got, want := id.Certificate().NotAfter, ca.Certificate().NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter = %s, want capped at the CA's %s", got, want)
	}
}

func TestCertificateFromAnotherCARefused(t *testing.T) {
	ours := newTestCA(t, testNow)
	theirs := newTestCA(t, testNow)
	foreign := newTestIdentity(t, theirs, "node-a", testNow)
	chain := []*x509.Certificate{foreign.Certificate(), theirs.Certificate()}
	_, err := VerifyNodeChain(chain, poolOf(ours.Certificate()), x509.ExtKeyUsageClientAuth, testNow)
	if !errors.Is(err, ErrPeerRejected) {
		t.Fatalf("foreign chain accepted (err = %v)", err)
	}
	// The foreign CA in the presented chain must not make it trusted, even
	// pinned by fingerprint: only our fingerprint counts.
	if _, err := VerifyPinnedChain(chain, ours.Fingerprint(), testNow); !errors.Is(err, ErrPeerRejected) {
		t.Fatalf("VerifyPinnedChain accepted a foreign chain (err = %v)", err)
	}
	if name, err := VerifyPinnedChain(chain, theirs.Fingerprint(), testNow); err != nil || name != "node-a" {
		t.Fatalf("VerifyPinnedChain with the right pin = %q, %v", name, err)
	}
}

func TestSignNodeRejects(t *testing.T) {
	ca := newTestCA(t, testNow)
	keyPEM, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(keyPEM, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	// Same length, different name: the signed bytes change, the signature
	// no longer matches.
	tampered := bytes.Replace(csr, []byte("node-a"), []byte("node-b"), -1)
	if bytes.Equal(tampered, csr) {
		t.Fatal("test setup: name not found in CSR")
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-a"}}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		csr  []byte
		node string
		now  time.Time
		want string
	}{
		{"bad signature", tampered, "node-b", testNow, "CSR signature"},
		{"not a CSR", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, "node-a", testNow, "parse CSR"},
		{"CSR for another node", csr, "node-b", testNow, `CSR is for "node-a"`},
		{"invalid node name", csr, "Node_A", testNow, "not allowed"},
		{"RSA key", rsaCSR, "node-a", testNow, "unsupported public key"},
		{"CA expired", csr, "node-a", testNow.AddDate(21, 0, 0), "CA expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ca.SignNode(tt.csr, tt.node, tt.now)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SignNode = %d bytes, %v; want error containing %q", len(got), err, tt.want)
			}
		})
	}
}

func TestNewCSRRejects(t *testing.T) {
	keyPEM, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewCSR(keyPEM, ""); err == nil {
		t.Error("NewCSR accepted an empty name")
	}
	if _, err := NewCSR([]byte("garbage"), "node-a"); err == nil {
		t.Error("NewCSR accepted a garbage key")
	}
}

func TestParsePrivateKeyFormats(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewCSR(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), "node-a"); err != nil {
		t.Errorf("SEC 1 EC key refused: %v", err)
	}
	weak, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weakDER, err := x509.MarshalPKCS8PrivateKey(weak)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewCSR(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: weakDER}), "node-a"); err == nil || !strings.Contains(err.Error(), "P-224") {
		t.Errorf("P-224 key: err = %v, want refusal naming the curve", err)
	}
}

func TestNodeName(t *testing.T) {
	ca := newTestCA(t, testNow)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(uris ...string) *x509.Certificate {
		t.Helper()
		tmpl := &x509.Certificate{
			SerialNumber: big1(),
			Subject:      pkix.Name{CommonName: "x"},
			NotBefore:    testNow,
			NotAfter:     testNow.Add(time.Hour),
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		for _, u := range uris {
			parsed, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, parsed)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	tests := []struct {
		name string
		uris []string
		want string // "" = error
	}{
		{"node URI", []string{"weft://node/a1"}, "a1"},
		{"other URIs ignored", []string{"spiffe://x/y", "weft://node/a1"}, "a1"},
		{"no URI", nil, ""},
		{"only a foreign URI", []string{"spiffe://node/a1"}, ""},
		{"two node URIs", []string{"weft://node/a1", "weft://node/a2"}, ""},
		{"empty name", []string{"weft://node/"}, ""},
		{"invalid name", []string{"weft://node/A_1"}, ""},
		{"nested path", []string{"weft://node/a/b"}, ""},
		{"query", []string{"weft://node/a1?x=1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := issue(tt.uris...)
			got, err := NodeName(cert)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("NodeName = %q, want an error", got)
				}
				// Such a certificate must also be refused as a peer even
				// though the CA signed it.
				if _, err := VerifyNodeChain([]*x509.Certificate{cert}, poolOf(ca.cert), x509.ExtKeyUsageClientAuth, testNow); !errors.Is(err, ErrPeerRejected) {
					t.Fatalf("VerifyNodeChain error = %v, want ErrPeerRejected", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NodeName = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := NodeName(nil); err == nil {
		t.Error("NodeName(nil) succeeded")
	}
}

func TestValidateNodeName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"node-1", true},
		{"edge-01.site-a.example", true},
		{"0node", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a.", 126) + "a", true}, // 253 characters
		{"", false},
		{strings.Repeat("a", 64), false},
		{strings.Repeat("a.", 126) + "ab", false}, // 254 characters
		{"Node", false},
		{"node_1", false},
		{"-node", false},
		{"node-", false},
		{"a..b", false},
		{".a", false},
		{"a.", false},
		{"a/b", false},
		{"a b", false},
		{"nöde", false},
	}
	for _, tt := range tests {
		err := ValidateNodeName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateNodeName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
