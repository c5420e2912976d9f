// Package demo is `weft demo`: a 3-node weft cluster built in network
// namespaces on one machine, with workloads, walked through and (unless
// kept) removed again.
//
// # What it builds
//
// The site of internal/site (the demo is that site plus narration):
//
//   - the underlay namespace weft-demo-site holding bridge br0 with the
//     site router's address .1 of the underlay range (default
//     10.250.77.0/24);
//   - hosts weft-demo-h1..h3: eth0 (a veth to the bridge, "v-<host>" on the
//     bridge side) with .11-.13 of the underlay range, loopback up,
//     ip_forward on, default route via the router; each with a private
//     mount namespace whose /run/wireguard is a tmpfs of its own (two agents
//     must never share WireGuard sockets);
//   - per host the real agent, this same binary, `weft agent --config
//     /run/weft-demo/<host>/weft.toml`, started inside the host's network
//     and mount namespaces: h1 bootstraps the cluster and seeds the demo
//     pool (default 10.250.80.0/20, /26 blocks, VXLAN Always, NAT
//     outgoing), h2 and h3 join with h1's token file. An agent runs in its
//     own session, not tied to the demo process, so --keep can leave it
//     running;
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
// # Teardown
//
// Without --keep, Run removes everything at the end, on failure and on
// cancellation (Ctrl-C, SIGTERM). Down (`weft demo down`) and a new Run that
// finds leftovers remove: the agents whose recorded pid still runs the
// demo's agent command line (SIGTERM, then SIGKILL), any other process
// inside a weft-demo-* namespace, every /run/netns/weft-demo-* namespace
// (unmount and remove), and StateDir.
package demo
