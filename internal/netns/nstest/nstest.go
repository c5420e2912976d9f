// Package nstest gives kernel tests fresh, uniquely named network
// namespaces that are removed when the test ends, whatever happens. Every
// helper is a kernel-tier test gate (testtier.Kernel): skipped under -short,
// needing root otherwise.
package nstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/testtier"
)

// NS is a named network namespace owned by one test.
type NS struct {
	Name    string
	Path    string
	t       testing.TB
	deleted bool
}

// New creates a namespace named after the test, the pid and a random
// suffix, with lo up, and deletes it in t.Cleanup. It skips t under -short
// and fails or skips it without root (testtier.Kernel).
func New(t testing.TB, role string) *NS {
	t.Helper()
	testtier.Kernel(t)
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("wt%s-%08x-%d-%s", role, h.Sum32(), os.Getpid(), hex.EncodeToString(rnd[:]))
	if err := netns.Create(name); err != nil {
		t.Fatal(err)
	}
	ns := &NS{Name: name, Path: netns.PathOf(name), t: t}
	t.Cleanup(func() {
		if ns.deleted {
			return
		}
		if err := netns.Delete(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// Delete removes the namespace now (its interfaces go when the last
// reference to it does).
func (ns *NS) Delete() {
	ns.t.Helper()
	if err := netns.Delete(ns.Name); err != nil {
		ns.t.Fatalf("delete netns %s: %v", ns.Name, err)
	}
	ns.deleted = true
}

func (ns *NS) open() (*netns.Target, error) { return netns.Open(ns.Path) }

// Netlink is a netlink handle in the namespace, closed at cleanup (it
// keeps the namespace alive until then).
func (ns *NS) Netlink() *netlink.Handle {
	ns.t.Helper()
	target, err := ns.open()
	if err != nil {
		ns.t.Fatal(err)
	}
	defer target.Close()
	nh, err := target.Netlink()
	if err != nil {
		ns.t.Fatal(err)
	}
	ns.t.Cleanup(nh.Close)
	return nh
}

// Do runs fn on a thread inside the namespace (netns.Target.Do: fn must
// not call t.Fatal).
func (ns *NS) Do(fn func() error) error {
	target, err := ns.open()
	if err != nil {
		return err
	}
	defer target.Close()
	return target.Do(fn)
}

// Run runs a command inside the namespace (as `ip netns exec` would) and
// returns its combined output; it fails the test on error, and skips it
// (fails under testtier.EnvStrict) when the command is not installed.
func (ns *NS) Run(args ...string) string {
	ns.t.Helper()
	testtier.Tools(ns.t, args[0])
	out, err := ns.Try(args...)
	if err != nil {
		ns.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Try is Run that returns the error instead of failing.
func (ns *NS) Try(args ...string) (string, error) {
	target, err := ns.open()
	if err != nil {
		return "", err
	}
	defer target.Close()
	var out bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = netns.Run(target, cmd)
	return out.String(), err
}

// Sysctl writes a sysctl inside the namespace.
func (ns *NS) Sysctl(key, value string) {
	ns.t.Helper()
	err := ns.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) })
	if err != nil {
		ns.t.Fatalf("sysctl %s=%s in %s: %v", key, value, ns.Name, err)
	}
}

// Veth connects two namespaces with a veth pair, both ends up, and puts
// the given addresses (prefix form, may be invalid for none) on them.
func Veth(t testing.TB, a *NS, nameA string, addrA netip.Prefix, b *NS, nameB string, addrB netip.Prefix) {
	t.Helper()
	ha, hb := a.Netlink(), b.Netlink()
	bt, err := b.open()
	if err != nil {
		t.Fatal(err)
	}
	defer bt.Close()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB, PeerNamespace: netlink.NsFd(bt.Fd())}
	if err := ha.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s: %v", nameA, nameB, err)
	}
	for _, side := range []struct {
		h    *netlink.Handle
		name string
		addr netip.Prefix
	}{{ha, nameA, addrA}, {hb, nameB, addrB}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		if side.addr.IsValid() {
			ipn := &net.IPNet{IP: side.addr.Addr().AsSlice(), Mask: net.CIDRMask(side.addr.Bits(), side.addr.Addr().BitLen())}
			if err := side.h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
				t.Fatal(err)
			}
		}
		if err := side.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}
