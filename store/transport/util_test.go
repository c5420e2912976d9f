package transport

import (
	"errors"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func addrOf(s string) raft.ServerAddress { return raft.ServerAddress(s) }

// dialAdapter lets a table hold StreamLayers with a string address.
type dialAdapter struct{ raft.StreamLayer }

func (d dialAdapter) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	return d.StreamLayer.Dial(raft.ServerAddress(addr), timeout)
}

// acceptWithin accepts one connection or gives up after timeout (the
// pending Accept is released by closing nothing: the caller's listener
// stays usable, and the goroutine ends with the mux).
func acceptWithin(ln net.Listener, timeout time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-time.After(timeout):
		return nil, errors.New("no connection accepted in time")
	}
}
