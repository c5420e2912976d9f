package dataplane

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

// RouteProtocol is the rtnetlink protocol number (rtm_protocol) on every
// route weft programs: 0x57 ('W'), unused by the protocols iproute2 knows
// and distinct from Calico's 80. The route driver dumps and removes only
// routes carrying it. `ip route show proto 87` lists them.
const RouteProtocol = 0x57

// RouteProtocolBGP is the protocol number on the routes weft learned over
// BGP ([RouteClassBGP]): 0x58 (88), next to [RouteProtocol], so `ip route
// show proto 88` lists what the site's routers and the other nodes told
// this node. The route driver owns routes of both protocols.
const RouteProtocolBGP = 0x58

// Metrics of BGP-learned routes: a route the host already has to the same
// destination (connected, static, DHCP: metric 0 for IPv4, 256 or 1024 for
// IPv6) stays preferred, and a learned route never collides with one.
// Routes of the other classes take the kernel's default (0, and 1024 for
// IPv6). 32 is BIRD's kernel-protocol default.
const (
	RouteMetricBGP4 = 32
	RouteMetricBGP6 = 1024 + 32
)

// ErrForeignRoute: a destination weft wants to route is already routed, at
// the metric weft would use, by a route weft does not own (another
// protocol). weft never replaces or removes such a route; it reports the
// conflict and retries until the route is gone.
var ErrForeignRoute = errors.New("destination already routed by a route weft does not own")

// DefaultIfacePrefix is the default prefix of host-side workload interfaces.
const DefaultIfacePrefix = "weft"

// MaxIfacePrefixLen is the longest interface prefix that still leaves room
// for the 11 hash characters within Linux's 15-character interface names.
const MaxIfacePrefixLen = 4

// DefaultWorkloadIface is the interface name inside a workload namespace.
const DefaultWorkloadIface = "eth0"

const workloadHashLen = 15 - MaxIfacePrefixLen

// HostSideMAC is the MAC address of every host-side workload interface
// (calico.md §5.1). Workloads see the same gateway MAC everywhere.
var HostSideMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}

// WorkloadGatewayV4 is the IPv4 next hop workloads use. No interface holds
// it: the host side answers ARP for it by proxy ARP.
var WorkloadGatewayV4 = netip.MustParseAddr("169.254.1.1")

// WorkloadGatewayV6 is the IPv6 next hop workloads use: the link-local
// address the kernel derives (EUI-64) from [HostSideMAC].
var WorkloadGatewayV6 = netip.MustParseAddr("fe80::ecee:eeff:feee:eeee")

var ifaceNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)

// ValidIfaceName reports whether name is a legal Linux interface name
// (calico.md §0).
func ValidIfaceName(name string) bool {
	return ifaceNameRE.MatchString(name) && name != "." && name != ".."
}

// ValidateIfacePrefix checks a workload interface prefix.
func ValidateIfacePrefix(prefix string) error {
	if prefix == "" || len(prefix) > MaxIfacePrefixLen || !ValidIfaceName(prefix) {
		return fmt.Errorf("interface prefix %q: want 1 to %d of [a-zA-Z0-9_.-]", prefix, MaxIfacePrefixLen)
	}
	return nil
}

// WorkloadIfaceName is the host-side interface name of a workload: the
// prefix followed by the first 11 hex characters of SHA-1("<namespace>.<name>"),
// as Calico names its cali* interfaces.
func WorkloadIfaceName(prefix, namespace, name string) (string, error) {
	if err := ValidateIfacePrefix(prefix); err != nil {
		return "", err
	}
	sum := sha1.Sum([]byte(namespace + "." + name))
	return prefix + hex.EncodeToString(sum[:])[:workloadHashLen], nil
}

// IsWorkloadIface reports whether name has the exact shape of a workload's
// host interface ([WorkloadIfaceName]): the prefix followed by exactly 11
// lower-case hex characters. That shape is the mark of weft's workload
// interfaces; the prefix alone is not, because other interfaces may start
// with it (the default VXLAN device weft.vxlan, an operator's "weftbr-up"),
// and weft must never delete those.
func IsWorkloadIface(prefix, name string) bool {
	hash, ok := strings.CutPrefix(name, prefix)
	if !ok || prefix == "" || len(hash) != workloadHashLen {
		return false
	}
	for _, c := range hash {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// VXLANMAC is the deterministic MAC of a node's VXLAN device: 0x66 followed
// by the first five bytes of SHA-1(node name) (calico.md §5.3). 0x66 has the
// locally administered bit set and the multicast bit clear.
func VXLANMAC(nodeName string) net.HardwareAddr {
	sum := sha1.Sum([]byte(nodeName))
	return net.HardwareAddr{0x66, sum[0], sum[1], sum[2], sum[3], sum[4]}
}
