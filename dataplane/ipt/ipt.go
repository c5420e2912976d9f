// Package ipt is weft's iptables firewall backend: it renders the policy
// section (dataplane/policy.go) and outgoing NAT into iptables chains
// whose names start with "weft-" and ipsets whose names start with
// "weft4-" or "weft6-", and keeps the kernel in step incrementally. The
// firewall manager (dataplane/firewall) drives it, exactly as it drives
// the nftables backend (dataplane/nft); it is the only writer of those
// chains and sets, and touches nothing else.
//
// # The tools
//
// Running iptables-restore and ipset is the one accepted exception to
// "no shelling out" (SPEC). The variant — iptables-nft or iptables-legacy
// — is the one the machine uses, detected as Felix does (see
// detectVariant) unless configured; the backend's name says which.
//
// # Chains
//
// Each built-in chain weft uses gets one jump, inserted at the top once
// and then left where it is (see render.go for the tables). Rule
// selectors, rule nets and named ports are ipsets (hash:net, and
// hash:ip,port for named ports). Each rule carries a comment
// "weft:<chain content hash>:<position>[:r<rule>]", as Felix's hash
// comments: reading iptables-save back tells which chains the kernel holds
// as wanted.
//
// # Transactions
//
// An apply is at most: one `ipset restore` (new sets, members added and
// removed), one `iptables-restore --noflush` per family and table that
// changed (new and changed chains declared, which flushes them, and
// refilled; deleted chains flushed and removed; each table is one atomic
// transaction in both variants), and one `ipset restore` destroying the
// sets no rule names any more. A set member change is only an ipset
// add/del; a policy edit rewrites only its chains; a start, the periodic
// resync and the apply after a failure read the kernel and rewrite only
// the chains that differ. A failed step stops the apply: the tables not
// written yet keep their last good rules, and the next apply reads the
// kernel and completes it.
package ipt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os/exec"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/internal/netns"
)

// Config configures a backend.
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace to program; "" is the current one.
	NetNS string
	// IfacePrefix is the prefix of workload interfaces (default "weft").
	IfacePrefix string
	// Variant is "nft" or "legacy"; "" or "auto" detects it.
	Variant string
	// LockWait is how long iptables-restore waits for the xtables lock
	// (iptables-legacy; default 2 s). A lock held longer fails the apply,
	// which the loop retries with backoff.
	LockWait time.Duration
	// LockFile replaces iptables' lock file (/run/xtables.lock) for
	// tests; "" keeps it.
	LockFile string
	// LookPath finds the tools (default exec.LookPath).
	LookPath func(string) (string, error)
}

// maxSetMembers is the ipsets' maxelem.
const maxSetMembers = 1 << 20

type tools struct{ save, restore string }

// Backend is the iptables backend; see the package comment.
type Backend struct {
	log      *slog.Logger
	ns       *netns.Target
	run      *runner
	cfg      renderConfig
	variant  string
	tools    map[uint8]tools
	lockWait string
	lookPath func(string) (string, error)
	// otherVariantClean: the variant not in use holds none of weft's
	// chains (checked after the first full apply).
	otherVariantClean bool

	// model is what the kernel holds, as of the last successful apply;
	// nil when unknown.
	model *model
	// owners are the policy chains' owners by chain name, for Counters
	// (read from any goroutine).
	owners atomic.Pointer[map[string]owner]
}

type owner struct {
	ref dataplane.PolicyRef
	dir dataplane.Direction
}

// model is weft's part of the kernel: chains by chainKey, sets by name.
type model struct {
	sets   dataplane.Map[*iset]
	chains dataplane.Map[*ichain]
}

var _ firewall.Backend = (*Backend)(nil)

