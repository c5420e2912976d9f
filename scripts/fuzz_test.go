package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// runFuzzScript runs fuzz.sh with a stand-in for `go` that prints out and
// exits with code, logging the packages and targets it was asked for.
func runFuzzScript(t *testing.T, out string, code int) (string, []string, error) {
	t.Helper()
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	stub := "#!/bin/sh\necho \"$*\" >>" + calls + "\nprintf '%s\\n' '" + out + "'\nexit " + strconv.Itoa(code) + "\n"
	goStub := filepath.Join(dir, "go")
	if err := os.WriteFile(goStub, []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "fuzz.sh")
	cmd.Env = append(os.Environ(), "GO="+goStub, "FUZZTIME=1s")
	b, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(calls)
	return string(b), strings.Split(strings.TrimSpace(string(log)), "\n"), err
}

// Every Fuzz target of the module is run, each for FUZZTIME.
func TestFuzzScriptRunsEveryTarget(t *testing.T) {
	out, calls, err := runFuzzScript(t, "PASS", 0)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"FuzzDecode$ -fuzztime 1s ./api", "FuzzParse$ -fuzztime 1s ./api/selector", "FuzzParse$ -fuzztime 1s ./node/config",
		"FuzzAllocator$ -fuzztime 1s ./ipam", "FuzzBlockArithmetic$ -fuzztime 1s ./ipam"} {
		found := false
		for _, c := range calls {
			found = found || strings.HasSuffix(c, want)
		}
		if !found {
			t.Errorf("no call ending %q in %q", want, calls)
		}
	}
}

// Go 1.26's end-of-fuzztime race (golang/go#75804) is not a finding; a
// failing target is.
func TestFuzzScriptFailures(t *testing.T) {
	out, _, err := runFuzzScript(t, "--- FAIL: FuzzDecode (10.22s)\n    context deadline exceeded\nFAIL", 1)
	if err != nil || !strings.Contains(out, "golang/go#75804") {
		t.Errorf("the deadline race failed the run (%v):\n%s", err, out)
	}
	out, calls, err := runFuzzScript(t, "--- FAIL: FuzzDecode (0.01s)\n    codec_test.go:290: re-decode: boom\n    context deadline exceeded\nFAIL", 1)
	if err == nil || len(calls) != 1 {
		t.Errorf("a real failure passed or did not stop the run (%v, %d calls):\n%s", err, len(calls), out)
	}
}
