// Package nat programs outgoing NAT (calico.md §5.6) with nftables.
//
// Traffic whose source is in a natOutgoing pool and whose destination is
// in no pool (nor in the extra excluded destinations, e.g. node addresses)
// is masqueraded (with fully random source ports) as it leaves, IPv4 and
// IPv6, in the table "inet weft"; with an SNAT address (FelixConfiguration
// natOutgoingAddress) IPv4 traffic is source-NATed to it instead, and with
// a port range as well (natPortRange) its TCP and UDP take their source
// ports from the range (one rule each, before the rule for the other
// protocols, as Calico does). A masquerade cannot take a port range here:
// google/nftables v0.3.0 writes a masquerade's port registers without the
// flag that makes the kernel use them, so the calculation turns a port
// range without an address into SNAT to the node's own address. The
// manager owns these objects in it and nothing else:
//
//	set   nat-masq-v4, nat-masq-v6       sources to masquerade (interval)
//	set   nat-nomasq-v4, nat-nomasq-v6   destinations never masqueraded (interval)
//	chain nat-postrouting                type nat hook postrouting priority srcnat
//
// Other objects in the table (other weft drivers') and other tables are
// never touched. Every change is one nftables transaction: the sets'
// contents are replaced atomically (flush + add in one batch), and if the
// chain, its rules or the sets are missing or not what weft writes, all of
// the manager's objects are deleted and recreated in one batch, so no
// packet ever sees half a configuration. Existing matching state is
// adopted untouched. Set elements are sent at most 1,000 per message (a
// larger message is silently truncated by the kernel interface) and read
// back to verify.
package nat

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns"
)

// Names of weft's nftables objects.
const (
	TableName = "weft"
	ChainName = "nat-postrouting"
)

const (
	setMasq4   = "nat-masq-v4"
	setMasq6   = "nat-masq-v6"
	setNoMasq4 = "nat-nomasq-v4"
	setNoMasq6 = "nat-nomasq-v6"

	// maxElemsPerMsg keeps each element message under the size at which
	// the 16-bit attribute length overflows (platform notes, trap 2).
	maxElemsPerMsg = 1000

	ruleTagV4 = "weft:nat-outgoing:v1:ipv4"
	ruleTagV6 = "weft:nat-outgoing:v1:ipv6"
)

// Action is how matching traffic is translated: MASQUERADE, or for IPv4
// SNAT to an address, optionally into a source port range for TCP and UDP
// (only with an address; IPv6 is always masqueraded).
type Action struct {
	SNAT             netip.Addr
	PortMin, PortMax uint16
}

// natRule is one rule of the chain: a family, optionally one transport
// protocol, and the action.
type natRule struct {
	nfproto byte
	l4proto byte // 0: any
	snat    netip.Addr
	portMin uint16
	portMax uint16
}

// tag identifies the rule in its user data. The tag carries every
// parameter of the rule, so the chain holds the wanted rules exactly when
// its tags are the wanted tags (the rules are never decoded).
func (r natRule) tag() string {
	t := ruleTagV4
	if r.nfproto == unix.NFPROTO_IPV6 {
		t = ruleTagV6
	}
	switch r.l4proto {
	case unix.IPPROTO_TCP:
		t += ":tcp"
	case unix.IPPROTO_UDP:
		t += ":udp"
	}
	if r.snat.IsValid() {
		t += ":snat=" + r.snat.String()
	}
	if r.portMin != 0 {
		t += fmt.Sprintf(":ports=%d-%d", r.portMin, r.portMax)
	}
	return t
}

// rules are the chain's rules for an action, in order.
func (a Action) rules() []natRule {
	var out []natRule
	for _, fam := range []byte{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6} {
		base := natRule{nfproto: fam}
		if fam == unix.NFPROTO_IPV4 {
			base.snat = a.SNAT
		}
		if a.PortMin != 0 && base.snat.IsValid() {
			for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				r := base
				r.l4proto, r.portMin, r.portMax = proto, a.PortMin, a.PortMax
				out = append(out, r)
			}
		}
		out = append(out, base)
	}
	return out
}

func (a Action) tags() []string {
	var out []string
	for _, r := range a.rules() {
		out = append(out, r.tag())
	}
	return out
}

// Config configures a [Manager].
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace to program; "" is the current one.
	NetNS string
}

// Manager is the NAT manager; see the package comment.
type Manager struct {
	log    *slog.Logger
	ns     *netns.Target
	conn   *nftables.Conn
	writes atomic.Uint64

	want       NATSets
	wantAction Action
	applied    *NATSets // last state known to be in the kernel; nil = unknown
	// appliedAction is the action of the rules in the kernel when applied
	// is known.
	appliedAction Action
	resync        bool
	setID         uint32
}

