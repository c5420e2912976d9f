// Package config holds weft's TOML configuration (SPEC §2): one small struct
// per subsystem, defaults, and validation that names the offending key and
// the line it is on.
package config

// Config is the whole agent configuration file.
type Config struct {
	Node      Node      `toml:"node"`
	Cluster   Cluster   `toml:"cluster"`
	API       API       `toml:"api"`
	Metrics   Metrics   `toml:"metrics"`
	Log       Log       `toml:"log"`
	Network   Network   `toml:"network"`
	BGP       BGP       `toml:"bgp"`
	WireGuard WireGuard `toml:"wireguard"`
	VXLAN     VXLAN     `toml:"vxlan"`
	Dataplane Dataplane `toml:"dataplane"`
	IPAM      IPAM      `toml:"ipam"`
}

// Node identifies this machine.
type Node struct {
	Name    string            `toml:"name"`     // default ("" too): the hostname, lower-cased
	Address string            `toml:"address"`  // underlay IPv4 and/or IPv6 ("a" or "a,b"); default: autodetect
	DataDir string            `toml:"data_dir"` // default /var/lib/weft
	Labels  map[string]string `toml:"labels"`
}

// Cluster configures the replicated datastore.
type Cluster struct {
	Listen    string   `toml:"listen"`     // default 0.0.0.0:7700
	Advertise string   `toml:"advertise"`  // default node.address + listen port
	Join      []string `toml:"join"`       // addresses of existing members
	TokenFile string   `toml:"token_file"` // join token file
	Voters    int      `toml:"voters"`     // 1, 3, 5 or 7; default 3
}

// API is the local control socket.
type API struct {
	Socket string `toml:"socket"` // default /run/weft/weft.sock
}

// Metrics is the Prometheus/health HTTP listener.
type Metrics struct {
	Listen string `toml:"listen"` // default 0.0.0.0:9091; "" disables
}

// Log configures log/slog.
type Log struct {
	Level  string `toml:"level"`  // debug|info|warn|error
	Format string `toml:"format"` // text|json
}

// Network holds workload networking settings and seed pools.
type Network struct {
	MTU             int    `toml:"mtu"`              // 0 = detect
	InterfacePrefix string `toml:"interface_prefix"` // default "weft"
	// Pools seed IPPools at bootstrap. A file without network.pool gets
	// DefaultPool(); "pool = []" means no pool at all.
	Pools []Pool `toml:"pool"`
	// ResyncPeriod is the dataplane's periodic full resync, a Go duration
	// string ("90s"); default 90s, at most 90s.
	ResyncPeriod Duration `toml:"resync_period"`
}

// Pool seeds an IPPool at bootstrap.
type Pool struct {
	Name         string `toml:"name"`
	CIDR         string `toml:"cidr"`
	BlockSize    int    `toml:"block_size"`   // default 26 (v4) / 122 (v6)
	VXLANMode    string `toml:"vxlan_mode"`   // Never|Always|CrossSubnet, default Never
	IPIPMode     string `toml:"ipip_mode"`    // Never|Always|CrossSubnet, default Never
	NATOutgoing  bool   `toml:"nat_outgoing"` // default false
	Disabled     bool   `toml:"disabled"`
	NodeSelector string `toml:"node_selector"` // default all()
}

// BGP configures the embedded BGP speaker. as_number, listen_port,
// node_mesh, keepalive and hold_time seed the cluster's BGPConfiguration
// "default" at bootstrap (like pools); the resource wins afterwards.
type BGP struct {
	Enabled    bool   `toml:"enabled"`     // default true
	ASNumber   uint32 `toml:"as_number"`   // default 64512
	ListenPort int    `toml:"listen_port"` // default 179
	NodeMesh   bool   `toml:"node_mesh"`   // default true
	// Keepalive and HoldTime are the timers sessions offer (default 1s and
	// 3s): a node that dies silently loses its routes within the hold time.
	Keepalive Duration `toml:"keepalive"`
	HoldTime  Duration `toml:"hold_time"`
	// SecretsDir holds the BGP session passwords a BGPPeer's
	// password.secretKeyRef names: <secrets_dir>/<name>/<key>, a file only
	// root can read (default /etc/weft/secrets).
	SecretsDir string `toml:"secrets_dir"`
	// Peers are this node's own peers: node-specific BGPPeers (spec.node
	// = this node), reconciled at every start.
	Peers []BGPPeer `toml:"peer"`
}

// BGPPeer is one of this node's own BGP peers.
type BGPPeer struct {
	Address  string `toml:"address"`
	ASNumber uint32 `toml:"as_number"`
}

// WireGuard configures the encrypted overlay.
type WireGuard struct {
	Enabled    bool   `toml:"enabled"`
	ListenPort int    `toml:"listen_port"` // default 51820
	Interface  string `toml:"interface"`   // default weft.wg
	// Require: never reach another node unencrypted; a node without a
	// usable WireGuard key is not reached at all (dropped).
	Require bool `toml:"require"`
	// HostEncryption also encrypts host-to-host traffic between nodes
	// that both set it (Calico's wireguardHostEncryptionEnabled).
	HostEncryption bool `toml:"host_encryption"`
	// KeyRotationInterval rotates the node's key when it is this old; 0
	// never.
	KeyRotationInterval Duration `toml:"key_rotation_interval"`
	// PersistentKeepalive sends a keepalive this often (nodes behind NAT);
	// 0 never.
	PersistentKeepalive Duration `toml:"persistent_keepalive"`
}

// VXLAN configures the VXLAN overlay device.
type VXLAN struct {
	Port      int    `toml:"port"`      // default 4789
	VNI       int    `toml:"vni"`       // default 4096
	Interface string `toml:"interface"` // default weft.vxlan
	// TxChecksumOffload keeps transmit checksum offload on the VXLAN
	// device. Default false: off, as Calico does, because some kernels and
	// NICs corrupt VXLAN checksums (63 s stalls); turning it on multiplies
	// VXLAN throughput where the path is known to be sound.
	TxChecksumOffload bool `toml:"tx_checksum_offload"`
}

// Dataplane selects the policy backend and failsafe ports.
type Dataplane struct {
	Backend string `toml:"backend"` // nftables|iptables|ebpf
	// IptablesBackend is the iptables variant of the iptables backend
	// (Felix's iptablesBackend): auto (detected as Felix does), nft or
	// legacy.
	IptablesBackend string `toml:"iptables_backend"`
	// Failsafe entries are "proto:port" or "proto:cidr:port" (see
	// ParseProtoPort); an empty list turns failsafe ports off.
	FailsafeInbound  []string `toml:"failsafe_inbound"`
	FailsafeOutbound []string `toml:"failsafe_outbound"`
}

// IPAM tunes the IPAM housekeeping the leader runs (Calico runs it in
// kube-controllers; weft has no Kubernetes, so the agents do it).
type IPAM struct {
	// GCInterval is how often the leader looks for leaked addresses and
	// empty blocks; default 1m.
	GCInterval Duration `toml:"gc_interval"`
	// LeakGracePeriod: an allocation whose WorkloadEndpoint (or node, for a
	// tunnel address) is gone is released after this; default 15m, as
	// Calico's leakGracePeriod. "0s" releases it at the next pass.
	LeakGracePeriod Duration `toml:"leak_grace_period"`
	// EmptyBlockGracePeriod: a block that stayed empty this long loses its
	// node affinity (a node keeps at least one); default 5m.
	EmptyBlockGracePeriod Duration `toml:"empty_block_grace_period"`
}
