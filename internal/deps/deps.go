//go:build tools

// Package deps pins the modules weft builds on, so `go mod tidy` keeps them
// while the packages that use them are being written.
package deps

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/anishathalye/porcupine"
	_ "github.com/cilium/ebpf"
	_ "github.com/containernetworking/cni/pkg/skel"
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/google/nftables"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/go-memdb"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-autopilot"
	_ "github.com/hashicorp/raft-wal"
	_ "github.com/osrg/gobgp/v3/pkg/server"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "golang.org/x/sys/unix"
	_ "golang.zx2c4.com/wireguard/device"
	_ "golang.zx2c4.com/wireguard/wgctrl"
	_ "sigs.k8s.io/yaml"
)
