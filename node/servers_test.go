package node

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// api.socket names a path the agent owns: a stale socket of a dead agent
// is replaced, a live one refused, and anything that is not a socket is
// refused and left as it is (a typo must never delete a user's file).
func TestListenSocketRefusesWhatIsNotASocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "important.conf")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenSocket(file); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("listen on a regular file: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("the file was touched: %q, %v", b, err)
	}

	sock := filepath.Join(dir, "weft.sock")
	live, err := listenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v, %v", fi.Mode(), err)
	}
	if _, err := listenSocket(sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second agent on a live socket: %v", err)
	}
	// A dead agent's socket is replaced.
	live.(*net.UnixListener).SetUnlinkOnClose(false)
	live.Close()
	again, err := listenSocket(sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	again.Close()
}
