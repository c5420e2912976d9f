// Package fwlab is the kernel-test bench of the firewall backends: a node
// namespace with two workload namespaces behind veths named like weft
// workload interfaces, TCP listeners and dials with deadlines.
package fwlab

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// Lab is a node namespace with two workload namespaces, A (10.77.1.2) and
// B (10.77.2.2), each behind a veth whose host side is named like a weft
// workload interface (prefix "weft"), routed through the node.
type Lab struct {
	Node, A, B   *nstest.NS
	IfA, IfB     string
	AddrA, AddrB netip.Addr

	mu      sync.Mutex
	closers []func()
}

// New builds a lab; everything goes when the test ends.
func New(t testing.TB) *Lab {
	t.Helper()
	l := &Lab{Node: nstest.New(t, "n"), A: nstest.New(t, "a"), B: nstest.New(t, "b")}
	var err error
	if l.IfA, err = dataplane.WorkloadIfaceName("weft", "t", "a"); err != nil {
		t.Fatal(err)
	}
	l.IfB, _ = dataplane.WorkloadIfaceName("weft", "t", "b")
	l.AddrA, l.AddrB = netip.MustParseAddr("10.77.1.2"), netip.MustParseAddr("10.77.2.2")
	nstest.Veth(t, l.Node, l.IfA, netip.MustParsePrefix("10.77.1.1/24"), l.A, "eth0", netip.MustParsePrefix("10.77.1.2/24"))
	nstest.Veth(t, l.Node, l.IfB, netip.MustParsePrefix("10.77.2.1/24"), l.B, "eth0", netip.MustParsePrefix("10.77.2.2/24"))
	l.Node.Sysctl("net/ipv4/ip_forward", "1")
	l.A.Run("ip", "route", "add", "default", "via", "10.77.1.1")
	l.B.Run("ip", "route", "add", "default", "via", "10.77.2.1")
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, c := range l.closers {
			c()
		}
	})
	return l
}

// Serve accepts TCP connections on port in ns, echoing what they send,
// until the test ends.
func (l *Lab) Serve(t testing.TB, ns *nstest.NS, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.closers = append(l.closers, func() { ln.Close() })
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						c.Close()
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
}

// Dial reports whether a TCP handshake from ns to addr:port succeeds
// within 1.5 s (SYNs are resent at 1 s: a loaded machine may need the
// second).
func Dial(ns *nstest.NS, addr netip.Addr, port int) bool {
	var ok bool
	ns.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(addr, uint16(port)).String(), 1500*time.Millisecond)
		if err == nil {
			ok = true
			c.Close()
		}
		return nil
	})
	return ok
}
