package linux

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
)

// applyOnce runs one pass over the managers the way the loop does.
func applyOnce(d *Dataplane, desired *dataplane.Desired) error {
	ctx := context.Background()
	var errs []error
	for _, m := range d.Managers {
		m.Set(desired)
	}
	for _, m := range d.Managers {
		errs = append(errs, m.Apply(ctx, dataplane.PhaseUpdate))
	}
	for i := len(d.Managers) - 1; i >= 0; i-- {
		errs = append(errs, d.Managers[i].Apply(ctx, dataplane.PhaseRemove))
	}
	return errors.Join(errs...)
}

// BenchmarkApply100Workloads100Routes measures programming 100 workloads
// (veth pairs into 100 namespaces, addresses, routes, sysctls, host
// routes) and 100 routes from scratch in one pass, and the cost of a full
// resync pass that finds nothing to change.
func BenchmarkApply100Workloads100Routes(b *testing.B) {
	node, peer := nstest.New(b, "n"), nstest.New(b, "p")
	nstest.Veth(b, node, "upl", netip.MustParsePrefix("192.168.95.1/24"), peer, "dwn", netip.MustParsePrefix("192.168.95.2/24"))
	desired := dataplane.Desired{}
	for i := range 100 {
		wl := nstest.New(b, "w")
		name := fmt.Sprintf("bench-%d", i)
		iface, err := dataplane.WorkloadIfaceName("weft", "default", name)
		if err != nil {
			b.Fatal(err)
		}
		w := dataplane.Workload{
			Namespace: "default", Name: name, HostIface: iface, NetNS: wl.Path, MTU: 1450,
			IPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(i + 1)}), 32)},
		}
		desired.Workloads = append(desired.Workloads, w)
		desired.Routes = append(desired.Routes, w.HostRoutes()...)
		desired.Routes = append(desired.Routes, dataplane.Route{
			Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i), 0}), 24), Class: dataplane.RouteClassBlock, Dev: "upl", Via: netip.MustParseAddr("192.168.95.2"),
		})
	}
	d, err := New(Config{NetNS: node.Path})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })

	b.Run("create", func(b *testing.B) {
		for b.Loop() {
			if err := applyOnce(d, &desired); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := applyOnce(d, &dataplane.Desired{}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("resync-unchanged", func(b *testing.B) {
		if err := applyOnce(d, &desired); err != nil {
			b.Fatal(err)
		}
		before := d.KernelWrites()
		for b.Loop() {
			for _, m := range d.Managers {
				m.QueueResync()
			}
			if err := applyOnce(d, &desired); err != nil {
				b.Fatal(err)
			}
		}
		if n := d.KernelWrites() - before; n != 0 {
			b.Fatalf("unchanged resync made %d writes", n)
		}
	})
}
