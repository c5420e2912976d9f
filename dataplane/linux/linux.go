// Package linux assembles weft's Linux dataplane: the drivers in
// dependency order under one apply loop. The loop is the only writer of
// everything they own.
//
// Order of the update phase: sysctls (forwarding) → firewall (policy and
// outgoing NAT: one nftables table, or weft's iptables chains) → links
// (workload veths) → vxlan (device, then neighbours and FDB) → ipip
// (device) → wireguard (device, key, peers) → routes (every table) →
// rules. The removal phase runs in reverse: rules go before the routes
// they lead to, routes before the neighbours and interfaces they use, and
// neighbours before their device. A new workload's traffic can flow only
// once the whole pass that plumbs it has run: its policy is programmed
// before its veth exists (the firewall's base drops the traffic of any
// workload interface it does not know), its host route after its veth,
// and the loop reports the workload ready only after the pass.
//
// # Wiring (the agent)
//
// The agent runs inside the node's network namespace, so Config.NetNS stays
// empty and every driver acts on the current namespace.
//
//	dp, err := linux.New(linux.Config{Logger: log, Registerer: reg, WorkloadMTU: m, ...})
//	box := dataplane.NewMailbox()
//	go dp.Run(ctx, box.C())          // writes nothing until the first Send
//	...                              // once the store is in sync:
//	box.Send(calc.Desired())         // after every change; stale states are dropped
//
// Workload add (CLI, CNI ADD) runs dp.Plumber.Precheck (read-only), records
// the WorkloadEndpoint and waits until a report of the loop
// (dp.Loop.LatestReport) shows the workload applied with no problem;
// workload del deletes the endpoint and waits until the workload is gone
// from the reports; CNI CHECK calls dp.Plumber.Check (read-only). A
// workload whose namespace vanished shows in the reports with
// dataplane.ErrBadNetNS: the agent deletes it and releases its addresses.
package linux

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/dataplane/ipip"
	"github.com/weftnet/weft/dataplane/ipt"
	"github.com/weftnet/weft/dataplane/links"
	"github.com/weftnet/weft/dataplane/nft"
	"github.com/weftnet/weft/dataplane/routes"
	"github.com/weftnet/weft/dataplane/rules"
	"github.com/weftnet/weft/dataplane/sysctls"
	"github.com/weftnet/weft/dataplane/vxlan"
	"github.com/weftnet/weft/dataplane/wireguard"
)

// Config configures the whole dataplane. Zero values take defaults.
type Config struct {
	Logger *slog.Logger
	// Registerer receives the loop's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Clock drives the loop; nil is the wall clock.
	Clock dataplane.Clock
	// NetNS is the node's network namespace; "" is the current one (the
	// agent runs inside the node's namespace). Tests point it elsewhere.
	NetNS string
	// IfacePrefix of workload interfaces; default "weft".
	IfacePrefix string
	// VXLANName, VXLANVNI, VXLANPort: the VXLAN device's static
	// parameters; defaults weft.vxlan, 4096, 4789.
	VXLANName string
	VXLANVNI  int
	VXLANPort int
	// VXLANTxChecksumOffload: see vxlan.Config.TxChecksumOffload.
	VXLANTxChecksumOffload bool
	// ResyncPeriod of the full resync; default and at most 90 s.
	ResyncPeriod time.Duration
	// Sysctls kept at fixed values; nil means sysctls.Forwarding(false).
	Sysctls map[string]string
	// FirewallBackend is "nftables" (the default) or "iptables". Each
	// removes what the other left, once its own ruleset is in place.
	FirewallBackend string
	// WireGuard configures the WireGuard driver; its Name defaults to
	// weft.wg (the driver exists even with WireGuard off, to remove a
	// device left from when it was on). NetNS and Logger come from here.
	WireGuard wireguard.Config
	// NodeName labels the WireGuard metrics.
	NodeName string
	// IptablesVariant is "nft", "legacy" or "auto" (detected as Felix
	// does); only for the iptables backend.
	IptablesVariant string
	// LogLevel is the agent's log level: the dataplane logs at it unless
	// the desired state's Loop.LogLevel says otherwise (FelixConfiguration
	// logSeverityScreen). The zero value is Info.
	LogLevel slog.Level
	// IPIPUnsupported, if set, hears once that the kernel cannot create the
	// IP-in-IP device after all (see ipip.Config.Unsupported).
	IPIPUnsupported func(reason string)
}

// Dataplane is the assembled dataplane.
type Dataplane struct {
	// Plumber offers the read-only workload checks (Precheck before an
	// add is recorded, Check for CNI CHECK); only the loop writes.
	Plumber *links.Plumber
	// Firewall is the policy and NAT manager (its status and counters are
	// read from other goroutines; only the loop writes).
	Firewall *firewall.Manager
	// Loop applies desired states; see dataplane.Loop.
	Loop *dataplane.Loop
	// WireGuard is the WireGuard driver (status, the applied key).
	WireGuard *wireguard.Manager
	// Managers in update order (exposed for tests and diagnostics).
	Managers []dataplane.Manager

	closers []func() error
}

