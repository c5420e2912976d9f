// Command baseline is the floor the foundation benchmark compares weft
// against: a static Go binary that starts, serves one HTTP endpoint and
// idles — the cost of the Go runtime alone.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("baseline")
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = http.Serve(l, http.NotFoundHandler())
}
