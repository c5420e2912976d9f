package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/firewall"
	"github.com/weftnet/weft/dataplane/ipip"
	"github.com/weftnet/weft/dataplane/linux"
	"github.com/weftnet/weft/dataplane/mtu"
	"github.com/weftnet/weft/dataplane/sysctls"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/calcrun"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/node/policy"
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

// buildDataplane detects the underlay MTU and whether the kernel can do
// IP-in-IP (reading only: one start line each) and builds the dataplane's
// drivers and loop. Nothing is written to the kernel until the loop gets
// its first desired state, which comes only after the store is in sync.
func (a *Agent) buildDataplane() (*linux.Dataplane, calc.Config, error) {
	under, err := mtu.Detect(mtu.Config{}, a.addr4)
	if err != nil {
		return nil, calc.Config{}, fmt.Errorf("detecting the underlay MTU: %w", err)
	}
	a.log.Info("underlay MTU", "mtu", under.MTU, "from", under.How, "iface", under.Iface)
	a.setIPIPSupport(ipip.ProbeSystem(), "start")
	lc := a.linuxConfig()
	if lc.WireGuard, err = a.wireguardDriverConfig(); err != nil {
		return nil, calc.Config{}, err
	}
	lc.NodeName = a.cfg.Node.Name
	dp, err := linux.New(lc)
	if err != nil {
		return nil, calc.Config{}, err
	}
	cc := calc.Config{
		NodeName:        a.cfg.Node.Name,
		Address:         a.addr4,
		UnderlayPrefix:  a.underlay4.Masked(),
		Address6:        a.addr6,
		UnderlayPrefix6: a.underlay6.Masked(),
		UnderlayIface:   a.underlayIface,
		VXLANIface:      a.cfg.VXLAN.Interface,
		VXLANVNI:        a.cfg.VXLAN.VNI,
		VXLANPort:       a.cfg.VXLAN.Port,
		IPIPIface:       dataplane.DefaultIPIPIface,
		BGP:             a.cfg.BGP.Enabled,
		UnderlayMTU:     under.MTU,
		MTU:             a.cfg.Network.MTU,
		Policy:          a.policySettings(),
		WireGuard:       a.wireguardCalcConfig(),
	}
	return dp, cc, nil
}

// linuxConfig is the dataplane's static configuration.
func (a *Agent) linuxConfig() linux.Config {
	var level slog.Level
	_ = level.UnmarshalText([]byte(a.cfg.Log.Level)) // validated with the config
	return linux.Config{
		Logger:                 a.log.With("component", "dataplane"),
		Registerer:             a.reg,
		IfacePrefix:            a.cfg.Network.InterfacePrefix,
		VXLANName:              a.cfg.VXLAN.Interface,
		VXLANVNI:               a.cfg.VXLAN.VNI,
		VXLANPort:              a.cfg.VXLAN.Port,
		VXLANTxChecksumOffload: a.cfg.VXLAN.TxChecksumOffload,
		ResyncPeriod:           a.cfg.Network.ResyncPeriod.Duration,
		// IPv6 forwarding only on a node with an IPv6 underlay address:
		// turning it on makes the kernel ignore router advertisements on
		// interfaces with accept_ra=1, which a v4-only host may rely on.
		Sysctls:         sysctls.Forwarding(a.addr6.IsValid()),
		FirewallBackend: a.firewallBackend(),
		IptablesVariant: a.cfg.Dataplane.IptablesBackend,
		LogLevel:        level,
		// The probe said yes but creating the device said no.
		IPIPUnsupported: func(reason string) { a.setIPIPSupport(ipip.Support{Reason: reason}, "device creation") },
	}
}

// firewallBackend is the policy backend the dataplane runs: the
// configured one, nftables for ebpf (not built; warnUnbuilt says so).
func (a *Agent) firewallBackend() string {
	if a.cfg.Dataplane.Backend == "iptables" {
		return "iptables"
	}
	return "nftables"
}

// policySettings are the node's policy settings from its config file.
func (a *Agent) policySettings() dataplane.PolicySettings {
	conv := func(in []config.ProtoPort) []dataplane.ProtoPort {
		fs := make([]policy.FailsafePort, len(in))
		for i, p := range in {
			fs[i] = policy.FailsafePort{Protocol: p.Protocol, Port: p.Port, Net: p.Net}
		}
		return policy.ConfigFailsafe(fs)
	}
	return dataplane.PolicySettings{
		FailsafeIn:  conv(a.cfg.Dataplane.InboundFailsafe()),
		FailsafeOut: conv(a.cfg.Dataplane.OutboundFailsafe()),
		// Calico's default: a workload reaches its host only if a
		// FelixConfiguration says so (defaultEndpointToHostAction).
		EndpointToHost: dataplane.EndpointToHostDrop,
		VXLANPort:      uint16(a.cfg.VXLAN.Port),
	}
}

