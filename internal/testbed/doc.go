// Package testbed runs several real weft nodes on one machine, each in its
// own network namespace, for end-to-end tests: the site of internal/site
// plus the testing lifecycle. It is the end-to-end tier
// (SkipUnlessCapable, internal/testtier): skipped under -short, needing root
// otherwise.
//
// # Layout
//
// New(t, Options) builds a Site (internal/site):
//
//   - an underlay namespace, the "router" (Site.Router), holding bridge br0
//     with the site router's address .1 of a per-site 10.<200-243>.<y>.0/24
//     (Site.RouterAddress, Site.Subnet; with Options.IPv6 also .1 of a
//     fd77:xxxx:xxxx::/64), forwarding on; with Options.Subnets > 1, one
//     bridge and subnet (y+1, y+2, …) more each, routed by the router
//     (Site.Subnets, Host.Subnet, Host.Gateway): two racks behind a router;
//   - N hosts (h1…hN), each a network namespace whose eth0 is a veth to its
//     subnet's bridge (bridge side "v-<host>" in the router namespace),
//     address .11, .12, …, loopback up, ip_forward=1, default route via the
//     router;
//   - per host a persistent mount namespace (netns.MountNS: a slave of the
//     machine's, so namespaces created later still appear under
//     /run/netns) with a private tmpfs on /run/wireguard, held open by the
//     test process: two agents never share WireGuard UAPI sockets, and
//     nothing mounted there is visible to the machine;
//   - per host the real agent, `weft agent --config <dir>/<host>/weft.toml`,
//     started inside both namespaces, its stdout and stderr in
//     <dir>/<host>/agent.log. Unless Options.NoStart (or NoWait), New starts
//     every agent and waits until all are ready.
//
// Names: everything carries Prefix ("wtb-") and the site's random id:
// namespaces /run/netns/wtb-<id>-router, -<host>, -<host>-<workload>; the
// directory /tmp/wtb-<id> (per host: config, data_dir, api socket, log); the
// state file /run/weft-testbed/wtb-<id>.json. Interface names live inside
// the site's namespaces; nothing is created in the machine's own network
// namespace, and only addresses inside the site's namespaces are used.
//
// # Agent configuration
//
// Each host's TOML (SPEC §2) pins node.name, node.address (the underlay
// address, "v4,v6" with IPv6), node.data_dir, cluster.listen and
// cluster.advertise (<address>:7700, ClusterPort), api.socket,
// metrics.listen (<address>:9091, MetricsPort) and log.level=debug. Over it
// merge, in order: Options.ExtraTOML (all hosts), Options.HostTOML(h), and
// Host.SetTOML; Host.SetJoin(tokenFile, peers...) sets cluster.join and
// cluster.token_file. Tables merge key by key; other values replace. The
// binary is Options.Binary, else $WEFT_BIN, else `go build ./cmd/weft` of
// the enclosing module, once per test process.
//
// # Hosts
//
//	h.Exec(argv...)        run a command on the host (its netns and mount ns)
//	h.Weft(args...)        run the weft CLI against h.Socket()
//	h.NodeStatus(ctx)      `weft node status -o json` decoded (name, ready)
//	h.StartAgent()         write the config, start the agent
//	h.StopAgent()          SIGTERM; error if it takes > Options.StopTimeout
//	                       (5 s; then SIGKILL) or exits non-zero
//	h.Kill9(), h.Restart() crash it; stop and start it
//	h.WaitReady(ctx)       poll /readyz over the underlay from the host's
//	                       namespace (the socket if metrics are off); fails
//	                       at once, with the log's tail, if the agent exits
//	h.CutLink(), h.HealLink()  set the bridge side of its veth down/up
//	h.SetAddress(addr)     move a stopped host to another address of its subnet
//	h.Address(), Address6(), Gateway(), Subnet(), ClusterAddress(), Socket(),
//	DataDir(), ConfigPath(), Config(), Logs(), LogPath(), PID()
//
// # Namespaces and workloads
//
// A *Netns (Site.Router, Host.Netns, Workload.Netns) offers Exec, Path, Do
// (run a function on a thread inside it), DialContext and HTTPClient
// (connections from inside it), SetSysctl, and ServeTCP (a listener inside it
// that greets each connection with "weft-testbed <label>", the target of TCP
// checks; ReadTCPGreeting shows who answered).
//
// Site.AddWorkload(h, name) creates a workload namespace for host h
// (loopback up, nothing else) whose Path() is what
// `weft workload add NAME --netns PATH` takes. Workload.AttachVeth(addr)
// wires it by hand, Calico-style (veth, /32, default via 169.254.1.1, proxy
// ARP and a /32 route on the host), for tests that need one without weft.
//
// # Connectivity
//
// Site.Expect(checks...) takes Checks (Reach/NoReach from a Namespace to an
// address by Ping() or TCP(port); Mesh builds all host pairs), probes them all
// in rounds until one round matches every expectation, and otherwise fails
// the test after Options.ExpectTimeout (20 s) with the full matrix: every
// check, expected and seen, and why each probe failed. VerifyConnectivity is
// the same with a context, returning a *ConnectivityError. Ping sends ICMP
// echo from a raw socket opened inside the namespace and TCP probes are
// dialed from inside it, both in-process.
//
// # Cleanup
//
// t.Cleanup (which also runs after a failure or a panic) calls Site.Close:
// agents get SIGTERM then SIGKILL, listeners and mount namespaces go, every
// process still inside a site namespace is killed, the namespaces (and with
// them all links and routes) are deleted, and the directory and state file
// removed; if the test failed, the tail of each host's log is logged
// first. Set WEFT_TESTBED_KEEP=1 to keep the directory. Close may be
// called earlier; Site.Leftovers then lists anything that survived
// (namespaces, processes, mounts in any mount namespace, descriptors,
// links, files).
//
// Agents are started with Pdeathsig=SIGKILL from a thread that lives as long
// as the site (netns.Launcher), so they die with a killed test process. The
// state file, written before anything is created and extended before each
// namespace is, names the owner's pid and start time: Sweep removes the
// sites of owners that are gone. Every package using the test bed should
// call Main from TestMain:
//
//	func TestMain(m *testing.M) { testbed.Main(m) }
//
// which (without -short) sweeps at start, removes the run's own sites on
// SIGINT/SIGTERM, and runs the fake agent when a test bed test asks for it
// (Options.FakeAgent, a stand-in serving /readyz and a socket, for testing
// the test bed itself). By hand: `ip netns list | grep '^wtb-'` shows
// leftovers; `ip netns del` removes one.
//
// # Requirements
//
// Root and a kernel with veth and bridge; the site itself needs no external
// tool, but tests run iproute2's `ip` inside hosts (SkipUnlessCapable asks
// for it) and `env` for Host.Weft. Setup helpers call t.Fatal and must run
// on the test goroutine. The host's /run/wireguard directory is created
// (empty) if missing, as a mount point.
package testbed
