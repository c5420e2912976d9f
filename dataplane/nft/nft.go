// Package nft is weft's nftables firewall backend: it renders the policy
// section (dataplane/policy.go) and outgoing NAT into the one table
// "inet weft", which it owns whole, and keeps the kernel in step with
// incremental, atomic transactions. The firewall manager
// (dataplane/firewall) drives it; it is the only writer of the table.
//
// # The table
//
// Base chains (see render.go) dispatch by interface through verdict maps
// (wl-from, wl-to for workloads; hep-* for host endpoints) to one chain
// per endpoint and direction (fw-/tw-<iface>; fh./th.<hep> ...), which
// jumps to one chain per policy and direction (pi-/po-<policy>) and per
// profile (pri-/pro-<profile>) in tier order. Rule selectors are address
// sets (s-<hash>-4/-6, interval sets of the matching endpoints' addresses
// and network sets' nets), rule nets are sets too (n-<hash>-4/-6), named
// ports are sets of (address . protocol . port) (p-<hash>-4/-6).
// Connection tracking accepts established and related traffic first and
// drops invalid packets; an interface shaped like a workload's that no
// map names is dropped (fail closed).
//
// # Transactions
//
// Each apply is one netlink batch, atomic in the kernel: set elements are
// added and removed, a chain whose content changed is flushed and refilled
// in the same batch, new chains are created before anything jumps to them
// and old ones deleted after nothing does. Nothing is flushed and rebuilt
// on a normal change. Each rule carries user data naming its chain's
// content hash, so after a restart (or at a periodic resync) the backend
// reads the table, adopts every chain and set that already holds what is
// wanted, and repairs only what differs; a table in a shape it cannot
// repair in place (a set or chain of the wrong type) is deleted and
// re-created within one transaction, so no packet sees it missing.
//
// Large element batches: at most maxElemsPerMsg elements go in one
// netlink message (a larger one is truncated silently by the kernel
// interface, platform notes trap 2) and a set that received many elements
// is read back and compared.
package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/internal/netns"
)

const (
	// maxElemsPerMsg keeps an element message well under the size at
	// which its 16-bit attribute length overflows.
	maxElemsPerMsg = 500
	// verifyElems: a set that received at least this many elements in one
	// batch is read back.
	verifyElems = 400
	// socketBuffer is the netlink socket buffer (both ways): a cold start
	// with thousands of rules is one batch, and every message is acked.
	socketBuffer = 64 << 20
)

// Config configures a backend.
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace to program; "" is the current one.
	NetNS string
	// IfacePrefix is the prefix of workload interfaces (default "weft").
	IfacePrefix string
}

// Backend is the nftables backend; see the package comment.
type Backend struct {
	log  *slog.Logger
	ns   *netns.Target
	conn *nftables.Conn
	cfg  renderConfig

	// model is what the kernel holds, as of the last successful apply;
	// nil when unknown.
	model *model
	setID uint32
	// chains is the model's chains, for Counters (read from any
	// goroutine; a Map is immutable).
	chains atomic.Pointer[dataplane.Map[*nchain]]
}

var _ firewall.Backend = (*Backend)(nil)

// New opens an nftables connection in the configured namespace. Nothing
// is written until Apply.
func New(cfg Config) (*Backend, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IfacePrefix == "" {
		cfg.IfacePrefix = dataplane.DefaultIfacePrefix
	}
	if err := dataplane.ValidateIfacePrefix(cfg.IfacePrefix); err != nil {
		return nil, err
	}
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *mdnetlink.Conn) error {
		// Large batches fail with "message too long" on the default
		// buffers (platform notes, trap 1); acks of a large batch overflow
		// the receive buffer. Forced sizes: root may exceed wmem_max.
		if err := setBuffers(c, socketBuffer); err != nil {
			return err
		}
		// Acks carry only the header, not the whole message back.
		return c.SetOption(mdnetlink.CapAcknowledge, true)
	})}
	if !ns.IsCurrent() {
		opts = append(opts, nftables.WithNetNSFd(ns.Fd()))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Backend{
		log:  cfg.Logger.With("component", "nftables"),
		ns:   ns,
		conn: conn,
		cfg:  renderConfig{ifacePrefix: cfg.IfacePrefix},
	}, nil
}

// setBuffers raises a netlink socket's buffers, forcing past the system
// maximum when allowed (root), else as far as it goes.
func setBuffers(c *mdnetlink.Conn, n int) error {
	sc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = sc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], n) != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], n); e != nil {
					serr = e
				}
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Name implements firewall.Backend.
func (b *Backend) Name() string { return "nftables" }

