// Package routes manages the routes weft owns, in any routing table: every
// route carrying [dataplane.RouteProtocol], IPv4 and IPv6. It is the only
// writer of routes in the host namespace; routes are identified by table
// and destination ([dataplane.RouteKey]).
//
// The manager keeps a cache of the kernel's weft routes, diffs the desired
// routes against it and writes only the differences. A changed weft route
// is replaced in place (swapped atomically rather than deleted and
// re-added); a destination weft has no route to is created with an
// exclusive add, so a route of another protocol to the same destination
// and metric is never overwritten: weft reports it (an error wrapping
// [dataplane.ErrForeignRoute], logged at Warn once per conflict) and
// retries until it is gone. On its first Apply, and on every resync, it
// dumps the weft routes from the kernel: routes that already match are
// adopted untouched, so a restarted agent does not flap anything. Routes
// of other protocols are never replaced or removed. A weft route deleted
// behind weft's back is repaired at once (route events) or at the latest
// at the next periodic resync; a foreign route appearing at a desired
// destination (perhaps replacing weft's) makes the next pass re-read the
// table too, so the cache never mistakes it for weft's. The kernel flushes
// the IPv4 routes through a device that is set down or deleted without any
// route event, so a link going down or away also makes the next pass
// re-read the routes.
//
// Routes learned over BGP ([dataplane.RouteClassBGP]) carry their own
// protocol ([dataplane.RouteProtocolBGP]) and metric, so they never collide
// with a route the host already has. Their next hop may be several hops
// away (Recursive, BIRD's "gateway recursive"): each pass resolves every
// such next hop once through the kernel's routing table and programs the
// first hop and its device. While the desired state says HoldBGPRoutes
// (graceful restart: the speaker has not relearned its routes yet), learned
// routes in the kernel that are no longer listed are kept.
//
// Workload host routes (/32 and /128 to a workload interface) are desired
// like any other route. The loop runs this manager's update phase after the
// links manager's (the interface exists before its route) and its removal
// phase before (the route goes before its interface). A host route that
// cannot be programmed is reported against its workload
// ([Manager.WorkloadProblems]), so a workload add waits for it or fails.
package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/kroute"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/resync"
	"github.com/weftnet/weft/dataplane/internal/sweep"
	"github.com/weftnet/weft/dataplane/internal/watch"
	"github.com/weftnet/weft/internal/netns"
)

// Config configures a [Manager].
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace whose routes are managed; "" is the current
	// one.
	NetNS string
}

// Kernel is the part of *netlink.Handle the manager uses; tests substitute
// a fake.
type Kernel interface {
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	RouteAdd(*netlink.Route) error
	RouteReplace(*netlink.Route) error
	RouteDel(*netlink.Route) error
	LinkList() ([]netlink.Link, error)
	// RouteGet resolves a recursive route's gateway (`ip route get`).
	RouteGet(destination net.IP) ([]netlink.Route, error)
}

// Manager is the route manager; see the package comment.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	k      Kernel
	ns     *netns.Target
	closer func()
	writes atomic.Uint64

	// desired are the routes of the last Set, each with the Set that
	// last listed it. Shared with the Watch goroutine: Set writes it under
	// mu, which Watch reads it under.
	desired map[dataplane.RouteKey]desiredRoute
	setGen  uint64
	holdBGP bool // keep undesired learned routes
	// The passes are proportional to what changed: dirty are the desired
	// routes changed since the last update phase, which looks at them and
	// at the failed ones only, unless full says every route may differ
	// from the kernel (the kernel re-read, a device's index or a recursive
	// next hop changed). sweepAll makes the removal phase look at every
	// weft route (a desired route gone, the kernel re-read).
	dirty    map[dataplane.RouteKey]bool
	full     bool
	sweepAll bool
	// lastIndex and lastHops are the device indexes and recursive next
	// hops the last update phase used.
	lastIndex map[string]int
	lastHops  map[netip.Addr]firstHop
	actual    map[dataplane.RouteKey]kroute.Route // weft routes in the kernel
	// extra are further weft routes to a key of actual (another metric: a
	// destination whose class changed when the agent stopped between the
	// add and the delete); the removal phase deletes them.
	extra  []kroute.Route
	resync resync.Flag // re-read the kernel before the next pass
	// linkNames maps interface indexes to names as of the last update
	// phase.
	linkNames map[int]string
	// conflicts are the desired routes held by foreign routes, with the
	// error last reported (each is logged once, not on every retry).
	conflicts map[dataplane.RouteKey]string
	// failed are the routes the last pass could not program, with why.
	failed map[dataplane.RouteKey]error

	mu sync.Mutex // see desired
}

// desiredRoute is a desired route and the Set that last listed it.
type desiredRoute struct {
	dataplane.Route
	gen uint64
}

