// Package wireguard is the driver of the node's WireGuard device: the
// single writer of the device, its keys, its peers, its addresses and
// link settings. The device is the kernel's WireGuard where the module
// exists, and otherwise the embedded wireguard-go, run in a small device
// process of the same binary ([RunDevice]) that outlives the agent; both
// are configured through wgctrl (genetlink, or the UAPI socket
// /var/run/wireguard/<name>.sock), so `wg show` works either way.
//
// The manager reads the device on every pass (one genetlink or UAPI
// request: a device has at most a few dozen peers) and writes only what
// differs, field by field: a pass that finds the device as desired writes
// nothing, which is how a restarted agent adopts a running device without
// touching its sessions. An endpoint is written when the desired one
// changes or the device has none, never merely because it differs: a peer
// behind NAT roams, and WireGuard follows it.
//
// When a node's key changes (it rotated), its new peer is greeted unless
// it handshook by itself within a moment (see greetDue): the rotating
// node's traffic is held by WireGuard (it queues packets while it
// handshakes) until its peers know the new key, and the greeting makes
// that moment end as soon as they do.
package wireguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/nlutil"
	"github.com/weftnet/weft/dataplane/internal/watch"
	"github.com/weftnet/weft/internal/netns"
)

// KeyRing holds the node's private keys (the driver never stores them).
type KeyRing interface {
	// PrivateKey returns the private key whose public key is pub, or the
	// node's current key when pub is zero.
	PrivateKey(pub dataplane.WireGuardKey) (dataplane.WireGuardKey, bool)
}

// Starter starts the userspace device process for an interface, inside
// the calling thread's network namespace.
type Starter interface {
	Start(name string) (*Process, error)
}

// Kind says which WireGuard implementation runs the device.
type Kind string

// The device kinds.
const (
	KindNone      Kind = ""
	KindKernel    Kind = "kernel"
	KindUserspace Kind = "userspace"
)

// Config configures a [Manager].
type Config struct {
	Logger *slog.Logger
	// NetNS is the namespace of the device; "" is the current one.
	NetNS string
	// Name is the interface name (wireguard.interface).
	Name string
	Keys KeyRing
	// Start starts the userspace device process; nil means there is no
	// userspace fallback.
	Start Starter
	// ForceUserspace uses wireguard-go even where the kernel has
	// WireGuard (tests of the userspace path on such kernels).
	ForceUserspace bool
	// StartTimeout bounds the wait for a new device process; default 10 s.
	StartTimeout time.Duration
}

// Manager is the WireGuard device manager; see the package comment.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	ns     *netns.Target
	nl     *netlink.Handle
	closer func()
	writes atomic.Uint64

	desired *dataplane.WireGuardDevice
	client  *wgctrl.Client
	kind    Kind
	// announced is the device (kind and process) last reported in the
	// log, so the start line is written once, not on every pass.
	announced string
	// endpoints are the endpoints this manager last wrote (or found and
	// kept), by peer key: a desired endpoint is written when it differs
	// from this, never merely because the device's differs (roaming).
	endpoints map[dataplane.WireGuardKey]netip.AddrPort
	// peerKeys are the nodes' keys as last configured, and greetings the
	// replaced keys to look at (greetDue) and when.
	peerKeys  map[string]dataplane.WireGuardKey
	greetings map[dataplane.WireGuardKey]time.Time

	// Read by other goroutines (status, metrics, the key rotation).
	mu        sync.Mutex
	applied   dataplane.WireGuardKey // the device's public key after the last complete update
	problem   error
	nodes     map[dataplane.WireGuardKey]string // peer key → node
	blocked   []string
	devicePID int
	kick      func() // the loop's wake-up, once Watch runs
}