// Close implements firewall.Backend. The table stays.
func (b *Backend) Close() error { return b.ns.Close() }

func (b *Backend) table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Apply implements firewall.Backend.
func (b *Backend) Apply(_ context.Context, want, prev *firewall.State) (firewall.Stats, error) {
	var (
		next    model
		ch      changes
		rebuild bool
		full    = prev == nil || b.model == nil
	)
	if full {
		next = build(b.cfg, want, nil, nil)
		kv, err := b.read()
		if err != nil {
			return firewall.Stats{}, err
		}
		ch, rebuild = diff(kv.model, next, !kv.exists)
		if rebuild {
			b.log.Warn("the nftables table holds objects of the wrong type; re-creating it in one transaction")
			ch, _ = diff(model{}, next, true)
			ch.dropTable = kv.exists
		}
	} else {
		next = build(b.cfg, want, prev, b.model)
		ch, rebuild = diff(*b.model, next, false)
		if rebuild {
			// Cannot happen from a model the backend built itself; the
			// next apply reads the kernel.
			b.model = nil
			return firewall.Stats{}, errors.New("nftables: the model changed a set's or chain's type; resyncing")
		}
	}
	stats := statsOf(next)
	if ch.empty() {
		b.commitModel(&next, full, nil)
		if full && stats.Rules >= bigBatch {
			// Adopting a large table (a restart, a periodic resync) read
			// and rendered all of it: return that garbage now.
			debug.FreeOSMemory()
		}
		return stats, nil
	}
	start := time.Now()
	if err := b.commit(ch); err != nil {
		return firewall.Stats{}, err
	}
	b.log.Debug("nftables transaction", "took", time.Since(start), "new_sets", len(ch.newSets), "set_changes", len(ch.elemDeltas),
		"deleted_sets", len(ch.delSets), "new_chains", len(ch.newChains), "filled_chains", len(ch.fillChains),
		"deleted_chains", len(ch.delChains), "rebuild", ch.dropTable)
	if err := b.verify(ch); err != nil {
		// The kernel holds something else than the batch said: read it
		// next time.
		b.model = nil
		return firewall.Stats{}, err
	}
	b.commitModel(&next, full, ch.fillChains)
	stats.Writes = 1
	if ch.size() >= bigBatch {
		// A batch this large (a cold start, thousands of rules) leaves
		// its peak of marshalled messages and acks on the heap: return it
		// to the system now rather than carry it as resident memory.
		debug.FreeOSMemory()
	}
	return stats, nil
}

// bigBatch is the number of rules and set elements written from which an
// apply returns freed memory to the system at once.
const bigBatch = 2000

// commitModel makes m the model of the kernel. The rules' expressions are
// needed only to program a chain: they are dropped once it is (the tags
// stay), from every chain of a full build, else from the chains just
// programmed (the others were dropped before).
func (b *Backend) commitModel(m *model, full bool, programmed []*nchain) {
	strip := func(c *nchain) {
		for i := range c.rules {
			c.rules[i].exprs = nil
		}
	}
	if full {
		m.chains.Range(func(_ string, c *nchain) bool {
			strip(c)
			return true
		})
	}
	for _, c := range programmed {
		strip(c)
	}
	b.model = m
	b.chains.Store(&m.chains)
}

func statsOf(m model) firewall.Stats {
	s := firewall.Stats{Chains: m.chains.Len(), Sets: m.sets.Len()}
	m.chains.Range(func(_ string, c *nchain) bool {
		s.Rules += len(c.rules)
		return true
	})
	m.sets.Range(func(_ string, st *nset) bool {
		s.SetMembers += st.size()
		return true
	})
	return s
}

// ---- building the model ------------------------------------------------

