package ipam

import (
	"math/big"
	"net/netip"
	"testing"
)

func TestOrdinalRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		block string
		n     int
	}{
		{"10.0.0.0/26", 64},
		{"10.0.0.64/30", 4},
		{"10.0.0.9/32", 1},
		{"10.0.0.0/20", 4096},
		{"fd00::/122", 64},
		{"fd00:0:0:1::ffc0/122", 64},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:f000/116", 4096},
		{"255.255.255.192/26", 64},
	} {
		p := netip.MustParsePrefix(tc.block)
		if got := blockLen(p); got != tc.n {
			t.Fatalf("%s: blockLen = %d, want %d", p, got, tc.n)
		}
		for o := range tc.n {
			a := addrAt(p, o)
			if !p.Contains(a) {
				t.Fatalf("%s: ordinal %d -> %s outside the block", p, o, a)
			}
			back, ok := ordinalOf(p, a)
			if !ok || back != o {
				t.Fatalf("%s: %s -> ordinal %d (%v), want %d", p, a, back, ok, o)
			}
		}
		if got := addrAt(p, tc.n-1); got != lastAddr(p) {
			t.Fatalf("%s: last ordinal %s != lastAddr %s", p, got, lastAddr(p))
		}
		if _, ok := ordinalOf(p, lastAddr(p).Next()); ok && lastAddr(p).Next().IsValid() {
			t.Fatalf("%s: address after the block has an ordinal", p)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":    "10.255.255.255",
		"0.0.0.0/0":     "255.255.255.255",
		"10.1.2.3/32":   "10.1.2.3",
		"fd00::/64":     "fd00::ffff:ffff:ffff:ffff",
		"fd00::/48":     "fd00::ffff:ffff:ffff:ffff:ffff",
		"::/0":          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"fd00::1/128":   "fd00::1",
		"fd00:8000::/1": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	} {
		p := netip.MustParsePrefix(in).Masked()
		if got := lastAddr(p).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestBlockName(t *testing.T) {
	for _, c := range []string{"10.0.0.0/26", "fd00::/122", "fd00:1::40/122"} {
		name := BlockName(c)
		p, err := ParseBlockName(name)
		if err != nil || p.String() != c {
			t.Fatalf("ParseBlockName(%q) = %v, %v; want %s", name, p, err, c)
		}
	}
	if BlockName("10.0.0.0/26") != "10.0.0.0-26" {
		t.Fatal("block name must replace / with -")
	}
	for _, bad := range []string{"10.0.0.0", "10.0.0.1-26", "x-1", "fd00::-200"} {
		if _, err := ParseBlockName(bad); err == nil {
			t.Errorf("ParseBlockName(%q) accepted", bad)
		}
	}
}

func TestParseCIDR(t *testing.T) {
	if _, err := ParseCIDR("10.0.0.1/24"); err == nil {
		t.Fatal("host bits accepted")
	}
	if _, err := ParseCIDR("::ffff:10.0.0.0/120"); err == nil {
		t.Fatal("4-in-6 accepted")
	}
	if p, err := ParseCIDR(" 10.0.0.0/24 "); err != nil || p.String() != "10.0.0.0/24" {
		t.Fatalf("ParseCIDR = %v, %v", p, err)
	}
	if a, err := ParseAddrOrPrefix("10.0.0.5/26"); err != nil || a.String() != "10.0.0.5" {
		t.Fatalf("ParseAddrOrPrefix = %v, %v", a, err)
	}
}

func TestBlockCIDRs(t *testing.T) {
	bs := BlockCIDRs(netip.MustParsePrefix("10.0.0.0/28"), 30, 100)
	want := []string{"10.0.0.0/30", "10.0.0.4/30", "10.0.0.8/30", "10.0.0.12/30"}
	if len(bs) != len(want) {
		t.Fatalf("got %v", bs)
	}
	for i := range want {
		if bs[i].String() != want[i] {
			t.Fatalf("got %v, want %v", bs, want)
		}
	}
	if n := len(BlockCIDRs(netip.MustParsePrefix("10.0.0.0/16"), 26, 5000)); n != 1024 {
		t.Fatalf("/16 in /26 blocks: %d", n)
	}
	if n := len(BlockCIDRs(netip.MustParsePrefix("fd00::/48"), 122, 10)); n != 10 {
		t.Fatalf("v6 limit: %d", n)
	}
	// The last block of the address space ends the scan without wrapping.
	if n := len(BlockCIDRs(netip.MustParsePrefix("255.255.255.0/24"), 26, 10)); n != 4 {
		t.Fatalf("top of v4 space: %d", n)
	}
	if bs := BlockCIDRs(netip.MustParsePrefix("10.0.0.0/28"), 26, 10); bs != nil {
		t.Fatalf("pool smaller than a block: %v", bs)
	}
}

func TestFreeBlock(t *testing.T) {
	pl := pool{name: "p", prefix: netip.MustParsePrefix("10.0.0.0/24"), blockSize: 26}
	existing := map[netip.Prefix]bool{}
	got, ok := freeBlock(pl, existing, nil)
	if !ok || got.String() != "10.0.0.0/26" {
		t.Fatalf("first free = %v %v", got, ok)
	}
	existing[netip.MustParsePrefix("10.0.0.0/26")] = true
	res := reservations{{prefix: netip.MustParsePrefix("10.0.0.64/26"), name: "r"}, {prefix: netip.MustParsePrefix("10.0.0.130/32"), name: "r"}}
	got, ok = freeBlock(pl, existing, res)
	if !ok || got.String() != "10.0.0.128/26" {
		t.Fatalf("with a reserved block = %v %v (a partly reserved block is usable)", got, ok)
	}
	existing[got] = true
	existing[netip.MustParsePrefix("10.0.0.192/26")] = true
	if got, ok := freeBlock(pl, existing, res); ok {
		t.Fatalf("full pool gave %v", got)
	}

	// A huge IPv6 pool: a reservation of 2^60 blocks is jumped over in one
	// step.
	v6 := pool{name: "v6", prefix: netip.MustParsePrefix("fd00::/48"), blockSize: 122}
	res6 := reservations{{prefix: netip.MustParsePrefix("fd00::/64"), name: "r"}}
	got, ok = freeBlock(v6, map[netip.Prefix]bool{}, res6)
	if !ok || got.String() != "fd00:0:0:1::/122" {
		t.Fatalf("v6 free block = %v %v", got, ok)
	}
	// A reservation covering the whole pool leaves nothing.
	if got, ok := freeBlock(v6, nil, reservations{{prefix: netip.MustParsePrefix("fd00::/16")}}); ok {
		t.Fatalf("fully reserved pool gave %v", got)
	}
	// A pool at the very top of the address space terminates.
	top := pool{name: "top", prefix: netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"), blockSize: 122}
	all := map[netip.Prefix]bool{}
	for _, b := range BlockCIDRs(top.prefix, 122, 10) {
		all[b] = true
	}
	if got, ok := freeBlock(top, all, nil); ok {
		t.Fatalf("full top pool gave %v", got)
	}
}

func TestReservationCount(t *testing.T) {
	res := reservations{
		{prefix: netip.MustParsePrefix("10.0.0.0/30")},
		{prefix: netip.MustParsePrefix("10.0.0.1/32")}, // nested: counted once
		{prefix: netip.MustParsePrefix("10.0.0.8/29")},
		{prefix: netip.MustParsePrefix("10.1.0.0/16")}, // elsewhere
	}
	if got := res.count(netip.MustParsePrefix("10.0.0.0/28")); got.Cmp(big.NewInt(12)) != 0 {
		t.Fatalf("count = %v, want 12", got)
	}
	if got := res.count(netip.MustParsePrefix("10.0.0.8/30")); got.Cmp(big.NewInt(4)) != 0 {
		t.Fatalf("count of a block inside a reservation = %v, want 4", got)
	}
	if !res.contains(netip.MustParseAddr("10.0.0.9")) || res.contains(netip.MustParseAddr("10.0.0.4")) {
		t.Fatal("contains")
	}
}

// FuzzBlockArithmetic: for any address and block size, the address's
// block contains it, its ordinal maps back to it, and the next block
// starts right after the last address.
func FuzzBlockArithmetic(f *testing.F) {
	f.Add([]byte{10, 0, 0, 5}, uint8(26))
	f.Add([]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34}, uint8(122))
	f.Add([]byte{255, 255, 255, 255}, uint8(20))
	f.Fuzz(func(t *testing.T, raw []byte, size uint8) {
		var a netip.Addr
		switch len(raw) {
		case 4:
			a = netip.AddrFrom4([4]byte(raw))
		case 16:
			a = netip.AddrFrom16([16]byte(raw))
			if a.Is4In6() {
				return
			}
		default:
			return
		}
		bits := a.BitLen()
		bs := bits - int(size)%13 // 0..12 host bits, as block sizes allow
		p := blockFor(a, bs)
		o, ok := ordinalOf(p, a)
		if !ok || o < 0 || o >= blockLen(p) || addrAt(p, o) != a {
			t.Fatalf("%s in %s: ordinal %d (%v) -> %s", a, p, o, ok, addrAt(p, o))
		}
		if !p.Contains(lastAddr(p)) || (lastAddr(p).Next().IsValid() && p.Contains(lastAddr(p).Next())) {
			t.Fatalf("lastAddr(%s) = %s", p, lastAddr(p))
		}
		if next, ok := nextBlock(p); ok {
			if next.Addr() != lastAddr(p).Next() || next.Bits() != bs {
				t.Fatalf("nextBlock(%s) = %s", p, next)
			}
		} else if lastAddr(p).Next().IsValid() {
			t.Fatalf("nextBlock(%s) reported the end of the address space", p)
		}
		if BlockName(p.String()) == "" {
			t.Fatal("empty name")
		}
		if back, err := ParseBlockName(BlockName(p.String())); err != nil || back != p {
			t.Fatalf("block name of %s round-trips to %s (%v)", p, back, err)
		}
	})
}
