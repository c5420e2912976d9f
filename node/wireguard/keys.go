package wireguard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/dataplane"
)

// The node's private keys in data_dir, in `wg genkey`'s format (base64 and
// a newline), mode 0600. They never leave the node: only the public keys
// are published.
const (
	// KeyFile holds the current private key.
	KeyFile = "wireguard.key"
	// NextKeyFile holds the key a rotation switches to, until it is
	// published and becomes the current one.
	NextKeyFile = "wireguard.key.next"
)

// Keys is the node's key ring: the current private key and, during a
// rotation, the next one. It is safe for concurrent use: the store writer
// rotates, the device driver reads.
type Keys struct {
	dir string
	now func() time.Time

	mu   sync.Mutex
	cur  key
	next *key
}

type key struct {
	priv, pub dataplane.WireGuardKey
	created   time.Time
}

// OpenKeys loads the key ring from dir, generating the current key the
// first time. A key file that others can read, that is not a regular file
// owned by this user, or that does not hold a key is refused, naming the
// file and the fix: the agent does not start with it.
func OpenKeys(dir string) (*Keys, error) {
	k := &Keys{dir: dir, now: time.Now}
	cur, err := readKey(filepath.Join(dir, KeyFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if cur, err = k.generate(KeyFile); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	k.cur = cur
	next, err := readKey(filepath.Join(dir, NextKeyFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		k.next = &next
	}
	return k, nil
}

// CheckKeyFiles checks the permissions and content of the key files that
// exist in dir, without creating any (`weft config check`, tests).
func CheckKeyFiles(dir string) error {
	for _, name := range []string{KeyFile, NextKeyFile} {
		if _, err := readKey(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// readKey reads one key file, refusing a file that is not the node's own.
func readKey(path string) (key, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return key{}, err
	}
	if !fi.Mode().IsRegular() {
		return key{}, fmt.Errorf("wireguard key file %s is not a regular file (%s): it must be the node's own private key file", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return key{}, fmt.Errorf("wireguard key file %s has mode %#o: it holds this node's private key and must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return key{}, fmt.Errorf("wireguard key file %s is owned by uid %d, not by the agent's uid %d (chown it, or remove it to make a new key)", path, st.Uid, os.Geteuid())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return key{}, fmt.Errorf("wireguard key file: %w", err)
	}
	priv, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return key{}, fmt.Errorf("wireguard key file %s does not hold a WireGuard private key (the base64 output of `wg genkey`): remove it to make a new key", path)
	}
	return key{priv: dataplane.WireGuardKey(priv), pub: dataplane.WireGuardKey(priv.PublicKey()), created: fi.ModTime()}, nil
}

// generate makes a new private key and stores it durably in name.
func (k *Keys) generate(name string) (key, error) {
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return key{}, fmt.Errorf("generating a WireGuard key: %w", err)
	}
	if err := writeFileDurably(filepath.Join(k.dir, name), []byte(priv.String()+"\n")); err != nil {
		return key{}, fmt.Errorf("storing the WireGuard key: %w", err)
	}
	return key{priv: dataplane.WireGuardKey(priv), pub: dataplane.WireGuardKey(priv.PublicKey()), created: k.now()}, nil
}

// writeFileDurably writes data to path (0600) through a temporary file and
// a rename, synced, so a crash leaves the old file or the new one.
func writeFileDurably(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// PrivateKey returns the private key whose public key is pub; with pub
// zero, the current key. It implements the device driver's key ring.
func (k *Keys) PrivateKey(pub dataplane.WireGuardKey) (dataplane.WireGuardKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case pub.IsZero() || pub == k.cur.pub:
		return k.cur.priv, true
	case k.next != nil && pub == k.next.pub:
		return k.next.priv, true
	}
	return dataplane.WireGuardKey{}, false
}

// Current is the current public key and when it was made.
func (k *Keys) Current() (dataplane.WireGuardKey, time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur.pub, k.cur.created
}

// Next is the public key of a rotation in progress.
func (k *Keys) Next() (dataplane.WireGuardKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.next == nil {
		return dataplane.WireGuardKey{}, false
	}
	return k.next.pub, true
}

// StartRotation makes the next key (stored before anything uses it) and
// returns its public key; a rotation already in progress is returned
// as it is.
func (k *Keys) StartRotation() (dataplane.WireGuardKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.next != nil {
		return k.next.pub, nil
	}
	next, err := k.generate(NextKeyFile)
	if err != nil {
		return dataplane.WireGuardKey{}, err
	}
	k.next = &next
	return next.pub, nil
}

// Promote makes the next key the current one (once it is published).
func (k *Keys) Promote() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.next == nil {
		return nil
	}
	if err := os.Rename(filepath.Join(k.dir, NextKeyFile), filepath.Join(k.dir, KeyFile)); err != nil {
		return fmt.Errorf("promoting the next WireGuard key: %w", err)
	}
	if err := syncDir(k.dir); err != nil {
		return fmt.Errorf("promoting the next WireGuard key: %w", err)
	}
	k.cur, k.next = *k.next, nil
	return nil
}