// New opens a netlink handle in the configured namespace. Nothing is
// changed until the first Apply.
func New(cfg Config) (*Manager, error) {
	if cfg.Name == "" || !dataplane.ValidIfaceName(cfg.Name) {
		return nil, fmt.Errorf("wireguard: interface name %q is not valid", cfg.Name)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	ns, h, closer, err := netns.OpenNetlink(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	return &Manager{
		cfg: cfg, log: cfg.Logger.With("component", "wireguard"), ns: ns, nl: h, closer: closer,
		endpoints: map[dataplane.WireGuardKey]netip.AddrPort{},
		peerKeys:  map[string]dataplane.WireGuardKey{}, greetings: map[dataplane.WireGuardKey]time.Time{},
	}, nil
}

// Close releases the handles. The device stays: the next agent adopts it.
func (m *Manager) Close() error {
	if m.client != nil {
		m.client.Close()
		m.client = nil
	}
	m.closer()
	return nil
}

// Name implements dataplane.Manager.
func (m *Manager) Name() string { return "wireguard" }

// KernelWrites implements dataplane.WriteCounter.
func (m *Manager) KernelWrites() uint64 { return m.writes.Load() }

// QueueResync implements dataplane.Manager: the device is read on every
// pass anyway.
func (m *Manager) QueueResync() {}

// Set implements dataplane.Manager.
func (m *Manager) Set(d *dataplane.Desired) {
	m.desired = d.WireGuard
	nodes := map[dataplane.WireGuardKey]string{}
	var blocked []string
	if d.WireGuard != nil {
		for _, p := range d.WireGuard.Peers {
			nodes[p.PublicKey] = p.Node
		}
		blocked = slices.Clone(d.WireGuard.Blocked)
	}
	m.mu.Lock()
	m.nodes, m.blocked = nodes, blocked
	m.mu.Unlock()
}

// AppliedPublicKey is the device's public key after the last pass that
// configured it completely (false before one, or without a device).
func (m *Manager) AppliedPublicKey() (dataplane.WireGuardKey, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied, !m.applied.IsZero()
}

// Apply implements dataplane.Manager. The update phase creates or adopts
// the device, sets its link, key, port and mark and adds or changes
// peers; the removal phase removes peers, allowed IPs and addresses no
// longer desired, or the whole device. Routes through the device are
// programmed between the two (the routes manager comes after this one).
func (m *Manager) Apply(ctx context.Context, phase dataplane.Phase) error {
	var err error
	if phase == dataplane.PhaseUpdate {
		err = m.update(ctx)
	} else {
		err = m.remove()
	}
	if err != nil {
		err = fmt.Errorf("wireguard %s: %w", m.cfg.Name, err)
	}
	m.mu.Lock()
	if phase == dataplane.PhaseUpdate || err != nil {
		m.problem = err
	}
	if m.desired == nil || err != nil {
		m.applied = dataplane.WireGuardKey{}
	}
	m.mu.Unlock()
	return err
}

func (m *Manager) update(ctx context.Context) error {
	want := m.desired
	if want == nil {
		return nil
	}
	link, err := m.ensureDevice(ctx)
	if err != nil {
		return err
	}
	var errs []error
	if err := m.ensureLink(link, want); err != nil {
		errs = append(errs, err)
	}
	pub, err := m.configure(want)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.mu.Lock()
	m.applied = pub
	m.mu.Unlock()
	return nil
}

// link returns the device's link, nil when there is none.
func (m *Manager) link() (netlink.Link, error) {
	l, err := m.nl.LinkByName(m.cfg.Name)
	if nlutil.IsLinkNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up the interface: %w", err)
	}
	return l, nil
}

// ensureDevice adopts the existing device or creates one, and says once
// in the log which kind runs and why.
func (m *Manager) ensureDevice(ctx context.Context) (netlink.Link, error) {
	link, err := m.link()
	if err != nil {
		return nil, err
	}
	why := ""
	if link != nil {
		kind, err := m.kindOf(link)
		if err != nil {
			return nil, err
		}
		m.kind, why = kind, "adopted the running device"
	} else {
		link, why, err = m.create(ctx)
		if err != nil {
			return nil, err
		}
	}
	m.announce(why)
	return link, nil
}

// kindOf tells the device's kind from its link, refusing an interface of
// that name that is not a WireGuard device weft can configure.
func (m *Manager) kindOf(link netlink.Link) (Kind, error) {
	switch link.Type() {
	case "wireguard":
		return KindKernel, nil
	case "tuntap", "tun":
		if _, err := m.device(); err != nil {
			return KindNone, fmt.Errorf("a TUN interface of this name exists but no WireGuard device answers on %s (%v): weft leaves it alone; remove it, or stop whatever holds it", uapiPath(m.cfg.Name), err)
		}
		return KindUserspace, nil
	}
	return KindNone, fmt.Errorf("an interface of this name exists and is a %s, not a WireGuard device: weft leaves it alone; rename it or set wireguard.interface", link.Type())
}

// create makes the device: the kernel's where it can, else a device
// process. It returns the link and the reason for the kind.
func (m *Manager) create(ctx context.Context) (netlink.Link, string, error) {
	var kernelErr error
	if !m.cfg.ForceUserspace {
		la := netlink.NewLinkAttrs()
		la.Name = m.cfg.Name
		la.MTU = DefaultMTU
		err := m.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: la})
		switch {
		case err == nil:
			m.writes.Add(1)
			m.kind = KindKernel
			m.resetClient() // the kernel client exists only once the module is loaded
			l, lerr := m.link()
			if lerr == nil && l == nil {
				lerr = errors.New("created, but the interface is not there")
			}
			return l, "created the kernel device: the kernel has WireGuard", lerr
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EAFNOSUPPORT):
			kernelErr = err
		default:
			return nil, "", fmt.Errorf("creating the kernel device: %w", err)
		}
	}
	if m.cfg.Start == nil {
		return nil, "", fmt.Errorf("the kernel has no WireGuard (%v) and no userspace device can be started", kernelErr)
	}
	var proc *Process
	err := m.ns.Do(func() error {
		var err error
		proc, err = m.cfg.Start.Start(m.cfg.Name)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("starting the userspace device process: %w", err)
	}
	m.writes.Add(1)
	deadline := time.NewTimer(m.cfg.StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		l, err := m.link()
		if err != nil {
			return nil, "", err
		}
		if l != nil {
			if _, derr := m.device(); derr == nil {
				m.kind = KindUserspace
				why := "started the userspace wireguard-go device process"
				switch {
				case m.cfg.ForceUserspace:
					why += " (userspace forced)"
				default:
					why += fmt.Sprintf(" (the kernel has no WireGuard: creating a wireguard link failed: %v)", kernelErr)
				}
				return l, why, nil
			}
		}
		select {
		case <-proc.Done():
			return nil, "", fmt.Errorf("the userspace device process exited before its device was up: %v%s", proc.Err(), proc.LogTail())
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-deadline.C:
			return nil, "", fmt.Errorf("the userspace device process (pid %d) did not bring up %s within %s%s", proc.Pid, uapiPath(m.cfg.Name), m.cfg.StartTimeout, proc.LogTail())
		case <-tick.C:
		}
	}
}

