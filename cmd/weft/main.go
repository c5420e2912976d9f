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

// oneLine puts a message on one line, its lines joined with "; ": the
// contract is one clear line, and a detail on a second line (a parser's
// "line 3: key already set") must not be dropped.
func oneLine(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		switch {
		case b.Len() == 0:
		case strings.HasSuffix(b.String(), ":"):
			b.WriteString(" ")
		default:
			b.WriteString("; ")
		}
		b.WriteString(l)
	}
	return b.String()
}
