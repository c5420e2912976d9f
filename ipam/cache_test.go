package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// The cache is only sound if a normalized in-memory block equals what
// decoding its JSON gives. Check it on blocks in every state.
func TestBlockRoundTripsExactly(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/29")
	now := time.Date(2026, 3, 4, 5, 6, 7, 890, time.UTC)
	b := newBlock(p, "n1", now, 1)
	check := func(step string) {
		t.Helper()
		c := b.clone()
		c.normalize()
		v, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		d, _, err := decodeBlock(v)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, d) {
			t.Fatalf("%s: decoded block differs:\nmemory  %+v\ndecoded %+v", step, c, d)
		}
	}
	check("new")
	for i := range 8 {
		b.allocateNext(p, AllocationAttribute{Handle: fmt.Sprint("h", i), Node: "n1", Timestamp: now}, uint64(i+2), nil)
		check(fmt.Sprint("allocated ", i))
	}
	b.release(3, now, time.Minute)
	check("cooling")
	b.release(4, now, 0)
	check("released")
	b.expireCooldown(now.Add(time.Hour), time.Minute)
	check("expired")
	for o := range 8 {
		if _, ok := b.attribute(o); ok {
			b.release(o, now, 0)
		}
	}
	check("empty")
	b.unclaim()
	check("unclaimed")
}

func TestBlockCacheReturnsCopies(t *testing.T) {
	c := newBlockCache()
	p := netip.MustParsePrefix("10.0.0.0/30")
	b := newBlock(p, "n1", t0, 1)
	v, _ := json.Marshal(b)
	first, _, err := c.decode("x", v)
	if err != nil {
		t.Fatal(err)
	}
	first.allocateNext(p, attrFor("h"), 2, nil)
	second, _, _ := c.decode("x", v)
	if len(second.Unallocated) != 4 || second.inUse() != 0 {
		t.Fatalf("a caller's change leaked into the cache: %+v", second)
	}
	if c.noRoom("x", v, "") {
		t.Fatal("noRoom on an empty block")
	}
	// Other bytes under the same name are a miss.
	b.allocateNext(p, attrFor("h"), 2, nil)
	v2, _ := json.Marshal(b)
	third, _, _ := c.decode("x", v2)
	if third.inUse() != 1 {
		t.Fatal("stale cache entry returned")
	}
}
