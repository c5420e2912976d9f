package sysctls

import (
	"context"
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

func TestForwarding(t *testing.T) {
	ns := nstest.New(t, "n")
	// A new namespace inherits the machine's IPv4 settings
	// (net.core.devconf_inherit_init_net = 0): start from a known state.
	ns.Sysctl("net/ipv4/ip_forward", "0")
	ns.Sysctl("net/ipv6/conf/all/forwarding", "0")
	m, err := New(Config{NetNS: ns.Path, Values: Forwarding(true)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	apply := func() {
		t.Helper()
		if err := m.Apply(context.Background(), dataplane.PhaseUpdate); err != nil {
			t.Fatal(err)
		}
	}
	apply()
	for _, k := range []string{"ipv4/ip_forward", "ipv6/conf/all/forwarding"} {
		if v := strings.TrimSpace(ns.Run("cat", "/proc/sys/net/"+k)); v != "1" {
			t.Errorf("%s = %s", k, v)
		}
	}
	if m.KernelWrites() != 2 {
		t.Errorf("%d writes", m.KernelWrites())
	}
	apply()
	m.QueueResync()
	apply()
	if m.KernelWrites() != 2 {
		t.Errorf("re-apply wrote: %d", m.KernelWrites())
	}
	ns.Sysctl("net/ipv4/ip_forward", "0")
	m.QueueResync()
	apply()
	if v := strings.TrimSpace(ns.Run("cat", "/proc/sys/net/ipv4/ip_forward")); v != "1" {
		t.Errorf("not repaired: %s", v)
	}
	if _, err := New(Config{Values: map[string]string{"kernel/panic": "1"}}); err == nil {
		t.Error("accepted a non-net key")
	}
}
