package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
)

// The model is the table as weft wants it: sets (address sets with
// interval flags, named-port sets with concatenated keys, interface verdict
// maps) and chains (base chains with their hooks, regular chains), each
// rule tagged with user data that identifies the chain's content. It is
// kept in copy-on-write maps so that the model of the next state shares
// everything that did not change, and the diff between two models (or a
// model and the kernel) touches only what changed.

// setKind is the type of a set.
type setKind uint8

const (
	setAddr4    setKind = iota + 1 // ipv4_addr, interval
	setAddr6                       // ipv6_addr, interval
	setPort4                       // ipv4_addr . inet_proto . inet_service
	setPort6                       // ipv6_addr . inet_proto . inet_service
	setIfaceMap                    // ifname : verdict
)

func (k setKind) datatype() nftables.SetDatatype {
	switch k {
	case setAddr4:
		return nftables.TypeIPAddr
	case setAddr6:
		return nftables.TypeIP6Addr
	case setPort4:
		return nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	case setPort6:
		return nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	case setIfaceMap:
		return nftables.TypeIFName
	}
	panic(fmt.Sprintf("set kind %d", k))
}

func (k setKind) interval() bool { return k == setAddr4 || k == setAddr6 }

// span is an inclusive address range (an interval set element pair).
type span struct{ from, to netip.Addr }

// nset is one set of the model. Exactly one of spans, keys, vmap is used,
// by kind; each is canonical (sorted, merged) so that equal contents
// compare equal.
type nset struct {
	name  string
	kind  setKind
	spans []span
	keys  []string          // concatenated keys as raw bytes
	vmap  map[string]string // interface name → chain (goto)
	// comment says where it comes from (a selector), for `nft list`.
	comment string
}

func (s *nset) equal(o *nset) bool {
	if s == o {
		return true
	}
	return s != nil && o != nil && s.name == o.name && s.kind == o.kind && slices.Equal(s.spans, o.spans) &&
		slices.Equal(s.keys, o.keys) && maps.Equal(s.vmap, o.vmap)
}

func (s *nset) size() int {
	switch s.kind {
	case setAddr4, setAddr6:
		return len(s.spans)
	case setIfaceMap:
		return len(s.vmap)
	}
	return len(s.keys)
}

// hook is a base chain's hook.
type hook struct {
	typ  nftables.ChainType
	num  nftables.ChainHook
	prio nftables.ChainPriority
}

// nrule is one rule: its expressions and its user data tag.
type nrule struct {
	exprs []expr.Any
	tag   string
}

// nchain is one chain of the model.
type nchain struct {
	name  string
	hook  *hook // nil for a regular chain
	rules []nrule
	// owner and rule indexes, for policy and profile chains (counters).
	owner *dataplane.PolicyRef
	dir   dataplane.Direction
}

// tags are the rules' user data: the chain is in the kernel as wanted
// when the kernel's rules carry exactly these.
func (c *nchain) tags() []string {
	out := make([]string, len(c.rules))
	for i, r := range c.rules {
		out[i] = r.tag
	}
	return out
}

func (c *nchain) equal(o *nchain) bool {
	if c == o {
		return true
	}
	return c != nil && o != nil && c.name == o.name && equalHook(c.hook, o.hook) && slices.Equal(c.tags(), o.tags())
}

func equalHook(a, b *hook) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// tagRules stamps each rule of a chain with "<content hash>:<position>"
// (plus ":r<index>" for the rules of a policy: the API rule it comes
// from). The hash covers the chain's hook and every rule's description,
// so a chain whose content changes gets new tags in every rule.
func tagRules(c *nchain, descs []string, ruleIdx []int) {
	h := sha256.New()
	fmt.Fprintf(h, "v1|%s|%v\n", c.name, c.hook)
	for _, d := range descs {
		h.Write([]byte(d))
		h.Write([]byte{'\n'})
	}
	sum := hex.EncodeToString(h.Sum(nil)[:6])
	for i := range c.rules {
		idx := -1
		if ruleIdx != nil {
			idx = ruleIdx[i]
		}
		c.rules[i].tag = firewall.RuleTag(sum, i, idx)
	}
}

// model is the whole table.
type model struct {
	sets   dataplane.Map[*nset]
	chains dataplane.Map[*nchain]
}

// spansOf merges the prefixes of one family into sorted, disjoint,
// non-adjacent ranges (interval sets reject overlaps).
func spansOf(ps []netip.Prefix, v4 bool) []span {
	var out []span
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is4() != v4 {
			continue
		}
		p = p.Masked()
		out = append(out, span{from: p.Addr(), to: lastAddr(p)})
	}
	slices.SortFunc(out, func(a, b span) int { return a.from.Compare(b.from) })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			next := last.to.Next()
			if !next.IsValid() || s.from.Compare(next) <= 0 {
				if s.to.Compare(last.to) > 0 {
					last.to = s.to
				}
				continue
			}
		}
		merged = append(merged, s)
	}
	if len(merged) == 0 {
		return nil
	}
	return slices.Clip(merged)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func maxAddr(v4 bool) netip.Addr {
	if v4 {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	var b [16]byte
	for i := range b {
		b[i] = 0xff
	}
	return netip.AddrFrom16(b)
}
