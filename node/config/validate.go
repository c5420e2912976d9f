package config

import (
	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/api/selector"

	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Validate checks every value of c (SPEC §2) and returns an *Error listing
// all problems, or nil. Parse and Load call it; use it directly for a Config
// built in code (its errors then carry no file or line).
func (c *Config) Validate() error {
	probs := c.validate()
	if len(probs) == 0 {
		return nil
	}
	return newError("", nil, probs)
}

// validator collects problems; its methods check one section each.
type validator struct {
	problems []problem
}

func (v *validator) fail(p keyPath, format string, args ...any) {
	v.problems = append(v.problems, problem{key: p, msg: fmt.Sprintf(format, args...)})
}

func (v *validator) check(p keyPath, err error) {
	if err != nil {
		v.fail(p, "%v", err)
	}
}

func (c *Config) validate() []problem {
	v := &validator{}
	v.node(keyPath{}.Key("node"), c.Node)
	v.cluster(keyPath{}.Key("cluster"), c.Cluster)
	v.absPath(keyPath{}.Key("api").Key("socket"), c.API.Socket, true)
	if len(c.API.Socket) > 107 {
		v.fail(keyPath{}.Key("api").Key("socket"), "must be at most 107 bytes (the unix socket limit), got %d", len(c.API.Socket))
	}
	if c.Metrics.Listen != "" {
		_, err := parseIPPort(c.Metrics.Listen)
		v.check(keyPath{}.Key("metrics").Key("listen"), err)
	}
	v.oneOf(keyPath{}.Key("log").Key("level"), c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf(keyPath{}.Key("log").Key("format"), c.Log.Format, "text", "json")
	v.network(keyPath{}.Key("network"), c.Network)
	v.bgp(keyPath{}.Key("bgp"), c.BGP)
	v.wireguard(keyPath{}.Key("wireguard"), c.WireGuard)
	v.vxlan(keyPath{}.Key("vxlan"), c.VXLAN)
	v.dataplane(keyPath{}.Key("dataplane"), c.Dataplane)
	v.ipam(keyPath{}.Key("ipam"), c.IPAM)
	v.portClashes(c)
	return v.problems
}

func (v *validator) node(p keyPath, n Node) {
	if n.Name == "" {
		v.fail(p.Key("name"), "must not be empty (it defaults to the hostname, which could not be read)")
	} else if err := checkDNS1123Subdomain(n.Name); err != nil {
		v.fail(p.Key("name"), "%v; set node.name when the hostname is not a valid node name", err)
	}
	if _, _, err := parseNodeAddress(n.Address); err != nil {
		v.fail(p.Key("address"), "%v", err)
	}
	v.absPath(p.Key("data_dir"), n.DataDir, true)
	for _, k := range sortedKeys(n.Labels) {
		v.check(p.Key("labels").Key(k), checkLabelKey(k))
		v.check(p.Key("labels").Key(k), checkLabelValue(n.Labels[k]))
	}
}

func (v *validator) cluster(p keyPath, c Cluster) {
	if _, err := parseIPPort(c.Listen); err != nil {
		v.fail(p.Key("listen"), "%v", err)
	}
	if c.Advertise != "" {
		if ap, err := parseIPPort(c.Advertise); err != nil {
			v.fail(p.Key("advertise"), "%v", err)
		} else if ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
			v.fail(p.Key("advertise"), "must be an address other nodes can reach, got %s", ap.Addr())
		}
	}
	for i, j := range c.Join {
		host, _, err := splitHostPort(j)
		if err != nil {
			v.fail(p.Key("join").Index(i), "%v", err)
			continue
		}
		if _, err := netip.ParseAddr(host); err != nil && checkDNS1123Subdomain(host) != nil {
			v.fail(p.Key("join").Index(i), "host must be an IP address or a DNS name, got %q", host)
		}
	}
	if c.TokenFile != "" {
		v.absPath(p.Key("token_file"), c.TokenFile, false)
	}
	if !slices.Contains([]int{1, 3, 5, 7}, c.Voters) {
		v.fail(p.Key("voters"), "must be 1, 3, 5 or 7, got %d", c.Voters)
	}
}

func (v *validator) network(p keyPath, n Network) {
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 9000) {
		v.fail(p.Key("mtu"), "must be 0 (detect) or 576-9000, got %d", n.MTU)
	}
	// The host side of a workload veth is prefix + 11 hex characters of a
	// hash (as Calico's "cali" + 11), within Linux's 15.
	v.check(p.Key("interface_prefix"), checkInterfaceName(n.InterfacePrefix, 4))
	if d := n.ResyncPeriod.Duration; d < time.Second || d > DefaultResyncPeriod {
		v.fail(p.Key("resync_period"), "must be between 1s and 90s, got %s", d)
	}
	type seen struct {
		index  int
		name   string
		prefix netip.Prefix
	}
	var valid []seen
	names := map[string]int{}
	for i, pool := range n.Pools {
		pp := p.Key("pool").Index(i)
		if err := checkDNS1123Subdomain(pool.Name); err != nil {
			v.fail(pp.Key("name"), "%v", err)
		} else if first, dup := names[pool.Name]; dup {
			v.fail(pp.Key("name"), "duplicate pool name %q (also network.pool[%d])", pool.Name, first)
		} else {
			names[pool.Name] = i
		}
		prefix, ok := v.pool(pp, pool)
		if !ok {
			continue
		}
		for _, other := range valid {
			if other.prefix.Overlaps(prefix) {
				v.fail(pp.Key("cidr"), "%s overlaps pool %q (%s, network.pool[%d])", prefix, other.name, other.prefix, other.index)
				break
			}
		}
		valid = append(valid, seen{index: i, name: pool.Name, prefix: prefix})
	}
}