// NATSets is the content of the four sets, as sorted, merged intervals.
type NATSets struct {
	Masq4, Masq6, NoMasq4, NoMasq6 []Span
}

// Span is an inclusive address range.
type Span struct{ From, To netip.Addr }

// New opens an nftables connection in the configured namespace.
func New(cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	opts := []nftables.ConnOption{
		// Large batches fail with "message too long" on the default
		// buffer (platform notes, trap 1).
		nftables.WithSockOptions(func(c *mdnetlink.Conn) error { return c.SetWriteBuffer(4 << 20) }),
	}
	if !ns.IsCurrent() {
		opts = append(opts, nftables.WithNetNSFd(ns.Fd()))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Manager{
		log:    cfg.Logger.With("component", "nat"),
		ns:     ns,
		conn:   conn,
		resync: true,
	}, nil
}

// Close releases the namespace handle.
func (m *Manager) Close() error { return m.ns.Close() }

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "nat" }

// KernelWrites implements dataplane.WriteCounter (one per transaction).
func (m *Manager) KernelWrites() uint64 { return m.writes.Load() }

// Set implements dataplane.Manager.
func (m *Manager) Set(d *dataplane.Desired) {
	m.want = Compute(d.NAT)
	m.wantAction = Action{SNAT: d.NAT.SNATAddress, PortMin: d.NAT.PortMin, PortMax: d.NAT.PortMax}
}

// QueueResync implements dataplane.Manager.
func (m *Manager) QueueResync() { m.resync = true }

// Compute turns the NAT configuration into set contents.
func Compute(c dataplane.NATConfig) NATSets {
	noMasq := slices.Concat(c.AllPools, c.ExcludeDests)
	return NATSets{
		Masq4:   Spans(c.MasqPools, true),
		Masq6:   Spans(c.MasqPools, false),
		NoMasq4: Spans(noMasq, true),
		NoMasq6: Spans(noMasq, false),
	}
}

// Equal compares set contents.
func (s NATSets) Equal(o NATSets) bool {
	return slices.Equal(s.Masq4, o.Masq4) && slices.Equal(s.Masq6, o.Masq6) &&
		slices.Equal(s.NoMasq4, o.NoMasq4) && slices.Equal(s.NoMasq6, o.NoMasq6)
}

// Spans converts the prefixes of one family into sorted ranges, merging
// overlapping and adjacent ones (interval sets reject overlaps).
func Spans(ps []netip.Prefix, v4 bool) []Span {
	var out []Span
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is4() != v4 {
			continue
		}
		p = p.Masked()
		out = append(out, Span{From: p.Addr(), To: lastAddr(p)})
	}
	slices.SortFunc(out, func(a, b Span) int { return a.From.Compare(b.From) })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			next := last.To.Next()
			if !next.IsValid() || s.From.Compare(next) <= 0 {
				if s.To.Compare(last.To) > 0 {
					last.To = s.To
				}
				continue
			}
		}
		merged = append(merged, s)
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

