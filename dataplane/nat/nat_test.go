package nat

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"

	"github.com/weftnet/weft/dataplane"
)

func span(from, to string) Span {
	return Span{From: netip.MustParseAddr(from), To: netip.MustParseAddr(to)}
}

func TestSpansMergeAndSplitFamilies(t *testing.T) {
	ps := prefixes("10.244.1.0/24", "10.244.0.0/16", "10.96.0.0/12", "10.245.0.0/16", "192.168.1.1/32",
		"192.168.1.2/32", "192.168.1.4/32", "fd00::/64", "fd00:0:0:1::/64", "0.0.0.0/0")
	if got := Spans(ps[:7], true); !slices.Equal(got, []Span{
		span("10.96.0.0", "10.111.255.255"),
		span("10.244.0.0", "10.245.255.255"), // contained and adjacent prefixes merged
		span("192.168.1.1", "192.168.1.2"),
		span("192.168.1.4", "192.168.1.4"),
	}) {
		t.Errorf("v4: %v", got)
	}
	if got := Spans(ps, false); !slices.Equal(got, []Span{span("fd00::", "fd00::1:ffff:ffff:ffff:ffff")}) {
		t.Errorf("v6: %v", got)
	}
	if got := Spans(ps, true); !slices.Equal(got, []Span{span("0.0.0.0", "255.255.255.255")}) {
		t.Errorf("default route swallows everything: %v", got)
	}
}

func TestElementsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spans []Span
		v4    bool
	}{
		{"empty", nil, true},
		{"one", []Span{span("10.244.0.0", "10.244.255.255")}, true},
		{"to the top", []Span{span("10.0.0.0", "10.0.0.0"), span("224.0.0.0", "255.255.255.255")}, true},
		{"v6", []Span{span("fd00::", "fd00::ffff"), span("fe80::", "fe80::1")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var els []nftables.SetElement
			for _, c := range elements(tc.spans) {
				els = append(els, c...)
			}
			got, err := spansFromElements(els, tc.v4)
			if err != nil || !slices.Equal(got, tc.spans) {
				t.Errorf("got %v, %v", got, err)
			}
		})
	}
	// A leading interval-end element at zero (written by some nft
	// versions) carries no range.
	els := []nftables.SetElement{{Key: []byte{0, 0, 0, 0}, IntervalEnd: true}, {Key: []byte{10, 0, 0, 0}}, {Key: []byte{11, 0, 0, 0}, IntervalEnd: true}}
	if got, _ := spansFromElements(els, true); !slices.Equal(got, []Span{span("10.0.0.0", "10.255.255.255")}) {
		t.Errorf("with a zero end element: %v", got)
	}
	if _, err := spansFromElements([]nftables.SetElement{{Key: make([]byte, 16)}}, true); err == nil {
		t.Error("accepted an IPv6 key in an IPv4 set")
	}
}

func TestElementsAreChunkedWithoutSplittingRanges(t *testing.T) {
	var spans []Span
	for i := range 1200 {
		a := netip.AddrFrom4([4]byte{10, byte(i / 200), byte(i % 200), 0})
		spans = append(spans, Span{From: a, To: a})
	}
	chunks := elements(spans)
	total := 0
	for _, c := range chunks {
		if len(c) > maxElemsPerMsg {
			t.Errorf("chunk of %d elements", len(c))
		}
		if c[0].IntervalEnd || !c[len(c)-1].IntervalEnd {
			t.Error("a range is split across chunks")
		}
		total += len(c)
	}
	if total != 2400 || len(chunks) != 3 {
		t.Errorf("%d elements in %d chunks", total, len(chunks))
	}
}

func TestComputeExcludesPoolsAndExtraDestinations(t *testing.T) {
	s := Compute(dataplane.NATConfig{
		MasqPools:    prefixes("10.244.0.0/16"),
		AllPools:     prefixes("10.244.0.0/16", "10.250.0.0/16", "fd00::/48"),
		ExcludeDests: prefixes("192.168.1.10/32"),
	})
	if !slices.Equal(s.Masq4, []Span{span("10.244.0.0", "10.244.255.255")}) || len(s.Masq6) != 0 {
		t.Errorf("masq: %v %v", s.Masq4, s.Masq6)
	}
	if len(s.NoMasq4) != 3 || len(s.NoMasq6) != 1 {
		t.Errorf("no-masq: %v %v", s.NoMasq4, s.NoMasq6)
	}
}