// pool checks one pool and returns its prefix when the CIDR is usable.
func (v *validator) pool(p keyPath, pool Pool) (netip.Prefix, bool) {
	modes := []string{EncapNever, EncapAlways, EncapCrossSubnet}
	vxlanOK := v.oneOf(p.Key("vxlan_mode"), pool.VXLANMode, modes...)
	ipipOK := v.oneOf(p.Key("ipip_mode"), pool.IPIPMode, modes...)
	if pool.NodeSelector == "" {
		v.fail(p.Key("node_selector"), `must not be empty (use "all()" for every node)`)
	} else if sel, err := selector.Parse(pool.NodeSelector); err != nil {
		v.fail(p.Key("node_selector"), "%v", err)
	} else if sel.UsesGlobal() {
		v.fail(p.Key("node_selector"), "global() is not allowed in a pool's node selector")
	}
	if pool.CIDR == "" {
		v.fail(p.Key("cidr"), "required")
		return netip.Prefix{}, false
	}
	prefix, err := parsePrefix(pool.CIDR)
	if err != nil {
		v.fail(p.Key("cidr"), "%v", err)
		return netip.Prefix{}, false
	}
	if prefix.Addr().Is4In6() {
		v.fail(p.Key("cidr"), "%s: an IPv4-mapped IPv6 CIDR is not allowed; write the IPv4 CIDR", prefix)
		return netip.Prefix{}, false
	}
	if why := api.PoolRangeProblem(prefix); why != "" {
		v.fail(p.Key("cidr"), "%s %s", prefix, why)
		return netip.Prefix{}, false
	}
	minBlock, maxBlock := 20, 32
	if prefix.Addr().Is6() {
		minBlock, maxBlock = 116, 128
	}
	switch {
	case pool.BlockSize < minBlock || pool.BlockSize > maxBlock:
		v.fail(p.Key("block_size"), "must be %d-%d for an IPv%s pool, got %d", minBlock, maxBlock, family(prefix), pool.BlockSize)
	case pool.BlockSize < prefix.Bits() && !pool.Disabled:
		v.fail(p.Key("block_size"), "/%d blocks do not fit in the pool %s (block_size must be at least %d)", pool.BlockSize, prefix, prefix.Bits())
	}
	if ipipOK && pool.IPIPMode != EncapNever && prefix.Addr().Is6() {
		v.fail(p.Key("ipip_mode"), "IPIP is not possible on an IPv6 pool; use vxlan_mode")
	}
	if vxlanOK && ipipOK && pool.IPIPMode != EncapNever && pool.VXLANMode != EncapNever {
		v.fail(p.Key("ipip_mode"), "ipip_mode and vxlan_mode cannot both be enabled on one pool")
	}
	return prefix, true
}

