package nft

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
)

// kernelView is the table as read from the kernel.
type kernelView struct {
	exists bool
	model  model
}

// read loads the table: its chains (hooks and rule tags) and its sets
// (decoded to the model's canonical contents). An object of a type weft
// never makes gets kind 0, so that diff asks for a rebuild.
func (b *Backend) read() (kernelView, error) {
	var kv kernelView
	tables, err := b.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return kv, fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			kv.exists = true
		}
	}
	if !kv.exists {
		return kv, nil
	}
	t := b.table()
	chains, err := b.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return kv, fmt.Errorf("nftables: list chains: %w", err)
	}
	ced := dataplane.Map[*nchain]{}.Edit()
	for _, c := range chains {
		if c.Table.Name != TableName {
			continue
		}
		nc := &nchain{name: c.Name}
		if c.Hooknum != nil && c.Priority != nil {
			nc.hook = &hook{typ: c.Type, num: *c.Hooknum, prio: *c.Priority}
		}
		rules, err := b.conn.GetRules(t, c)
		if err != nil {
			return kv, fmt.Errorf("nftables: list rules of %s: %w", c.Name, err)
		}
		for _, r := range rules {
			nc.rules = append(nc.rules, nrule{tag: string(r.UserData)})
		}
		ced.Set(c.Name, nc)
	}
	sets, err := b.conn.GetSets(t)
	if err != nil {
		return kv, fmt.Errorf("nftables: list sets: %w", err)
	}
	sed := dataplane.Map[*nset]{}.Edit()
	for _, s := range sets {
		ns, err := b.readSet(s)
		if err != nil {
			return kv, err
		}
		sed.Set(s.Name, ns)
	}
	kv.model = model{sets: sed.Map(), chains: ced.Map()}
	return kv, nil
}

// kindOf recognises the sets weft makes.
func kindOf(s *nftables.Set) setKind {
	switch {
	case s.IsMap && (s.KeyType.Name == nftables.TypeVerdict.Name || s.DataType.Name == nftables.TypeVerdict.Name):
		// google/nftables v0.3.0 decodes a verdict map's data type into
		// KeyType (and loses the key type): a verdict map is weft's
		// interface map (its elements, decoded below, say the rest).
		return setIfaceMap
	case s.IsMap:
		return 0
	case s.Interval && s.KeyType.Name == nftables.TypeIPAddr.Name:
		return setAddr4
	case s.Interval && s.KeyType.Name == nftables.TypeIP6Addr.Name:
		return setAddr6
	case !s.Interval && s.KeyType.Name == setPort4.datatype().Name:
		return setPort4
	case !s.Interval && s.KeyType.Name == setPort6.datatype().Name:
		return setPort6
	}
	return 0
}

// readSet reads one set's elements into the model's form.
func (b *Backend) readSet(s *nftables.Set) (*nset, error) {
	if s.Table == nil {
		s.Table = b.table()
	}
	ns := &nset{name: s.Name, kind: kindOf(s)}
	if ns.kind == 0 {
		return ns, nil
	}
	els, err := b.conn.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("nftables: list elements of %s: %w", s.Name, err)
	}
	switch ns.kind {
	case setAddr4, setAddr6:
		spans, err := spansFromElements(els, ns.kind == setAddr4)
		if err != nil {
			// Not something weft wrote: let diff rebuild it.
			return &nset{name: s.Name}, nil
		}
		ns.spans = spans
	case setPort4, setPort6:
		for _, e := range els {
			ns.keys = append(ns.keys, string(e.Key))
		}
		slices.Sort(ns.keys)
	case setIfaceMap:
		ns.vmap = map[string]string{}
		for _, e := range els {
			chain, ok := gotoChain(e.Val)
			if !ok {
				chain = "?" // anything but a goto: repaired by diff
			}
			ns.vmap[string(bytes.TrimRight(e.Key, "\x00"))] = chain
		}
	}
	return ns, nil
}

// gotoChain decodes a verdict map element's data: a goto to a chain.
func gotoChain(val []byte) (string, bool) {
	ad, err := mdnetlink.NewAttributeDecoder(val)
	if err != nil {
		return "", false
	}
	ad.ByteOrder = binary.BigEndian
	var code int32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if ad.Err() != nil || code != int32(expr.VerdictGoto) || chain == "" {
		return "", false
	}
	return chain, true
}

// spansFromElements decodes an interval set's elements.
func spansFromElements(els []nftables.SetElement, v4 bool) ([]span, error) {
	type point struct {
		a   netip.Addr
		end bool
	}
	pts := make([]point, 0, len(els))
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok || a.Is4() != v4 {
			return nil, fmt.Errorf("element %x is not an address of the set's family", e.Key)
		}
		pts = append(pts, point{a, e.IntervalEnd})
	}
	slices.SortFunc(pts, func(x, y point) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		// At one address an end closes the previous range first.
		return cmp.Compare(boolInt(!x.end), boolInt(!y.end))
	})
	var out []span
	for i := 0; i < len(pts); i++ {
		if pts[i].end {
			continue // a leading end element at the zero address carries no range
		}
		s := span{from: pts[i].a}
		if i+1 < len(pts) && pts[i+1].end {
			s.to = pts[i+1].a.Prev()
			i++
		} else {
			s.to = maxAddr(v4)
		}
		out = append(out, s)
	}
	return out, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Counters implements firewall.Backend: it reads the rules of every
// policy and profile chain and sums their counters per API rule.
func (b *Backend) Counters(ctx context.Context) ([]firewall.RuleCounter, error) {
	chains := b.chains.Load()
	if chains == nil {
		return nil, nil
	}
	type key struct {
		chain string
		rule  int
	}
	sums := map[key]*firewall.RuleCounter{}
	var order []key
	var errs []string
	for _, name := range chains.Keys() {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c, _ := chains.Get(name)
		if c.owner == nil {
			continue
		}
		rules, err := b.conn.GetRules(b.table(), &nftables.Chain{Name: name, Table: b.table()})
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		// Every rule of the chain appears, with zero counts when it never
		// matched.
		for _, r := range c.rules {
			k := key{name, firewall.RuleIndex(r.tag)}
			if _, ok := sums[k]; !ok && k.rule >= 0 {
				sums[k] = &firewall.RuleCounter{Policy: *c.owner, Direction: c.dir, Rule: k.rule}
				order = append(order, k)
			}
		}
		for _, r := range rules {
			k := key{name, firewall.RuleIndex(string(r.UserData))}
			rc := sums[k]
			if rc == nil {
				continue
			}
			for _, e := range r.Exprs {
				if ct, ok := e.(*expr.Counter); ok {
					rc.Packets += ct.Packets
					rc.Bytes += ct.Bytes
				}
			}
		}
	}
	out := make([]firewall.RuleCounter, 0, len(order))
	for _, k := range order {
		out = append(out, *sums[k])
	}
	if len(errs) > 0 && len(out) == 0 {
		return nil, fmt.Errorf("nftables: reading counters: %s", strings.Join(errs, "; "))
	}
	return out, nil
}
