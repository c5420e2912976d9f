package ipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"strconv"
	"time"
)

// ShowOptions selects what Show reports (calicoctl ipam show's flags).
type ShowOptions struct {
	ShowBlocks        bool
	ShowBorrowed      bool
	ShowConfiguration bool
	// IP, if set, asks for the details of one address.
	IP string
	// Now decides which released addresses have finished their cooldown;
	// the zero time counts every address in cooldown as not free.
	Now time.Time
}

// UsageRow is one line of the ipam show table.
type UsageRow struct {
	// Grouping is "IP Pool" or "Block".
	Grouping string `json:"grouping"`
	CIDR     string `json:"cidr"`
	// Pool is the pool's name; Node the block's owner.
	Pool string `json:"pool,omitempty"`
	Node string `json:"node,omitempty"`
	// Total, Reserved and Free may exceed 64 bits for IPv6 pools.
	Total    *big.Int `json:"total"`
	InUse    int64    `json:"inUse"`
	Reserved *big.Int `json:"reserved"`
	Free     *big.Int `json:"free"`
}

// BorrowedRow is one borrowed address (--show-borrowed).
type BorrowedRow struct {
	IP            string `json:"ip"`
	BorrowingNode string `json:"borrowingNode"`
	Block         string `json:"block"`
	BlockOwner    string `json:"blockOwner"`
	Type          string `json:"type"`
	AllocatedTo   string `json:"allocatedTo"`
}

// IPDetail describes one address (--ip).
type IPDetail struct {
	IP string `json:"ip"`
	// State is "allocated", "free", "cooling down", "reserved",
	// "not in any block" or "outside every pool".
	State          string               `json:"state"`
	Pool           string               `json:"pool,omitempty"`
	Block          string               `json:"block,omitempty"`
	BlockOwner     string               `json:"blockOwner,omitempty"`
	Reservation    string               `json:"reservation,omitempty"`
	Attributes     *AllocationAttribute `json:"attributes,omitempty"`
	SequenceNumber uint64               `json:"sequenceNumber,omitempty"`
	ReleasedAt     *time.Time           `json:"releasedAt,omitempty"`
	// UsedBy lists the WorkloadEndpoints and node tunnels using it.
	UsedBy []string `json:"usedBy,omitempty"`
}

// ConfigRow is one PROPERTY | VALUE line (--show-configuration).
type ConfigRow struct {
	Property string `json:"property"`
	Value    string `json:"value"`
}

// ShowReport is the result of Show. Rows interleave each pool with its
// blocks when ShowBlocks is set.
type ShowReport struct {
	Rows          []UsageRow    `json:"rows"`
	Borrowed      []BorrowedRow `json:"borrowed,omitempty"`
	IP            *IPDetail     `json:"ip,omitempty"`
	Configuration []ConfigRow   `json:"configuration,omitempty"`
}

// Show reports pool (and block) usage, borrowed addresses, one address or
// the configuration, as calicoctl ipam show does (calico.md §4.5).
func Show(r Reader, opts ShowOptions) (*ShowReport, error) {
	v, err := load(r)
	if err != nil {
		return nil, err
	}
	cooldown := effectiveConfig(v.cfg).cooldown
	rep := &ShowReport{Rows: []UsageRow{}}
	if opts.IP != "" {
		a, err := ParseAddrOrPrefix(opts.IP)
		if err != nil {
			return nil, err
		}
		rep.IP = v.ipDetail(a)
		return rep, nil
	}
	if opts.ShowConfiguration {
		c := effectiveConfig(v.cfg)
		rep.Configuration = []ConfigRow{
			{"StrictAffinity", strconv.FormatBool(c.strictAffinity)},
			{"AutoAllocateBlocks", strconv.FormatBool(c.autoAllocateBlocks)},
			{"MaxBlocksPerHost", strconv.Itoa(int(v.cfg.MaxBlocksPerHost))},
			{"IPCooldownSeconds", strconv.Itoa(int(v.cfg.IPCooldownSeconds))},
		}
		return rep, nil
	}
	for _, pl := range v.pools {
		row := UsageRow{Grouping: "IP Pool", CIDR: pl.prefix.String(), Pool: pl.name, Total: prefixSize(pl.prefix), Reserved: v.res.count(pl.prefix)}
		notFree := new(big.Int).Set(row.Reserved)
		var blockRows []UsageRow
		for _, bv := range v.blocks {
			if !contains(pl.prefix, bv.prefix) {
				continue
			}
			br := v.blockRow(bv, pl.name, opts.Now, cooldown)
			row.InUse += br.InUse
			// Addresses of the block that are taken but not reserved.
			taken := new(big.Int).Sub(br.Total, br.Free)
			taken.Sub(taken, br.Reserved)
			notFree.Add(notFree, taken)
			blockRows = append(blockRows, br)
		}
		row.Free = new(big.Int).Sub(row.Total, notFree)
		rep.Rows = append(rep.Rows, row)
		if opts.ShowBlocks {
			rep.Rows = append(rep.Rows, blockRows...)
		}
	}
	if opts.ShowBorrowed {
		rep.Borrowed = v.borrowed()
	}
	return rep, nil
}

