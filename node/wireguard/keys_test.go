package wireguard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/dataplane"
)

func TestKeysAreMadeOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	k, err := OpenKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.Current()
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v: want mode 0600", fi, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	priv, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil || dataplane.WireGuardKey(priv.PublicKey()) != pub {
		t.Fatalf("file does not hold the key in wg's format: %v", err)
	}
	again, err := OpenKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := again.Current(); p != pub {
		t.Fatal("reopening made a new key")
	}
	if got, ok := again.PrivateKey(dataplane.WireGuardKey{}); !ok || got != dataplane.WireGuardKey(priv) {
		t.Fatal("PrivateKey(zero) is not the current key")
	}
	if _, ok := again.PrivateKey(dataplane.WireGuardKey{1}); ok {
		t.Fatal("found a private key for a foreign public key")
	}
}

// A key file others can read, or that is not a key, or not a regular
// file, keeps the agent from starting with a message naming the file and
// the fix.
func TestBadKeyFilesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(path string)
		want  string
	}{
		{"world readable", func(p string) { os.WriteFile(p, []byte(mustKey(t)+"\n"), 0o644) }, "has mode 0644"},
		{"group readable", func(p string) { os.WriteFile(p, []byte(mustKey(t)+"\n"), 0o640) }, "chmod 600"},
		{"not a key", func(p string) { os.WriteFile(p, []byte("hello\n"), 0o600) }, "does not hold a WireGuard private key"},
		{"a symlink", func(p string) {
			target := filepath.Join(filepath.Dir(p), "elsewhere")
			os.WriteFile(target, []byte(mustKey(t)+"\n"), 0o600)
			os.Symlink(target, p)
		}, "is not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, KeyFile)
			tc.setup(path)
			_, err := OpenKeys(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want one naming %s and %q", err, path, tc.want)
			}
			if err := CheckKeyFiles(dir); err == nil {
				t.Fatal("CheckKeyFiles accepted it")
			}
		})
	}
}

// A rotation stores the next key before anything uses it, both keys are
// found during the rotation (also after a restart), and the promotion
// makes the next key current.
func TestRotationFiles(t *testing.T) {
	dir := t.TempDir()
	k, err := OpenKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := k.Current()
	next, err := k.StartRotation()
	if err != nil || next == old {
		t.Fatalf("next %s, %v", next, err)
	}
	if again, _ := k.StartRotation(); again != next {
		t.Fatal("a second StartRotation made another key")
	}
	restarted, err := OpenKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, pub := range []dataplane.WireGuardKey{old, next} {
		if _, ok := restarted.PrivateKey(pub); !ok {
			t.Fatalf("key %s not found after a restart mid-rotation", pub)
		}
	}
	if n, ok := restarted.Next(); !ok || n != next {
		t.Fatal("the rotation in progress was lost")
	}
	if err := restarted.Promote(); err != nil {
		t.Fatal(err)
	}
	if cur, _ := restarted.Current(); cur != next {
		t.Fatal("promotion did not make the next key current")
	}
	if _, ok := restarted.Next(); ok {
		t.Fatal("still rotating after the promotion")
	}
	final, err := OpenKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := final.Current(); cur != next {
		t.Fatal("the promotion did not reach the disk")
	}
	if _, err := os.Stat(filepath.Join(dir, NextKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("next key file left behind: %v", err)
	}
}

func mustKey(t *testing.T) string {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.String()
}
