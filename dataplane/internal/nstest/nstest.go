// Package nstest gives kernel tests fresh, uniquely named network
// namespaces that are removed when the test ends, whatever happens.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RequireRoot skips the test unless it runs as root (kernel tests create
// namespaces and interfaces).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root to create network namespaces")
	}
}

// NS is a named network namespace owned by one test.
type NS struct {
	Name    string
	Path    string
	t       testing.TB
	deleted bool
}

// New creates a namespace named after the test, the pid and a random
// suffix, with lo up, and deletes it in t.Cleanup.
func New(t testing.TB, role string) *NS {
	t.Helper()
	RequireRoot(t)
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("wt%s-%08x-%d-%s", role, h.Sum32(), os.Getpid(), hex.EncodeToString(rnd[:]))
	if err := createNamed(name); err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	ns := &NS{Name: name, Path: "/run/netns/" + name, t: t}
	t.Cleanup(func() {
		if ns.deleted {
			return
		}
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	// A short-lived handle: an open netlink socket would keep the
	// namespace alive after Delete.
	if err := ns.withHandle(func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	}); err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return ns
}

func createNamed(name string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		_ = netns.Set(orig)
		return err
	}
	h.Close()
	return netns.Set(orig)
}

// Delete removes the namespace now (its interfaces go when the last
// reference to it does).
func (ns *NS) Delete() {
	ns.t.Helper()
	if err := netns.DeleteNamed(ns.Name); err != nil {
		ns.t.Fatalf("delete netns %s: %v", ns.Name, err)
	}
	ns.deleted = true
}

func (ns *NS) withHandle(fn func(*netlink.Handle) error) error {
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return err
	}
	defer nh.Close()
	return fn(nh)
}

// Netlink is a netlink handle in the namespace, closed at cleanup (it
// keeps the namespace alive until then).
func (ns *NS) Netlink() *netlink.Handle {
	ns.t.Helper()
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		ns.t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		ns.t.Fatal(err)
	}
	ns.t.Cleanup(nh.Close)
	return nh
}

// Do runs fn on a thread inside the namespace.
func (ns *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("restore netns: %w (thread left locked)", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Run runs a command inside the namespace (ip netns exec) and returns its
// combined output; it fails the test on error.
func (ns *NS) Run(args ...string) string {
	ns.t.Helper()
	out, err := ns.Try(args...)
	if err != nil {
		ns.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Try is Run that returns the error instead of failing.
func (ns *NS) Try(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
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
	bh, err := netns.GetFromPath(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB, PeerNamespace: netlink.NsFd(bh)}
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