// blockRow is the usage of one block.
func (v *view) blockRow(bv blockView, poolName string, now time.Time, cooldown time.Duration) UsageRow {
	n := blockLen(bv.prefix)
	owner, _ := bv.b.Node()
	row := UsageRow{Grouping: "Block", CIDR: bv.prefix.String(), Pool: poolName, Node: owner,
		Total: big.NewInt(int64(n)), Reserved: v.res.count(bv.prefix)}
	free := 0
	isFree := make([]bool, n)
	for _, o := range bv.b.Unallocated {
		if o >= 0 && o < n {
			isFree[o] = true
		}
	}
	for _, rel := range bv.b.Released {
		if !now.IsZero() && !rel.ReleasedAt.Add(cooldown).After(now) && rel.Ordinal >= 0 && rel.Ordinal < n {
			isFree[rel.Ordinal] = true
		}
	}
	touches := v.res.touches(bv.prefix)
	for o := range n {
		if bv.b.Allocations[o] != nil {
			row.InUse++
			continue
		}
		if isFree[o] && (!touches || !v.res.contains(addrAt(bv.prefix, o))) {
			free++
		}
	}
	row.Free = big.NewInt(int64(free))
	return row
}

// borrowed lists allocations used on another node than the block's owner.
func (v *view) borrowed() []BorrowedRow {
	out := []BorrowedRow{}
	for _, bv := range v.blocks {
		owner, _ := bv.b.Node()
		for o := range bv.b.Allocations {
			attr, ok := bv.b.attribute(o)
			if !ok || attr.Node == owner {
				continue
			}
			row := BorrowedRow{
				IP:            addrAt(bv.prefix, o).String(),
				BorrowingNode: attr.Node,
				Block:         bv.prefix.String(),
				BlockOwner:    owner,
				Type:          attr.Type,
				AllocatedTo:   allocatedTo(attr),
			}
			if row.BlockOwner == "" {
				row.BlockOwner = "(none)"
			}
			out = append(out, row)
		}
	}
	return out
}

// allocatedTo names the holder of an allocation for a table cell.
func allocatedTo(a AllocationAttribute) string {
	switch {
	case isTunnelType(a.Type):
		return a.Node
	case a.WorkloadEndpoint != "":
		return a.WorkloadEndpoint
	case a.Workload != "":
		if a.Namespace != "" {
			return a.Namespace + "/" + a.Workload
		}
		return a.Workload
	}
	return a.Handle
}

// ipDetail describes one address.
func (v *view) ipDetail(a netip.Addr) *IPDetail {
	d := &IPDetail{IP: a.String()}
	d.UsedBy = v.users()[a]
	if name, ok := v.res.reservedBy(a); ok {
		d.Reservation = name
	}
	pl, inPool := poolContaining(v.pools, a)
	if inPool {
		d.Pool = pl.name
	}
	bv, ok := v.blockOf(a)
	if !ok {
		d.State = "not in any block"
		if !inPool {
			d.State = "outside every pool"
		}
		if d.Reservation != "" && inPool {
			d.State = "reserved"
		}
		return d
	}
	d.Block = bv.prefix.String()
	d.BlockOwner, _ = bv.b.Node()
	o, _ := ordinalOf(bv.prefix, a)
	if attr, ok := bv.b.attribute(o); ok {
		d.State = "allocated"
		d.Attributes = &attr
		d.SequenceNumber = bv.b.SequenceNumberForAllocation[o]
		return d
	}
	if at, ok := bv.b.cooling(o); ok {
		d.State = "cooling down"
		d.ReleasedAt = &at
		return d
	}
	d.State = "free"
	if d.Reservation != "" {
		d.State = "reserved"
	}
	return d
}

// percent formats "N (P%)" as calicoctl does.
func percent(n, total *big.Int) string {
	if total.Sign() == 0 {
		return n.String() + " (0%)"
	}
	f := new(big.Float).Quo(new(big.Float).SetInt(n), new(big.Float).SetInt(total))
	p, _ := f.Float64()
	return fmt.Sprintf("%s (%.0f%%)", n.String(), p*100)
}
