package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// BlockSummary is what other subsystems need of an IPAM block: which node
// it belongs to, and who holds each allocated address. Routing uses it
// (this node's blackholes, other nodes' blocks, borrowed addresses), and so
// do the tunnel controllers (is my tunnel address still mine?). They read
// it through [DecodeBlockSummary] rather than decoding IPAM's storage
// format themselves.
type BlockSummary struct {
	CIDR netip.Prefix
	// Owner is the node holding the block's affinity, "" when none.
	Owner string
	// Holders maps every allocated address to its holder.
	Holders map[netip.Addr]Holder
}

// Holder is who holds one allocated address.
type Holder struct {
	Node   string
	Handle string
	// Type is the allocation type (TypeWorkload, TypeVXLANTunnel, ...).
	Type string
}

// Borrowed returns the addresses of the block held by nodes other than
// its owner, with the node holding each.
func (b BlockSummary) Borrowed() map[netip.Addr]string {
	var out map[netip.Addr]string
	for a, h := range b.Holders {
		if h.Node == "" || h.Node == b.Owner {
			continue
		}
		if out == nil {
			out = map[netip.Addr]string{}
		}
		out[a] = h.Node
	}
	return out
}

// summaryFields is the part of a stored Block a summary reads: blocks
// change on every allocation on every node, so decoding only these fields
// keeps watching them cheap.
type summaryFields struct {
	CIDR        string `json:"cidr"`
	Affinity    string `json:"affinity"`
	Allocations []*int `json:"allocations"`
	Attributes  []struct {
		Handle string `json:"handle"`
		Node   string `json:"node"`
		Type   string `json:"type"`
	} `json:"attributes"`
}

// DecodeBlockSummary decodes the stored value of a block (kind
// [KindBlock]).
func DecodeBlockSummary(value []byte) (BlockSummary, error) {
	var f summaryFields
	if err := json.Unmarshal(value, &f); err != nil {
		return BlockSummary{}, fmt.Errorf("decode block: %w", err)
	}
	cidr, err := ParseCIDR(f.CIDR)
	if err != nil {
		return BlockSummary{}, fmt.Errorf("block cidr: %w", err)
	}
	b := BlockSummary{CIDR: cidr}
	if owner, ok := strings.CutPrefix(f.Affinity, affinityPrefix); ok {
		b.Owner = owner
	}
	for ord, idx := range f.Allocations {
		if idx == nil || *idx < 0 || *idx >= len(f.Attributes) {
			continue
		}
		if ord >= blockLen(cidr) {
			break
		}
		at := f.Attributes[*idx]
		if b.Holders == nil {
			b.Holders = map[netip.Addr]Holder{}
		}
		b.Holders[addrAt(cidr, ord)] = Holder{Node: at.Node, Handle: at.Handle, Type: at.Type}
	}
	return b, nil
}
