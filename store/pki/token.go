package pki

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// tokenVersion prefixes every token so the format can change later without
// ambiguity.
const tokenVersion = "weft1"

// MinNonceLen is the shortest nonce VerifyProof accepts: a short or empty
// nonce would let a recorded proof be replayed.
const MinNonceLen = 16

// ErrInvalidToken is wrapped by every ParseToken error.
var ErrInvalidToken = errors.New("invalid join token")

// Token is the join token: it pins the cluster CA (SHA-256 of the CA
// certificate DER) so a joiner can check it talks to the right cluster
// before revealing anything, and carries the secret the joiner proves it
// knows.
//
// Its text form is
//
//	weft1.<CA fingerprint: 64 lowercase hex>.<secret: 64 lowercase hex>
//
// Hex was chosen over base32 because the fingerprint then reads exactly like
// `openssl x509 -noout -fingerprint -sha256` output (minus the colons), so an
// operator can check it by hand. ParseToken accepts upper-case hex too and
// ignores surrounding white space (a token read from a file or pasted).
type Token struct {
	CAFingerprint [32]byte
	Secret        [32]byte
}

// NewToken creates a token for ca with a fresh random secret.
func NewToken(ca *CA) (Token, error) {
	t := Token{CAFingerprint: ca.Fingerprint()}
	if _, err := rand.Read(t.Secret[:]); err != nil {
		return Token{}, fmt.Errorf("generate token secret: %w", err)
	}
	return t, nil
}

// String returns the token's text form, secret included; see Token.
func (t Token) String() string {
	return tokenVersion + "." + hex.EncodeToString(t.CAFingerprint[:]) + "." + hex.EncodeToString(t.Secret[:])
}

// LogValue keeps the secret out of logs: slog prints only the fingerprint.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("caFingerprint", hex.EncodeToString(t.CAFingerprint[:])))
}

// ParseToken parses the text form of a token. Errors wrap ErrInvalidToken
// and never quote the secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, fmt.Errorf("%w: token is empty", ErrInvalidToken)
	}
	parts := strings.Split(s, ".")
	if parts[0] != tokenVersion {
		if strings.HasPrefix(parts[0], "weft") && len(parts) == 3 {
			return Token{}, fmt.Errorf("%w: unsupported token version %q (this weft reads %q)", ErrInvalidToken, parts[0], tokenVersion)
		}
		return Token{}, fmt.Errorf("%w: must start with %q", ErrInvalidToken, tokenVersion+".")
	}
	if len(parts) != 3 {
		return Token{}, fmt.Errorf("%w: want %s.<fingerprint>.<secret>, got %d dot-separated parts", ErrInvalidToken, tokenVersion, len(parts))
	}
	var t Token
	if err := decodeHex32(t.CAFingerprint[:], parts[1]); err != nil {
		return Token{}, fmt.Errorf("%w: CA fingerprint %w", ErrInvalidToken, err)
	}
	if err := decodeHex32(t.Secret[:], parts[2]); err != nil {
		return Token{}, fmt.Errorf("%w: secret %w", ErrInvalidToken, err)
	}
	if t.CAFingerprint == ([32]byte{}) {
		return Token{}, fmt.Errorf("%w: CA fingerprint is all zeros", ErrInvalidToken)
	}
	if t.Secret == ([32]byte{}) {
		return Token{}, fmt.Errorf("%w: secret is all zeros", ErrInvalidToken)
	}
	return t, nil
}

// decodeHex32 decodes 64 hex characters into dst. Its errors name the
// position, not the character, so a secret never ends up in a message.
func decodeHex32(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("must be %d hex characters, got %d", 2*len(dst), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return fmt.Errorf("has a non-hex character at position %d", i+1)
		}
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("is not hex: %w", err)
	}
	return nil
}

// Proof is HMAC-SHA256(secret, nonce): what a joiner sends to show it knows
// the secret without sending the secret. The nonce comes from the member
// and must be used once.
func (t Token) Proof(nonce []byte) []byte {
	mac := hmac.New(sha256.New, t.Secret[:])
	mac.Write(nonce)
	return mac.Sum(nil)
}

// VerifyProof reports, in constant time, whether proof is Proof(nonce).
// Nonces shorter than MinNonceLen are refused outright.
func (t Token) VerifyProof(nonce, proof []byte) bool {
	if len(nonce) < MinNonceLen {
		return false
	}
	return hmac.Equal(t.Proof(nonce), proof)
}

// NewNonce returns 32 random bytes for a join challenge.
func NewNonce() ([]byte, error) {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	return nonce, nil
}

// SaveToken writes the token's text form (and a newline) to path,
// atomically, mode 0600.
func SaveToken(path string, t Token) error {
	if err := WriteFileAtomic(path, []byte(t.String()+"\n")); err != nil {
		return fmt.Errorf("save token: %w", err)
	}
	return nil
}

// LoadToken reads a token written by SaveToken (or by hand). A missing file
// gives an error satisfying errors.Is(err, fs.ErrNotExist).
func LoadToken(path string) (Token, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Token{}, fmt.Errorf("read token: %w", err)
	}
	t, err := ParseToken(string(data))
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}
