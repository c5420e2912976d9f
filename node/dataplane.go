package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/linux"
	"github.com/weftnet/weft/dataplane/mtu"
	"github.com/weftnet/weft/dataplane/sysctls"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// underlayInfo finds the interface holding addr and its connected prefix.
func underlayInfo(addr netip.Addr) (iface string, prefix netip.Prefix, err error) {
	if !addr.IsValid() {
		return "", netip.Prefix{}, nil
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return "", netip.Prefix{}, err
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", netip.Prefix{}, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != addr {
			continue
		}
		ones, _ := a.Mask.Size()
		link, err := h.LinkByIndex(a.LinkIndex)
		if err != nil {
			return "", netip.Prefix{}, err
		}
		return link.Attrs().Name, netip.PrefixFrom(addr, ones), nil
	}
	return "", netip.PrefixFrom(addr, addr.BitLen()), nil
}

// dataplaneRunner feeds the store's changes through the calculation into
// the dataplane loop, and keeps this node's VXLAN tunnel address.
type dataplaneRunner struct {
	a    *Agent
	dp   *linux.Dataplane
	box  *dataplane.Mailbox
	calc *calc.Calculator
	// vxlanWanted/haveTunnel drive the tunnel address controller.
	tunnelKick chan struct{}
	synced     atomic.Bool
	// last is the desired state last handed to the loop.
	underlayMTU int
	last        dataplane.Desired
	published   bool
	lastTunnel  calc.TunnelState
	// lastProblems were last logged, so each is logged once.
	lastProblems []string
}

// startDataplane builds the dataplane. Nothing is written to the kernel
// until the first desired state, which comes only after the store is in
// sync.
func (a *Agent) startDataplane() (*dataplaneRunner, error) {
	under, err := mtu.Detect(mtu.Config{}, a.addr4)
	if err != nil {
		return nil, fmt.Errorf("detecting the underlay MTU: %w", err)
	}
	// Until the pools are known, assume the overlay is used: too small an
	// MTU costs a little throughput, too large one breaks connections.
	workloadMTU := mtu.Workload(under.MTU, mtu.Encaps{VXLANv4: true}, a.cfg.Network.MTU)
	a.log.Info("dataplane MTU", "underlay", under.MTU, "from", under.How, "iface", under.Iface, "workload", workloadMTU)
	r := &dataplaneRunner{a: a, box: dataplane.NewMailbox(), tunnelKick: make(chan struct{}, 1), underlayMTU: under.MTU}
	r.dp, err = linux.New(linux.Config{
		Logger:                 a.log.With("component", "dataplane"),
		Registerer:             a.reg,
		IfacePrefix:            a.cfg.Network.InterfacePrefix,
		WorkloadMTU:            workloadMTU,
		VXLANName:              a.cfg.VXLAN.Interface,
		VXLANVNI:               a.cfg.VXLAN.VNI,
		VXLANPort:              a.cfg.VXLAN.Port,
		VXLANTxChecksumOffload: a.cfg.VXLAN.TxChecksumOffload,
		ResyncPeriod:           a.cfg.Network.ResyncPeriod.Duration,
		OnNetNSGone:            a.onNetNSGone,
		// IPv6 forwarding only on a node with an IPv6 underlay address:
		// turning it on makes the kernel ignore router advertisements on
		// interfaces with accept_ra=1, which a v4-only host may rely on.
		Sysctls: sysctls.Forwarding(a.addr6.IsValid()),
	})
	if err != nil {
		return nil, err
	}
	r.calc = calc.New(calc.Config{
		NodeName:        a.cfg.Node.Name,
		Address:         a.addr4,
		UnderlayPrefix:  a.underlay4.Masked(),
		Address6:        a.addr6,
		UnderlayPrefix6: a.underlay6.Masked(),
		UnderlayIface:   a.underlayIface,
		VXLANIface:      a.cfg.VXLAN.Interface,
	})
	return r, nil
}

