package node

import (
	"net"

	"golang.org/x/sys/unix"
)

// listenUnixPrivate listens on a unix socket created under umask 077, so
// the socket file is never group- or world-accessible, not even briefly.
// The umask is process-wide, but the agent creates its socket during start
// before any other goroutine creates files.
func listenUnixPrivate(path string) (net.Listener, error) {
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	return net.Listen("unix", path)
}