// New finds the tools and the variant. Nothing is written until Apply.
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
	if cfg.LockWait <= 0 {
		cfg.LockWait = 2 * time.Second
	}
	if cfg.LookPath == nil {
		cfg.LookPath = exec.LookPath
	}
	if _, err := cfg.LookPath("ipset"); err != nil {
		return nil, fmt.Errorf("iptables backend: ipset: %w", err)
	}
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	r := &runner{ns: ns}
	if cfg.LockFile != "" {
		r.env = []string{"XTABLES_LOCKFILE=" + cfg.LockFile}
	}
	b := &Backend{
		log: cfg.Logger.With("component", "iptables"), ns: ns, run: r,
		cfg:      renderConfig{ifacePrefix: cfg.IfacePrefix},
		lockWait: strconv.Itoa(int(math.Ceil(cfg.LockWait.Seconds()))),
		tools:    map[uint8]tools{},
		lookPath: cfg.LookPath,
	}
	switch cfg.Variant {
	case "nft", "legacy":
		b.variant = cfg.Variant
		b.log.Info("iptables backend: variant configured", "variant", "iptables-"+b.variant)
	case "", "auto":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var legacy, nft int
		b.variant, legacy, nft = detectVariant(cfg.LookPath, func(name string) []byte {
			out, _ := r.run(ctx, "", name)
			return out
		})
		b.log.Info("iptables backend: variant detected as Felix does", "variant", "iptables-"+b.variant,
			"legacy_rules", legacy, "nft_rules", nft)
	default:
		ns.Close()
		return nil, fmt.Errorf("iptables backend: variant %q: want nft, legacy or auto", cfg.Variant)
	}
	for _, v := range []uint8{4, 6} {
		save, err := tool(cfg.LookPath, b.variant, v, "save")
		if err == nil {
			var restore string
			restore, err = tool(cfg.LookPath, b.variant, v, "restore")
			b.tools[v] = tools{save: save, restore: restore}
		}
		if err != nil {
			ns.Close()
			return nil, fmt.Errorf("iptables backend: %w", err)
		}
	}
	return b, nil
}

// Name implements firewall.Backend: "iptables-nft" or "iptables-legacy".
func (b *Backend) Name() string { return "iptables-" + b.variant }

// Variant is "nft" or "legacy".
func (b *Backend) Variant() string { return b.variant }

// Close implements firewall.Backend. The rules stay.
func (b *Backend) Close() error { return b.ns.Close() }

// Apply implements firewall.Backend.
func (b *Backend) Apply(ctx context.Context, want, prev *firewall.State) (firewall.Stats, error) {
	full := prev == nil || b.model == nil
	var (
		next model
		ch   changes
	)
	if full {
		next = build(b.cfg, want, nil, nil)
		kv, err := b.readKernel(ctx)
		if err != nil {
			return firewall.Stats{}, err
		}
		ch, err = diff(kv.model, next)
		if err != nil {
			return firewall.Stats{}, err
		}
		ch.jumps(kv.jumps)
	} else {
		next = build(b.cfg, want, prev, b.model)
		var err error
		if ch, err = diff(*b.model, next); err != nil {
			b.model = nil
			return firewall.Stats{}, err
		}
	}
	stats := statsOf(next)
	if !ch.empty() {
		// Until this apply succeeds the kernel is not known.
		b.model = nil
		start := time.Now()
		writes, err := b.commit(ctx, ch)
		if err != nil {
			return firewall.Stats{}, err
		}
		b.log.Debug("iptables apply", "took", time.Since(start), "transactions", writes, "new_sets", len(ch.newSets),
			"set_changes", len(ch.setDeltas), "deleted_sets", len(ch.delSets), "tables", len(ch.tables))
		stats.Writes = writes
	}
	// The rules' text is needed only to write a chain: keep the tags
	// (all that comparing needs) of every chain of a full build, else of
	// the chains just written (the others were stripped before).
	if full {
		next.chains.Range(func(_ string, c *ichain) bool {
			c.strip()
			return true
		})
	} else {
		for _, t := range ch.tables {
			for _, c := range t.write {
				c.strip()
			}
		}
	}
	b.model = &next
	if (full && stats.Rules >= bigApply) || ch.size() >= bigApply {
		// A full read and build of a large ruleset (a start, a periodic
		// resync), or a large write, leaves its peak of text on the heap:
		// return it now rather than carry it as resident memory.
		debug.FreeOSMemory()
	}
	if full && !b.otherVariantClean {
		other := "legacy"
		if b.variant == "legacy" {
			other = "nft"
		}
		if err := removeChains(ctx, b.run, b.lookPath, other); err != nil {
			b.log.Warn("removing weft's chains from the iptables variant not in use", "variant", other, "err", err)
		} else {
			b.otherVariantClean = true
		}
	}
	owners := map[string]owner{}
	next.chains.Range(func(_ string, c *ichain) bool {
		if c.owner != nil {
			owners[c.name] = owner{ref: *c.owner, dir: c.dir}
		}
		return true
	})
	b.owners.Store(&owners)
	return stats, nil
}

// bigApply is the number of rules from which a full apply returns freed
// memory to the system at once.
const bigApply = 2000