// elements is the interval set encoding: a start element per range and an
// interval-end element at the address after it (omitted when the range
// reaches the top of the address space).
func elements(spans []Span) [][]nftables.SetElement {
	var chunks [][]nftables.SetElement
	var cur []nftables.SetElement
	for _, s := range spans {
		pair := []nftables.SetElement{{Key: s.From.AsSlice()}}
		if end := s.To.Next(); end.IsValid() {
			pair = append(pair, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
		// Never split a range over two messages.
		if len(cur)+len(pair) > maxElemsPerMsg {
			chunks = append(chunks, cur)
			cur = nil
		}
		cur = append(cur, pair...)
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks
}

// spansFromElements decodes an interval set's elements.
func spansFromElements(els []nftables.SetElement, v4 bool) ([]Span, error) {
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
		// At the same address an end closes the previous range first.
		return cmp.Compare(boolInt(!x.end), boolInt(!y.end))
	})
	var out []Span
	for i := 0; i < len(pts); i++ {
		if pts[i].end {
			// A leading end element (older nft versions write one at the
			// zero address) carries no range.
			continue
		}
		s := Span{From: pts[i].a}
		if i+1 < len(pts) && pts[i+1].end {
			s.To = pts[i+1].a.Prev()
			i++
		} else {
			s.To = maxAddr(v4)
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

// Apply implements dataplane.Manager. All work happens in the update
// phase: the NAT configuration has no dependencies on other managers.
func (m *Manager) Apply(_ context.Context, phase dataplane.Phase) error {
	if phase != dataplane.PhaseUpdate {
		return nil
	}
	if !m.resync && m.applied != nil && m.applied.Equal(m.want) && m.appliedAction == m.wantAction {
		return nil
	}
	k, err := m.read()
	if err != nil {
		return err
	}
	m.resync = false
	switch {
	case !k.structureOK:
		m.log.Info("programming the outgoing NAT table", "reason", k.why)
		err = m.replaceAll(k)
	case !k.sets.Equal(m.want):
		err = m.replaceElements(k.sets)
	default:
		m.applied, m.appliedAction = &k.sets, m.wantAction
		return nil
	}
	if err != nil {
		m.applied = nil
		return err
	}
	// Read back: a truncated element batch fails silently.
	k, err = m.read()
	if err != nil {
		m.applied = nil
		return err
	}
	if !k.structureOK || !k.sets.Equal(m.want) {
		m.applied = nil
		return fmt.Errorf("nat: the kernel does not hold what was written (%s)", cmp.Or(k.why, "set contents differ"))
	}
	m.applied, m.appliedAction = &k.sets, m.wantAction
	return nil
}

// kernelState is what read found.
type kernelState struct {
	table       *nftables.Table
	chain       *nftables.Chain
	sets        NATSets
	setObjs     map[string]*nftables.Set
	structureOK bool
	why         string
}

func (m *Manager) table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// read loads the manager's objects and judges whether their structure is
// exactly what replaceAll writes.
func (m *Manager) read() (kernelState, error) {
	k := kernelState{setObjs: map[string]*nftables.Set{}}
	tables, err := m.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return k, fmt.Errorf("nat: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			k.table = t
		}
	}
	if k.table == nil {
		k.why = "no table"
		return k, nil
	}
	chains, err := m.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return k, fmt.Errorf("nat: list chains: %w", err)
	}
	for _, c := range chains {
		if c.Table.Name == TableName && c.Name == ChainName {
			k.chain = c
		}
	}
	sets, err := m.conn.GetSets(k.table)
	if err != nil {
		return k, fmt.Errorf("nat: list sets: %w", err)
	}
	wantKeys := map[string]nftables.SetDatatype{
		setMasq4: nftables.TypeIPAddr, setNoMasq4: nftables.TypeIPAddr,
		setMasq6: nftables.TypeIP6Addr, setNoMasq6: nftables.TypeIP6Addr,
	}
	var problems []string
	for _, s := range sets {
		if _, ours := wantKeys[s.Name]; ours {
			k.setObjs[s.Name] = s
		}
	}
	for name, key := range wantKeys {
		s, ok := k.setObjs[name]
		if !ok {
			problems = append(problems, "set "+name+" missing")
			continue
		}
		if s.KeyType.Name != key.Name || !s.Interval || s.IsMap {
			problems = append(problems, "set "+name+" has the wrong type")
			continue
		}
		els, err := m.conn.GetSetElements(s)
		if err != nil {
			return k, fmt.Errorf("nat: list elements of %s: %w", name, err)
		}
		spans, err := spansFromElements(els, key.Name == nftables.TypeIPAddr.Name)
		if err != nil {
			problems = append(problems, "set "+name+": "+err.Error())
			continue
		}
		switch name {
		case setMasq4:
			k.sets.Masq4 = spans
		case setMasq6:
			k.sets.Masq6 = spans
		case setNoMasq4:
			k.sets.NoMasq4 = spans
		case setNoMasq6:
			k.sets.NoMasq6 = spans
		}
	}
	if k.chain == nil {
		problems = append(problems, "chain missing")
	} else {
		c := k.chain
		if c.Type != nftables.ChainTypeNAT || c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookPostrouting ||
			c.Priority == nil || *c.Priority != *nftables.ChainPriorityNATSource {
			problems = append(problems, "chain is not a nat postrouting srcnat chain")
		} else {
			rules, err := m.conn.GetRules(k.table, c)
			if err != nil {
				return k, fmt.Errorf("nat: list rules: %w", err)
			}
			tags := make([]string, 0, len(rules))
			for _, r := range rules {
				tags = append(tags, string(r.UserData))
			}
			if want := m.wantAction.tags(); !slices.Equal(tags, want) {
				problems = append(problems, fmt.Sprintf("chain holds rules %q, want %q", tags, want))
			}
		}
	}
	k.structureOK = len(problems) == 0
	k.why = fmt.Sprint(problems)
	return k, nil
}

// replaceAll deletes whatever of the manager's objects exist and creates
// them afresh, in one transaction.
func (m *Manager) replaceAll(k kernelState) error {
	t := m.conn.AddTable(m.table()) // creates it if missing, no-op otherwise
	if k.chain != nil {
		m.conn.DelChain(&nftables.Chain{Name: ChainName, Table: t})
	}
	for _, s := range k.setObjs {
		m.conn.DelSet(&nftables.Set{Name: s.Name, Table: t})
	}
	sets := map[string]*nftables.Set{}
	for _, d := range []struct {
		name  string
		key   nftables.SetDatatype
		spans []Span
	}{
		{setMasq4, nftables.TypeIPAddr, m.want.Masq4},
		{setMasq6, nftables.TypeIP6Addr, m.want.Masq6},
		{setNoMasq4, nftables.TypeIPAddr, m.want.NoMasq4},
		{setNoMasq6, nftables.TypeIP6Addr, m.want.NoMasq6},
	} {
		// An explicit ID: with ID 0, google/nftables v0.3.0 allocates one
		// from an unsynchronised package-global counter (a data race when
		// two connections add sets concurrently). IDs only need to be
		// unique within the transaction.
		m.setID++
		s := &nftables.Set{Table: t, Name: d.name, KeyType: d.key, Interval: true, ID: m.setID}
		if err := m.conn.AddSet(s, nil); err != nil {
			return fmt.Errorf("nat: set %s: %w", d.name, err)
		}
		for _, chunk := range elements(d.spans) {
			if err := m.conn.SetAddElements(s, chunk); err != nil {
				return fmt.Errorf("nat: elements of %s: %w", d.name, err)
			}
		}
		sets[d.name] = s
	}
	c := m.conn.AddChain(&nftables.Chain{
		Name:     ChainName,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	for _, r := range m.wantAction.rules() {
		masq, noMasq := sets[setMasq4], sets[setNoMasq4]
		if r.nfproto == unix.NFPROTO_IPV6 {
			masq, noMasq = sets[setMasq6], sets[setNoMasq6]
		}
		m.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: r.exprs(masq, noMasq), UserData: []byte(r.tag())})
	}
	if err := m.conn.Flush(); err != nil {
		return fmt.Errorf("nat: program table inet %s: %w", TableName, err)
	}
	m.writes.Add(1)
	return nil
}

// exprs is "meta nfproto F [meta l4proto P] <family> saddr @masq <family>
// daddr != @nomasq counter" and then "masquerade fully-random" or "snat to
// ADDR[:MIN-MAX] fully-random".
func (r natRule) exprs(masq, noMasq *nftables.Set) []expr.Any {
	srcOff, dstOff, alen := uint32(12), uint32(16), uint32(4)
	if r.nfproto == unix.NFPROTO_IPV6 {
		srcOff, dstOff, alen = 8, 24, 16
	}
	es := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{r.nfproto}},
	}
	if r.l4proto != 0 {
		es = append(es,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{r.l4proto}})
	}
	es = append(es,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: srcOff, Len: alen},
		&expr.Lookup{SourceRegister: 1, SetName: masq.Name, SetID: masq.ID},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: dstOff, Len: alen},
		&expr.Lookup{SourceRegister: 1, SetName: noMasq.Name, SetID: noMasq.ID, Invert: true},
		&expr.Counter{},
	)
	ports := r.portMin != 0
	if ports {
		es = append(es,
			&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, r.portMin)},
			&expr.Immediate{Register: 3, Data: binary.BigEndian.AppendUint16(nil, r.portMax)})
	}
	switch {
	case r.snat.IsValid():
		nat := &expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, FullyRandom: true}
		if ports {
			nat.RegProtoMin, nat.RegProtoMax, nat.Specified = 2, 3, true
		}
		es = append(es, &expr.Immediate{Register: 1, Data: r.snat.AsSlice()}, nat)
	default:
		es = append(es, &expr.Masq{FullyRandom: true})
	}
	return es
}