// build computes the model of want. With a base model (and the state prev
// it was built from) only what differs between prev and want is rebuilt;
// without, everything is.
func build(cfg renderConfig, want, prev *firewall.State, base *model) model {
	var sets *dataplane.MapEditor[*nset]
	var chainEd *dataplane.MapEditor[*nchain]
	if base != nil {
		sets, chainEd = base.sets.Edit(), base.chains.Edit()
	} else {
		sets, chainEd = dataplane.Map[*nset]{}.Edit(), dataplane.Map[*nchain]{}.Edit()
	}
	wp := want.Policy
	if wp == nil {
		wp = &dataplane.PolicyState{}
	}
	firewall.WalkChanges(want, prev, base == nil, firewall.Visitor{
		AddrSet: func(id string, s *dataplane.AddrSet, in bool) {
			if !in {
				sets.Delete(id + "-4")
				sets.Delete(id + "-6")
				return
			}
			v4, v6 := addrSets(id, s)
			sets.Set(v4.name, v4)
			sets.Set(v6.name, v6)
		},
		PortSet: func(id string, s *dataplane.PortSet, in bool) {
			if !in {
				sets.Delete(id + "-4")
				sets.Delete(id + "-6")
				return
			}
			v4, v6 := portSets(id, s)
			sets.Set(v4.name, v4)
			sets.Set(v6.name, v6)
		},
		Chain: func(id string, _, c *dataplane.PolicyChain, _, in bool) {
			if !in {
				chainEd.Delete(id)
				return
			}
			chainEd.Set(id, policyChain(id, c))
		},
		Workload: func(iface string, e *dataplane.EndpointPolicy, in bool) {
			if !in {
				chainEd.Delete("fw-" + iface)
				chainEd.Delete("tw-" + iface)
				return
			}
			from, to := workloadChains(iface, e, wp.Settings)
			chainEd.Set(from.name, from)
			chainEd.Set(to.name, to)
		},
		Host: func(old, h *dataplane.HostEndpointPolicy, inOld, in bool) {
			if inOld {
				deleteHostChains(chainEd, old)
			}
			if in {
				for _, c := range hostChains(h, wp.Settings) {
					chainEd.Set(c.name, c)
				}
			}
		},
		Endpoints: func() {
			for _, m := range dispatchMaps(wp) {
				sets.Set(m.name, m)
			}
			for _, c := range baseChains(cfg, wp.Settings, allHostOf(wp)) {
				chainEd.Set(c.name, c)
			}
		},
		NAT: func() {
			ns, c := natObjects(want.NAT)
			for _, s := range ns {
				sets.Set(s.name, s)
			}
			chainEd.Set(c.name, c)
		},
	})
	return model{sets: sets.Map(), chains: chainEd.Map()}
}

func deleteHostChains(ed *dataplane.MapEditor[*nchain], h *dataplane.HostEndpointPolicy) {
	n := hostNames(h)
	for _, name := range []string{n.in, n.out, n.fwdIn, n.fwdOut, n.pre, n.rawIn, n.rawOut} {
		ed.Delete(name)
	}
}

// ---- diff ------------------------------------------------------------

// changes is what one transaction does.
type changes struct {
	dropTable   bool // delete the table first (a rebuild)
	createTable bool
	newSets     []*nset
	elemDeltas  []elemDelta
	delSets     []string
	newChains   []*nchain
	fillChains  []*nchain // flushed (if they existed) and refilled
	delChains   []string
}

// elemDelta is the element change of one set.
type elemDelta struct {
	set        *nset
	add, del   []nftables.SetElement
	addedCount int
}

// size is the number of rules and set elements the changes write.
func (c *changes) size() int {
	n := 0
	for _, ch := range c.fillChains {
		n += len(ch.rules)
	}
	for _, d := range c.elemDeltas {
		n += len(d.add) + len(d.del)
	}
	return n
}

func (c *changes) empty() bool {
	return !c.dropTable && !c.createTable && len(c.newSets)+len(c.elemDeltas)+len(c.delSets)+
		len(c.newChains)+len(c.fillChains)+len(c.delChains) == 0
}

