// Package dataplane is the contract between weft's calculation (store →
// this node's desired state) and the Linux drivers that program the kernel,
// plus the loop that applies one to the other.
//
// The calculation emits a whole [Desired] state; [Loop.Run] coalesces
// updates, hands each to every [Manager] (cheap, no I/O) and then applies
// the differences in dependency order: every manager's update phase in the
// order given to [NewLoop] (links → VXLAN device, neighbours, FDB → routes),
// then every manager's removal phase in reverse order (routes are removed
// before the neighbours they go through, neighbours before their device).
// Failed items stay pending and are retried with backoff while independent
// items still apply; a jittered periodic full resync (and link events the
// managers watch) repair drift.
//
// This package holds no kernel code (no netlink, no nftables), so the
// calculation can import it freely. The drivers live in the subpackages.
//
// # What weft owns in the kernel
//
// Everything weft writes carries a mark, and weft never touches anything
// without it:
//
//   - routes: protocol [RouteProtocol] (0x57 = 87, "weft"; Calico uses 80),
//     and [RouteProtocolBGP] (0x58 = 88) for the routes learned over BGP,
//     in any table;
//   - workload interfaces: the configured prefix (default "weft") followed by
//     11 hex characters ([WorkloadIfaceName]);
//   - the VXLAN device: the name from the configuration (default
//     "weft.vxlan"), and the neighbour and FDB entries on it;
//   - the WireGuard device: the name from the configuration (default
//     "weft.wg"), kernel or the TUN of a userspace device process, its
//     peers, and the firewall mark [WireGuardMark] on its packets;
//   - policy routing: rules carrying [RouteProtocol] (the WireGuard rule at
//     [RulePriorityWireGuard]) and the routes of [TableWireGuard];
//   - nftables: the one table "weft" of family inet.
package dataplane