// New builds every driver and the loop. Nothing touches the kernel until
// Run receives the first desired state (the plumber acts only when called).
func New(cfg Config) (*Dataplane, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IfacePrefix == "" {
		cfg.IfacePrefix = dataplane.DefaultIfacePrefix
	}
	if cfg.Sysctls == nil {
		cfg.Sysctls = sysctls.Forwarding(false)
	}
	// Every driver logs through a handler whose level the loop sets from
	// the desired state.
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	cfg.Logger = slog.New(dataplane.LevelHandler(cfg.Logger.Handler(), level))
	d := &Dataplane{}
	fail := func(err error) (*Dataplane, error) {
		d.Close()
		return nil, err
	}

	sc, err := sysctls.New(sysctls.Config{NetNS: cfg.NetNS, Values: cfg.Sysctls})
	if err != nil {
		return fail(fmt.Errorf("sysctls: %w", err))
	}
	d.closers = append(d.closers, sc.Close)

	fw, err := newFirewall(cfg)
	if err != nil {
		return fail(err)
	}
	d.closers = append(d.closers, fw.Close)
	d.Firewall = fw

	p, err := links.NewPlumber(links.Config{Logger: cfg.Logger, HostNS: cfg.NetNS, Prefix: cfg.IfacePrefix})
	if err != nil {
		return fail(fmt.Errorf("links: %w", err))
	}
	d.closers = append(d.closers, p.Close)
	d.Plumber = p
	lm, err := links.NewManager(links.ManagerConfig{Logger: cfg.Logger, Plumber: p})
	if err != nil {
		return fail(err)
	}

	vm, err := vxlan.New(vxlan.Config{Logger: cfg.Logger, NetNS: cfg.NetNS, Name: cfg.VXLANName, VNI: cfg.VXLANVNI, Port: cfg.VXLANPort, TxChecksumOffload: cfg.VXLANTxChecksumOffload})
	if err != nil {
		return fail(fmt.Errorf("vxlan: %w", err))
	}
	d.closers = append(d.closers, vm.Close)

	wcfg := cfg.WireGuard
	wcfg.Logger, wcfg.NetNS = cfg.Logger, cfg.NetNS
	if wcfg.Name == "" {
		wcfg.Name = "weft.wg"
	}
	wm, err := wireguard.New(wcfg)
	if err != nil {
		return fail(fmt.Errorf("wireguard: %w", err))
	}
	d.closers = append(d.closers, wm.Close)
	d.WireGuard = wm
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(wm.Collector(cfg.NodeName)); err != nil {
			return fail(fmt.Errorf("wireguard metrics: %w", err))
		}
	}

	im, err := ipip.New(ipip.Config{Logger: cfg.Logger, NetNS: cfg.NetNS, Unsupported: cfg.IPIPUnsupported})
	if err != nil {
		return fail(fmt.Errorf("ipip: %w", err))
	}
	d.closers = append(d.closers, im.Close)

	rm, err := routes.New(routes.Config{Logger: cfg.Logger, NetNS: cfg.NetNS})
	if err != nil {
		return fail(fmt.Errorf("routes: %w", err))
	}
	d.closers = append(d.closers, rm.Close)

	rules, err := rules.New(rules.Config{Logger: cfg.Logger, NetNS: cfg.NetNS})
	if err != nil {
		return fail(fmt.Errorf("rules: %w", err))
	}
	d.closers = append(d.closers, rules.Close)

	d.Managers = []dataplane.Manager{sc, fw, lm, vm, im, wm, rm, rules}
	d.Loop, err = dataplane.NewLoop(dataplane.LoopConfig{
		Logger: cfg.Logger, Registerer: cfg.Registerer, Clock: cfg.Clock, ResyncPeriod: cfg.ResyncPeriod,
		LogLevel: level, DefaultLogLevel: cfg.LogLevel,
	}, d.Managers...)
	if err != nil {
		return fail(err)
	}
	return d, nil
}

// newFirewall builds the firewall manager over the configured backend.
func newFirewall(cfg Config) (*firewall.Manager, error) {
	var (
		be        firewall.Backend
		leftovers func(context.Context) error
	)
	switch cfg.FirewallBackend {
	case "", "nftables":
		nb, err := nft.New(nft.Config{Logger: cfg.Logger, NetNS: cfg.NetNS, IfacePrefix: cfg.IfacePrefix})
		if err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
		be = nb
		leftovers = func(ctx context.Context) error { return ipt.RemoveAll(ctx, cfg.NetNS) }
	case "iptables":
		ib, err := ipt.New(ipt.Config{Logger: cfg.Logger, NetNS: cfg.NetNS, IfacePrefix: cfg.IfacePrefix, Variant: cfg.IptablesVariant})
		if err != nil {
			return nil, err
		}
		be = ib
		leftovers = func(context.Context) error { return nft.RemoveTable(cfg.NetNS) }
	default:
		return nil, fmt.Errorf("firewall backend %q is not built", cfg.FirewallBackend)
	}
	fw, err := firewall.New(firewall.Config{Logger: cfg.Logger, Registerer: cfg.Registerer, Clock: cfg.Clock, Leftovers: leftovers}, be)
	if err != nil {
		be.Close()
		return nil, err
	}
	return fw, nil
}

// Run applies desired states until ctx ends; see dataplane.Loop.Run.
func (d *Dataplane) Run(ctx context.Context, updates <-chan dataplane.Desired) error {
	return d.Loop.Run(ctx, updates)
}

// KernelWrites sums the kernel changes of every manager.
func (d *Dataplane) KernelWrites() uint64 {
	var n uint64
	for _, m := range d.Managers {
		if wc, ok := m.(dataplane.WriteCounter); ok {
			n += wc.KernelWrites()
		}
	}
	return n
}

// Close releases handles. The kernel state stays: a restarted agent adopts
// it.
func (d *Dataplane) Close() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		errs = append(errs, d.closers[i]())
	}
	d.closers = nil
	return errors.Join(errs...)
}