// diff computes the changes from old (the kernel, or the model the kernel
// holds) to want. rebuild reports an object of the wrong type in old,
// which only a rebuild of the table can repair.
func diff(old, want model, tableMissing bool) (changes, bool) {
	ch := changes{createTable: tableMissing}
	rebuild := false
	dataplane.DiffMaps(old.sets, want.sets, (*nset).equal, func(name string, o, n *nset, inOld, inNew bool) bool {
		switch {
		case inOld && inNew && o.kind != n.kind:
			rebuild = true
			return false
		case inOld && inNew:
			ch.elemDeltas = append(ch.elemDeltas, elements(o, n))
		case inNew:
			ch.newSets = append(ch.newSets, n)
			ch.elemDeltas = append(ch.elemDeltas, elements(&nset{name: n.name, kind: n.kind}, n))
		default:
			ch.delSets = append(ch.delSets, name)
		}
		return true
	})
	if rebuild {
		return ch, true
	}
	dataplane.DiffMaps(old.chains, want.chains, (*nchain).equal, func(name string, o, n *nchain, inOld, inNew bool) bool {
		switch {
		case inOld && inNew && !equalHook(o.hook, n.hook):
			rebuild = true
			return false
		case inOld && inNew:
			ch.fillChains = append(ch.fillChains, n)
		case inNew:
			ch.newChains = append(ch.newChains, n)
			ch.fillChains = append(ch.fillChains, n)
		default:
			ch.delChains = append(ch.delChains, name)
		}
		return true
	})
	// A stable order makes batches reproducible (and logs readable).
	slices.SortFunc(ch.newSets, func(a, b *nset) int { return cmpStr(a.name, b.name) })
	slices.SortFunc(ch.elemDeltas, func(a, b elemDelta) int { return cmpStr(a.set.name, b.set.name) })
	slices.Sort(ch.delSets)
	slices.SortFunc(ch.newChains, func(a, b *nchain) int { return cmpStr(a.name, b.name) })
	slices.SortFunc(ch.fillChains, func(a, b *nchain) int { return cmpStr(a.name, b.name) })
	slices.Sort(ch.delChains)
	return ch, rebuild
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// elements is the element change from o to n (same kind).
func elements(o, n *nset) elemDelta {
	d := elemDelta{set: n}
	switch n.kind {
	case setAddr4, setAddr6:
		v4 := n.kind == setAddr4
		gone, added := diffSorted(o.spans, n.spans, func(a, b span) int {
			if c := a.from.Compare(b.from); c != 0 {
				return c
			}
			return a.to.Compare(b.to)
		})
		for _, s := range gone {
			d.del = append(d.del, spanElements(s, v4)...)
		}
		for _, s := range added {
			d.add = append(d.add, spanElements(s, v4)...)
		}
		d.addedCount = len(added)
	case setPort4, setPort6:
		gone, added := diffSorted(o.keys, n.keys, cmpStr)
		for _, k := range gone {
			d.del = append(d.del, nftables.SetElement{Key: []byte(k)})
		}
		for _, k := range added {
			d.add = append(d.add, nftables.SetElement{Key: []byte(k)})
		}
		d.addedCount = len(added)
	case setIfaceMap:
		keys := make([]string, 0, len(n.vmap))
		for k := range n.vmap {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for k, c := range o.vmap {
			if n.vmap[k] != c {
				d.del = append(d.del, nftables.SetElement{Key: ifname(k), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: c}})
			}
		}
		slices.SortFunc(d.del, func(a, b nftables.SetElement) int { return cmpStr(string(a.Key), string(b.Key)) })
		for _, k := range keys {
			if o.vmap[k] != n.vmap[k] {
				d.add = append(d.add, nftables.SetElement{Key: ifname(k), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: n.vmap[k]}})
				d.addedCount++
			}
		}
	}
	return d
}

// diffSorted returns the items only in a and only in b (both sorted).
func diffSorted[T any](a, b []T, cmp func(x, y T) int) (onlyA, onlyB []T) {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := cmp(a[i], b[j]); {
		case c < 0:
			onlyA = append(onlyA, a[i])
			i++
		case c > 0:
			onlyB = append(onlyB, b[j])
			j++
		default:
			i++
			j++
		}
	}
	onlyA = append(onlyA, a[i:]...)
	onlyB = append(onlyB, b[j:]...)
	return onlyA, onlyB
}

// spanElements is the interval encoding of a range: its start, and an
// interval-end element at the address after it (none at the top of the
// address space).
func spanElements(s span, v4 bool) []nftables.SetElement {
	out := []nftables.SetElement{{Key: s.from.AsSlice()}}
	if end := s.to.Next(); end.IsValid() && end.Is4() == v4 {
		out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
	}
	return out
}

// ---- commit ------------------------------------------------------------

func (b *Backend) nftSet(s *nset) *nftables.Set {
	out := &nftables.Set{Table: b.table(), Name: s.name, KeyType: s.kind.datatype(), Interval: s.kind.interval()}
	if s.kind == setIfaceMap {
		out.IsMap, out.DataType = true, nftables.TypeVerdict
		// Interface names are host-order strings to nft: without this the
		// elements list as "" in `nft list`.
		out.KeyByteOrder = binaryutil.NativeEndian
	}
	return out
}

func (b *Backend) nftChain(c *nchain) *nftables.Chain {
	out := &nftables.Chain{Name: c.name, Table: b.table()}
	if c.hook != nil {
		h := c.hook
		num, prio := h.num, h.prio
		out.Hooknum, out.Priority, out.Type = &num, &prio, h.typ
		accept := nftables.ChainPolicyAccept
		out.Policy = &accept
	}
	return out
}