// replaceElements swaps the contents of the sets that differ, in one
// transaction.
func (m *Manager) replaceElements(have NATSets) error {
	t := m.table()
	changed := false
	for _, d := range []struct {
		name       string
		key        nftables.SetDatatype
		have, want []Span
	}{
		{setMasq4, nftables.TypeIPAddr, have.Masq4, m.want.Masq4},
		{setMasq6, nftables.TypeIP6Addr, have.Masq6, m.want.Masq6},
		{setNoMasq4, nftables.TypeIPAddr, have.NoMasq4, m.want.NoMasq4},
		{setNoMasq6, nftables.TypeIP6Addr, have.NoMasq6, m.want.NoMasq6},
	} {
		if slices.Equal(d.have, d.want) {
			continue
		}
		s := &nftables.Set{Table: t, Name: d.name, KeyType: d.key, Interval: true}
		m.conn.FlushSet(s)
		for _, chunk := range elements(d.want) {
			if err := m.conn.SetAddElements(s, chunk); err != nil {
				return fmt.Errorf("nat: elements of %s: %w", d.name, err)
			}
		}
		changed = true
	}
	if !changed {
		return nil
	}
	if err := m.conn.Flush(); err != nil {
		return fmt.Errorf("nat: update sets: %w", err)
	}
	m.writes.Add(1)
	return nil
}
