package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/latest"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/apierr"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// Device is what the writer needs of the dataplane's WireGuard driver.
type Device interface {
	// AppliedPublicKey is the key the device uses after its last complete
	// pass.
	AppliedPublicKey() (dataplane.WireGuardKey, bool)
}

// Config configures the controller.
type Config struct {
	Node       string
	NodeLabels map[string]string
	Logger     *slog.Logger
	// RotationInterval rotates the key when it is this old; 0 never.
	RotationInterval time.Duration
	// RetryMin and RetryMax bound the backoff while a need is unsettled
	// (defaults 1 s and 30 s).
	RetryMin, RetryMax time.Duration
}

// Controller is the WireGuard store writer; see the package comment.
//
// # Key rotation without loss
//
// WireGuard has one key per device and one per peer, so a rotation
// cannot give the other nodes both keys at once. It goes in an order
// that loses nothing:
//
//  1. the next key is made and stored (data_dir/wireguard.key.next) before
//     anything uses it;
//  2. it is announced on this node's Node (annotation
//     weft.io/wireguard-next-public-key), which only this node's
//     calculation reads: its device switches to the key; WireGuard then
//     queues what this node sends to each peer (it handshakes with the new
//     key, which the peers do not accept yet) and still decrypts what they
//     send under the old sessions;
//  3. once this node's device uses it, the key is published
//     (status.wireguardPublicKey): every other node replaces the peer and
//     greets it with a handshake at once, which the device already answers;
//     the queued packets then go out. Nothing was dropped, some were
//     delayed for as long as the other nodes took to learn the key;
//  4. the next key becomes the current one (data_dir/wireguard.key).
//
// Each step is idempotent and resumes after a crash from what the key
// files and the Node say.
type Controller struct {
	cfg     Config
	st      store.Store
	ipam    *ipam.Client
	keys    *Keys // nil when WireGuard is off
	dev     Device
	reports dataplane.Reports
	log     *slog.Logger

	in   *latest.Box[calc.TunnelNeeds]
	kick chan struct{}

	mu       sync.Mutex
	promoted chan struct{} // closed (and replaced) at every promotion
	last     calc.TunnelNeeds
	have     bool
}

// New returns a controller. keys is nil when WireGuard is off (the
// controller then only clears what the Node still publishes).
func New(cfg Config, st store.Store, keys *Keys, dev Device, reports dataplane.Reports) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	return &Controller{
		cfg: cfg, st: st, ipam: ipam.NewClient(st), keys: keys, dev: dev, reports: reports,
		log: cfg.Logger.With("component", "wireguard"),
		in:  latest.New[calc.TunnelNeeds](), kick: make(chan struct{}, 1), promoted: make(chan struct{}),
	}
}

// Set hands the controller the latest needs; it never blocks.
func (c *Controller) Set(n calc.TunnelNeeds) {
	c.in.Send(n)
}

func (c *Controller) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run acts on the needs until ctx ends: after acting it waits for the
// calculation to confirm; while a need stays unsettled it acts again with
// backoff, and while a rotation waits for the device it looks again at
// every dataplane report.
func (c *Controller) Run(ctx context.Context) {
	var (
		cur     calc.TunnelNeeds
		have    bool
		backoff = c.cfg.RetryMin
		retry   = time.NewTimer(time.Hour)
		rotate  = time.NewTimer(time.Hour)
		reports <-chan struct{}
	)
	retry.Stop()
	defer retry.Stop()
	defer rotate.Stop()
	for {
		c.armRotation(rotate)
		select {
		case <-ctx.Done():
			return
		case cur = <-c.in.C():
			have = true
			c.mu.Lock()
			c.last, c.have = cur, true
			c.mu.Unlock()
		case <-retry.C:
		case <-c.kick:
		case <-reports:
		case <-rotate.C:
			c.rotateIfDue()
		}
		reports = nil
		if !have {
			continue
		}
		done, waitDevice, err := c.act(ctx, cur)
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn("WireGuard state of this node not ready; retrying", "err", err, "in", backoff)
		case done:
			backoff = c.cfg.RetryMin
			retry.Stop()
			continue
		}
		if waitDevice && c.reports != nil {
			_, reports = c.reports.LatestReport()
		}
		retry.Reset(backoff)
		backoff = min(2*backoff, c.cfg.RetryMax)
	}
}

