// Package sysctls keeps node-wide sysctls at fixed values, e.g. IPv4
// forwarding, which a node that routes workload traffic needs (a new
// network namespace starts with net.ipv4.ip_forward=0).
package sysctls

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/sysctl"
	"github.com/weftnet/weft/internal/netns"
)

// Forwarding is the usual configuration: IPv4 forwarding, and IPv6
// forwarding when ipv6 is set. (Writing net/ipv4/ip_forward also sets
// forwarding on every interface.)
func Forwarding(ipv6 bool) map[string]string {
	v := map[string]string{"net/ipv4/ip_forward": "1"}
	if ipv6 {
		v["net/ipv6/conf/all/forwarding"] = "1"
	}
	return v
}

// Config configures a [Manager].
type Config struct {
	// NetNS is the namespace whose sysctls are set; "" is the current one.
	NetNS string
	// Values maps keys under /proc/sys ("net/ipv4/ip_forward") to values.
	Values map[string]string
}

// Manager writes the configured values when they differ: on its first
// Apply and on every resync.
type Manager struct {
	ns     *netns.Target
	values map[string]string
	keys   []string
	done   bool
	writes atomic.Uint64
}

// New validates the keys and opens the namespace.
func New(cfg Config) (*Manager, error) {
	for k := range cfg.Values {
		if !strings.HasPrefix(k, "net/") || strings.Contains(k, "..") {
			return nil, fmt.Errorf("sysctl %q: only net/... keys are managed", k)
		}
	}
	ns, err := netns.Open(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	return &Manager{ns: ns, values: maps.Clone(cfg.Values), keys: slices.Sorted(maps.Keys(cfg.Values))}, nil
}

// Close releases the namespace.
func (m *Manager) Close() error { return m.ns.Close() }

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "sysctls" }

// KernelWrites implements dataplane.WriteCounter.
func (m *Manager) KernelWrites() uint64 { return m.writes.Load() }

// Set implements dataplane.Manager; the values are static.
func (m *Manager) Set(*dataplane.Desired) {}

// QueueResync implements dataplane.Manager.
func (m *Manager) QueueResync() { m.done = false }

// Apply implements dataplane.Manager.
func (m *Manager) Apply(_ context.Context, phase dataplane.Phase) error {
	if phase != dataplane.PhaseUpdate || m.done {
		return nil
	}
	err := m.ns.Do(func() error {
		var errs []error
		for _, k := range m.keys {
			wrote, err := sysctl.Ensure(k, m.values[k])
			if err != nil {
				errs = append(errs, err)
			}
			if wrote {
				m.writes.Add(1)
			}
		}
		return errors.Join(errs...)
	})
	m.done = err == nil
	return err
}