func statsOf(m model) firewall.Stats {
	s := firewall.Stats{Chains: m.chains.Len(), Sets: m.sets.Len()}
	m.chains.Range(func(_ string, c *ichain) bool {
		s.Rules += len(c.rules)
		return true
	})
	m.sets.Range(func(_ string, st *iset) bool {
		s.SetMembers += len(st.members)
		return true
	})
	return s
}

// ---- building the model ------------------------------------------------------

var families = []uint8{4, 6}

// build computes the model of want. With a base model (and the state prev
// it was built from) only what differs between prev and want is rebuilt.
func build(cfg renderConfig, want, prev *firewall.State, base *model) model {
	var sets *dataplane.MapEditor[*iset]
	var chains *dataplane.MapEditor[*ichain]
	if base != nil {
		sets, chains = base.sets.Edit(), base.chains.Edit()
	} else {
		sets, chains = dataplane.Map[*iset]{}.Edit(), dataplane.Map[*ichain]{}.Edit()
	}
	wp := want.Policy
	if wp == nil {
		wp = &dataplane.PolicyState{}
	}
	delSets := func(id string) {
		for _, v := range families {
			sets.Delete(setName(id, v))
		}
	}
	setChain := func(c *ichain) { chains.Set(c.key(), c) }
	delChain := func(table, name string) {
		for _, v := range families {
			chains.Delete(chainKey(v, table, name))
		}
	}
	firewall.WalkChanges(want, prev, base == nil, firewall.Visitor{
		AddrSet: func(id string, s *dataplane.AddrSet, in bool) {
			if !in {
				delSets(id)
				return
			}
			for _, st := range addrSets(id, s) {
				sets.Set(st.name, st)
			}
		},
		PortSet: func(id string, s *dataplane.PortSet, in bool) {
			if !in {
				delSets(id)
				return
			}
			for _, st := range portSets(id, s) {
				sets.Set(st.name, st)
			}
		},
		Chain: func(id string, old, c *dataplane.PolicyChain, inOld, in bool) {
			if inOld {
				delChain(tableOf(old.Stage), chainName(id))
			}
			if in {
				for _, v := range families {
					setChain(policyChain(id, c, v))
				}
			}
		},
		Workload: func(iface string, e *dataplane.EndpointPolicy, in bool) {
			if !in {
				delChain(tFilter, chainName("fw-"+iface))
				delChain(tFilter, chainName("tw-"+iface))
				return
			}
			for _, v := range families {
				from, to := workloadChains(iface, e, wp.Settings, v)
				setChain(from)
				setChain(to)
			}
		},
		Host: func(old, h *dataplane.HostEndpointPolicy, inOld, in bool) {
			if inOld {
				deleteHostChains(delChain, old)
			}
			if in {
				for _, v := range families {
					for _, c := range hostChains(h, wp.Settings, v) {
						setChain(c)
					}
				}
			}
		},
		Endpoints: func() {
			for _, v := range families {
				for _, c := range fixedChains(cfg, wp, v) {
					setChain(c)
				}
			}
		},
		NAT: func() {
			for _, v := range families {
				ss, c := natObjects(want.NAT, v)
				for _, s := range ss {
					sets.Set(s.name, s)
				}
				setChain(c)
			}
		},
	})
	return model{sets: sets.Map(), chains: chains.Map()}
}

func deleteHostChains(del func(table, name string), h *dataplane.HostEndpointPolicy) {
	n := hostNames(h)
	for _, name := range []string{n.in, n.out, n.fwdIn, n.fwdOut} {
		del(tFilter, name)
	}
	del(tMangle, n.pre)
	del(tRaw, n.rawIn)
	del(tRaw, n.rawOut)
}

// ---- diff --------------------------------------------------------------------

// changes is what one apply writes.
type changes struct {
	newSets   []*iset
	setDeltas []setDelta
	delSets   []string
	// tables are the chain changes by "<family> <table>".
	tables map[string]*tableChanges
}

type setDelta struct {
	set      *iset
	add, del []string
}

type tableChanges struct {
	fam   uint8
	table string
	write []*ichain // declared (flushed when they exist) and filled
	del   []string  // flushed and removed
	// insertJumps are the built-in chains missing their jump; dupJumps
	// the saved lines of jumps found more than once.
	insertJumps []string
	dupJumps    []string
}

// size is the number of rules and set members the changes write.
func (c *changes) size() int {
	n := 0
	for _, d := range c.setDeltas {
		n += len(d.add) + len(d.del)
	}
	for _, t := range c.tables {
		for _, ch := range t.write {
			n += len(ch.rules)
		}
	}
	return n
}

