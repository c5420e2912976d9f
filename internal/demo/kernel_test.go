package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if os.Getenv("WEFT_SKIP_KERNEL") != "" {
		t.Skip("WEFT_SKIP_KERNEL is set")
	}
}

// TestKernelNetnsAndPing creates two named namespaces the way the demo does
// (not with the demo's prefix, so a running demo is never disturbed), joins
// them with a veth, and checks what the demo builds on: `ip netns` sees
// them, loopback is up, sysctls land in the right namespace, a process
// inside is found, the ICMP pinger reaches the peer and not an absent
// address, and deletion leaves nothing.
func TestKernelNetnsAndPing(t *testing.T) {
	skipUnlessRoot(t)
	if err := prepareNetnsDir(); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("wdt-%d-%d", os.Getpid()%100000, rand.IntN(1000))
	a, b := id+"-a", id+"-b"
	t.Cleanup(func() {
		for _, n := range []string{a, b} {
			if err := deleteNetns(n); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	for _, n := range []string{a, b} {
		if err := createNetns(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := createNetns(a); err == nil {
		t.Error("creating an existing namespace succeeded")
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err == nil && (!strings.Contains(string(out), a) || !strings.Contains(string(out), b)) {
		t.Errorf("ip netns list does not show %s and %s:\n%s", a, b, out)
	}

	addrA, addrB := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	bNS, err := netns.GetFromPath(netnsPath(b))
	if err != nil {
		t.Fatal(err)
	}
	defer bNS.Close()
	err = inNetns(a, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("loopback not up: %v", err)
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(bNS))}
		if err := h.LinkAdd(veth); err != nil {
			return err
		}
		return upWithAddr(h, addrA)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := inNetns(b, func(h *netlink.Handle) error { return upWithAddr(h, addrB) }); err != nil {
		t.Fatal(err)
	}

	if err := setSysctl(a, "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	var fwdA, fwdB string
	_ = onThreadIn(a, func() error { v, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); fwdA = string(v); return err })
	_ = onThreadIn(b, func() error { v, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); fwdB = string(v); return err })
	if strings.TrimSpace(fwdA) != "1" || strings.TrimSpace(fwdB) != "0" {
		t.Errorf("ip_forward: %q in %s (want 1), %q in %s (want 0)", fwdA, a, fwdB, b)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	absent := netip.MustParseAddr("198.51.100.99")
	res := pingFrom(ctx, a, 4242, []netip.Addr{addrB, absent})
	if !res[addrB].OK {
		t.Errorf("%s -> %s: %+v", a, addrB, res[addrB])
	}
	if res[absent].OK || res[absent].Err == "" {
		t.Errorf("%s -> absent %s: %+v", a, absent, res[absent])
	}

	// A process inside a namespace is found (and teardown would kill it).
	if _, err := exec.LookPath("ip"); err == nil {
		sleeper := exec.Command("ip", "netns", "exec", b, "sleep", "30")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
		deadline := time.Now().Add(5 * time.Second)
		for {
			pids, err := processesInNetns([]string{a, b})
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(pids, sleeper.Process.Pid) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d inside %s not found: %v", sleeper.Process.Pid, b, pids)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := stopProcesses([]int{sleeper.Process.Pid}, 9, time.Second); err != nil {
			t.Error(err)
		}
	}

	for _, n := range []string{a, b} {
		if err := deleteNetns(n); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(netnsPath(n)); !os.IsNotExist(err) {
			t.Errorf("%s still exists: %v", netnsPath(n), err)
		}
		if err := deleteNetns(n); err != nil {
			t.Errorf("deleting %s twice: %v", n, err)
		}
	}
}

func upWithAddr(h *netlink.Handle, a netip.Addr) error {
	l, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, 24))}); err != nil {
		return err
	}
	return h.LinkSetUp(l)
}