// announce logs the device once per kind and process.
func (m *Manager) announce(why string) {
	pid := 0
	if m.kind == KindUserspace {
		pid, _ = peerPID(m.cfg.Name)
	}
	m.mu.Lock()
	m.devicePID = pid
	m.mu.Unlock()
	line := fmt.Sprintf("%s/%d", m.kind, pid)
	if line == m.announced {
		return
	}
	m.announced = line
	attrs := []any{"interface", m.cfg.Name, "kind", string(m.kind), "how", why}
	if pid != 0 {
		attrs = append(attrs, "device_pid", pid, "uapi", uapiPath(m.cfg.Name))
	}
	m.log.Info("WireGuard device", attrs...)
}

// client returns the wgctrl client, made inside the device's namespace
// (its genetlink socket belongs to the namespace it was opened in).
func (m *Manager) wgClient() (*wgctrl.Client, error) {
	if m.client != nil {
		return m.client, nil
	}
	err := m.ns.Do(func() error {
		c, err := wgctrl.New()
		m.client = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wgctrl: %w", err)
	}
	return m.client, nil
}

func (m *Manager) resetClient() {
	if m.client != nil {
		m.client.Close()
		m.client = nil
	}
}

// device reads the device.
func (m *Manager) device() (*wgtypes.Device, error) {
	c, err := m.wgClient()
	if err != nil {
		return nil, err
	}
	return c.Device(m.cfg.Name)
}

func (m *Manager) configureDevice(cfg wgtypes.Config) error {
	c, err := m.wgClient()
	if err != nil {
		return err
	}
	if err := c.ConfigureDevice(m.cfg.Name, cfg); err != nil {
		return err
	}
	m.writes.Add(1)
	return nil
}

// ensureLink sets the MTU, adds the tunnel addresses and brings the link
// up (before the listen port is set: a port in use then fails loudly
// instead of leaving wireguard-go down).
func (m *Manager) ensureLink(link netlink.Link, want *dataplane.WireGuardDevice) error {
	var errs []error
	if want.MTU > 0 && link.Attrs().MTU != want.MTU {
		if err := m.nl.LinkSetMTU(link, want.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set MTU %d: %w", want.MTU, err))
		} else {
			m.writes.Add(1)
		}
	}
	have, err := m.addresses(link)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, p := range want.Addresses {
		if have[p] {
			continue
		}
		a := &netlink.Addr{IPNet: ptr(ipNet(p))}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := m.nl.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add address %s: %w", p, err))
		} else {
			m.writes.Add(1)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := m.nl.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("set up: %w", err))
		} else {
			m.writes.Add(1)
		}
	}
	return errors.Join(errs...)
}

