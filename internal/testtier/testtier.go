// Package testtier sorts weft's tests into the tiers the Makefile runs, so
// that each target means what it says:
//
//   - unit: everything that needs neither root nor the kernel's networking
//     nor external tools. `make test-unit` (go test -short) runs only this
//     tier, fast, also as root on a machine without nft or ethtool.
//   - kernel: tests that create network namespaces and program them
//     ([Kernel]; the helpers of internal/netns/nstest call it).
//   - end-to-end: real agents on a site of namespaces ([EndToEnd];
//     internal/testbed calls it, and the e2e package runs nothing under
//     -short, see [ShortMain]).
//
// Under -short kernel and end-to-end tests skip before touching anything.
// Otherwise they need root and their tools: a plain `go test` skips them
// with the reason when either is missing, while `make test`, which sets
// EnvStrict, fails instead: there every tier must run (CI installs the
// tools with `make deps`).
package testtier

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// EnvStrict, set to 1 (as `make test` does), turns a kernel or end-to-end
// test that cannot run (not root, a tool missing) into a failure instead of
// a skip.
const EnvStrict = "WEFT_TEST_STRICT"

// Long marks t as a long unit test: it needs nothing but takes seconds of
// wall time (a fault-injection run checked for linearizability, a wait
// on a BGP hold timer, a cluster taken through a partition). Skipped
// under -short so that `make test-unit` stays fast; `make test` runs it.
func Long(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("long-running unit test: skipped under -short, `make test` runs it")
	}
}

// Kernel marks t as a kernel test: skipped under -short; otherwise it needs
// root and the given tools on PATH.
func Kernel(t testing.TB, tools ...string) {
	t.Helper()
	require(t, "kernel", tools)
}

// EndToEnd marks t as an end-to-end test: skipped under -short; otherwise it
// needs root and the given tools on PATH.
func EndToEnd(t testing.TB, tools ...string) {
	t.Helper()
	require(t, "end-to-end", tools)
}

func require(t testing.TB, tier string, tools []string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s test: not run with -short (make test-unit runs the unit tier)", tier)
	}
	if os.Geteuid() != 0 {
		unavailable(t, "%s test: needs root to create network namespaces", tier)
	}
	Tools(t, tools...)
}

// Tools makes sure every tool is on PATH: a test without one skips, or
// fails under EnvStrict.
func Tools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "needs %q on PATH (%v)", tool, err)
		}
	}
}

// Strict reports whether EnvStrict is set.
func Strict() bool { return os.Getenv(EnvStrict) == "1" }

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (%s=1: every tier must run here; install the tools with `make deps`)", msg, EnvStrict)
	}
	t.Skip(msg)
}

// ShortMain is for a TestMain whose whole package is one root tier (e2e):
// it parses the test flags and reports whether -short is set, in which case
// TestMain should return without running anything.
func ShortMain() bool {
	if !flag.Parsed() {
		flag.Parse()
	}
	return testing.Short()
}