// armRotation sets the rotation timer for when the current key is due.
func (c *Controller) armRotation(t *time.Timer) {
	if c.keys == nil || c.cfg.RotationInterval <= 0 {
		return
	}
	_, created := c.keys.Current()
	t.Reset(max(time.Until(created.Add(c.cfg.RotationInterval)), time.Second))
}

func (c *Controller) rotateIfDue() {
	if c.keys == nil || c.cfg.RotationInterval <= 0 {
		return
	}
	if _, created := c.keys.Current(); time.Since(created) < c.cfg.RotationInterval {
		return
	}
	if _, rotating := c.keys.Next(); rotating {
		return
	}
	next, err := c.keys.StartRotation()
	if err != nil {
		c.log.Warn("automatic key rotation", "err", err)
		return
	}
	c.log.Info("rotating the WireGuard key (wireguard.key_rotation_interval)", "next_public_key", next.String())
}

// act carries out one need. done reports nothing was left to do;
// waitDevice that a rotation waits for the device to take the new key.
func (c *Controller) act(ctx context.Context, n calc.TunnelNeeds) (done, waitDevice bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	nn := n.WireGuardNode
	if !nn.Registered {
		// The agent registers its Node at start; the calculation tells
		// when it exists.
		return false, false, nil
	}
	u := nodeUpdate{Name: c.cfg.Node}
	var errs []error
	for _, fam := range []struct {
		st   calc.TunnelState
		v6   bool
		addr **string
	}{{n.WireGuard, false, &u.Addr4}, {n.WireGuardV6, true, &u.Addr6}} {
		a, err := c.tunnelAddr(ctx, fam.st, fam.v6)
		if err != nil {
			errs = append(errs, err)
		}
		*fam.addr = a
	}
	if !nn.Enabled || c.keys == nil {
		if !nn.PublicKey.IsZero() || nn.BadKey {
			u.PublicKey = ptr("")
		}
		if !nn.NextKey.IsZero() {
			u.NextKey = ptr("")
		}
		if nn.ListenPort != 0 {
			u.ListenPort = ptr(0)
		}
		if nn.HostEncryption {
			u.HostEncryption = ptr(false)
		}
	} else {
		waitDevice, err = c.keyUpdate(nn, &u)
		if err != nil {
			errs = append(errs, err)
		}
		if nn.ListenPort != nn.WantPort {
			u.ListenPort = ptr(nn.WantPort)
		}
		if nn.HostEncryption != nn.WantHostEncryption {
			u.HostEncryption = ptr(nn.WantHostEncryption)
		}
	}
	if !u.empty() {
		payload, _ := json.Marshal(u)
		if _, err := c.st.Command(ctx, cmdUpdate, payload); err != nil {
			errs = append(errs, fmt.Errorf("updating this node's WireGuard state: %w", err))
		}
	}
	err = errors.Join(errs...)
	return u.empty() && !waitDevice && err == nil, waitDevice, err
}

// keyUpdate decides what to publish about the key; see the rotation steps
// on [Controller].
func (c *Controller) keyUpdate(nn calc.WireGuardNodeState, u *nodeUpdate) (waitDevice bool, err error) {
	cur, _ := c.keys.Current()
	next, rotating := c.keys.Next()
	switch {
	case rotating && nn.PublicKey == next: // 4: published
		if !nn.NextKey.IsZero() {
			u.NextKey = ptr("")
		}
		if err := c.keys.Promote(); err != nil {
			return false, err
		}
		c.log.Info("WireGuard key rotated", "previous_public_key", cur.String(), "public_key", next.String())
		c.mu.Lock()
		close(c.promoted)
		c.promoted = make(chan struct{})
		c.mu.Unlock()
	case rotating && nn.NextKey == next: // 3: publish once the device uses it
		if applied, ok := c.dev.AppliedPublicKey(); !ok || applied != next {
			return true, nil
		}
		u.PublicKey, u.NextKey = ptr(next.String()), ptr("")
	case rotating: // 2: announce it to this node's calculation
		u.NextKey = ptr(next.String())
	default:
		if !nn.NextKey.IsZero() {
			// A rotation this node no longer holds the key of (its
			// data_dir was replaced): drop the announcement.
			u.NextKey = ptr("")
		}
		if nn.PublicKey != cur || nn.BadKey {
			if !nn.PublicKey.IsZero() {
				c.log.Warn("the WireGuard key this node publishes is not the one in its data_dir; publishing the data_dir's", "published", nn.PublicKey.String(), "key", cur.String())
			}
			u.PublicKey = ptr(cur.String())
		}
	}
	return false, nil
}