// run drives the loop and the calculation until ctx ends.
func (r *dataplaneRunner) run(ctx context.Context) {
	r.a.goBackground(func() {
		if err := r.dp.Run(ctx, r.box.C()); err != nil && ctx.Err() == nil {
			r.a.log.Error("dataplane loop stopped", "err", err)
		}
	})
	r.a.goBackground(func() { r.tunnelController(ctx) })
	r.feed(ctx)
}

// feed watches the store and sends a new desired state after every batch
// of changes. It resumes after a watch ends (a slow consumer is cut off by
// the store) from the last revision it saw.
func (r *dataplaneRunner) feed(ctx context.Context) {
	var rev uint64
	for ctx.Err() == nil {
		events, err := r.a.store.Watch(ctx, rev, store.WatchFilter{Kinds: calc.Kinds()})
		if err != nil {
			r.a.log.Warn("dataplane: watch failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		r.consume(events, &rev, r.publish)
	}
}

// consume feeds a watch's events to the calculation until the channel
// closes, calling publish after each batch of changes, but only with a
// complete state: after a RESET the listing that follows is partial until
// its SYNC, and a partial state would tear down the workloads not yet
// listed.
func (r *dataplaneRunner) consume(events <-chan store.Event, rev *uint64, publish func()) {
	for ev := range events {
		r.apply(ev, rev)
		// Coalesce: take everything already queued before computing.
		r.drain(events, rev)
		if r.synced.Load() {
			publish()
		}
	}
}

// apply feeds one watch event to the calculation.
func (r *dataplaneRunner) apply(ev store.Event, rev *uint64) {
	*rev = ev.Revision
	switch ev.Type {
	case store.EventReset:
		r.calc.Reset()
		r.synced.Store(false)
	case store.EventSync:
		r.synced.Store(true)
	case store.EventPut, store.EventDelete:
		r.calc.OnEvent(ev)
	}
}

// drain applies the events already waiting without blocking.
func (r *dataplaneRunner) drain(events <-chan store.Event, rev *uint64) {
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			r.apply(ev, rev)
		default:
			return
		}
	}
}

func (r *dataplaneRunner) publish() {
	if ts := r.calc.Tunnel(); !r.published || ts != r.lastTunnel {
		r.lastTunnel = ts
		r.setMTU(ts.VXLANWanted)
		select {
		case r.tunnelKick <- struct{}{}:
		default:
		}
	}
	d := r.calc.Desired()
	if p := r.calc.Problems(); !slices.Equal(p, r.lastProblems) {
		r.lastProblems = p
		for _, line := range p {
			r.a.log.Warn("dataplane: left out of the desired state", "problem", line)
		}
	}
	if r.published && d.Equal(&r.last) {
		// Most changes (another node's allocation in its own block) do not
		// change this node's dataplane: nothing to hand to the loop.
		return
	}
	if err := d.Validate(); err != nil {
		r.a.log.Error("dataplane: desired state is invalid; keeping the last one", "err", err)
		return
	}
	r.box.Send(d)
	r.last, r.published = d, true
}

// setMTU sizes workload interfaces for the encapsulations the pools use
// (calico.md §5.5): the underlay MTU, less the VXLAN overhead only when a
// pool uses VXLAN; network.mtu overrides. Existing workloads are adjusted
// on the next full pass.
func (r *dataplaneRunner) setMTU(vxlan bool) {
	want := mtu.Workload(r.underlayMTU, mtu.Encaps{VXLANv4: vxlan}, r.a.cfg.Network.MTU)
	p := r.dp.Plumber
	if p.MTU() == want {
		return
	}
	if err := p.SetMTU(want); err != nil {
		r.a.log.Error("setting the workload MTU", "err", err)
		return
	}
	r.a.log.Info("workload MTU", "mtu", want, "vxlan", vxlan)
	r.dp.Loop.Resync()
}