// New opens a netlink handle in the configured namespace.
func New(cfg Config) (*Manager, error) {
	ns, h, closer, err := netns.OpenNetlink(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	m := NewWithKernel(cfg, h)
	m.ns, m.closer = ns, closer
	return m, nil
}

// NewWithKernel builds a manager over any Kernel (tests). It has no
// namespace to watch.
func NewWithKernel(cfg Config, k Kernel) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "routes"),
		k:         k,
		desired:   map[dataplane.RouteKey]desiredRoute{},
		dirty:     map[dataplane.RouteKey]bool{},
		lastHops:  map[netip.Addr]firstHop{},
		actual:    map[dataplane.RouteKey]kroute.Route{},
		conflicts: map[dataplane.RouteKey]string{},
		failed:    map[dataplane.RouteKey]error{},
		closer:    func() {},
	}
	m.resync.Queue() // the first pass reads the kernel
	return m
}

// Close releases the netlink handle.
func (m *Manager) Close() error {
	m.closer()
	return nil
}

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "routes" }

// KernelWrites implements dataplane.WriteCounter.
func (m *Manager) KernelWrites() uint64 { return m.writes.Load() }

// Set implements dataplane.Manager: the desired routes are d.Routes.
func (m *Manager) Set(d *dataplane.Desired) {
	if m.holdBGP != d.HoldBGPRoutes {
		m.holdBGP, m.sweepAll = d.HoldBGPRoutes, true
	}
	// The map is updated in place rather than replaced: with thousands of
	// learned routes a new one per state is most of the agent's garbage;
	// and only the routes that changed are marked for the next pass.
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setGen++
	listed := 0
	for _, r := range d.Routes {
		k := r.Key()
		cur, ok := m.desired[k]
		if ok && cur.gen == m.setGen { // listed twice: the last counts
			listed--
		}
		listed++
		if !ok || cur.Route != r {
			m.dirty[k] = true
		}
		m.desired[k] = desiredRoute{Route: r, gen: m.setGen}
	}
	if listed == len(m.desired) {
		return
	}
	for k, cur := range m.desired {
		if cur.gen != m.setGen {
			delete(m.desired, k)
			m.dirty[k] = true
			m.sweepAll = true
		}
	}
}

// QueueResync implements dataplane.Manager.
func (m *Manager) QueueResync() { m.resync.Queue() }

// WorkloadProblems implements dataplane.WorkloadReporter: the workload
// host routes the last pass could not program, by their interface.
func (m *Manager) WorkloadProblems() map[string]error {
	out := map[string]error{}
	for k, err := range m.failed {
		if r, ok := m.desired[k]; ok && r.Class == dataplane.RouteClassWorkload && r.Dev != "" {
			out[r.Dev] = errors.Join(out[r.Dev], err)
		}
	}
	return out
}

// RouteProblems implements dataplane.RouteReporter: the desired routes the
// last pass could not program.
func (m *Manager) RouteProblems() map[dataplane.RouteKey]error {
	if len(m.failed) == 0 {
		return nil
	}
	out := make(map[dataplane.RouteKey]error, len(m.failed))
	for k, err := range m.failed {
		out[k] = err
	}
	return out
}

// Apply implements dataplane.Manager.
func (m *Manager) Apply(_ context.Context, phase dataplane.Phase) error {
	if phase == dataplane.PhaseRemove {
		return m.applyRemovals()
	}
	return m.applyUpdates()
}

