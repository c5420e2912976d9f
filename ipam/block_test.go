package ipam

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func attrFor(handle string) AllocationAttribute {
	return AllocationAttribute{Handle: handle, Node: "n1", Timestamp: t0}
}

func TestBlockFIFO(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/30")
	b := newBlock(p, "n1", t0, 1)
	for i := range 4 {
		o, ok := b.allocateNext(p, attrFor("h"+string(rune('a'+i))), uint64(10+i), nil)
		if !ok || o != i {
			t.Fatalf("allocation %d got ordinal %d (%v)", i, o, ok)
		}
	}
	if _, ok := b.allocateNext(p, attrFor("x"), 20, nil); ok {
		t.Fatal("allocated from a full block")
	}
	// Release 2 then 0: they come back in release order.
	b.release(2, t0, 0)
	b.release(0, t0, 0)
	if !slices.Equal(b.Unallocated, []int{2, 0}) {
		t.Fatalf("free list = %v", b.Unallocated)
	}
	if o, _ := b.allocateNext(p, attrFor("y"), 21, nil); o != 2 {
		t.Fatalf("FIFO: got %d, want 2", o)
	}
	if err := b.validate(); err != nil {
		t.Fatal(err)
	}
	// Attributes of released allocations were dropped.
	for _, a := range b.Attributes {
		if a.Handle == "ha" || a.Handle == "hc" {
			t.Fatalf("stale attribute %+v", a)
		}
	}
}

func TestBlockCooldown(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/31")
	b := newBlock(p, "n1", t0, 1)
	b.allocateNext(p, attrFor("a"), 2, nil)
	b.allocateNext(p, attrFor("b"), 3, nil)
	b.release(1, t0, time.Minute)
	b.release(0, t0.Add(time.Second), time.Minute)
	if b.freeCount(p, nil) != 0 {
		t.Fatal("cooling addresses counted as free")
	}
	if moved := b.expireCooldown(t0.Add(59*time.Second), time.Minute); moved {
		t.Fatal("expired too early")
	}
	b.expireCooldown(t0.Add(60*time.Second), time.Minute)
	if !slices.Equal(b.Unallocated, []int{1}) || len(b.Released) != 1 {
		t.Fatalf("after 60s: free %v cooling %v", b.Unallocated, b.Released)
	}
	b.expireCooldown(t0.Add(time.Hour), time.Minute)
	if !slices.Equal(b.Unallocated, []int{1, 0}) || b.Released != nil {
		t.Fatalf("after an hour: free %v cooling %v", b.Unallocated, b.Released)
	}
	if err := b.validate(); err != nil {
		t.Fatal(err)
	}
}

func TestBlockReservedOrdinals(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/29")
	b := newBlock(p, "n1", t0, 1)
	res := reservations{{prefix: netip.MustParsePrefix("10.0.0.0/31")}, {prefix: netip.MustParsePrefix("10.0.0.5/32")}}
	if n := b.freeCount(p, res); n != 5 {
		t.Fatalf("freeCount = %d, want 5", n)
	}
	var got []int
	for {
		o, ok := b.allocateNext(p, attrFor("h"), 2, res)
		if !ok {
			break
		}
		got = append(got, o)
	}
	if !slices.Equal(got, []int{2, 3, 4, 6, 7}) {
		t.Fatalf("allocated %v", got)
	}
}

func TestBlockValidateCatchesCorruption(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/30")
	fresh := func() *Block {
		b := newBlock(p, "n1", t0, 1)
		b.allocateNext(p, attrFor("a"), 5, nil)
		return b
	}
	for name, tc := range map[string]struct {
		corrupt func(b *Block)
		want    string
	}{
		"ordinal free and allocated": {func(b *Block) { b.Unallocated = append(b.Unallocated, 0) }, "both"},
		"ordinal lost":               {func(b *Block) { b.Unallocated = b.Unallocated[1:] }, "neither"},
		"attribute out of range":     {func(b *Block) { i := 7; b.Allocations[0] = &i }, "refers to attribute"},
		"unused attribute":           {func(b *Block) { b.Attributes = append(b.Attributes, attrFor("z")) }, "not used"},
		"no handle":                  {func(b *Block) { b.Attributes[0].Handle = "" }, "no handle"},
		"no sequence number":         {func(b *Block) { delete(b.SequenceNumberForAllocation, 0) }, "sequence number"},
		"bad affinity":               {func(b *Block) { b.Affinity = "virtual:x" }, "affinity"},
		"wrong size":                 {func(b *Block) { b.Allocations = b.Allocations[:3] }, "slots"},
		"cooling and free":           {func(b *Block) { b.Released = []ReleasedOrdinal{{Ordinal: 1}} }, "both"},
		"out of range":               {func(b *Block) { b.Unallocated = append(b.Unallocated, 9) }, "out of range"},
	} {
		t.Run(name, func(t *testing.T) {
			b := fresh()
			if err := b.validate(); err != nil {
				t.Fatalf("fresh block invalid: %v", err)
			}
			tc.corrupt(b)
			err := b.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate = %v, want %q", err, tc.want)
			}
		})
	}
}