// tunnelController gives this node a VXLAN tunnel address when some pool
// uses VXLAN (and records it with the VTEP MAC on its Node), and gives it
// back when none does.
func (r *dataplaneRunner) tunnelController(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	// A periodic look catches a tunnel address taken away in IPAM without
	// any change to this node's Node.
	check := time.NewTicker(time.Minute)
	defer check.Stop()
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.tunnelKick:
		case <-retry.C:
		case <-check.C:
		}
		if err := r.ensureTunnel(ctx); err != nil {
			r.a.log.Warn("dataplane: VXLAN tunnel address not ready; retrying", "err", err, "in", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, 30*time.Second)
		} else {
			backoff = time.Second
		}
	}
}

func (r *dataplaneRunner) ensureTunnel(ctx context.Context) error {
	a := r.a
	wanted := false
	pools, _ := a.store.List(api.KindIPPool, "")
	for _, o := range pools {
		var p api.IPPool
		if json.Unmarshal(o.Value, &p) == nil && (p.Spec.VXLANMode == api.EncapAlways || p.Spec.VXLANMode == api.EncapCrossSubnet) {
			wanted = true
		}
	}
	var self api.Node
	if o, ok := a.store.Get(store.Key{Kind: api.KindNode, Name: a.cfg.Node.Name}); ok {
		_ = json.Unmarshal(o.Value, &self)
	}
	have := self.Spec.IPv4VXLANTunnelAddr != ""
	handle := ipam.TunnelHandle(ipam.TunnelVXLAN, a.cfg.Node.Name, false)
	if have && wanted {
		// Still ours in IPAM? (a forced pool delete or `ipam release`
		// can take it; then another workload could be given it.)
		if _, ok := a.store.Get(ipam.HandleKey(handle)); ok {
			return nil
		}
		a.log.Warn("the VXLAN tunnel address is no longer allocated to this node; allocating again", "address", self.Spec.IPv4VXLANTunnelAddr)
	} else if wanted == have || !a.addr4.IsValid() {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if !wanted {
		payload, _ := json.Marshal(ipam.ReleaseHandleRequest{Handle: handle})
		if _, err := a.store.Command(cctx, ipam.CmdReleaseHandle, payload); err != nil && !errors.Is(err, store.ErrNotFound) {
			a.log.Debug("releasing the VXLAN tunnel address", "err", err)
		}
		return a.registerNode(cctx, registerRequest{ClearVXLAN: true})
	}
	req, err := ipam.TunnelRequest(ipam.TunnelVXLAN, a.cfg.Node.Name, false)
	if err != nil {
		return err
	}
	req.NodeLabels = a.cfg.Node.Labels
	payload, _ := json.Marshal(req)
	out, err := a.store.Command(cctx, ipam.CmdAssign, payload)
	if err != nil {
		return fmt.Errorf("allocating the VXLAN tunnel address: %w", err)
	}
	var resp ipam.AssignResponse
	if err := json.Unmarshal(out, &resp); err != nil || len(resp.Addresses) == 0 {
		return fmt.Errorf("allocating the VXLAN tunnel address: empty answer")
	}
	addr := resp.Addresses[0].IP
	a.log.Info("VXLAN tunnel address", "address", addr)
	return a.registerNode(cctx, registerRequest{VXLANAddr: addr, VXLANMAC: dataplane.VXLANMAC(a.cfg.Node.Name).String()})
}

// health reports the dataplane: ready after its first complete apply.
func (r *dataplaneRunner) health() localapi.ComponentStatus {
	cs := localapi.ComponentStatus{Name: "dataplane", State: localapi.StateRunning, Live: true}
	select {
	case <-r.dp.Loop.Synced():
		cs.Ready = true
		if err := r.dp.Loop.LastError(); err != nil {
			cs.Detail = "last apply: " + err.Error()
		}
	default:
		cs.State = localapi.StateStarting
		if !r.synced.Load() {
			cs.Detail = "waiting for the datastore"
		} else {
			cs.Detail = "first apply in progress"
		}
		if err := r.dp.Loop.LastError(); err != nil {
			cs.Detail = err.Error()
		}
	}
	return cs
}
