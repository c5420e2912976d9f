// Package demo is `weft demo`: a 3-node weft cluster built in network
// namespaces on one machine, with workloads, walked through and (unless
// kept) removed again.
//
// # What it builds
//
//   - the underlay namespace weft-demo-site holding bridge br0;
//   - hosts weft-demo-h1..h3: eth0 (a veth to the bridge, "v-<host>" on the
//     bridge side) with .11-.13 of the underlay range (default
//     10.250.77.0/24), loopback up, ip_forward on;
//   - per host the real agent, this same binary, `weft agent --config
//     /run/weft-demo/<host>/weft.toml`: h1 bootstraps the cluster and seeds
//     the demo pool (default 10.250.80.0/20, /26 blocks, VXLAN Always,
//     NAT outgoing), h2 and h3 join with h1's token file;
//   - per host two workload namespaces weft-demo-<host>-w1/-w2, attached
//     through the host's local API (POST /v1/workloads), as `weft workload
//     add` does.
//
// Then it shows `weft cluster members` (once all three are voters), `weft
// ipam show --show-blocks`, each host's weft routes (protocol 87, read with
// netlink, printed like `ip route`) once they cover every workload, and a
// ping matrix: ICMP echo from a raw socket opened inside each workload
// namespace to every other workload, resent until all answer or a deadline.
//
// Everything lives in the demo's own namespaces; the machine's namespace
// gets nothing (Run refuses ranges that overlap the machine's addresses or
// routes). All state is in StateDir (/run/weft-demo/<host>/: weft.toml,
// data/, weft.sock, agent.log, agent.pid).
//
// # Starting an agent inside a host
//
// Go cannot switch a whole process into another namespace before exec, so
// the binary re-executes itself as `weft demo internal-agent <host>`
// (ExecAgent): on one locked thread it unshares a mount namespace (a slave
// of the machine's, so namespaces created under /run/netns later still
// appear), enters the host's network namespace, mounts a sysfs for it and a
// private tmpfs on /run/wireguard (two agents must never share WireGuard
// sockets), and execs `weft agent`. Namespaces are per thread and execve
// keeps the calling thread's. The agent runs in its own session, not tied
// to the demo process, so --keep can leave it running.
//
// # Teardown
//
// Without --keep, Run removes everything at the end, on failure and on
// cancellation (Ctrl-C, SIGTERM). Down (`weft demo down`) and a new Run that
// finds leftovers remove: the agents whose recorded pid still runs the
// demo's agent command line (SIGTERM, then SIGKILL), any other process
// inside a weft-demo-* namespace, every /run/netns/weft-demo-* namespace
// (unmount and remove), and StateDir.
package demo
