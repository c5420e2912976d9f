package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// weftBinary returns the real weft binary the process-level tests run:
// $WEFT_BIN when set (make test builds it), else one built once for this
// test binary.
func weftBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("WEFT_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "weft-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "weft")
		cmd := exec.Command("go", "build", "-o", builtBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// runWeft runs the binary and returns stdout, stderr and the exit code.
func runWeft(t testing.TB, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(weftBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running weft: %v", err)
	}
	return stdout.String(), stderr.String(), code
}

func TestOneLineErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[cluster]\nvoters = 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"version", "--bogus"}, "unknown flag: --bogus"},
		{"missing config file", []string{"config", "check", filepath.Join(dir, "nope.toml")}, "nope.toml"},
		{"bad config value", []string{"config", "check", bad}, "bad.toml:2: cluster.voters"},
		{"agent with bad config", []string{"agent", "--config", bad}, "bad.toml:2: cluster.voters"},
		{"no agent running", []string{"node", "status", "--socket", filepath.Join(dir, "none.sock")}, "no agent socket at"},
		{"bad output format", []string{"version", "-o", "xml"}, `unsupported output format "xml"`},
		{"config check needs a file", []string{"config", "check"}, "accepts 1 arg(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runWeft(t, nil, tt.args...)
			if code == 0 {
				t.Fatalf("exit 0, want non-zero; stdout=%q", stdout)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want exactly one:\n%s", len(lines), stderr)
			}
			if !strings.HasPrefix(lines[0], "weft: ") || !strings.Contains(lines[0], tt.want) {
				t.Fatalf("stderr = %q, want a weft: line containing %q", lines[0], tt.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	stdout, _, code := runWeft(t, nil, "version")
	if code != 0 || !strings.HasPrefix(stdout, "weft ") || !strings.Contains(stdout, runtime.Version()) {
		t.Fatalf("version: code %d, output %q", code, stdout)
	}
	stdout, _, code = runWeft(t, nil, "version", "-o", "json")
	if code != 0 || !strings.Contains(stdout, `"goVersion"`) {
		t.Fatalf("version -o json: code %d, output %q", code, stdout)
	}
}

func TestCompletion(t *testing.T) {
	stdout, _, code := runWeft(t, nil, "completion", "bash")
	if code != 0 || !strings.Contains(stdout, "__start_weft") {
		t.Fatalf("completion bash: code %d, output starts %q", code, stdout[:min(len(stdout), 80)])
	}
}

func TestConfigCheckExample(t *testing.T) {
	stdout, stderr, code := runWeft(t, nil, "config", "check", "../../config.example.toml")
	if code != 0 {
		t.Fatalf("config check config.example.toml: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"[node]", "[cluster]", "voters = 3", "[[network.pool]]"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("effective config lacks %q", want)
		}
	}
}

// The binary `make build` produces is static (no ELF interpreter) and
// stamped with a version and commit.
func TestBuiltBinaryIsStaticAndStamped(t *testing.T) {
	bin := os.Getenv("WEFT_BIN")
	if bin == "" {
		t.Skip("WEFT_BIN not set: run through `make test`, which builds bin/weft with the Makefile's flags")
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s has an ELF interpreter: not a static binary", bin)
		}
	}
	stdout, _, code := runWeft(t, nil, "version", "-o", "json")
	if code != 0 || strings.Contains(stdout, `"version": "dev"`) || strings.Contains(stdout, `"commit": "unknown"`) {
		t.Fatalf("version not stamped by the build: %s", stdout)
	}
}