// addresses are the device's global addresses (link-local ones are the
// kernel's).
func (m *Manager) addresses(link netlink.Link) (map[netip.Prefix]bool, error) {
	as, err := nlutil.Dump(func() ([]netlink.Addr, error) { return m.nl.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := map[netip.Prefix]bool{}
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap().IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		out[netip.PrefixFrom(ip.Unmap(), ones)] = true
	}
	return out, nil
}

// configure writes the device's key, port and mark and the desired peers'
// differences, and returns the device's public key.
func (m *Manager) configure(want *dataplane.WireGuardDevice) (dataplane.WireGuardKey, error) {
	dev, err := m.device()
	if err != nil {
		return dataplane.WireGuardKey{}, fmt.Errorf("reading the device: %w", err)
	}
	var cfg wgtypes.Config
	var keyErr error
	priv, ok := m.cfg.Keys.PrivateKey(want.PublicKey)
	if !ok {
		// The store says this node uses a key its data_dir does not hold
		// (a stale rotation, or a data_dir from elsewhere): keep to the
		// node's own current key; the store writer publishes it.
		keyErr = fmt.Errorf("the public key %s the cluster knows for this node is not in its key files; using the current key", want.PublicKey)
		priv, _ = m.cfg.Keys.PrivateKey(dataplane.WireGuardKey{})
	}
	if priv.IsZero() {
		return dataplane.WireGuardKey{}, errors.New("no private key")
	}
	if dataplane.WireGuardKey(dev.PrivateKey) != priv {
		k := wgtypes.Key(priv)
		cfg.PrivateKey = &k
	}
	if dev.ListenPort != want.ListenPort {
		cfg.ListenPort = &want.ListenPort
	}
	if mark := int(want.Mark); dev.FirewallMark != mark {
		cfg.FirewallMark = &mark
	}
	actual := map[dataplane.WireGuardKey]wgtypes.Peer{}
	for _, p := range dev.Peers {
		actual[dataplane.WireGuardKey(p.PublicKey)] = p
	}
	for _, p := range want.Peers {
		if pc, changed := m.peerChange(p, actual); changed {
			cfg.Peers = append(cfg.Peers, pc)
		}
	}
	if cfg.PrivateKey != nil || cfg.ListenPort != nil || cfg.FirewallMark != nil || len(cfg.Peers) > 0 {
		if err := m.configureDevice(cfg); err != nil {
			return dataplane.WireGuardKey{}, describeConfigError(err, want)
		}
		if cfg.PrivateKey != nil {
			m.log.Info("WireGuard device key set", "public_key", wgtypes.Key(priv).PublicKey().String())
		}
	}
	m.peerKeys = map[string]dataplane.WireGuardKey{}
	for _, p := range want.Peers {
		m.peerKeys[p.Node] = p.PublicKey
	}
	if err := m.greetDue(want, actual); err != nil {
		return dataplane.WireGuardKey{}, err
	}
	return dataplane.WireGuardKey(wgtypes.Key(priv).PublicKey()), keyErr
}

// greetDelay is how long after replacing a node's key the manager looks
// whether the node handshook with the new key, and greets it if not.
const greetDelay = 250 * time.Millisecond

// scheduleGreeting makes a pass look at the peer greetDelay from now.
func (m *Manager) scheduleGreeting(key dataplane.WireGuardKey) {
	m.greetings[key] = time.Now().Add(greetDelay)
	m.mu.Lock()
	kick := m.kick
	m.mu.Unlock()
	if kick != nil {
		time.AfterFunc(greetDelay, kick)
	}
}

// greetDue greets the peers whose key was replaced greetDelay ago and
// that have not handshaken since: a keepalive, which makes WireGuard
// initiate now. A node that rotated its key first handshakes itself
// (its traffic is queued meanwhile), but while the other nodes did not
// know the key yet its initiation was dropped, and WireGuard retries only
// after 5 s. Greeting at once instead would cross with that initiation
// when it comes just after the key is known, and two crossing
// initiations fail on both sides (each drops the response to its own):
// 5 s lost. Greeting a little later, and only when no handshake happened,
// avoids that. The configured keepalive is set then too.
func (m *Manager) greetDue(want *dataplane.WireGuardDevice, actual map[dataplane.WireGuardKey]wgtypes.Peer) error {
	var hello, after []wgtypes.PeerConfig
	now := time.Now()
	for _, p := range want.Peers {
		due, pending := m.greetings[p.PublicKey]
		if !pending || now.Before(due) {
			continue
		}
		delete(m.greetings, p.PublicKey)
		ka := p.PersistentKeepalive
		if a, ok := actual[p.PublicKey]; ok && !a.LastHandshakeTime.IsZero() {
			if ka > 0 {
				after = append(after, wgtypes.PeerConfig{PublicKey: wgtypes.Key(p.PublicKey), UpdateOnly: true, PersistentKeepaliveInterval: &ka})
			}
			continue
		}
		// Turning a keepalive on sends one at once.
		one := time.Second
		if ka > 0 {
			one = ka
		}
		hello = append(hello, wgtypes.PeerConfig{PublicKey: wgtypes.Key(p.PublicKey), UpdateOnly: true, PersistentKeepaliveInterval: &one})
		if ka == 0 {
			after = append(after, wgtypes.PeerConfig{PublicKey: wgtypes.Key(p.PublicKey), UpdateOnly: true, PersistentKeepaliveInterval: &ka})
		}
		m.log.Debug("greeting a peer whose key changed", "node", p.Node, "public_key", p.PublicKey.String())
	}
	for _, batch := range [][]wgtypes.PeerConfig{hello, after} {
		if len(batch) == 0 {
			continue
		}
		if err := m.configureDevice(wgtypes.Config{Peers: batch}); err != nil {
			return fmt.Errorf("greeting peers: %w", err)
		}
	}
	return nil
}

// peerChange is the configuration that brings the device's peer to p:
// all of it for a new peer, only the differences for an existing one;
// allowed IPs are only added here (a prefix added to this peer leaves the
// peer that had it), the removal phase takes away the extra ones. A new
// key for a node the device knew under another key is added without its
// keepalive and greeted later (see greetDue).
func (m *Manager) peerChange(p dataplane.WireGuardPeer, actual map[dataplane.WireGuardKey]wgtypes.Peer) (pc wgtypes.PeerConfig, changed bool) {
	pc = wgtypes.PeerConfig{PublicKey: wgtypes.Key(p.PublicKey)}
	a, exists := actual[p.PublicKey]
	_, greeting := m.greetings[p.PublicKey]
	if !exists {
		ka := p.PersistentKeepalive
		if old, known := m.peerKeys[p.Node]; known && old != p.PublicKey {
			ka = 0
			m.scheduleGreeting(p.PublicKey)
		}
		pc.PersistentKeepaliveInterval = &ka
		pc.ReplaceAllowedIPs = true
		pc.AllowedIPs = ipNets(p.AllowedIPs)
		if p.Endpoint.IsValid() {
			pc.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
		}
		m.endpoints[p.PublicKey] = p.Endpoint
		return pc, true
	}
	pc.UpdateOnly = true
	if last, known := m.endpoints[p.PublicKey]; p.Endpoint.IsValid() && (a.Endpoint == nil || (known && last != p.Endpoint)) {
		pc.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
		changed = true
	}
	// What the device has is what this manager keeps from now on (an
	// endpoint that roamed stays).
	m.endpoints[p.PublicKey] = p.Endpoint
	if a.PersistentKeepaliveInterval != p.PersistentKeepalive && !greeting {
		ka := p.PersistentKeepalive
		pc.PersistentKeepaliveInterval = &ka
		changed = true
	}
	have := prefixSet(a.AllowedIPs)
	for _, want := range p.AllowedIPs {
		if !have[want] {
			pc.AllowedIPs = append(pc.AllowedIPs, ipNet(want))
			changed = true
		}
	}
	return pc, changed
}

// describeConfigError turns the errors of a device configuration into
// ones that say what is wrong (a port in use is the usual one).
func describeConfigError(err error, want *dataplane.WireGuardDevice) error {
	// wgctrl reports the UAPI's error number as text ("errno=-98").
	inUse := fmt.Sprintf("errno=-%d", int(unix.EADDRINUSE))
	if errors.Is(err, unix.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), inUse) {
		return fmt.Errorf("listen port %d: address already in use (another program holds UDP %d; free it or set wireguard.listen_port)", want.ListenPort, want.ListenPort)
	}
	return fmt.Errorf("configuring the device: %w", err)
}

