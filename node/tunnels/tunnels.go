// Package tunnels carries out what the calculation decides about this
// node's tunnel addresses (calc.TunnelNeeds): it allocates the VXLAN
// tunnel address in IPAM and records it with the VTEP MAC on this node's
// Node when some pool uses VXLAN, and gives it back when none does; the
// IP-in-IP tunnel address (ipip-tunnel-addr-<node>, recorded as the Node's
// spec.bgp.ipv4IPIPTunnelAddr) likewise when some pool uses IP-in-IP and
// this node can honour it. It
// decides nothing itself: every input comes from the calculation, which
// sees the pools, the Node and the IPAM blocks (so an address taken away
// by a forced pool delete or `ipam release` is noticed at once, not by a
// periodic check).
package tunnels

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/latest"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/cluster"
	"github.com/weftnet/weft/store"
)

// Registrar records tunnel changes on this node's Node.
type Registrar interface {
	RegisterNode(ctx context.Context, t cluster.Tunnel) error
}

// Config configures the controller.
type Config struct {
	Node       string
	NodeLabels map[string]string
	Logger     *slog.Logger
	// RetryMin and RetryMax bound the backoff while a need is unsettled
	// (defaults 1 s and 30 s).
	RetryMin, RetryMax time.Duration
}

// Controller is the tunnel-address controller.
type Controller struct {
	cfg  Config
	ipam *ipam.Client
	reg  Registrar
	log  *slog.Logger
	in   *latest.Box[calc.TunnelNeeds]
}

// New returns a controller.
func New(cfg Config, st store.Store, reg Registrar) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	return &Controller{cfg: cfg, ipam: ipam.NewClient(st), reg: reg, log: cfg.Logger.With("component", "tunnels"), in: latest.New[calc.TunnelNeeds]()}
}

// Set hands the controller the latest needs; it never blocks, and a need
// not yet taken is replaced.
func (c *Controller) Set(n calc.TunnelNeeds) {
	c.in.Send(n)
}

// Run acts on the needs until ctx ends. After acting it waits for the
// calculation to confirm (a new need that is settled); while a need stays
// unsettled it acts again with backoff.
func (c *Controller) Run(ctx context.Context) {
	var (
		cur     calc.TunnelNeeds
		have    bool
		backoff = c.cfg.RetryMin
		retry   = time.NewTimer(time.Hour)
	)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case cur = <-c.in.C():
			have = true
		case <-retry.C:
		}
		if !have || cur.Settled() {
			backoff = c.cfg.RetryMin
			retry.Stop()
			continue
		}
		if !cur.VXLAN.Settled() {
			if err := c.actVXLAN(ctx, cur.VXLAN); err != nil && ctx.Err() == nil {
				c.log.Warn("VXLAN tunnel address not ready; retrying", "err", err, "in", backoff)
			}
		}
		if !cur.IPIP.Settled() {
			if err := c.actIPIP(ctx, cur.IPIP); err != nil && ctx.Err() == nil {
				c.log.Warn("IP-in-IP tunnel address not ready; retrying", "err", err, "in", backoff)
			}
		}
		retry.Reset(backoff)
		backoff = min(2*backoff, c.cfg.RetryMax)
	}
}

func (c *Controller) actIPIP(ctx context.Context, need calc.TunnelState) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	handle := ipam.TunnelHandle(ipam.TunnelIPIP, c.cfg.Node, false)
	if !need.Wanted {
		if _, err := c.ipam.ReleaseHandle(ctx, handle); err != nil && !errors.Is(err, store.ErrNotFound) {
			c.log.Debug("releasing the IP-in-IP tunnel address", "err", err)
		}
		return c.reg.RegisterNode(ctx, cluster.Tunnel{ClearIPIP: true})
	}
	if need.Addr.IsValid() && need.Allocated {
		return nil // settled but for a stale view
	}
	if need.Addr.IsValid() {
		c.log.Warn("the IP-in-IP tunnel address is no longer allocated to this node; allocating again", "address", need.Addr)
	}
	addr, err := c.assign(ctx, ipam.TunnelIPIP)
	if err != nil {
		return err
	}
	c.log.Info("IP-in-IP tunnel address", "address", addr)
	return c.reg.RegisterNode(ctx, cluster.Tunnel{IPIPAddr: addr})
}

// assign allocates this node's tunnel address of that kind (the same
// request again returns the same address).
func (c *Controller) assign(ctx context.Context, kind ipam.TunnelKind) (string, error) {
	req, err := ipam.TunnelRequest(kind, c.cfg.Node, false)
	if err != nil {
		return "", err
	}
	req.NodeLabels = c.cfg.NodeLabels
	resp, err := c.ipam.Assign(ctx, req)
	if err != nil {
		return "", fmt.Errorf("allocating the %s tunnel address: %w", kind, err)
	}
	if len(resp.Addresses) == 0 {
		return "", fmt.Errorf("allocating the %s tunnel address: empty answer", kind)
	}
	return resp.Addresses[0].IP, nil
}

func (c *Controller) actVXLAN(ctx context.Context, need calc.TunnelState) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	handle := ipam.TunnelHandle(ipam.TunnelVXLAN, c.cfg.Node, false)
	if !need.Wanted {
		if _, err := c.ipam.ReleaseHandle(ctx, handle); err != nil && !errors.Is(err, store.ErrNotFound) {
			c.log.Debug("releasing the VXLAN tunnel address", "err", err)
		}
		return c.reg.RegisterNode(ctx, cluster.Tunnel{Clear: true})
	}
	mac := dataplane.VXLANMAC(c.cfg.Node).String()
	if need.Addr.IsValid() && need.Allocated {
		// Only the MAC is missing on the Node.
		return c.reg.RegisterNode(ctx, cluster.Tunnel{VXLANAddr: need.Addr.String(), VXLANMAC: mac})
	}
	if need.Addr.IsValid() {
		c.log.Warn("the VXLAN tunnel address is no longer allocated to this node; allocating again", "address", need.Addr)
	}
	addr, err := c.assign(ctx, ipam.TunnelVXLAN)
	if err != nil {
		return err
	}
	c.log.Info("VXLAN tunnel address", "address", addr)
	return c.reg.RegisterNode(ctx, cluster.Tunnel{VXLANAddr: addr, VXLANMAC: mac})
}
