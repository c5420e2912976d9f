package pki

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func newTestToken(t *testing.T) Token {
	t.Helper()
	tok, err := NewToken(newTestCA(t, testNow))
	if err != nil {
		t.Fatalf("NewToken: %v", err)
	}
	return tok
}

func TestTokenStringParseRoundTrip(t *testing.T) {
	ca := newTestCA(t, testNow)
	tok, err := NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAFingerprint != ca.Fingerprint() {
		t.Error("token does not pin the CA")
	}
	if tok.Secret == ([32]byte{}) {
		t.Error("token secret is zero")
	}
	s := tok.String()
	if !regexp.MustCompile(`^weft1\.[0-9a-f]{64}\.[0-9a-f]{64}$`).MatchString(s) {
		t.Fatalf("token %q does not have the documented form", s)
	}
	for _, in := range []string{s, "  " + s + "\n", s[:6] + strings.ToUpper(s[6:])} {
		got, err := ParseToken(in)
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", in, err)
		}
		if got != tok {
			t.Fatalf("ParseToken(%q) = %+v, want %+v", in, got, tok)
		}
	}
	other, err := NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	if other.Secret == tok.Secret {
		t.Error("two tokens share a secret")
	}
}

func TestParseTokenErrors(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	secret := strings.Repeat("5e", 32)
	zeros := strings.Repeat("0", 64)
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "token is empty"},
		{"only white space", " \n\t", "token is empty"},
		{"no prefix", fp + "." + secret, `must start with "weft1."`},
		{"other product", "kube1." + fp + "." + secret, `must start with "weft1."`},
		{"future version", "weft2." + fp + "." + secret, `unsupported token version "weft2"`},
		{"prefix only", "weft1", "got 1 dot-separated parts"},
		{"two parts", "weft1." + fp, "got 2 dot-separated parts"},
		{"four parts", "weft1." + fp + "." + secret + ".x", "got 4 dot-separated parts"},
		{"fingerprint short", "weft1." + fp[:62] + "." + secret, "CA fingerprint must be 64 hex characters, got 62"},
		{"fingerprint long", "weft1." + fp + "00." + secret, "CA fingerprint must be 64 hex characters, got 66"},
		{"fingerprint not hex", "weft1." + "zz" + fp[2:] + "." + secret, "CA fingerprint has a non-hex character at position 1"},
		{"secret short", "weft1." + fp + "." + secret[:10], "secret must be 64 hex characters, got 10"},
		{"secret empty", "weft1." + fp + ".", "secret must be 64 hex characters, got 0"},
		{"secret not hex", "weft1." + fp + "." + secret[:63] + "g", "secret has a non-hex character at position 64"},
		{"space inside", "weft1." + fp + ". " + secret[1:], "secret has a non-hex character at position 1"},
		{"zero fingerprint", "weft1." + zeros + "." + secret, "CA fingerprint is all zeros"},
		{"zero secret", "weft1." + fp + "." + zeros, "secret is all zeros"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.in)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("ParseToken error = %v, want ErrInvalidToken", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseToken error = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret[:16]) {
				t.Fatalf("error %q leaks the secret", err)
			}
		})
	}
}

func TestTokenProof(t *testing.T) {
	tok := newTestToken(t)
	other := newTestToken(t)
	nonce, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	nonce2, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(nonce, nonce2) {
		t.Fatal("NewNonce repeated itself")
	}
	proof := tok.Proof(nonce)
	if len(proof) != 32 {
		t.Fatalf("proof is %d bytes, want 32 (HMAC-SHA256)", len(proof))
	}
	if !tok.VerifyProof(nonce, proof) {
		t.Fatal("valid proof refused")
	}
	flipped := bytes.Clone(proof)
	flipped[0] ^= 1
	tests := []struct {
		name         string
		nonce, proof []byte
	}{
		{"other nonce", nonce2, proof},
		{"other secret", nonce, other.Proof(nonce)},
		{"flipped bit", nonce, flipped},
		{"truncated", nonce, proof[:16]},
		{"empty proof", nonce, nil},
		{"short nonce", nonce[:MinNonceLen-1], tok.Proof(nonce[:MinNonceLen-1])},
		{"empty nonce", nil, tok.Proof(nil)},
	}
	for _, tt := range tests {
		if tok.VerifyProof(tt.nonce, tt.proof) {
			t.Errorf("%s: proof accepted", tt.name)
		}
	}
	// A proof must not be the secret itself or depend only on the nonce.
	if bytes.Equal(proof, tok.Secret[:]) || bytes.Equal(tok.Proof(nonce), other.Proof(nonce)) {
		t.Error("proof does not depend on the secret")
	}
}

func TestTokenLogValueHidesSecret(t *testing.T) {
	tok := newTestToken(t)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("joined", "token", tok)
	out := buf.String()
	secretHex := tok.String()[len("weft1.")+65:]
	if strings.Contains(out, secretHex) {
		t.Fatalf("log line leaks the secret: %s", out)
	}
	if !strings.Contains(out, tok.String()[len("weft1."):len("weft1.")+64]) {
		t.Fatalf("log line does not show the fingerprint: %s", out)
	}
}

func TestSaveLoadToken(t *testing.T) {
	tok := newTestToken(t)
	path := filepath.Join(t.TempDir(), "data", "token")
	if err := SaveToken(path, tok); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", info.Mode().Perm())
	}
	dirInfo, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if dirInfo.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v, want 0700", dirInfo.Mode().Perm())
	}
	got, err := LoadToken(path)
	if err != nil || got != tok {
		t.Fatalf("LoadToken = %+v, %v", got, err)
	}
	if _, err := LoadToken(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadToken of a missing file: %v, want fs.ErrNotExist", err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("weft1.nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadToken(bad); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("LoadToken of a bad file: %v, want ErrInvalidToken", err)
	}
}
