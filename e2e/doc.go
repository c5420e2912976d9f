// Package e2e holds weft's end-to-end tests: real `weft agent` processes on
// hosts built by internal/testbed (network namespaces on a bridge), checked
// from the outside through their sockets, /readyz and the network.
//
// They are the end-to-end tier (internal/testtier): under -short (make
// test-unit) the package runs nothing; otherwise they need root and
// iproute2, and skip without them (fail under make test). The weft binary
// comes from $WEFT_BIN or is built once per run from ./cmd/weft. Run them
// with
//
//	go test ./e2e/ -count=1
//
// An interrupted run leaves namespaces named wtb-*; the next run of any
// package using the test bed sweeps them (testbed.Sweep).
package e2e
