package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// binDirPrefix names the per-test-process directory holding the weft binary
// built for it: <tmp>/wtb-bin-<pid>. Main removes it at exit, Sweep when its
// process is gone.
const binDirPrefix = "wtb-bin-"

// EnvBinary names a prebuilt weft binary; when unset the test bed builds one
// from the module's source, once per test process.
const EnvBinary = "WEFT_BIN"

// weftBinary returns the path of the weft binary to run: $WEFT_BIN, or a
// build of ./cmd/weft made once per test process. The build is shared by the
// process's tests through a file lock rather than package state.
func weftBinary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%s: %w", EnvBinary, err)
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s=%s is not an executable file", EnvBinary, p)
		}
		return abs, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d", binDirPrefix, os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create build dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("build lock: %w", err)
	}
	bin := filepath.Join(dir, "weft")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	// go test puts $GOROOT/bin on the PATH of test binaries.
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no go tool to build weft (set %s): %w", EnvBinary, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin+".tmp", "./cmd/weft")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/weft in %s: %w\n%s", root, err, out)
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		return "", err
	}
	return bin, nil
}

// moduleRoot walks up from the working directory (a package directory under
// go test) to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory; set " + EnvBinary)
		}
		dir = parent
	}
}

// removeOwnBinDir deletes this process's build directory.
func removeOwnBinDir() {
	_ = os.RemoveAll(filepath.Join(os.TempDir(), fmt.Sprintf("%s%d", binDirPrefix, os.Getpid())))
}
