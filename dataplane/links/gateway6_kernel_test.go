package links

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// The workloads' IPv6 gateway is on the host side whatever way the host
// generates link-local addresses: with addr_gen_mode 1 (none) or 3
// (random) the kernel would not derive it from the MAC.
func TestIPv6GatewayIndependentOfAddrGenMode(t *testing.T) {
	for _, mode := range []int{1, 3} {
		t.Run("addr_gen_mode="+strconv.Itoa(mode), func(t *testing.T) {
			host := nstest.New(t, "h")
			host.Sysctl("net/ipv6/conf/all/forwarding", "1")
			host.Sysctl("net/ipv6/conf/default/addr_gen_mode", strconv.Itoa(mode))
			wa, wb := nstest.New(t, "a"), nstest.New(t, "b")
			p := newPlumber(t, host)
			ctx := context.Background()
			a := workload(t, wa, "a", "fd00:65::2/128")
			b := workload(t, wb, "b", "fd00:65::3/128")
			for _, w := range []dataplane.Workload{a, b} {
				if err := plumb(t, host, p, w); err != nil {
					t.Fatalf("add %s: %v", w.Name, err)
				}
				gw := dataplane.WorkloadGatewayV6.String() + "/64"
				if out := host.Run("ip", "-6", "addr", "show", "dev", w.HostIface); !strings.Contains(out, gw) {
					t.Fatalf("%s lacks the gateway address %s:\n%s", w.HostIface, gw, out)
				}
			}
			wa.Run("ping", "-6", "-c1", "-W2", "fd00:65::3")

			// The address removed behind weft's back is drift, and
			// repaired.
			host.Run("ip", "-6", "addr", "del", dataplane.WorkloadGatewayV6.String()+"/64", "dev", a.HostIface)
			if err := p.Check(ctx, a); !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), "gateway address") {
				t.Fatalf("check after the gateway address went: %v", err)
			}
			if err := plumb(t, host, p, a); err != nil {
				t.Fatal(err)
			}
			if err := p.Check(ctx, a); err != nil {
				t.Fatalf("check after repair: %v", err)
			}
			wb.Run("ping", "-6", "-c1", "-W2", "fd00:65::2")
		})
	}
}