func (m *Manager) remove() error {
	want := m.desired
	link, err := m.link()
	if err != nil {
		return err
	}
	if want == nil {
		if link == nil {
			return nil
		}
		return m.removeDevice(link)
	}
	if link == nil {
		return nil // the update phase reported why
	}
	var errs []error
	dev, err := m.device()
	if err != nil {
		return fmt.Errorf("reading the device: %w", err)
	}
	desired := map[dataplane.WireGuardKey]dataplane.WireGuardPeer{}
	for _, p := range want.Peers {
		desired[p.PublicKey] = p
	}
	var cfg wgtypes.Config
	for _, a := range dev.Peers {
		key := dataplane.WireGuardKey(a.PublicKey)
		p, ok := desired[key]
		if !ok {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: a.PublicKey, Remove: true})
			delete(m.endpoints, key)
			delete(m.greetings, key)
			continue
		}
		if !containsAll(wantSet(p.AllowedIPs), a.AllowedIPs) {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: a.PublicKey, UpdateOnly: true, ReplaceAllowedIPs: true, AllowedIPs: ipNets(p.AllowedIPs)})
		}
	}
	if len(cfg.Peers) > 0 {
		if err := m.configureDevice(cfg); err != nil {
			errs = append(errs, fmt.Errorf("removing peers and allowed IPs: %w", err))
		}
	}
	have, err := m.addresses(link)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	keep := wantSet(want.Addresses)
	for p := range have {
		if keep[p] {
			continue
		}
		if err := m.nl.AddrDel(link, &netlink.Addr{IPNet: ptr(ipNet(p))}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove address %s: %w", p, err))
		} else {
			m.writes.Add(1)
		}
	}
	return errors.Join(errs...)
}

