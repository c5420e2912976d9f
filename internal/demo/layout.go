package demo

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/site"
)

// Fixed names and places. Everything the demo creates carries one of them,
// so that `weft demo down` (or the next `weft demo`) finds it again without
// any other record.
const (
	// StateDir holds every host's configuration, data dir, socket, log and
	// pid file: StateDir/<host>/...
	StateDir = "/run/weft-demo"
	// NetnsPrefix starts the name of every network namespace the demo
	// creates under /run/netns.
	NetnsPrefix = "weft-demo-"
	// siteRouter names the underlay namespace after the prefix: a bridge the
	// hosts hang off, and the site's router.
	siteRouter = "site"
	// SiteNetns is the underlay namespace.
	SiteNetns = NetnsPrefix + siteRouter
	// clusterPort and metricsPort are the agents' ports on their underlay
	// address; every host has its own namespace, so they never clash.
	clusterPort = 7700
	// bgpPort is BGP's port (the hosts' mesh and the site's router).
	bgpPort     = 179
	metricsPort = 9091
)

// Default address ranges: private, and unlikely to be in use on a machine.
// Run checks them against the machine's addresses and routes first.
var (
	DefaultUnderlay = netip.MustParsePrefix("10.250.77.0/24")
	DefaultPool     = netip.MustParsePrefix("10.250.80.0/20")
)

// hostNames are the demo's hosts; the first bootstraps the cluster.
var hostNames = [...]string{"h1", "h2", "h3"}

// workloadsPerHost is how many workloads each host gets.
const workloadsPerHost = 2

// Layout is the whole demo: its address ranges, hosts and workloads.
type Layout struct {
	Underlay netip.Prefix
	Pool     netip.Prefix
	Hosts    []Host
	// WireGuard turns WireGuard on in every agent (`weft demo --wireguard`).
	WireGuard bool
}

// Host is one demo machine: a network namespace running an agent.
type Host struct {
	Name       string
	Netns      string     // name under /run/netns
	Address    netip.Addr // underlay address on hostUplink
	BridgePort string     // the other end of its uplink, on the site bridge
	Workloads  []Workload
}

// Workload is a network namespace attached to its host with `workload add`.
type Workload struct {
	Name  string // the workload's name in weft ("h1-w1")
	Short string // its name on its host ("w1")
	Host  string
	Netns string // name under /run/netns
	// Namespace is the workload's weft namespace and Labels its labels: one
	// workload is the database the policy step protects.
	Namespace string
	Labels    map[string]string
}

// The policy step's database: a workload of namespace prod labelled
// role=db (the others are in namespace default).
const (
	dbHost      = "h2"
	dbShort     = "w2"
	dbNamespace = "prod"
)

// NetnsPath is the workload namespace's bind mount, what `workload add
// --netns` takes.
func (w Workload) NetnsPath() string { return netns.PathOf(w.Netns) }

// Paths of one host's files under StateDir. They depend on the host's name
// only, so the agent trampoline and `demo down` can compute them.
func hostDir(host string) string    { return filepath.Join(StateDir, host) }
func configPath(host string) string { return filepath.Join(hostDir(host), "weft.toml") }
func dataDir(host string) string    { return filepath.Join(hostDir(host), "data") }
func socketPath(host string) string { return filepath.Join(hostDir(host), "weft.sock") }
func logPath(host string) string    { return filepath.Join(hostDir(host), "agent.log") }
func pidPath(host string) string    { return filepath.Join(hostDir(host), "agent.pid") }
func hostNetns(host string) string  { return NetnsPrefix + host }

// Dir, ConfigPath, DataDir, Socket, LogPath and NetnsPath locate the host's
// files and namespace.
func (h Host) Dir() string        { return hostDir(h.Name) }
func (h Host) ConfigPath() string { return configPath(h.Name) }
func (h Host) DataDir() string    { return dataDir(h.Name) }
func (h Host) Socket() string     { return socketPath(h.Name) }
func (h Host) LogPath() string    { return logPath(h.Name) }
func (h Host) NetnsPath() string  { return netns.PathOf(h.Netns) }