func (c *changes) empty() bool {
	return len(c.newSets)+len(c.setDeltas)+len(c.delSets)+len(c.tables) == 0
}

func (c *changes) table(fam uint8, table string) *tableChanges {
	k := strconv.Itoa(int(fam)) + " " + table
	t := c.tables[k]
	if t == nil {
		t = &tableChanges{fam: fam, table: table}
		c.tables[k] = t
	}
	return t
}

// diff computes the changes from old (the kernel, or the model the kernel
// holds) to want.
func diff(old, want model) (changes, error) {
	ch := changes{tables: map[string]*tableChanges{}}
	var errs []error
	dataplane.DiffMaps(old.sets, want.sets, (*iset).equal, func(name string, o, n *iset, inOld, inNew bool) bool {
		switch {
		case inOld && inNew && (o.typ != n.typ || o.fam != n.fam):
			// ipset cannot change a set's type, nor destroy a set a rule
			// names: say so rather than half-apply.
			errs = append(errs, fmt.Errorf("ipset %s exists as %s family %d; weft needs %s family %d: destroy it (ipset destroy %s)",
				name, o.typ, o.fam, n.typ, n.fam, name))
		case inOld && inNew:
			d := setDelta{set: n}
			d.del, d.add = diffSorted(o.members, n.members)
			ch.setDeltas = append(ch.setDeltas, d)
		case inNew:
			ch.newSets = append(ch.newSets, n)
			if len(n.members) > 0 {
				ch.setDeltas = append(ch.setDeltas, setDelta{set: n, add: n.members})
			}
		default:
			ch.delSets = append(ch.delSets, name)
		}
		return true
	})
	if err := errors.Join(errs...); err != nil {
		return ch, fmt.Errorf("iptables: %w", err)
	}
	dataplane.DiffMaps(old.chains, want.chains, (*ichain).equal, func(_ string, o, n *ichain, inOld, inNew bool) bool {
		if inNew {
			t := ch.table(n.fam, n.table)
			t.write = append(t.write, n)
		} else {
			t := ch.table(o.fam, o.table)
			t.del = append(t.del, o.name)
		}
		return true
	})
	slices.SortFunc(ch.newSets, func(a, b *iset) int { return strings.Compare(a.name, b.name) })
	slices.SortFunc(ch.setDeltas, func(a, b setDelta) int { return strings.Compare(a.set.name, b.set.name) })
	slices.Sort(ch.delSets)
	for _, t := range ch.tables {
		slices.SortFunc(t.write, func(a, b *ichain) int { return strings.Compare(a.name, b.name) })
		slices.Sort(t.del)
	}
	return ch, nil
}

// jumps adds the jumps the built-in chains miss, and removes repeated
// ones; saved are the jump lines found, by chainKey(fam, table, builtin).
func (c *changes) jumps(saved map[string][]string) {
	for _, v := range families {
		for _, table := range tables {
			for _, bi := range builtins[table] {
				lines := saved[chainKey(v, table, bi)]
				switch {
				case len(lines) == 0:
					t := c.table(v, table)
					t.insertJumps = append(t.insertJumps, bi)
				case len(lines) > 1:
					t := c.table(v, table)
					t.dupJumps = append(t.dupJumps, lines[1:]...)
				}
			}
		}
	}
}

