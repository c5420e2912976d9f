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
	"net"
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
}

// Manager is the route manager; see the package comment.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	k      Kernel
	ns     *netns.Target
	closer func()
	writes atomic.Uint64

	desired map[dataplane.RouteKey]dataplane.Route
	actual  map[dataplane.RouteKey]kroute.Route // weft routes in the kernel
	resync  resync.Flag                         // re-read the kernel before the next pass
	// linkNames maps interface indexes to names as of the last update
	// phase.
	linkNames map[int]string
	// conflicts are the desired routes held by foreign routes, with the
	// error last reported (each is logged once, not on every retry).
	conflicts map[dataplane.RouteKey]string
	// failed are the routes the last pass could not program, with why.
	failed map[dataplane.RouteKey]error

	// Shared with the Watch goroutine.
	mu     sync.Mutex
	wanted map[dataplane.RouteKey]bool
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
		desired:   map[dataplane.RouteKey]dataplane.Route{},
		actual:    map[dataplane.RouteKey]kroute.Route{},
		conflicts: map[dataplane.RouteKey]string{},
		failed:    map[dataplane.RouteKey]error{},
		wanted:    map[dataplane.RouteKey]bool{},
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
	m.desired = make(map[dataplane.RouteKey]dataplane.Route, len(d.Routes))
	wanted := make(map[dataplane.RouteKey]bool, len(d.Routes))
	for _, r := range d.Routes {
		m.desired[r.Key()] = r
		wanted[r.Key()] = true
	}
	m.mu.Lock()
	m.wanted = wanted
	m.mu.Unlock()
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
	var errs []error
	m.failed = map[dataplane.RouteKey]error{}
	for key, r := range m.desired {
		idx := 0
		if r.Type == dataplane.RouteUnicast && r.Dev != "" {
			var ok bool
			if idx, ok = index[r.Dev]; !ok {
				err := fmt.Errorf("route %s: device %s does not exist", r, r.Dev)
				m.failed[key] = err
				errs = append(errs, err)
				continue
			}
		}
		want := kroute.FromDesired(r, idx)
		cur, ours := m.actual[key]
		if ours && want.Satisfies(cur) {
			m.conflictGone(key)
			continue
		}
		var wrote bool
		var err error
		if ours {
			// weft's route holds the destination: change it in place.
			err = m.k.RouteReplace(want.Netlink())
			wrote = err == nil
		} else {
			wrote, err = kroute.Add(m.k, want, m.linkName)
		}
		if err != nil {
			// The kernel may hold something else now: re-read it next time.
			delete(m.actual, key)
			m.noteConflict(r, err)
			err = fmt.Errorf("route %s: %w", r, err)
			m.failed[key] = err
			errs = append(errs, err)
			continue
		}
		if wrote {
			m.writes.Add(1)
		}
		m.actual[key] = want
		m.conflictGone(key)
	}
	for key := range m.conflicts {
		if _, ok := m.desired[key]; !ok {
			delete(m.conflicts, key)
		}
	}
	return errors.Join(errs...)
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

func (m *Manager) applyRemovals() error {
	return sweep.Undesired(m.actual, func(k dataplane.RouteKey) bool { _, ok := m.desired[k]; return ok },
		func(_ dataplane.RouteKey, cur kroute.Route) error { return m.k.RouteDel(cur.Netlink()) }, unix.ESRCH, &m.writes)
}

// readKernel replaces the cache with the weft routes of every table.
func (m *Manager) readKernel() error {
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: dataplane.RouteProtocol}
	nrs, err := nlutil.Dump(func() ([]netlink.Route, error) {
		return m.k.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("list weft routes: %w", err)
	}
	actual := make(map[dataplane.RouteKey]kroute.Route, len(nrs))
	for _, nr := range nrs {
		r, ok := kroute.FromNetlink(nr)
		if !ok {
			m.log.Warn("ignoring a weft-protocol route weft cannot have written", "route", nr.String())
			continue
		}
		actual[r.Key()] = r
	}
	m.actual = actual
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
			if m.wanted[dataplane.RouteKey{Table: table, Dst: dst}] {
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
			if len(m.wanted) > 0 {
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