// policyStatus is the firewall's sync state for `weft node status`.
func policyStatus(s firewall.Status) *localapi.PolicyStatus {
	return &localapi.PolicyStatus{
		Backend: s.Backend, InSync: s.InSync, LastApply: s.Applied, LastError: s.LastError,
		Chains: s.Chains, Rules: s.Rules, Sets: s.Sets, SetMembers: s.SetMembers,
	}
}

// setIPIPSupport records whether this node can do IP-in-IP: one log line
// (a warning when it cannot), the weft_ipip_available metric, the ipip
// component of `weft node status`, the apply warnings, and the
// calculation's local input (which then routes no IP-in-IP pool here).
func (a *Agent) setIPIPSupport(s ipip.Support, how string) {
	a.ipipSupport.Store(&s)
	if s.Available {
		a.log.Info("IP-in-IP available", "how", how, "reason", s.Reason)
		a.ipipAvailable.Set(1)
		a.health.set(localapi.ComponentStatus{Name: "ipip", State: localapi.StateRunning, Live: true, Ready: true, Detail: s.Reason})
	} else {
		a.log.Warn("IP-in-IP is not available on this node: traffic to other nodes' blocks of pools with ipipMode Always or CrossSubnet is dropped here, never sent unencapsulated",
			"how", how, "reason", s.Reason)
		a.ipipAvailable.Set(0)
		a.health.set(localapi.ComponentStatus{Name: "ipip", State: localapi.StateUnavailable, Live: true, Ready: true,
			Detail: s.Reason + "; traffic to other nodes' blocks of ipipMode pools is dropped on this node"})
	}
	if r := a.runner; r != nil {
		r.SetLocal(calc.LocalInput{Kind: calc.LocalKindIPIP, Value: calc.Support{Available: s.Available, Reason: s.Reason}})
	}
}

// ipipWarnings warns at `weft apply` of an IP pool with IP-in-IP that
// this node cannot honour it (resources.Warner).
func (a *Agent) ipipWarnings(r api.Resource) []string {
	p, ok := r.(*api.IPPool)
	if !ok || p.Spec.Disabled || (p.Spec.IPIPMode != api.EncapAlways && p.Spec.IPIPMode != api.EncapCrossSubnet) {
		return nil
	}
	s := a.ipipSupport.Load()
	if s == nil || s.Available {
		return nil
	}
	return []string{fmt.Sprintf("IPPool %s: ipipMode %s: this node (%s) cannot honour IP-in-IP (%s): traffic from it to the pool's blocks on other nodes is dropped, never sent unencapsulated; see `weft node status`",
		p.Metadata.Name, p.Spec.IPIPMode, a.cfg.Node.Name, s.Reason)}
}

// watchLinks feeds the node's links into the calculation, now and on
// every change (the underlay MTU, with FelixConfiguration mtuIfacePattern,
// is decided there).
func (a *Agent) watchLinks(ctx context.Context) {
	err := mtu.Watch(ctx, a.linksConfig(), a.nodeAddrs(), func(links []dataplane.Link) {
		a.runner.SetLocal(calc.LocalInput{Kind: calc.LocalKindLinks, Value: links})
	})
	if err != nil && ctx.Err() == nil {
		a.log.Error("watching the links for the underlay MTU stopped; the MTU found at start stays", "err", err)
	}
}

// linksConfig lists the links that count for the underlay MTU: not weft's
// own interfaces, whose MTUs follow the underlay's.
func (a *Agent) linksConfig() mtu.Config {
	prefix := a.cfg.Network.InterfacePrefix
	return mtu.Config{Ignore: func(name string) bool {
		return dataplane.IsWorkloadIface(prefix, name) || name == a.cfg.VXLAN.Interface || name == dataplane.DefaultIPIPIface
	}}
}

// nodeAddrs are the node's underlay addresses.
func (a *Agent) nodeAddrs() []netip.Addr {
	var addrs []netip.Addr
	for _, x := range []netip.Addr{a.addr4, a.addr6} {
		if x.IsValid() {
			addrs = append(addrs, x)
		}
	}
	return addrs
}

// dataplaneHealth reports the dataplane: ready after its first complete
// apply.
func dataplaneHealth(dp *linux.Dataplane, runner *calcrun.Runner) localapi.ComponentStatus {
	cs := localapi.ComponentStatus{Name: "dataplane", State: localapi.StateRunning, Live: true}
	select {
	case <-dp.Loop.Synced():
		cs.Ready = true
		if err := dp.Loop.LastError(); err != nil {
			cs.Detail = "last apply: " + err.Error()
		}
	default:
		cs.State = localapi.StateStarting
		if runner == nil || !runner.Synced() {
			cs.Detail = "waiting for the datastore"
		} else {
			cs.Detail = "first apply in progress"
		}
		if err := dp.Loop.LastError(); err != nil {
			cs.Detail = err.Error()
		}
	}
	return cs
}