// removeDevice removes the device: a kernel one is deleted, a device
// process is asked to stop (it removes its device and socket), and its
// interface deleted if it does not within 5 s. An interface of that name
// that is no WireGuard device is left alone.
func (m *Manager) removeDevice(link netlink.Link) error {
	kind, err := m.kindOf(link)
	if err != nil {
		m.log.Warn("not removing the interface", "interface", m.cfg.Name, "err", err)
		return nil
	}
	if kind == KindUserspace {
		if pid, err := peerPID(m.cfg.Name); err == nil && pid > 0 {
			if err := syscall.Kill(pid, syscall.SIGTERM); err == nil {
				m.writes.Add(1)
				for range 500 {
					if l, _ := m.link(); l == nil {
						m.log.Info("WireGuard device removed: its process stopped", "interface", m.cfg.Name, "device_pid", pid)
						m.forget()
						return nil
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}
	}
	if err := m.nl.LinkDel(link); err != nil && !nlutil.IsLinkNotFound(err) {
		return fmt.Errorf("removing the device: %w", err)
	}
	m.writes.Add(1)
	m.log.Info("WireGuard device removed", "interface", m.cfg.Name, "kind", string(kind))
	m.forget()
	return nil
}

func (m *Manager) forget() {
	m.kind, m.announced = KindNone, ""
	clear(m.endpoints)
	clear(m.greetings)
	m.mu.Lock()
	m.devicePID = 0
	m.mu.Unlock()
}

// Watch implements dataplane.Watcher: the device deleted, set down or
// recreated (a device process restarted by systemd) makes the next pass
// repair it at once.
func (m *Manager) Watch(ctx context.Context, kick func()) error {
	m.mu.Lock()
	m.kick = kick
	m.mu.Unlock()
	ns := netns.Current().Handle()
	if m.ns != nil {
		ns = m.ns.Handle()
	}
	return watch.Links(ctx, ns, func(u netlink.LinkUpdate) {
		if u.Link != nil && u.Link.Attrs().Name == m.cfg.Name {
			kick()
		}
	})
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, ipNet(p))
	}
	return out
}

func prefixOf(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func prefixSet(ns []net.IPNet) map[netip.Prefix]bool {
	out := make(map[netip.Prefix]bool, len(ns))
	for _, n := range ns {
		if p, ok := prefixOf(n); ok {
			out[p] = true
		}
	}
	return out
}

func wantSet(ps []netip.Prefix) map[netip.Prefix]bool {
	out := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		out[p] = true
	}
	return out
}

func containsAll(set map[netip.Prefix]bool, ns []net.IPNet) bool {
	for _, n := range ns {
		if p, ok := prefixOf(n); !ok || !set[p] {
			return false
		}
	}
	return true
}

func ptr[T any](v T) *T { return &v }