func (m *Manager) applyUpdates() error {
	if err := m.resync.Run(m.readKernel); err != nil {
		return err
	}
	// Resolve device names on every pass: a device deleted and recreated
	// (VXLAN repaired, workload veth re-plumbed) has a new index, and every
	// route through it differs from the cache and is rewritten.
	links, err := nlutil.Dump(m.k.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	index := make(map[string]int, len(links))
	m.linkNames = make(map[int]string, len(links))
	for _, l := range links {
		index[l.Attrs().Name] = l.Attrs().Index
		m.linkNames[l.Attrs().Index] = l.Attrs().Name
	}
	if !maps.Equal(index, m.lastIndex) {
		m.full = true
	}
	// Recursive gateways are resolved once per pass; one that resolves
	// differently now changes every route through it.
	hops := make(map[netip.Addr]firstHop, len(m.lastHops))
	if !m.full {
		for via, last := range m.lastHops {
			hop := m.resolve(via)
			hops[via] = hop
			if !hop.same(last) {
				m.full = true
			}
		}
	}
	// The routes to look at: all of them, or the changed and the failed.
	check := m.dirty
	if m.full {
		check = nil
	} else {
		for k := range m.failed {
			check[k] = true
		}
	}
	var errs []error
	m.failed = map[dataplane.RouteKey]error{}
	if check == nil {
		for key, r := range m.desired {
			errs = m.update(key, r.Route, index, hops, errs)
		}
	}
	for key := range check {
		if r, ok := m.desired[key]; ok {
			errs = m.update(key, r.Route, index, hops, errs)
		}
	}
	for key := range m.conflicts {
		if _, ok := m.desired[key]; !ok {
			delete(m.conflicts, key)
		}
	}
	clear(m.dirty)
	m.full, m.lastIndex, m.lastHops = false, index, hops
	return errors.Join(errs...)
}

// same reports whether two resolutions of a next hop agree.
func (h firstHop) same(o firstHop) bool {
	return h.gw == o.gw && h.link == o.link && (h.err == nil) == (o.err == nil)
}

// update makes the kernel hold the desired route r (at key) and appends
// what went wrong to errs.
func (m *Manager) update(key dataplane.RouteKey, r dataplane.Route, index map[string]int, hops map[netip.Addr]firstHop, errs []error) []error {
	idx := 0
	if r.Type == dataplane.RouteUnicast && r.Dev != "" {
		var ok bool
		if idx, ok = index[r.Dev]; !ok {
			err := fmt.Errorf("route %s: device %s does not exist", r, r.Dev)
			m.failed[key] = err
			errs = append(errs, err)
			return errs
		}
	}
	want := kroute.FromDesired(r, idx)
	if r.Recursive {
		hop, ok := hops[r.Via]
		if !ok {
			hop = m.resolve(r.Via)
			hops[r.Via] = hop
		}
		if hop.err != nil {
			err := fmt.Errorf("route %s: %w", r, hop.err)
			m.failed[key] = err
			errs = append(errs, err)
			return errs
		}
		want.Gw, want.LinkIndex = hop.gw, hop.link
	}
	cur, ours := m.actual[key]
	if ours && want.Satisfies(cur) {
		m.conflictGone(key)
		return errs
	}
	var wrote bool
	var err error
	switch {
	case ours && cur.Priority == want.Priority:
		// weft's route holds the destination: change it in place.
		err = m.k.RouteReplace(want.Netlink())
		wrote = err == nil
	case ours:
		// The destination changed class (a learned route gave way to
		// a block route, or back), and so its metric: add the new
		// route, then delete the old one, so that the destination is
		// never unrouted.
		wrote, err = kroute.Add(m.k, want, m.linkName)
		if err == nil {
			if derr := m.k.RouteDel(cur.Netlink()); derr != nil && !errors.Is(derr, unix.ESRCH) {
				m.extra = append(m.extra, cur)
			}
			m.writes.Add(1)
		}
	default:
		wrote, err = kroute.Add(m.k, want, m.linkName)
	}
	if err != nil {
		// The kernel may hold something else now: re-read it next time.
		delete(m.actual, key)
		m.noteConflict(r, err)
		err = fmt.Errorf("route %s: %w", r, err)
		m.failed[key] = err
		errs = append(errs, err)
		return errs
	}
	if wrote {
		m.writes.Add(1)
	}
	m.actual[key] = want
	m.conflictGone(key)
	return errs
}

// noteConflict logs a foreign route holding a desired destination at Warn,
// once per conflict: the error itself is returned on every retry.
func (m *Manager) noteConflict(r dataplane.Route, err error) {
	var ce *kroute.ConflictError
	if !errors.As(err, &ce) {
		return
	}
	if msg := ce.Error(); m.conflicts[r.Key()] != msg {
		m.conflicts[r.Key()] = msg
		m.log.Warn("a route weft does not own holds a destination weft routes; leaving it alone until it is removed",
			"route", r.String(), "foreign", strings.Join(ce.Foreign, "; "))
	}
}

func (m *Manager) conflictGone(key dataplane.RouteKey) {
	if _, ok := m.conflicts[key]; ok {
		delete(m.conflicts, key)
		m.log.Info("the foreign route is gone; weft's route is in place", "dst", key)
	}
}

func (m *Manager) linkName(index int) string { return m.linkNames[index] }

// firstHop is where a recursive route's gateway resolved to: the gateway
// of the route that reaches it (or the gateway itself when it is on a
// connected subnet) and the device.
type firstHop struct {
	gw   netip.Addr
	link int
	err  error
}

// resolve looks up how the kernel reaches via right now.
func (m *Manager) resolve(via netip.Addr) firstHop {
	nrs, err := m.k.RouteGet(via.AsSlice())
	if err != nil {
		return firstHop{err: fmt.Errorf("next hop %s is unreachable: %w", via, err)}
	}
	if len(nrs) == 0 {
		return firstHop{err: fmt.Errorf("next hop %s is unreachable: no route", via)}
	}
	nr := nrs[0]
	gwIP, link := nr.Gw, nr.LinkIndex
	if len(nr.MultiPath) > 0 { // a multipath route: its first hop
		gwIP, link = nr.MultiPath[0].Gw, nr.MultiPath[0].LinkIndex
	}
	if nr.Type != unix.RTN_UNICAST || link == 0 {
		return firstHop{err: fmt.Errorf("next hop %s is not reachable through a unicast route (%s)", via, kroute.Describe(nr, m.linkName))}
	}
	gw := kroute.Addr(gwIP)
	if !gw.IsValid() {
		gw = via // on a connected subnet
	}
	if gw.Is4() != via.Is4() {
		return firstHop{err: fmt.Errorf("next hop %s resolves through a gateway of another family (%s)", via, gw)}
	}
	return firstHop{gw: gw, link: link}
}

func (m *Manager) applyRemovals() error {
	var errs []error
	extra := m.extra[:0]
	for _, r := range m.extra {
		if err := m.k.RouteDel(r.Netlink()); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove %s: %w", r.Key(), err))
			extra = append(extra, r)
			continue
		}
		m.writes.Add(1)
	}
	m.extra = extra
	keep := func(k dataplane.RouteKey) bool {
		if _, ok := m.desired[k]; ok {
			return true
		}
		// Graceful restart: a learned route stays until the speaker has
		// relearned what it knew (or the restart time ran out).
		return m.holdBGP && m.actual[k].Protocol == dataplane.RouteProtocolBGP
	}
	if m.sweepAll {
		err := sweep.Undesired(m.actual, keep,
			func(_ dataplane.RouteKey, cur kroute.Route) error { return m.k.RouteDel(cur.Netlink()) }, unix.ESRCH, &m.writes)
		m.sweepAll = err != nil // retried next pass
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// readKernel replaces the cache with the weft routes of every table, of
// both of weft's protocols.
func (m *Manager) readKernel() error {
	var nrs []netlink.Route
	for _, proto := range []int{dataplane.RouteProtocol, dataplane.RouteProtocolBGP} {
		filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: netlink.RouteProtocol(proto)}
		got, err := nlutil.Dump(func() ([]netlink.Route, error) {
			return m.k.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return fmt.Errorf("list weft routes (protocol %d): %w", proto, err)
		}
		nrs = append(nrs, got...)
	}
	actual := make(map[dataplane.RouteKey]kroute.Route, len(nrs))
	m.extra = m.extra[:0]
	for _, nr := range nrs {
		r, ok := kroute.FromNetlink(nr)
		if !ok {
			m.log.Warn("ignoring a weft-protocol route weft cannot have written", "route", nr.String())
			continue
		}
		if prev, dup := actual[r.Key()]; dup {
			// Two weft routes to one destination at different metrics:
			// keep the one the desired state wants (or the first), delete
			// the other.
			if want, ok := m.desired[r.Key()]; ok && want.Metric() == r.Priority {
				prev, r = r, prev
			}
			m.extra = append(m.extra, r)
			r = prev
		}
		actual[r.Key()] = r
	}
	m.actual = actual
	m.full, m.sweepAll = true, true // the cache may differ anywhere now
	return nil
}

// Watch implements dataplane.Watcher: a desired weft route deleted behind
// weft's back, a foreign route added at a desired destination, or a link
// set down or deleted (the kernel then flushes the routes through it
// silently), triggers a resync and repair at once.
func (m *Manager) Watch(ctx context.Context, kick func()) error {
	ns := netns.Current().Handle()
	if m.ns != nil {
		ns = m.ns.Handle()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() {
		errc <- watch.Routes(ctx, ns, func(u netlink.RouteUpdate) {
			weft := kroute.IsWeft(u.Route)
			// A weft route went away, or a foreign route appeared, perhaps
			// replacing weft's route to a desired destination: the cache
			// must not go on taking that destination for weft's.
			if !(u.Type == unix.RTM_DELROUTE && weft) && !(u.Type == unix.RTM_NEWROUTE && !weft) {
				return
			}
			dst, ok := kroute.Dst(u.Route)
			if !ok {
				return
			}
			table := u.Table
			if table == 0 {
				table = unix.RT_TABLE_MAIN
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			if _, ok := m.desired[dataplane.RouteKey{Table: table, Dst: dst}]; ok {
				m.resync.Event()
				kick()
			}
		})
	}()
	go func() {
		errc <- watch.Links(ctx, ns, func(u netlink.LinkUpdate) {
			if u.Header.Type != unix.RTM_DELLINK && u.Link.Attrs().Flags&net.FlagUp != 0 {
				return
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			if len(m.desired) > 0 {
				m.resync.Event()
				kick()
			}
		})
	}()
	// The first subscription to end (an error, or ctx) ends both.
	err := <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	if err != nil {
		m.resync.Event()
	}
	return err
}