// NewLayout plans the demo on the given ranges: hosts h1..h3 at .11-.13 of
// underlay, two workloads each, addresses for workloads from pool.
func NewLayout(underlay, pool netip.Prefix) (Layout, error) {
	if !underlay.IsValid() || !underlay.Addr().Is4() || underlay.Bits() > 28 || underlay.Masked() != underlay {
		return Layout{}, fmt.Errorf("underlay %s: want a masked IPv4 prefix of /28 or larger", underlay)
	}
	// Each host claims a /26 block; /24 leaves room for all three and more.
	if !pool.IsValid() || !pool.Addr().Is4() || pool.Bits() > 24 || pool.Masked() != pool {
		return Layout{}, fmt.Errorf("pool %s: want a masked IPv4 prefix of /24 or larger", pool)
	}
	if underlay.Overlaps(pool) {
		return Layout{}, fmt.Errorf("underlay %s and pool %s overlap", underlay, pool)
	}
	l := Layout{Underlay: underlay, Pool: pool}
	for i, name := range hostNames {
		h := Host{
			Name:       name,
			Netns:      hostNetns(name),
			Address:    site.NthAddr(underlay, 11+i),
			BridgePort: "v-" + name,
		}
		for j := 1; j <= workloadsPerHost; j++ {
			short := "w" + strconv.Itoa(j)
			w := Workload{Name: name + "-" + short, Short: short, Host: name, Netns: NetnsPrefix + name + "-" + short,
				Namespace: "default", Labels: map[string]string{"app": "demo", "host": name}}
			if name == dbHost && short == dbShort {
				w.Namespace, w.Labels = dbNamespace, map[string]string{"role": "db", "host": name}
			}
			h.Workloads = append(h.Workloads, w)
		}
		l.Hosts = append(l.Hosts, h)
	}
	return l, nil
}

// Workloads lists every workload, host by host.
func (l Layout) Workloads() []Workload {
	var all []Workload
	for _, h := range l.Hosts {
		all = append(all, h.Workloads...)
	}
	return all
}

// Namespaces lists every namespace the demo creates, site first.
func (l Layout) Namespaces() []string {
	names := []string{SiteNetns}
	for _, h := range l.Hosts {
		names = append(names, h.Netns)
	}
	for _, w := range l.Workloads() {
		names = append(names, w.Netns)
	}
	return names
}

// Spec is the site (internal/site) the layout stands on: the underlay
// namespace, its bridge and router address, and the hosts. Workloads are
// added to it one by one.
func (l Layout) Spec() site.Spec {
	sp := site.Spec{Prefix: NetnsPrefix, Router: siteRouter, Subnets: []site.Subnet{{V4: l.Underlay}}}
	for _, h := range l.Hosts {
		sp.Hosts = append(sp.Hosts, site.HostSpec{Name: h.Name, Addr: h.Address})
	}
	return sp
}

// RouterAddress is the site router's address on the underlay, the hosts'
// default gateway.
func (l Layout) RouterAddress() netip.Addr { return site.NthAddr(l.Underlay, 1) }

// AgentConfig is host h's weft.toml (SPEC §2). The first host bootstraps
// the cluster and seeds the demo's pool; the others join it with the token
// the first one writes to its data dir.
func (l Layout) AgentConfig(h Host) []byte {
	first := l.Hosts[0]
	cluster := netip.AddrPortFrom(h.Address, clusterPort).String()
	var b strings.Builder
	fmt.Fprintf(&b, "# weft demo: host %s, in network namespace %s.\n", h.Name, h.Netns)
	fmt.Fprintf(&b, "[node]\nname = %q\naddress = %q\ndata_dir = %q\nlabels = { demo = \"true\" }\n\n",
		h.Name, h.Address.String(), h.DataDir())
	fmt.Fprintf(&b, "[cluster]\nlisten = %q\nadvertise = %q\n", cluster, cluster)
	if h.Name != first.Name {
		fmt.Fprintf(&b, "join = [%q]\ntoken_file = %q\n",
			netip.AddrPortFrom(first.Address, clusterPort).String(), filepath.Join(first.DataDir(), "token"))
	}
	fmt.Fprintf(&b, "\n[api]\nsocket = %q\n\n", h.Socket())
	fmt.Fprintf(&b, "[metrics]\nlisten = %q\n\n", netip.AddrPortFrom(h.Address, metricsPort).String())
	fmt.Fprintf(&b, "[log]\nlevel = \"info\"\n\n")
	if l.WireGuard {
		fmt.Fprintf(&b, "[wireguard]\nenabled = true\n\n")
	}
	fmt.Fprintf(&b, "[[network.pool]]\nname = \"demo-ipv4\"\ncidr = %q\nblock_size = 26\nvxlan_mode = \"Always\"\nnat_outgoing = true\n",
		l.Pool.String())
	return []byte(b.String())
}