// commit sends the changes as one batch. The order inside it is what
// keeps every reference valid: sets and chains exist before anything
// names them, and go only after nothing does.
func (b *Backend) commit(ch changes) error {
	c := b.conn
	t := b.table()
	if ch.dropTable {
		c.DelTable(t)
	}
	c.AddTable(t)
	sendElems := func(op func(*nftables.Set, []nftables.SetElement) error, s *nftables.Set, els []nftables.SetElement, interval bool) error {
		for len(els) > 0 {
			n := min(len(els), maxElemsPerMsg)
			// Never split a start from its interval end.
			if interval && n < len(els) && els[n].IntervalEnd {
				n++
			}
			if err := op(s, els[:n]); err != nil {
				return err
			}
			els = els[n:]
		}
		return nil
	}
	for _, s := range ch.newSets {
		ns := b.nftSet(s)
		b.setID++
		// An explicit ID: with 0, google/nftables allocates one from an
		// unsynchronised package-global counter.
		ns.ID = b.setID
		ns.Comment = s.comment
		if err := c.AddSet(ns, nil); err != nil {
			return fmt.Errorf("nftables: set %s: %w", s.name, err)
		}
	}
	// Element changes of address and port sets; maps after the chains.
	var mapDeltas []elemDelta
	for _, d := range ch.elemDeltas {
		if d.set.kind == setIfaceMap {
			mapDeltas = append(mapDeltas, d)
			continue
		}
		s := b.nftSet(d.set)
		if err := sendElems(c.SetDeleteElements, s, d.del, s.Interval); err != nil {
			return fmt.Errorf("nftables: elements of %s: %w", d.set.name, err)
		}
		if err := sendElems(c.SetAddElements, s, d.add, s.Interval); err != nil {
			return fmt.Errorf("nftables: elements of %s: %w", d.set.name, err)
		}
	}
	newChain := map[string]bool{}
	for _, n := range ch.newChains {
		c.AddChain(b.nftChain(n))
		newChain[n.name] = true
	}
	for _, n := range ch.fillChains {
		nc := b.nftChain(n)
		if !newChain[n.name] {
			c.FlushChain(nc)
		}
		for _, r := range n.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: nc, Exprs: r.exprs, UserData: []byte(r.tag)})
		}
	}
	for _, d := range mapDeltas {
		s := b.nftSet(d.set)
		if err := sendElems(c.SetDeleteElements, s, d.del, false); err != nil {
			return fmt.Errorf("nftables: elements of %s: %w", d.set.name, err)
		}
		if err := sendElems(c.SetAddElements, s, d.add, false); err != nil {
			return fmt.Errorf("nftables: elements of %s: %w", d.set.name, err)
		}
	}
	for _, name := range ch.delChains {
		nc := &nftables.Chain{Name: name, Table: t}
		c.FlushChain(nc)
	}
	for _, name := range ch.delChains {
		c.DelChain(&nftables.Chain{Name: name, Table: t})
	}
	for _, name := range ch.delSets {
		c.DelSet(&nftables.Set{Name: name, Table: t})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: transaction on table inet %s: %w", TableName, err)
	}
	return nil
}

// verify reads back the sets that received many elements (a truncated
// element message fails silently).
func (b *Backend) verify(ch changes) error {
	for _, d := range ch.elemDeltas {
		if d.addedCount < verifyElems {
			continue
		}
		got, err := b.readSet(b.nftSet(d.set))
		if err != nil {
			return err
		}
		if !got.equal(d.set) {
			return fmt.Errorf("nftables: set %s holds %d elements after the transaction, want %d", d.set.name, got.size(), d.set.size())
		}
	}
	return nil
}

// RemoveTable deletes weft's table from the namespace netnsPath ("" for
// the current one) if it exists: what the nftables backend leaves behind
// on a node that switched to the iptables backend. Other tables stay.
func RemoveTable(netnsPath string) error {
	ns, err := netns.Open(netnsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	var opts []nftables.ConnOption
	if !ns.IsCurrent() {
		opts = append(opts, nftables.WithNetNSFd(ns.Fd()))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer conn.CloseLasting()
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			conn.DelTable(t)
			if err := conn.Flush(); err != nil {
				return fmt.Errorf("nftables: delete table inet %s: %w", TableName, err)
			}
		}
	}
	return nil
}
