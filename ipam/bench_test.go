package ipam

import (
	"fmt"
	"testing"
)

// BenchmarkAssign measures ipam.assign (decode, allocate, validators,
// encode) on the fake Tx: three nodes taking turns, as in the cluster
// test. The state is rebuilt before the nodes run out of blocks.
func BenchmarkAssign(b *testing.B) {
	for _, tc := range []struct {
		name string
		dual bool
	}{{"v4", false}, {"dual", true}} {
		b.Run(tc.name, func(b *testing.B) {
			const perState = 3000 // 3 nodes × 20 blocks × 64 addresses = 3840
			var f *fakeStore
			reset := func() {
				f = newFake(b)
				addPool(b, f, "p4", "10.0.0.0/16", 26)
				addPool(b, f, "p6", "fd00::/112", 122)
			}
			reset()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%perState == 0 && i > 0 {
					b.StopTimer()
					reset()
					b.StartTimer()
				}
				r := wl(fmt.Sprintf("h%d", i), fmt.Sprintf("n%d", i%3))
				if tc.dual {
					r.Num6 = 1
				}
				if _, err := tryAssign(f, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReleaseHandle measures ipam.releaseHandle of a workload
// address in a busy block (the address is assigned again, untimed, before
// each release).
func BenchmarkReleaseHandle(b *testing.B) {
	f := newFake(b)
	addPool(b, f, "p4", "10.0.0.0/16", 26)
	for i := range 60 {
		assignIP(b, f, fmt.Sprintf("busy%d", i), "n1")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		h := fmt.Sprintf("h%d", i)
		assignIP(b, f, h, "n1")
		b.StartTimer()
		if _, err := f.command(CmdReleaseHandle, ReleaseHandleRequest{Handle: h}); err != nil {
			b.Fatal(err)
		}
	}
}
