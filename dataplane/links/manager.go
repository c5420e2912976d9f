package links

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/watch"
	"github.com/weftnet/weft/internal/netns"
)

// DefaultGrace is how long the Manager defers to a synchronous Add or Del
// of the Plumber before acting on an interface the desired state disagrees
// about.
const DefaultGrace = 30 * time.Second

// ManagerConfig configures a [Manager].
type ManagerConfig struct {
	Logger *slog.Logger
	// Plumber does the work; the Manager shares it with the synchronous
	// workload add/delete path.
	Plumber *Plumber
	// Grace: a workload interface that exists but is not desired is removed
	// only once it has been undesired for this long, and the Manager neither
	// removes nor recreates an interface the Plumber added or deleted
	// synchronously within this time (the desired state lags behind the
	// store write that follows such a call). Default [DefaultGrace].
	Grace time.Duration
	// OnNetNSGone is called (from the loop goroutine) when a desired
	// workload's namespace no longer exists, once per workload until its
	// desired state changes. The agent should delete the workload and
	// release its addresses.
	OnNetNSGone func(dataplane.Workload)
}

// Manager keeps the desired workloads plumbed: it adopts existing
// plumbing, repairs drift (a deleted veth is recreated as soon as the link
// event arrives), removes workloads no longer desired, and sweeps workload
// interfaces nobody wants any more.
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger
	p   *Plumber

	desired map[string]dataplane.Workload // by host interface
	// ok holds workloads known to be fully plumbed as desired.
	ok map[string]dataplane.Workload
	// gone holds workloads whose namespace vanished, already reported.
	gone map[string]dataplane.Workload
	// strays are undesired workload interfaces and when they were first seen.
	strays     map[string]time.Time
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
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
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
		strays:     map[string]time.Time{},
		fullResync: true,
		suspect:    map[string]bool{},
		watched:    map[string]bool{},
	}, nil
}

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "links" }

// KernelWrites implements dataplane.WriteCounter (the Plumber's count,
// which includes synchronous adds and deletes).
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

// Apply implements dataplane.Manager.
func (m *Manager) Apply(ctx context.Context, phase dataplane.Phase) error {
	if phase == dataplane.PhaseRemove {
		return m.applyRemovals(ctx)
	}
	return m.applyUpdates(ctx)
}

func (m *Manager) applyUpdates(ctx context.Context) error {
	var errs []error
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
			if err := m.p.Check(ctx, w); err != nil {
				m.log.Info("workload plumbing changed behind weft's back; repairing", "iface", iface, "problem", err)
				delete(m.ok, iface)
			}
		}
	}
	for iface, w := range m.desired {
		if cur, ok := m.ok[iface]; ok && cur.Equal(w) {
			continue
		}
		if g, ok := m.gone[iface]; ok && g.Equal(w) {
			continue
		}
		if present, ok := m.p.recentIntent(iface, m.cfg.Grace); ok && !present {
			// Deleted synchronously a moment ago; the desired state has
			// not caught up. Do not resurrect it.
			continue
		}
		changed, err := m.p.reconcile(ctx, w)
		if err != nil {
			if errors.Is(err, ErrBadNetNS) {
				m.gone[iface] = w
				m.log.Warn("workload network namespace is gone", "namespace", w.Namespace, "name", w.Name, "netns", w.NetNS, "err", err)
				if m.cfg.OnNetNSGone != nil {
					m.cfg.OnNetNSGone(w)
				}
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
func (m *Manager) resync(ctx context.Context) error {
	links, err := nlutil.Dump(m.p.nl.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	present := map[string]bool{}
	now := m.p.cfg.Clock.Now()
	seenStray := map[string]bool{}
	for _, l := range links {
		name := l.Attrs().Name
		if !dataplane.IsWorkloadIface(m.p.cfg.Prefix, name) || l.Type() != "veth" {
			continue
		}
		present[name] = true
		_, desired := m.desired[name]
		_, known := m.ok[name]
		if !desired && !known {
			seenStray[name] = true
			if _, ok := m.strays[name]; !ok {
				m.strays[name] = now
			}
		}
	}
	for name := range m.strays {
		if !seenStray[name] {
			delete(m.strays, name)
		}
	}
	for iface, w := range m.gone {
		if netns.Exists(w.NetNS) == nil {
			delete(m.gone, iface) // it is back: plumb it again
		}
	}
	ok := map[string]dataplane.Workload{}
	for iface, w := range m.ok {
		// Plumbed by this manager and no longer desired: keep it known so
		// the removal phase deletes it now rather than after the grace.
		if _, desired := m.desired[iface]; !desired && present[iface] {
			ok[iface] = w
		}
	}
	m.ok = ok
	for iface, w := range m.desired {
		if !present[iface] {
			continue
		}
		if err := m.p.Check(ctx, w); err != nil {
			m.log.Debug("workload plumbing needs repair", "iface", iface, "problem", err)
			continue
		}
		// Adopted as it is: no change made.
		m.ok[iface] = w
	}
	return nil
}

func (m *Manager) applyRemovals(ctx context.Context) error {
	var errs []error
	for iface, w := range m.ok {
		if _, ok := m.desired[iface]; ok {
			continue
		}
		if present, ok := m.p.recentIntent(iface, m.cfg.Grace); ok && present {
			// Re-added synchronously after the desired state dropped it.
			delete(m.ok, iface)
			continue
		}
		if err := m.p.remove(ctx, w.HostIface); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(m.ok, iface)
		delete(m.strays, iface)
	}
	now := m.p.cfg.Clock.Now()
	for iface, since := range m.strays {
		if _, ok := m.desired[iface]; ok {
			delete(m.strays, iface)
			continue
		}
		if now.Sub(since) < m.cfg.Grace {
			continue
		}
		if _, ok := m.p.recentIntent(iface, m.cfg.Grace); ok {
			continue
		}
		m.log.Info("removing workload interface no workload wants", "iface", iface)
		if err := m.p.remove(ctx, iface); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(m.strays, iface)
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

// reconcile and remove are the Plumber's Add and Del without recording
// an intent: the Manager acts on the desired state, not on a user's
// request.
func (p *Plumber) reconcile(ctx context.Context, w dataplane.Workload) (changed bool, err error) {
	if err := p.validate(w); err != nil {
		return false, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, changed, err = p.ensure(ctx, w)
	return changed, err
}

func (p *Plumber) remove(_ context.Context, hostIface string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.del(hostIface)
}
