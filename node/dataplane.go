package node

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/dataplane/linux"
	"github.com/weftnet/weft/dataplane/mtu"
	"github.com/weftnet/weft/dataplane/sysctls"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/calcrun"
	"github.com/weftnet/weft/node/localapi"
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

// buildDataplane detects the underlay MTU and builds the dataplane's
// drivers and loop. Nothing is written to the kernel until the loop gets
// its first desired state, which comes only after the store is in sync.
func (a *Agent) buildDataplane() (*linux.Dataplane, calc.Config, error) {
	under, err := mtu.Detect(mtu.Config{}, a.addr4)
	if err != nil {
		return nil, calc.Config{}, fmt.Errorf("detecting the underlay MTU: %w", err)
	}
	a.log.Info("underlay MTU", "mtu", under.MTU, "from", under.How, "iface", under.Iface)
	wgCfg, err := a.wireguardDriverConfig()
	if err != nil {
		return nil, calc.Config{}, err
	}
	dp, err := linux.New(linux.Config{
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
		Sysctls:   sysctls.Forwarding(a.addr6.IsValid()),
		WireGuard: wgCfg,
		NodeName:  a.cfg.Node.Name,
	})
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
		UnderlayMTU:     under.MTU,
		MTU:             a.cfg.Network.MTU,
		WireGuard:       a.wireguardCalcConfig(),
	}
	return dp, cc, nil
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