func (v *validator) bgp(p keyPath, b BGP) {
	if b.ASNumber == 0 {
		v.fail(p.Key("as_number"), "must be 1-4294967295, got 0")
	}
	v.port(p.Key("listen_port"), b.ListenPort)
	hold, ka := b.HoldTime.Duration, b.Keepalive.Duration
	switch {
	case hold%time.Second != 0:
		v.fail(p.Key("hold_time"), "must be whole seconds, got %s", hold)
	case hold != 0 && (hold < 3*time.Second || hold > 65535*time.Second):
		v.fail(p.Key("hold_time"), "must be 0 or 3s-65535s, got %s", hold)
	}
	switch {
	case ka%time.Second != 0 || ka < time.Second || ka > 65535*time.Second:
		v.fail(p.Key("keepalive"), "must be whole seconds, 1s-65535s, got %s", ka)
	case hold != 0 && ka >= hold:
		v.fail(p.Key("keepalive"), "must be shorter than hold_time (%s), got %s", hold, ka)
	}
	v.absPath(p.Key("secrets_dir"), b.SecretsDir, true)
	addrs := map[string]int{}
	for i, peer := range b.Peers {
		pp := p.Key("peer").Index(i)
		switch {
		case peer.Address == "":
			v.fail(pp.Key("address"), "required")
		case checkPeerAddress(peer.Address) != nil:
			v.fail(pp.Key("address"), "%v", checkPeerAddress(peer.Address))
		default:
			if first, dup := addrs[peer.Address]; dup {
				v.fail(pp.Key("address"), "duplicate peer %s (also bgp.peer[%d])", peer.Address, first)
			}
			addrs[peer.Address] = i
		}
		if peer.ASNumber == 0 {
			v.fail(pp.Key("as_number"), "required (1-4294967295)")
		}
	}
}

// checkPeerAddress accepts Calico's peerIP forms: IP, IPv4:port, [IPv6]:port.
func checkPeerAddress(s string) error {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		if ap.Port() == 0 {
			return fmt.Errorf("port 0 is out of range 1-65535 in %q", s)
		}
		return nil
	}
	return fmt.Errorf("must be an IP address, IPv4:port or [IPv6]:port, got %q", s)
}

func (v *validator) wireguard(p keyPath, w WireGuard) {
	v.port(p.Key("listen_port"), w.ListenPort)
	v.check(p.Key("interface"), checkInterfaceName(w.Interface, 15))
	if w.Require && !w.Enabled {
		v.fail(p.Key("require"), "needs wireguard.enabled = true (it forbids unencrypted traffic, which only WireGuard can replace)")
	}
	if w.HostEncryption && !w.Enabled {
		v.fail(p.Key("host_encryption"), "needs wireguard.enabled = true")
	}
	if d := w.KeyRotationInterval.Duration; d != 0 && (d < time.Minute || d > 10*365*24*time.Hour) {
		v.fail(p.Key("key_rotation_interval"), "must be 0 (never) or between 1m and 87600h, got %s", d)
	}
	if d := w.PersistentKeepalive.Duration; d < 0 || d > 65535*time.Second || d%time.Second != 0 {
		v.fail(p.Key("persistent_keepalive"), "must be whole seconds between 0s (off) and 65535s, got %s", d)
	}
}

func (v *validator) vxlan(p keyPath, x VXLAN) {
	v.port(p.Key("port"), x.Port)
	if x.VNI < 1 || x.VNI > 1<<24-1 {
		v.fail(p.Key("vni"), "must be 1-16777215, got %d", x.VNI)
	}
	v.check(p.Key("interface"), checkInterfaceName(x.Interface, 15))
}

