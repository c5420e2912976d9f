package store

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/store/pki"
)

// Kinds private to the store (ReservedKindPrefix). Txn from outside
// the store refuses them, registered commands cannot write them, and watches
// without a kind filter do not see them.
const (
	// KindCluster holds the cluster secrets under the name "ca": the CA
	// certificate and key and the join token secret, so that any member can
	// admit a joining node even when the first node is gone.
	KindCluster = "_Cluster"
	// KindMember holds one record per admitted node (by node name). A node
	// may add itself to raft (first join, new address) only while its
	// record exists; RemoveMember deletes it.
	KindMember = "_Member"
)

const clusterSecretsName = "ca"

// clusterSecrets is the value of _Cluster/ca.
type clusterSecrets struct {
	CACert      []byte `json:"caCert"` // PEM
	CAKey       []byte `json:"caKey"`  // PEM
	TokenSecret []byte `json:"tokenSecret"`
}

func (s clusterSecrets) token() (pki.Token, *pki.CA, error) {
	ca, err := pki.LoadCA(s.CACert, s.CAKey)
	if err != nil {
		return pki.Token{}, nil, fmt.Errorf("cluster CA: %w", err)
	}
	if len(s.TokenSecret) != 32 {
		return pki.Token{}, nil, fmt.Errorf("cluster token secret has %d bytes, want 32", len(s.TokenSecret))
	}
	t := pki.Token{CAFingerprint: ca.Fingerprint()}
	copy(t.Secret[:], s.TokenSecret)
	return t, ca, nil
}

func newClusterSecrets(ca *pki.CA, tok pki.Token) clusterSecrets {
	return clusterSecrets{CACert: ca.CertPEM(), CAKey: ca.KeyPEM(), TokenSecret: append([]byte(nil), tok.Secret[:]...)}
}

func clusterSecretsKey() Key { return Key{Kind: KindCluster, Name: clusterSecretsName} }

func memberKey(name string) Key { return Key{Kind: KindMember, Name: name} }

// memberRecord is the value of _Member/<name>.
type memberRecord struct {
	NonVoter bool      `json:"nonVoter,omitempty"`
	Admitted time.Time `json:"admitted"`
}

// Files inside the data directory.
const (
	raftDirName  = "raft"
	raftWALName  = "wal"
	tokenName    = "token"
	seedFileName = "bootstrap-seed.json" // in pki/, until the secrets are replicated
)

func raftDir(dataDir string) string   { return filepath.Join(dataDir, raftDirName) }
func tokenPath(dataDir string) string { return filepath.Join(dataDir, tokenName) }
func seedPath(dataDir string) string  { return filepath.Join(pki.Dir(dataDir), seedFileName) }

// The bootstrap seed keeps the new cluster's secrets on disk between
// creating them and committing them to the replicated state, so that a
// crash in between does not lose the CA key.
func writeSeed(dataDir string, s clusterSecrets) error {
	if err := os.MkdirAll(pki.Dir(dataDir), 0o700); err != nil {
		return fmt.Errorf("write bootstrap seed: %w", err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("write bootstrap seed: %w", err)
	}
	return pki.WriteFileAtomic(seedPath(dataDir), b)
}

func readSeed(dataDir string) (clusterSecrets, bool, error) {
	var s clusterSecrets
	b, err := os.ReadFile(seedPath(dataDir))
	if os.IsNotExist(err) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("read bootstrap seed: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, false, fmt.Errorf("read bootstrap seed %s: %w", seedPath(dataDir), err)
	}
	return s, true, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
