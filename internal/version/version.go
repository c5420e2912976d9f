// Package version carries the build's version and commit, stamped by the
// Makefile with -ldflags -X.
package version

import "runtime"

// Set at link time: -X github.com/weftnet/weft/internal/version.Version=v0.1.0
var (
	Version = "dev"
	Commit  = "unknown"
)

// Info is what `weft version` prints.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build information of this binary.
func Get() Info {
	return Info{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}