// tunnelAddr allocates or releases one WireGuard tunnel address as the
// need says, and returns the change to record on the Node (nil: none).
func (c *Controller) tunnelAddr(ctx context.Context, st calc.TunnelState, v6 bool) (*string, error) {
	handle := ipam.TunnelHandle(ipam.TunnelWireguard, c.cfg.Node, v6)
	switch {
	case !st.Wanted && st.Addr.IsValid():
		if _, err := c.ipam.ReleaseHandle(ctx, handle); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("releasing the WireGuard tunnel address %s: %w", st.Addr, err)
		}
		return ptr(""), nil
	case !st.Wanted, st.Addr.IsValid() && st.Allocated:
		return nil, nil
	}
	if st.Addr.IsValid() {
		c.log.Warn("the WireGuard tunnel address is no longer allocated to this node; allocating again", "address", st.Addr)
	}
	req, err := ipam.TunnelRequest(ipam.TunnelWireguard, c.cfg.Node, v6)
	if err != nil {
		return nil, err
	}
	req.NodeLabels = c.cfg.NodeLabels
	resp, err := c.ipam.Assign(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("allocating the WireGuard tunnel address: %w", err)
	}
	if len(resp.Addresses) == 0 {
		return nil, errors.New("allocating the WireGuard tunnel address: empty answer")
	}
	a, err := netip.ParseAddr(resp.Addresses[0].IP)
	if err != nil {
		return nil, fmt.Errorf("allocating the WireGuard tunnel address: %w", err)
	}
	c.log.Info("WireGuard tunnel address", "address", a)
	return ptr(a.String()), nil
}

// Rotate rotates this node's key (see [Controller]) and waits until the
// new key is published and current, or ctx ends (the rotation then goes
// on; the error says so).
func (c *Controller) Rotate(ctx context.Context) (previous, next dataplane.WireGuardKey, err error) {
	if c.keys == nil {
		return previous, next, localapi.Errorf(localapi.CodeInvalid, "WireGuard is not enabled on this node (wireguard.enabled)")
	}
	previous, _ = c.keys.Current()
	next, err = c.keys.StartRotation()
	if err != nil {
		return previous, next, err
	}
	c.log.Info("rotating the WireGuard key", "previous_public_key", previous.String(), "next_public_key", next.String())
	c.wake()
	for {
		c.mu.Lock()
		promoted := c.promoted
		c.mu.Unlock()
		if cur, _ := c.keys.Current(); cur == next {
			return previous, next, nil
		}
		select {
		case <-ctx.Done():
			return previous, next, localapi.Errorf(localapi.CodeUnavailable,
				"the rotation to %s started but is not finished (%v): it goes on; the datastore may be unreachable", next, ctx.Err())
		case <-promoted:
		}
	}
}

// Register adds `weft wireguard rotate-key` to the local API.
func (c *Controller) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/wireguard/rotate-key", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
		defer cancel()
		prev, next, err := c.Rotate(ctx)
		if err != nil {
			localapi.WriteError(w, apierr.FromStore(err))
			return
		}
		localapi.WriteJSON(w, http.StatusOK, localapi.RotateKeyResponse{PreviousPublicKey: prev.String(), PublicKey: next.String()})
	})
}

func ptr[T any](v T) *T { return &v }
