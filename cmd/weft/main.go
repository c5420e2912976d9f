// Command weft is the weft agent, its CLI and its CNI plugin in one binary.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the CLI and returns the process exit status. Every failure is
// reported as exactly one line on stderr.
func run(args []string) int {
	// A CNI runtime runs the binary (as /opt/cni/bin/weft) with CNI_COMMAND
	// set: then it is a CNI plugin, not the CLI.
	if os.Getenv("CNI_COMMAND") != "" {
		return runCNIPlugin()
	}
	root := newRootCommand()
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft: "+oneLine(err.Error()))
		return 1
	}
	return 0
}

// oneLine keeps the first line of a message: the contract is one clear line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
