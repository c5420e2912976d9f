package e2e

import (
	"fmt"
	"testing"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/internal/testtier"
)

// TestMain: the whole package is the end-to-end tier. Under -short (make
// test-unit) it runs nothing at all; otherwise every test needs root (and
// fails instead of skipping without it under make test: testtier).
func TestMain(m *testing.M) {
	if testtier.ShortMain() {
		fmt.Println("e2e: the end-to-end tier does not run with -short (make test-unit)")
		return
	}
	testbed.Main(m)
}