// diffSorted returns the items only in a and only in b (both sorted).
func diffSorted(a, b []string) (onlyA, onlyB []string) {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := strings.Compare(a[i], b[j]); {
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
	return append(onlyA, a[i:]...), append(onlyB, b[j:]...)
}

// ---- commit ------------------------------------------------------------------

func familyWord(v uint8) string {
	if v == 6 {
		return "inet6"
	}
	return "inet"
}

// ipsetScript is the `ipset restore` input that creates the new sets and
// adds and removes members.
func ipsetScript(ch changes) string {
	var sb strings.Builder
	for _, s := range ch.newSets {
		fmt.Fprintf(&sb, "create %s %s family %s maxelem %d\n", s.name, s.typ, familyWord(s.fam), maxSetMembers)
	}
	for _, d := range ch.setDeltas {
		for _, m := range d.del {
			fmt.Fprintf(&sb, "del %s %s\n", d.set.name, m)
		}
		for _, m := range d.add {
			fmt.Fprintf(&sb, "add %s %s\n", d.set.name, m)
		}
	}
	return sb.String()
}

// restoreScript is the iptables-restore input of one table's changes.
func restoreScript(t *tableChanges) string {
	var sb strings.Builder
	sb.WriteString("*" + t.table + "\n")
	for _, c := range t.write {
		sb.WriteString(":" + c.name + " - [0:0]\n")
	}
	for _, name := range t.del {
		sb.WriteString(":" + name + " - [0:0]\n")
	}
	for _, c := range t.write {
		for _, r := range c.rules {
			sb.WriteString("-A " + c.name + " " + r.line() + "\n")
		}
	}
	for _, line := range t.dupJumps {
		sb.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
	}
	for _, bi := range t.insertJumps {
		fmt.Fprintf(&sb, "-I %s 1 -m comment --comment %s -j %s\n", bi, jumpTag, topChain(bi))
	}
	for _, name := range t.del {
		sb.WriteString("-X " + name + "\n")
	}
	sb.WriteString("COMMIT\n")
	return sb.String()
}

// commit writes the changes: sets first (rules may name new ones), then
// each table in one transaction, then the sets no rule names any more.
func (b *Backend) commit(ctx context.Context, ch changes) (int, error) {
	writes := 0
	if len(ch.newSets)+len(ch.setDeltas) > 0 {
		writes++
		if netlinkable(ch) {
			if err := b.netlinkMembers(ch); err != nil {
				return writes, err
			}
		} else if _, err := b.run.run(ctx, ipsetScript(ch), "ipset", "-exist", "restore"); err != nil {
			return writes, fmt.Errorf("ipset restore: %w", err)
		}
	}
	keys := make([]string, 0, len(ch.tables))
	for k := range ch.tables {
		keys = append(keys, k)
	}
	// raw, mangle, filter, nat; IPv4 first.
	order := func(k string) int {
		t := ch.tables[k]
		return int(t.fam)*10 + slices.Index(tables, t.table)
	}
	sort.Slice(keys, func(i, j int) bool { return order(keys[i]) < order(keys[j]) })
	for _, k := range keys {
		t := ch.tables[k]
		writes++
		if _, err := b.run.run(ctx, restoreScript(t), b.tools[t.fam].restore, "--noflush", "-w", b.lockWait); err != nil {
			return writes, fmt.Errorf("iptables: table %s (IPv%d): %w", t.table, t.fam, err)
		}
	}
	if len(ch.delSets) > 0 {
		var sb strings.Builder
		for _, name := range ch.delSets {
			sb.WriteString("destroy " + name + "\n")
		}
		writes++
		if _, err := b.run.run(ctx, sb.String(), "ipset", "-exist", "restore"); err != nil {
			return writes, fmt.Errorf("ipset destroy: %w", err)
		}
	}
	return writes, nil
}

// ---- counters ----------------------------------------------------------------

// Counters implements firewall.Backend: the policy rules' counters,
// summed over families and over the iptables rules one API rule became.
func (b *Backend) Counters(ctx context.Context) ([]firewall.RuleCounter, error) {
	op := b.owners.Load()
	if op == nil {
		return nil, nil
	}
	owners := *op
	type key struct {
		o   owner
		idx int
	}
	sums := map[key]*firewall.RuleCounter{}
	for _, v := range families {
		out, err := b.run.run(ctx, "", b.tools[v].save, "-c")
		if err != nil {
			return nil, fmt.Errorf("iptables: read counters: %w", err)
		}
		for _, st := range parseSave(out) {
			for name, sc := range st.chains {
				o, ok := owners[name]
				if !ok {
					continue
				}
				for i, tag := range sc.tags {
					idx := firewall.RuleIndex(tag)
					if idx < 0 {
						continue
					}
					k := key{o, idx}
					rc := sums[k]
					if rc == nil {
						rc = &firewall.RuleCounter{Policy: o.ref, Direction: o.dir, Rule: idx}
						sums[k] = rc
					}
					rc.Packets += sc.packets[i]
					rc.Bytes += sc.bytes[i]
				}
			}
		}
	}
	out := make([]firewall.RuleCounter, 0, len(sums))
	for _, rc := range sums {
		out = append(out, *rc)
	}
	slices.SortFunc(out, func(a, b firewall.RuleCounter) int {
		if c := strings.Compare(a.Policy.String(), b.Policy.String()); c != 0 {
			return c
		}
		if a.Direction != b.Direction {
			return int(a.Direction) - int(b.Direction)
		}
		return a.Rule - b.Rule
	})
	return out, nil
}