func (v *validator) dataplane(p keyPath, d Dataplane) {
	v.oneOf(p.Key("backend"), d.Backend, "nftables", "iptables", "ebpf")
	v.oneOf(p.Key("iptables_backend"), d.IptablesBackend, "auto", "nft", "legacy")
	for i, s := range d.FailsafeInbound {
		_, err := ParseProtoPort(s)
		v.check(p.Key("failsafe_inbound").Index(i), err)
	}
	for i, s := range d.FailsafeOutbound {
		_, err := ParseProtoPort(s)
		v.check(p.Key("failsafe_outbound").Index(i), err)
	}
}

// portClashes reports two of weft's own listeners on one port and protocol.
func (v *validator) portClashes(c *Config) {
	type listener struct {
		key  keyPath
		addr netip.Addr // unspecified = every address
		port int
	}
	var tcp []listener
	if ap, err := parseIPPort(c.Cluster.Listen); err == nil {
		tcp = append(tcp, listener{keyPath{}.Key("cluster").Key("listen"), ap.Addr(), int(ap.Port())})
	}
	if ap, err := parseIPPort(c.Metrics.Listen); err == nil {
		tcp = append(tcp, listener{keyPath{}.Key("metrics").Key("listen"), ap.Addr(), int(ap.Port())})
	}
	if c.BGP.Enabled {
		tcp = append(tcp, listener{keyPath{}.Key("bgp").Key("listen_port"), netip.IPv4Unspecified(), c.BGP.ListenPort})
	}
	for i := 1; i < len(tcp); i++ {
		for _, earlier := range tcp[:i] {
			a, b := tcp[i], earlier
			sameAddr := a.addr.IsUnspecified() || b.addr.IsUnspecified() || a.addr == b.addr
			if a.port == b.port && sameAddr {
				v.fail(a.key, "TCP port %d is already used by %s", a.port, b.key)
			}
		}
	}
	if c.WireGuard.Enabled && c.WireGuard.ListenPort == c.VXLAN.Port {
		v.fail(keyPath{}.Key("wireguard").Key("listen_port"), "UDP port %d is already used by vxlan.port", c.VXLAN.Port)
	}
	if c.WireGuard.Enabled && c.WireGuard.Interface == c.VXLAN.Interface {
		v.fail(keyPath{}.Key("wireguard").Key("interface"), "%q is already used by vxlan.interface", c.VXLAN.Interface)
	}
}

func (v *validator) port(p keyPath, port int) {
	if port < 1 || port > 65535 {
		v.fail(p, "port must be 1-65535, got %d", port)
	}
}

// oneOf reports whether s is one of allowed, recording a problem if not.
func (v *validator) oneOf(p keyPath, s string, allowed ...string) bool {
	if slices.Contains(allowed, s) {
		return true
	}
	v.fail(p, "must be %s, got %q", orList(allowed), s)
	return false
}

func (v *validator) absPath(p keyPath, s string, required bool) {
	switch {
	case s == "" && required:
		v.fail(p, "must not be empty")
	case s != "" && !filepath.IsAbs(s):
		v.fail(p, "must be an absolute path, got %q", s)
	}
}

func orList(items []string) string {
	quoted := make([]string, len(items))
	for i, s := range items {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	if len(quoted) == 1 {
		return quoted[0]
	}
	return strings.Join(quoted[:len(quoted)-1], ", ") + " or " + quoted[len(quoted)-1]
}

func family(p netip.Prefix) string {
	if p.Addr().Is6() {
		return "6"
	}
	return "4"
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (v *validator) ipam(p keyPath, c IPAM) {
	if d := c.GCInterval.Duration; d < time.Second || d > time.Hour {
		v.fail(p.Key("gc_interval"), "must be between 1s and 1h, got %s", d)
	}
	if d := c.LeakGracePeriod.Duration; d < 0 {
		v.fail(p.Key("leak_grace_period"), "must not be negative, got %s", d)
	}
	if d := c.EmptyBlockGracePeriod.Duration; d < 0 {
		v.fail(p.Key("empty_block_grace_period"), "must not be negative, got %s", d)
	}
}
