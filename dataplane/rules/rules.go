// Package rules manages the policy-routing rules weft owns (`ip rule`):
// every rule carrying [dataplane.RouteProtocol] as its protocol
// (FRA_PROTOCOL, `ip rule show protocol 87`). It diffs the desired rules
// against a cached view of the kernel's weft rules, adds what is missing,
// deletes weft rules no longer desired and never touches any other rule.
// The cache is re-read on every resync, so a rule deleted behind weft's
// back is back within one resync period.
package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/sweep"
	"github.com/weftnet/weft/internal/netns"
)

// Kernel is the part of *netlink.Handle the manager uses; tests substitute
// a fake.
type Kernel interface {
	RuleListFiltered(family int, filter *netlink.Rule, mask uint64) ([]netlink.Rule, error)
	RuleAdd(*netlink.Rule) error
	RuleDel(*netlink.Rule) error
}

// Config configures a [Manager].
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace whose rules are managed; "" is the current
	// one.
	NetNS string
}

// Manager is the rules manager; see the package comment.
type Manager struct {
	log    *slog.Logger
	k      Kernel
	closer func()
	writes atomic.Uint64

	desired map[dataplane.Rule]bool
	actual  map[dataplane.Rule]bool
	resync  bool
}

// New opens a netlink handle in the configured namespace.
func New(cfg Config) (*Manager, error) {
	_, h, closer, err := netns.OpenNetlink(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	m := NewWithKernel(cfg, h)
	m.closer = closer
	return m, nil
}

// NewWithKernel builds a manager over any Kernel (tests).
func NewWithKernel(cfg Config, k Kernel) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		log:     cfg.Logger.With("component", "rules"),
		k:       k,
		closer:  func() {},
		desired: map[dataplane.Rule]bool{},
		actual:  map[dataplane.Rule]bool{},
		resync:  true,
	}
}

// Close releases the netlink handle.
func (m *Manager) Close() error {
	m.closer()
	return nil
}

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "rules" }

// KernelWrites implements dataplane.WriteCounter.
func (m *Manager) KernelWrites() uint64 { return m.writes.Load() }

// Set implements dataplane.Manager.
func (m *Manager) Set(d *dataplane.Desired) {
	m.desired = make(map[dataplane.Rule]bool, len(d.Rules))
	for _, r := range d.Rules {
		m.desired[r] = true
	}
}

// QueueResync implements dataplane.Manager.
func (m *Manager) QueueResync() { m.resync = true }

// Apply implements dataplane.Manager: rules are added in the update phase
// and removed in the removal phase, so a rule that moves (another
// priority) never leaves a moment without either.
func (m *Manager) Apply(_ context.Context, phase dataplane.Phase) error {
	if m.resync {
		if err := m.readKernel(); err != nil {
			return err
		}
		m.resync = false
	}
	var errs []error
	if phase == dataplane.PhaseUpdate {
		for r := range m.desired {
			if m.actual[r] {
				continue
			}
			err := m.k.RuleAdd(toNetlink(r))
			if err != nil && !errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("add %s: %w", r, err))
				m.resync = true // the kernel may hold something else: look again
				continue
			}
			if err == nil {
				m.writes.Add(1)
			}
			m.actual[r] = true
		}
		return errors.Join(errs...)
	}
	return sweep.Undesired(m.actual, func(r dataplane.Rule) bool { return m.desired[r] },
		func(r dataplane.Rule, _ bool) error { return m.k.RuleDel(toNetlink(r)) }, unix.ENOENT, &m.writes)
}

// readKernel replaces the cache with the kernel's weft rules.
func (m *Manager) readKernel() error {
	actual := map[dataplane.Rule]bool{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		nrs, err := nlutil.Dump(func() ([]netlink.Rule, error) {
			return m.k.RuleListFiltered(fam, &netlink.Rule{Protocol: dataplane.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return fmt.Errorf("list rules: %w", err)
		}
		for _, nr := range nrs {
			if int(nr.Protocol) != dataplane.RouteProtocol {
				continue
			}
			r, ok := fromNetlink(nr, fam)
			if !ok {
				// A weft-marked rule weft cannot have written: delete it
				// as it is, so it is not left behind forever.
				m.log.Warn("removing a weft-protocol rule weft cannot have written", "rule", nr.String())
				nr := nr
				if err := m.k.RuleDel(&nr); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("remove %s: %w", nr.String(), err)
				}
				continue
			}
			actual[r] = true
		}
	}
	m.actual = actual
	return nil
}

func toNetlink(r dataplane.Rule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = netlink.FAMILY_V4
	if r.Family == 6 {
		nr.Family = netlink.FAMILY_V6
	}
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.Protocol = dataplane.RouteProtocol
	nr.Invert = r.Invert
	if r.Mask != 0 {
		mask := r.Mask
		nr.Mark = r.Mark
		nr.Mask = &mask
	}
	return nr
}

// fromNetlink reads a kernel rule back; ok is false for rules with
// matches weft never sets.
func fromNetlink(nr netlink.Rule, fam int) (dataplane.Rule, bool) {
	r := dataplane.Rule{Family: 4, Priority: nr.Priority, Table: nr.Table, Mark: nr.Mark, Invert: nr.Invert}
	if fam == netlink.FAMILY_V6 {
		r.Family = 6
	}
	if nr.Mask != nil {
		r.Mask = *nr.Mask
	}
	if nr.Src != nil || nr.Dst != nil || nr.IifName != "" || nr.OifName != "" || nr.Goto > 0 ||
		nr.Tos != 0 || nr.Dport != nil || nr.Sport != nil || nr.IPProto != 0 || nr.UIDRange != nil ||
		nr.SuppressPrefixlen > 0 || nr.SuppressIfgroup > 0 || (nr.Type != 0 && nr.Type != unix.FR_ACT_TO_TBL) {
		return r, false
	}
	return r, r.Validate() == nil
}
