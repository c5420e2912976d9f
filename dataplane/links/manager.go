package links

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/watch"
	"github.com/weftnet/weft/internal/netns"
)

// ManagerConfig configures a [Manager].
type ManagerConfig struct {
	Logger *slog.Logger
	// Plumber is the driver the Manager writes through.
	Plumber *Plumber
}

// Manager keeps the desired workloads plumbed: it adopts existing
// plumbing, repairs drift (a deleted veth is recreated as soon as the link
// event arrives), removes workloads no longer desired, and removes workload
// interfaces nobody wants (left by a workload deleted while the agent was
// down). It is the only writer of workload interfaces: the loop hands it
// the whole desired state, and the agent learns the outcome per workload
// from [Manager.WorkloadProblems] through the loop's reports. A workload
// whose namespace is gone is reported with [dataplane.ErrBadNetNS] and
// not retried until its namespace reappears or its desired state changes.
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger
	p   *Plumber

	desired map[string]dataplane.Workload // by host interface
	// ok holds workloads known to be fully plumbed as desired.
	ok map[string]dataplane.Workload
	// gone holds workloads whose namespace vanished, already reported.
	gone map[string]dataplane.Workload
	// strays are workload interfaces nobody wants, found by the last
	// resync.
	strays map[string]bool
	// problems are what the last pass could not do, by host interface.
	problems   map[string]error
	fullResync bool

	// Shared with the Watch goroutine.
	mu      sync.Mutex
	suspect map[string]bool // interfaces a link event says to re-check
	watched map[string]bool // interfaces believed plumbed
}

// NewManager builds a manager around a Plumber.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Plumber == nil {
		return nil, errors.New("links manager: no plumber")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "links"),
		p:          cfg.Plumber,
		desired:    map[string]dataplane.Workload{},
		ok:         map[string]dataplane.Workload{},
		gone:       map[string]dataplane.Workload{},
		strays:     map[string]bool{},
		problems:   map[string]error{},
		fullResync: true,
		suspect:    map[string]bool{},
		watched:    map[string]bool{},
	}, nil
}

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "links" }

// KernelWrites implements dataplane.WriteCounter.
func (m *Manager) KernelWrites() uint64 { return m.p.KernelWrites() }

// Set implements dataplane.Manager.
func (m *Manager) Set(d *dataplane.Desired) {
	m.desired = make(map[string]dataplane.Workload, len(d.Workloads))
	for _, w := range d.Workloads {
		m.desired[w.HostIface] = w
	}
}

// QueueResync implements dataplane.Manager: the next Apply checks every
// desired workload in depth.
func (m *Manager) QueueResync() { m.fullResync = true }

// WorkloadProblems implements dataplane.WorkloadReporter.
func (m *Manager) WorkloadProblems() map[string]error { return maps.Clone(m.problems) }

// Apply implements dataplane.Manager.
func (m *Manager) Apply(ctx context.Context, phase dataplane.Phase) error {
	if phase == dataplane.PhaseRemove {
		return m.applyRemovals(ctx)
	}
	return m.applyUpdates(ctx)
}

func (m *Manager) applyUpdates(ctx context.Context) error {
	m.mu.Lock()
	suspect := m.suspect
	m.suspect = map[string]bool{}
	m.mu.Unlock()

	if m.fullResync {
		if err := m.resync(ctx); err != nil {
			// Keep the flag: the next pass tries again.
			return err
		}
		m.fullResync = false
	}
	for iface := range suspect {
		if w, ok := m.ok[iface]; ok {
			if err := m.p.checkPlumbing(w); err != nil {
				m.log.Info("workload plumbing changed behind weft's back; repairing", "iface", iface, "problem", err)
				delete(m.ok, iface)
			}
		}
	}
	var errs []error
	for iface := range m.problems {
		if _, ok := m.desired[iface]; ok {
			delete(m.problems, iface) // re-decided below
		}
	}
	for iface, w := range m.desired {
		if cur, ok := m.ok[iface]; ok && cur.Equal(w) {
			continue
		}
		if g, ok := m.gone[iface]; ok && g.Equal(w) {
			m.problems[iface] = fmt.Errorf("workload %s/%s: %w: %s is gone", w.Namespace, w.Name, ErrBadNetNS, w.NetNS)
			continue
		}
		changed, err := m.p.reconcile(ctx, w)
		if err != nil {
			m.problems[iface] = err
			if errors.Is(err, ErrBadNetNS) {
				m.gone[iface] = w
				m.log.Warn("workload network namespace is gone", "namespace", w.Namespace, "name", w.Name, "netns", w.NetNS, "err", err)
				continue
			}
			errs = append(errs, err)
			continue
		}
		if changed {
			m.log.Info("plumbed workload", "namespace", w.Namespace, "name", w.Name, "iface", iface)
		}
		delete(m.gone, iface)
		m.ok[iface] = w
	}
	for iface := range m.gone {
		if _, ok := m.desired[iface]; !ok {
			delete(m.gone, iface)
		}
	}
	m.publishWatched()
	return errors.Join(errs...)
}

