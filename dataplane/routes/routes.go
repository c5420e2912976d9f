// Package routes manages the routes weft owns in the main routing table:
// every route carrying [dataplane.RouteProtocol], IPv4 and IPv6.
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
// like any other route, but an undesired one is not removed here: it lives
// and dies with its interface, which the links package owns. That keeps
// this manager from deleting the route of a workload added a moment ago
// whose desired state has not arrived yet.
package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/weftnet/weft/dataplane/internal/watch"
	"github.com/weftnet/weft/internal/netns"
)

// Config configures a [Manager].
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace whose main table is managed; "" is the
	// current one.
	NetNS string
	// WorkloadPrefix is the workload interface prefix (default
	// [dataplane.DefaultIfacePrefix]); undesired routes through such
	// interfaces are left to the links package.
	WorkloadPrefix string
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

	desired map[netip.Prefix]dataplane.Route
	actual  map[netip.Prefix]kroute.Route // weft routes in the kernel
	resync  resync.Flag                   // re-read the kernel before the next pass
	// linkNames maps interface indexes to names as of the last update
	// phase.
	linkNames map[int]string
	// conflicts are the desired destinations held by foreign routes, with
	// the error last reported (each is logged once, not on every retry).
	conflicts map[netip.Prefix]string

	// Shared with the Watch goroutine.
	mu     sync.Mutex
	wanted map[netip.Prefix]bool
}

// New opens a netlink handle in the configured namespace.
func New(cfg Config) (*Manager, error) {
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	h, err := ns.Netlink()
	if err != nil {
		ns.Close()
		return nil, err
	}
	m := NewWithKernel(cfg, h)
	m.ns = ns
	m.closer = func() { h.Close(); ns.Close() }
	return m, nil
}

// NewWithKernel builds a manager over any Kernel (tests). It has no
// namespace to watch.
func NewWithKernel(cfg Config, k Kernel) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WorkloadPrefix == "" {
		cfg.WorkloadPrefix = dataplane.DefaultIfacePrefix
	}
	m := &Manager{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "routes"),
		k:         k,
		desired:   map[netip.Prefix]dataplane.Route{},
		actual:    map[netip.Prefix]kroute.Route{},
		conflicts: map[netip.Prefix]string{},
		wanted:    map[netip.Prefix]bool{},
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

// Set implements dataplane.Manager: the desired routes are d.AllRoutes().
func (m *Manager) Set(d *dataplane.Desired) {
	all := d.AllRoutes()
	m.desired = make(map[netip.Prefix]dataplane.Route, len(all))
	wanted := make(map[netip.Prefix]bool, len(all))
	for _, r := range all {
		m.desired[r.Dst] = r
		wanted[r.Dst] = true
	}
	m.mu.Lock()
	m.wanted = wanted
	m.mu.Unlock()
}

// QueueResync implements dataplane.Manager.
func (m *Manager) QueueResync() { m.resync.Queue() }

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
	for dst, r := range m.desired {
		idx := 0
		if r.Type == dataplane.RouteUnicast && r.Dev != "" {
			var ok bool
			if idx, ok = index[r.Dev]; !ok {
				errs = append(errs, fmt.Errorf("route %s: device %s does not exist", r, r.Dev))
				continue
			}
		}
		want := kroute.FromDesired(r, idx)
		cur, ours := m.actual[dst]
		if ours && want.Satisfies(cur) {
			m.conflictGone(dst)
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
			delete(m.actual, dst)
			m.noteConflict(r, err)
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
			continue
		}
		if wrote {
			m.writes.Add(1)
		}
		m.actual[dst] = want
		m.conflictGone(dst)
	}
	for dst := range m.conflicts {
		if _, ok := m.desired[dst]; !ok {
			delete(m.conflicts, dst)
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
	if msg := ce.Error(); m.conflicts[r.Dst] != msg {
		m.conflicts[r.Dst] = msg
		m.log.Warn("a route weft does not own holds a destination weft routes; leaving it alone until it is removed",
			"route", r.String(), "foreign", strings.Join(ce.Foreign, "; "))
	}
}

func (m *Manager) conflictGone(dst netip.Prefix) {
	if _, ok := m.conflicts[dst]; ok {
		delete(m.conflicts, dst)
		m.log.Info("the foreign route is gone; weft's route is in place", "dst", dst)
	}
}

func (m *Manager) linkName(index int) string { return m.linkNames[index] }

func (m *Manager) applyRemovals() error {
	var errs []error
	for dst, cur := range m.actual {
		if _, ok := m.desired[dst]; ok {
			continue
		}
		if cur.Type == unix.RTN_UNICAST && dataplane.IsWorkloadIface(m.cfg.WorkloadPrefix, m.linkNames[cur.LinkIndex]) {
			continue // goes with its workload interface
		}
		err := m.k.RouteDel(cur.Netlink())
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", dst, err))
			continue
		}
		if err == nil {
			m.writes.Add(1)
		}
		delete(m.actual, dst)
	}
	return errors.Join(errs...)
}

// readKernel replaces the cache with the weft routes in the main table.
func (m *Manager) readKernel() error {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: dataplane.RouteProtocol}
	nrs, err := nlutil.Dump(func() ([]netlink.Route, error) {
		return m.k.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("list weft routes: %w", err)
	}
	actual := make(map[netip.Prefix]kroute.Route, len(nrs))
	for _, nr := range nrs {
		r, ok := kroute.FromNetlink(nr)
		if !ok {
			m.log.Warn("ignoring a weft-protocol route weft cannot have written", "route", nr.String())
			continue
		}
		actual[r.Dst] = r
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
			if u.Table != unix.RT_TABLE_MAIN {
				return
			}
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
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.wanted[dst] {
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
