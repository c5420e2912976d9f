package testbed

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/site"
)

// Namespace is anything that lives in a network namespace of the test bed: a
// *Host, a *Workload, or a bare *Netns such as the site router.
type Namespace interface {
	Netns() *Netns
}

// Netns is one named network namespace of the test bed (/run/netns/<Name>).
type Netns struct {
	site *Site
	ns   *site.Namespace
	// label is the short name used in reports ("h1", "router", "h1/web").
	label string
}

func newNetns(s *Site, ns *site.Namespace) *Netns {
	return &Netns{site: s, ns: ns, label: ns.Label()}
}

// Netns returns n itself, so that a *Netns is a Namespace.
func (n *Netns) Netns() *Netns { return n }

// Name is the namespace's name under /run/netns.
func (n *Netns) Name() string { return n.ns.Name() }

// Label is the short name used in reports ("h1", "router", "h1/web").
func (n *Netns) Label() string { return n.label }

// Path is the namespace's bind mount, e.g. /run/netns/wtb-k3x9q2-h1: what
// `weft workload add --netns PATH` takes.
func (n *Netns) Path() string { return n.ns.Path() }

// Exec runs argv inside the namespace (a host's: in its mount namespace
// too) and returns its standard output; the error carries standard error.
// It times out after a minute.
func (n *Netns) Exec(argv ...string) (string, error) {
	return n.ExecContext(context.Background(), argv...)
}

// ExecContext is Exec with a context.
func (n *Netns) ExecContext(ctx context.Context, argv ...string) (string, error) {
	return n.ns.Output(ctx, "", argv...)
}

// Do runs fn on an OS thread that has entered the namespace, so sockets and
// netlink handles fn creates belong to it. Goroutines that fn starts do not
// inherit the namespace, and fn must not call t.Fatal.
func (n *Netns) Do(fn func() error) error { return n.ns.Do(fn) }

// DialContext opens a connection from inside the namespace.
func (n *Netns) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	return conn, err
}

// HTTPClient returns a client whose connections start inside the namespace.
// Keep-alives are off so that no idle socket keeps a deleted namespace alive.
func (n *Netns) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       n.DialContext,
			DisableKeepAlives: true,
			Proxy:             nil,
		},
	}
}

// SetSysctl writes a value under /proc/sys as seen from the namespace; key is
// the path below /proc/sys, e.g. "net/ipv4/ip_forward" (slashes, because
// interface names may contain dots).
func (n *Netns) SetSysctl(key, value string) error { return n.ns.SetSysctl(key, value) }

// ServeTCP listens on address (e.g. "0.0.0.0:8080" or "[::]:8080") inside
// the namespace until the test ends. Every accepted connection gets the line
// "weft-testbed <label>\n" and is closed: a target for TCP connectivity
// checks that needs no external tool. It returns the bound address.
func (n *Netns) ServeTCP(address string) net.Addr {
	n.site.t.Helper()
	var ln net.Listener
	err := n.Do(func() error {
		l, err := net.Listen("tcp", address)
		ln = l
		return err
	})
	if err != nil {
		n.site.t.Fatalf("testbed: listen on %s in %s: %v", address, n.label, err)
	}
	n.site.addCloser(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(c, "weft-testbed %s\n", n.label)
			c.Close()
		}
	}()
	return ln.Addr()
}

// ReadTCPGreeting connects from n to address and returns the greeting line a
// ServeTCP listener sends; useful to see which namespace answered.
func (n *Netns) ReadTCPGreeting(ctx context.Context, address string) (string, error) {
	c, err := n.DialContext(ctx, "tcp", address)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	} else {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read greeting from %s: %w", address, err)
	}
	return strings.TrimSpace(line), nil
}
