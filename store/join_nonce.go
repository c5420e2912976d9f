package store

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// Join nonces are stateless: a nonce is its issue time, random bytes and
// a MAC of both under a key that never leaves this node, so checking one
// needs no memory of having issued it. A cache of issued nonces would let
// an unauthenticated client asking for nonces in a loop evict a real
// joiner's nonce between its two requests and have its join refused.
//
// A nonce stays valid for its whole lifetime rather than once: the proof
// that uses it is bound to the joiner's name and CSR, and TLS keeps it
// from anyone else, so a replay could only fetch again the certificate of
// a key the replayer does not hold.
const (
	nonceTimeLen = 8
	nonceRandLen = 16
	nonceLen     = nonceTimeLen + nonceRandLen + sha256.Size

	// nonceTTL is how long a joiner has between asking for a nonce and
	// sending its proof.
	nonceTTL = time.Minute
	// nonceClockStep tolerates this node's clock stepping back between
	// issuing a nonce and checking it.
	nonceClockStep = 5 * time.Second
)

// joinNonces issues and checks this node's join nonces.
type joinNonces struct {
	key [32]byte
	ttl time.Duration
}

// newJoinNonces returns an issuer with a fresh random key: nonces issued
// before a restart are no longer valid (the joiner asks for a new one).
func newJoinNonces(ttl time.Duration) (*joinNonces, error) {
	j := &joinNonces{ttl: ttl}
	if _, err := rand.Read(j.key[:]); err != nil {
		return nil, fmt.Errorf("join nonce key: %w", err)
	}
	return j, nil
}

// issue returns a new nonce stamped with now.
func (j *joinNonces) issue(now time.Time) ([]byte, error) {
	nonce := make([]byte, nonceTimeLen+nonceRandLen, nonceLen)
	binary.BigEndian.PutUint64(nonce, uint64(now.UnixNano()))
	if _, err := rand.Read(nonce[nonceTimeLen:]); err != nil {
		return nil, fmt.Errorf("join nonce: %w", err)
	}
	return j.sign(nonce), nil
}

// sign appends the MAC of body to it.
func (j *joinNonces) sign(body []byte) []byte {
	m := hmac.New(sha256.New, j.key[:])
	m.Write([]byte("weft-join-nonce\x00"))
	m.Write(body)
	return m.Sum(body)
}

// check accepts a nonce this node issued less than ttl before now. A
// refusal is an ErrConflict: the joiner should ask for a new nonce and
// try again, not give up.
func (j *joinNonces) check(nonce []byte, now time.Time) error {
	stale := func(why string) error {
		return fmt.Errorf("%w: join nonce %s: ask for a new one", ErrConflict, why)
	}
	if len(nonce) != nonceLen {
		return stale("unknown")
	}
	body := nonce[:nonceTimeLen+nonceRandLen]
	if !hmac.Equal(j.sign(append([]byte(nil), body...)), nonce) {
		return stale("unknown (not issued by this member, or before it restarted)")
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(nonce)))
	if age := now.Sub(issued); age > j.ttl || age < -nonceClockStep {
		return stale(fmt.Sprintf("expired (issued %v ago)", age.Round(time.Second)))
	}
	return nil
}
