package config

import (
	"os"
	"strings"
	"time"
)

// Defaults of SPEC §2, shared by Default, per-pool defaulting and validation.
const (
	DefaultDataDir         = "/var/lib/weft"
	DefaultClusterListen   = "0.0.0.0:7700"
	DefaultVoters          = 3
	DefaultAPISocket       = "/run/weft/weft.sock"
	DefaultMetricsListen   = "0.0.0.0:9091"
	DefaultInterfacePrefix = "weft"
	DefaultResyncPeriod    = 90 * time.Second
	DefaultASNumber        = 64512
	DefaultBGPPort         = 179
	DefaultBGPKeepalive    = time.Second
	DefaultBGPHoldTime     = 3 * time.Second
	DefaultBGPSecretsDir   = "/etc/weft/secrets"
	DefaultWireGuardPort   = 51820
	DefaultWireGuardIface  = "weft.wg"
	DefaultVXLANPort       = 4789
	DefaultVXLANVNI        = 4096
	DefaultVXLANIface      = "weft.vxlan"
	DefaultBlockSizeV4     = 26
	DefaultBlockSizeV6     = 122
	DefaultNodeSelector    = "all()"

	// EncapNever, EncapAlways and EncapCrossSubnet are the values of a
	// pool's vxlan_mode and ipip_mode (Calico's names).
	EncapNever       = "Never"
	EncapAlways      = "Always"
	EncapCrossSubnet = "CrossSubnet"
)

// Default returns the configuration an empty file gives: every default of
// SPEC §2, node.name from the hostname, and the default pool (which a file
// replaces as soon as it has any network.pool, even an empty array).
func Default() Config {
	hostname, _ := os.Hostname()
	return defaults(hostname)
}

// DefaultPool is the pool seeded when the file configures none
// (docs/design.md).
func DefaultPool() Pool {
	return Pool{
		Name:         "default-ipv4",
		CIDR:         "10.244.0.0/16",
		BlockSize:    DefaultBlockSizeV4,
		VXLANMode:    EncapAlways,
		IPIPMode:     EncapNever,
		NATOutgoing:  true,
		NodeSelector: DefaultNodeSelector,
	}
}

// defaults is Default with the hostname injected, for tests. Calico also
// lower-cases the hostname it uses as the node name.
func defaults(hostname string) Config {
	return Config{
		Node: Node{
			Name:    strings.ToLower(strings.TrimSpace(hostname)),
			DataDir: DefaultDataDir,
		},
		Cluster: Cluster{Listen: DefaultClusterListen, Voters: DefaultVoters},
		API:     API{Socket: DefaultAPISocket},
		Metrics: Metrics{Listen: DefaultMetricsListen},
		Log:     Log{Level: "info", Format: "text"},
		Network: Network{
			InterfacePrefix: DefaultInterfacePrefix,
			Pools:           []Pool{DefaultPool()},
			ResyncPeriod:    Duration{DefaultResyncPeriod},
		},
		BGP: BGP{
			Enabled:    true,
			ASNumber:   DefaultASNumber,
			ListenPort: DefaultBGPPort,
			NodeMesh:   true,
			Keepalive:  Duration{DefaultBGPKeepalive},
			HoldTime:   Duration{DefaultBGPHoldTime},
			SecretsDir: DefaultBGPSecretsDir,
		},
		WireGuard: WireGuard{ListenPort: DefaultWireGuardPort, Interface: DefaultWireGuardIface},
		VXLAN:     VXLAN{Port: DefaultVXLANPort, VNI: DefaultVXLANVNI, Interface: DefaultVXLANIface},
		Dataplane: Dataplane{
			Backend:          "nftables",
			IptablesBackend:  "auto",
			FailsafeInbound:  []string{"tcp:22", "udp:68", "tcp:179", "tcp:7700", "udp:51820", "udp:4789"},
			FailsafeOutbound: []string{"udp:53", "udp:67", "tcp:179", "tcp:7700", "udp:51820", "udp:4789"},
		},
		IPAM: IPAM{
			GCInterval:            Duration{time.Minute},
			LeakGracePeriod:       Duration{15 * time.Minute},
			EmptyBlockGracePeriod: Duration{5 * time.Minute},
		},
	}
}

// poolDefaults fills the pool fields the file left out; isSet reports
// whether the file wrote the named key of this pool. block_size depends on
// the CIDR's family, so it stays 0 when the CIDR is unreadable (Validate
// reports the CIDR).
func poolDefaults(p *Pool, isSet func(key string) bool) {
	if !isSet("block_size") {
		if pfx := p.Prefix(); pfx.IsValid() {
			p.BlockSize = DefaultBlockSizeV4
			if pfx.Addr().Is6() {
				p.BlockSize = DefaultBlockSizeV6
			}
		}
	}
	if !isSet("vxlan_mode") {
		p.VXLANMode = EncapNever
	}
	if !isSet("ipip_mode") {
		p.IPIPMode = EncapNever
	}
	if !isSet("node_selector") {
		p.NodeSelector = DefaultNodeSelector
	}
}
