package cni

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/node/localapi"
)

// Addresses every workload sees (SPEC §5).
const (
	// HostVethMAC is the MAC of the host side of every workload veth.
	HostVethMAC = "ee:ee:ee:ee:ee:ee"
	// DefaultGateway4 is the IPv4 next hop of every workload, answered by
	// proxy ARP on the host side.
	DefaultGateway4 = "169.254.1.1"
)

// BuildResult turns the agent's answer to an ADD into a CNI result (in
// the library's newest 1.x form; the caller converts it to the version the
// runtime asked for): the host side of the veth and the workload's
// interface, its addresses on that interface with their gateway, a default
// route per address family via the gateway, and the network
// configuration's dns.
func BuildResult(w *localapi.Workload, dns types.DNS) (*types100.Result, error) {
	r := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, DNS: dns}
	if w.HostIface != "" {
		r.Interfaces = append(r.Interfaces, &types100.Interface{Name: w.HostIface, Mac: HostVethMAC})
	}
	if w.Interface == "" {
		return nil, fmt.Errorf("the agent's answer for workload %s/%s names no interface", w.Namespace, w.Name)
	}
	r.Interfaces = append(r.Interfaces, &types100.Interface{Name: w.Interface, Mac: w.MAC, Sandbox: w.NetNS})
	container := len(r.Interfaces) - 1

	gw4, gw6, err := gateways(w)
	if err != nil {
		return nil, err
	}
	var has4, has6 bool
	for _, s := range w.IPs {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("the agent's answer for workload %s/%s: address %q: %w", w.Namespace, w.Name, s, err)
		}
		ipc := &types100.IPConfig{Interface: types100.Int(container), Address: ipNet(p)}
		if p.Addr().Is4() {
			has4, ipc.Gateway = true, gw4
		} else {
			has6, ipc.Gateway = true, gw6
		}
		r.IPs = append(r.IPs, ipc)
	}
	if len(r.IPs) == 0 {
		return nil, fmt.Errorf("the agent's answer for workload %s/%s has no address", w.Namespace, w.Name)
	}
	if has4 {
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw4})
	}
	if has6 {
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: gw6})
	}
	return r, nil
}

// gateways returns the workload's IPv4 gateway (169.254.1.1 unless the
// agent says otherwise) and its IPv6 gateway (the host side's link-local
// address, when the agent reports one).
func gateways(w *localapi.Workload) (net.IP, net.IP, error) {
	g4 := w.Gateway4
	if g4 == "" {
		g4 = DefaultGateway4
	}
	a4, err := netip.ParseAddr(g4)
	if err != nil || !a4.Is4() {
		return nil, nil, fmt.Errorf("the agent's answer for workload %s/%s: IPv4 gateway %q is not an IPv4 address", w.Namespace, w.Name, g4)
	}
	var gw6 net.IP
	if w.Gateway6 != "" {
		a6, err := netip.ParseAddr(w.Gateway6)
		if err != nil || !a6.Is6() || a6.Is4In6() {
			return nil, nil, fmt.Errorf("the agent's answer for workload %s/%s: IPv6 gateway %q is not an IPv6 address", w.Namespace, w.Name, w.Gateway6)
		}
		gw6 = net.IP(a6.WithZone("").AsSlice())
	}
	return net.IP(a4.AsSlice()), gw6, nil
}

// parsePrefix accepts "10.244.0.5/32" and, for robustness, a bare address
// (taken as a host prefix).
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// CheckPrevResult compares the result the runtime recorded at ADD with the
// workload as the agent sees it now (CHECK): the same addresses, and the
// container interface with the same name and MAC.
func CheckPrevResult(prev *types100.Result, w *localapi.Workload, ifName string) error {
	if prev == nil {
		return nil
	}
	var want []string
	for _, ipc := range prev.IPs {
		if ipc == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return fmt.Errorf("prevResult has a malformed address %v", ipc.Address)
		}
		want = append(want, a.Unmap().String())
	}
	var have []string
	for _, s := range w.IPs {
		p, err := parsePrefix(s)
		if err != nil {
			return fmt.Errorf("the agent reports address %q for workload %s/%s: %w", s, w.Namespace, w.Name, err)
		}
		have = append(have, p.Addr().String())
	}
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(want, have) {
		return fmt.Errorf("workload %s/%s has addresses [%s], the runtime recorded [%s] at ADD",
			w.Namespace, w.Name, strings.Join(have, " "), strings.Join(want, " "))
	}
	for _, intf := range prev.Interfaces {
		if intf == nil || intf.Sandbox == "" || intf.Name != ifName {
			continue
		}
		if w.Interface != ifName {
			return fmt.Errorf("workload %s/%s has interface %q, the runtime recorded %q", w.Namespace, w.Name, w.Interface, ifName)
		}
		if intf.Mac != "" && w.MAC != "" && !strings.EqualFold(intf.Mac, w.MAC) {
			return fmt.Errorf("interface %s of workload %s/%s has MAC %s, the runtime recorded %s", ifName, w.Namespace, w.Name, w.MAC, intf.Mac)
		}
		return nil
	}
	if len(prev.Interfaces) > 0 {
		return fmt.Errorf("the runtime's record of the ADD has no interface %q in a sandbox", ifName)
	}
	return nil
}
