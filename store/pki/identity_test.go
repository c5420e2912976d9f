package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentitySaveLoadRoundTrip(t *testing.T) {
	ca := newTestCA(t, testNow)
	id := newTestIdentity(t, ca, "node-a", testNow)
	dataDir := t.TempDir()
	dir := Dir(dataDir)
	if dir != filepath.Join(dataDir, "pki") {
		t.Fatalf("Dir = %q", dir)
	}
	if err := id.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("identity dir mode %v, want 0700", info.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if got := strings.Join(names, ","); got != "ca.crt,node.crt,node.key" {
		t.Errorf("files = %s, want exactly ca.crt,node.crt,node.key (no temporary files left)", got)
	}

	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatalf("LoadIdentity: %v", err)
	}
	if loaded.Name() != "node-a" {
		t.Errorf("Name = %q", loaded.Name())
	}
	if !loaded.Certificate().Equal(id.Certificate()) {
		t.Error("loaded certificate differs")
	}
	if !bytes.Equal(loaded.KeyPEM(), id.KeyPEM()) || !bytes.Equal(loaded.CAPEM(), id.CAPEM()) || !bytes.Equal(loaded.CertPEM(), id.CertPEM()) {
		t.Error("loaded PEM differs")
	}
	if loaded.CAFingerprint() != ca.Fingerprint() {
		t.Error("CAFingerprint is not the issuing CA's")
	}
}

func TestSaveTightensExistingDirectory(t *testing.T) {
	ca := newTestCA(t, testNow)
	id := newTestIdentity(t, ca, "node-a", testNow)
	dir := filepath.Join(t.TempDir(), "pki")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v after Save, want 0700", info.Mode().Perm())
	}
	// Saving again (e.g. a renewed certificate) replaces the files.
	renewed := newTestIdentity(t, ca, "node-a", testNow.AddDate(1, 0, 0))
	if err := renewed.Save(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Certificate().Equal(renewed.Certificate()) {
		t.Error("second Save did not replace the certificate")
	}
}

func TestLoadIdentityMissing(t *testing.T) {
	_, err := LoadIdentity(filepath.Join(t.TempDir(), "pki"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadIdentity of a missing dir: %v, want fs.ErrNotExist", err)
	}
}

func TestNewIdentityRejects(t *testing.T) {
	ca := newTestCA(t, testNow)
	other := newTestCA(t, testNow)
	a := newTestIdentity(t, ca, "node-a", testNow)
	b := newTestIdentity(t, ca, "node-b", testNow)
	tests := []struct {
		name                string
		certPEM, keyPEM, ca []byte
		want                string
	}{
		{"key of another node", a.CertPEM(), b.KeyPEM(), ca.CertPEM(), "does not match"},
		{"CA that did not sign it", a.CertPEM(), a.KeyPEM(), other.CertPEM(), "not signed by any CA"},
		{"node certificate as CA", a.CertPEM(), a.KeyPEM(), b.CertPEM(), "not a CA"},
		{"CA certificate as node certificate", ca.CertPEM(), ca.KeyPEM(), ca.CertPEM(), "URI"},
		{"empty CA bundle", a.CertPEM(), a.KeyPEM(), nil, "no PEM certificate"},
		{"garbage key", a.CertPEM(), []byte("x"), ca.CertPEM(), "no PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewIdentity(tt.certPEM, tt.keyPEM, tt.ca)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewIdentity error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestIdentityTrustsWholeCABundle(t *testing.T) {
	oldCA := newTestCA(t, testNow)
	newCA := newTestCA(t, testNow)
	id := newTestIdentity(t, newCA, "node-a", testNow)
	bundle := append(oldCA.CertPEM(), newCA.CertPEM()...)
	withBundle, err := NewIdentity(id.CertPEM(), id.KeyPEM(), bundle)
	if err != nil {
		t.Fatalf("NewIdentity with a two-CA bundle: %v", err)
	}
	if withBundle.CAFingerprint() != newCA.Fingerprint() {
		t.Error("issuer not found in the bundle")
	}
	peer := newTestIdentity(t, oldCA, "node-b", testNow)
	if _, err := VerifyNodeChain([]*x509.Certificate{peer.Certificate()}, withBundle.CAPool(), x509.ExtKeyUsageClientAuth, testNow); err != nil {
		t.Errorf("peer of the old CA refused by a bundle that contains it: %v", err)
	}
}