// resync re-reads which workload interfaces exist, checks every desired
// workload in depth and notes undesired interfaces as strays.
func (m *Manager) resync(_ context.Context) error {
	links, err := nlutil.Dump(m.p.nl.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	present := map[string]bool{}
	strays := map[string]bool{}
	for _, l := range links {
		name := l.Attrs().Name
		if !dataplane.IsWorkloadIface(m.p.cfg.Prefix, name) || l.Type() != "veth" {
			continue
		}
		present[name] = true
		if _, desired := m.desired[name]; !desired {
			if _, known := m.ok[name]; !known {
				strays[name] = true
			}
		}
	}
	m.strays = strays
	for iface, w := range m.gone {
		if netns.Exists(w.NetNS) == nil {
			delete(m.gone, iface) // it is back: plumb it again
		}
	}
	ok := map[string]dataplane.Workload{}
	for iface, w := range m.ok {
		// Plumbed by this manager and no longer desired: keep it known so
		// the removal phase deletes it.
		if _, desired := m.desired[iface]; !desired && present[iface] {
			ok[iface] = w
		}
	}
	m.ok = ok
	for iface, w := range m.desired {
		if !present[iface] {
			continue
		}
		if err := m.p.checkPlumbing(w); err != nil {
			m.log.Debug("workload plumbing needs repair", "iface", iface, "problem", err)
			continue
		}
		// Adopted as it is: no change made.
		m.ok[iface] = w
	}
	return nil
}

// applyRemovals deletes the plumbing of workloads no longer desired and
// the strays. The loop sends desired states only from a complete store
// replica, so an interface not desired is not wanted by anyone: there is
// no grace period.
func (m *Manager) applyRemovals(_ context.Context) error {
	var errs []error
	remove := func(iface string) bool {
		if err := m.p.remove(iface); err != nil {
			m.problems[iface] = err
			errs = append(errs, err)
			return false
		}
		delete(m.problems, iface)
		return true
	}
	for iface := range m.ok {
		if _, ok := m.desired[iface]; ok {
			continue
		}
		if remove(iface) {
			delete(m.ok, iface)
		}
	}
	for iface := range m.strays {
		if _, ok := m.desired[iface]; ok {
			delete(m.strays, iface)
			continue
		}
		m.log.Info("removing workload interface no workload wants", "iface", iface)
		if remove(iface) {
			delete(m.strays, iface)
		}
	}
	for iface := range m.problems {
		if _, ok := m.desired[iface]; !ok && !m.strays[iface] {
			if _, known := m.ok[iface]; !known {
				delete(m.problems, iface)
			}
		}
	}
	m.publishWatched()
	return errors.Join(errs...)
}

func (m *Manager) publishWatched() {
	w := make(map[string]bool, len(m.ok))
	for iface := range m.ok {
		w[iface] = true
	}
	m.mu.Lock()
	m.watched = w
	m.mu.Unlock()
}

// Watch implements dataplane.Watcher: a plumbed workload interface that is
// deleted or set down behind weft's back is re-checked and repaired at
// once.
func (m *Manager) Watch(ctx context.Context, kick func()) error {
	err := watch.Links(ctx, m.p.host.Handle(), func(u netlink.LinkUpdate) {
		name := u.Link.Attrs().Name
		m.mu.Lock()
		defer m.mu.Unlock()
		if !m.watched[name] {
			return
		}
		deleted := u.Header.Type == unix.RTM_DELLINK
		down := u.Link.Attrs().Flags&net.FlagUp == 0
		if deleted || down {
			m.suspect[name] = true
			kick()
		}
	})
	if err != nil {
		// Events may have been lost: check everything on the next pass.
		m.mu.Lock()
		for name := range m.watched {
			m.suspect[name] = true
		}
		m.mu.Unlock()
	}
	return err
}

// reconcile plumbs w or completes its plumbing; it reports whether it
// changed anything.
func (p *Plumber) reconcile(ctx context.Context, w dataplane.Workload) (changed bool, err error) {
	if err := p.validate(w); err != nil {
		return false, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, changed, err = p.ensure(ctx, w)
	return changed, err
}

// remove deletes a workload's plumbing (the host side of its veth, which
// takes the peer along).
func (p *Plumber) remove(hostIface string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.del(hostIface)
}

// checkPlumbing is Check without the host routes (which the routes
// manager owns and repairs).
func (p *Plumber) checkPlumbing(w dataplane.Workload) error {
	if err := p.validate(w); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.check(w, false)
}
