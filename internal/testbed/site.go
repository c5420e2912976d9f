package testbed

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

// Options shapes a site. The zero value is one host running the real weft
// agent, started and ready.
type Options struct {
	// Hosts is the number of hosts (default 1), named h1…hN unless
	// HostNames is set.
	Hosts int
	// HostNames overrides the host names (and node names); its length
	// overrides Hosts. Names: a lowercase letter then up to 9 of [a-z0-9].
	HostNames []string
	// IPv6 gives every host a ULA underlay address too (node.address
	// becomes "v4,v6") and a v6 default route.
	IPv6 bool
	// NoStart creates the hosts without starting agents (start them with
	// Host.StartAgent, e.g. after Host.SetJoin).
	NoStart bool
	// NoWait starts the agents but does not wait until they are ready.
	NoWait bool
	// ExtraTOML is merged over every host's generated configuration;
	// HostTOML, when set, is merged after it per host. Tables merge key by
	// key; other values replace.
	ExtraTOML string
	HostTOML  func(h *Host) string
	// Binary is the weft binary; default $WEFT_BIN, else built once per test
	// process from ./cmd/weft of the enclosing module.
	Binary string
	// FakeAgent runs the test bed's stand-in agent instead of weft: it serves
	// /livez and /readyz on metrics.listen and a socket on api.socket, and
	// checks its private /run/wireguard. Only for testing the test bed
	// itself; the test package must call Main from TestMain.
	FakeAgent bool
	// AgentEnv is added to every agent's environment.
	AgentEnv []string
	// StopTimeout is how long StopAgent waits after SIGTERM (default 5s).
	StopTimeout time.Duration
	// ReadyTimeout bounds WaitReady without a context deadline (default 30s).
	ReadyTimeout time.Duration
	// ExpectTimeout bounds Site.Expect (default 20s).
	ExpectTimeout time.Duration
}

// EnvKeep, when set to 1, keeps a site's directory (configs, logs, data dirs)
// after the test; its path is logged.
const EnvKeep = "WEFT_TESTBED_KEEP"

// Site is one test's network: an underlay namespace ("router") with a bridge
// and the site router's address, and hosts attached to the bridge.
type Site struct {
	t    testing.TB
	opts Options
	id   string
	dir  string
	bin  string // weft binary; "" with FakeAgent
	exe  string // test binary, for FakeAgent

	subnet, subnet6 netip.Prefix
	router          *Netns
	hosts           []*Host

	spawner *spawner

	mu        sync.Mutex
	state     siteState
	inodes    map[uint64]bool
	workloads []*Workload
	closers   []func()
	closed    bool
	closeErr  error
}

var hostNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// New builds a site for t and removes it when t ends (also after a failure
// or a panic). It skips t when not root or when `ip` or `nsenter` is
// missing. Unless opts.NoStart it starts every host's agent and, unless
// opts.NoWait, waits until all are ready. Call it from the test goroutine.
func New(t testing.TB, opts Options) *Site {
	t.Helper()
	SkipUnlessCapable(t)
	opts = withDefaults(opts)
	names := opts.HostNames
	if len(names) == 0 {
		for i := 1; i <= opts.Hosts; i++ {
			names = append(names, fmt.Sprintf("h%d", i))
		}
	}
	if len(names) > 200 {
		t.Fatalf("testbed: at most 200 hosts, got %d", len(names))
	}
	seen := map[string]bool{"router": true}
	for _, n := range names {
		if !hostNameRE.MatchString(n) || seen[n] {
			t.Fatalf("testbed: bad or duplicate host name %q (want %s, not \"router\")", n, hostNameRE)
		}
		seen[n] = true
	}

	s := &Site{t: t, opts: opts, id: newID(), inodes: map[uint64]bool{}}
	if opts.FakeAgent {
		exe, err := os.Executable()
		if err != nil {
			t.Fatalf("testbed: find test binary: %v", err)
		}
		s.exe = exe
	} else {
		bin := opts.Binary
		if bin == "" {
			var err error
			if bin, err = weftBinary(); err != nil {
				t.Fatalf("testbed: %v", err)
			}
		}
		s.bin = bin
	}
	s.subnet, s.subnet6 = subnetsFor(s.id)
	prefix := Prefix + s.id
	s.dir = filepath.Join(os.TempDir(), prefix)
	start, err := processStart(os.Getpid())
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	s.state = siteState{ID: s.id, PID: os.Getpid(), PIDStart: start, Dir: s.dir, Created: time.Now()}
	s.router = newNetns(s, prefix+"-router", "router")
	s.state.Netns = append(s.state.Netns, s.router.name)
	for i, name := range names {
		h := &Host{
			site:       s,
			name:       name,
			ns:         newNetns(s, prefix+"-"+name, name),
			addr:       nthAddr(s.subnet, 10+i+1),
			bridgePort: "v-" + name,
			dir:        filepath.Join(s.dir, name),
		}
		if opts.IPv6 {
			h.addr6 = nthAddr(s.subnet6, 10+i+1)
		}
		h.dataDir = filepath.Join(h.dir, "data")
		h.socket = filepath.Join(h.dir, "weft.sock")
		h.configPath = filepath.Join(h.dir, "weft.toml")
		h.logPath = filepath.Join(h.dir, "agent.log")
		s.hosts = append(s.hosts, h)
		s.state.Netns = append(s.state.Netns, h.ns.name)
	}
	// Record the plan before creating anything, so an interrupted run can
	// always be swept; then make sure cleanup runs however the test ends.
	if err := s.state.write(); err != nil {
		t.Fatalf("testbed: %v", err)
	}
	s.spawner = newSpawner()
	t.Cleanup(s.cleanup)
	if err := s.build(); err != nil {
		t.Fatalf("testbed: build site %s: %v", s.id, err)
	}
	if !opts.NoStart {
		s.StartAll()
		if !opts.NoWait {
			s.WaitReady()
		}
	}
	return s
}

func withDefaults(o Options) Options {
	if o.Hosts <= 0 {
		o.Hosts = 1
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 5 * time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.ExpectTimeout <= 0 {
		o.ExpectTimeout = 20 * time.Second
	}
	return o
}

// SkipUnlessCapable skips t unless it runs as root with `ip` and `nsenter`
// available.
func SkipUnlessCapable(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testbed: needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("testbed: needs %q (iproute2, util-linux): %v", tool, err)
		}
	}
}

// newID returns 6 random lowercase letters and digits.
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func validID(id string) bool {
	if len(id) != 6 {
		return false
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// subnetsFor derives the site's underlay subnets from its id:
// 10.<200..243>.<0..255>.0/24 (clear of weft's default pool 10.244.0.0/16)
// and fd77:xxxx:xxxx::/64. They only exist inside the site's namespaces.
func subnetsFor(id string) (netip.Prefix, netip.Prefix) {
	h := fnv.New32a()
	h.Write([]byte(id))
	v := h.Sum32()
	v4 := netip.AddrFrom4([4]byte{10, byte(200 + v%44), byte(v >> 8), 0})
	var a6 [16]byte
	a6[0], a6[1] = 0xfd, 0x77
	a6[2], a6[3], a6[4], a6[5] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return netip.PrefixFrom(v4, 24), netip.PrefixFrom(netip.AddrFrom16(a6), 64)
}

// nthAddr returns the n-th address of prefix p (n small).
func nthAddr(p netip.Prefix, n int) string {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return a.String()
}

// build creates the namespaces, the bridge, the veths, addresses, routes and
// sysctls, and the hosts' mount namespace holders.
func (s *Site) build() error {
	for _, name := range s.state.Netns {
		if err := ip("netns", "add", name); err != nil {
			return err
		}
		ino, err := netnsInode(filepath.Join(netnsDir, name))
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.inodes[ino] = true
		s.mu.Unlock()
	}
	router := []string{
		"link set lo up",
		"link add br0 type bridge",
		"addr add " + s.RouterAddress() + "/24 dev br0",
	}
	if s.opts.IPv6 {
		router = append(router, "addr add "+s.RouterAddress6()+"/64 dev br0 nodad")
	}
	router = append(router, "link set br0 up")
	for _, h := range s.hosts {
		router = append(router,
			"link add "+h.bridgePort+" type veth peer name eth0 netns "+h.ns.name,
			"link set "+h.bridgePort+" master br0",
			"link set "+h.bridgePort+" up")
	}
	if err := ipBatch(s.router.name, router); err != nil {
		return err
	}
	if err := s.enableForwarding(s.router); err != nil {
		return err
	}
	for _, h := range s.hosts {
		lines := []string{
			"link set lo up",
			"addr add " + h.addr + "/24 dev eth0",
		}
		if h.addr6 != "" {
			lines = append(lines, "addr add "+h.addr6+"/64 dev eth0 nodad")
		}
		lines = append(lines, "link set eth0 up", "route add default via "+s.RouterAddress())
		if h.addr6 != "" {
			lines = append(lines, "route add default via "+s.RouterAddress6())
		}
		if err := ipBatch(h.ns.name, lines); err != nil {
			return err
		}
		if err := s.enableForwarding(h.ns); err != nil {
			return err
		}
		if err := os.MkdirAll(h.dir, 0o755); err != nil {
			return err
		}
		if err := h.startHolder(); err != nil {
			return err
		}
	}
	return nil
}

// enableForwarding turns on forwarding, off in new namespaces.
func (s *Site) enableForwarding(n *Netns) error {
	if err := n.SetSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if s.opts.IPv6 {
		return n.SetSysctl("net/ipv6/conf/all/forwarding", "1")
	}
	return nil
}

// ID is the site's unique id; every name it creates starts with Prefix+ID.
func (s *Site) ID() string { return s.id }

// Dir is the site's directory (one subdirectory per host).
func (s *Site) Dir() string { return s.dir }

// Binary is the weft binary the hosts run ("" with FakeAgent).
func (s *Site) Binary() string { return s.bin }

// Hosts returns the hosts in order.
func (s *Site) Hosts() []*Host { return append([]*Host(nil), s.hosts...) }

// Host returns the host called name, or fails the test.
func (s *Site) Host(name string) *Host {
	for _, h := range s.hosts {
		if h.name == name {
			return h
		}
	}
	s.t.Fatalf("testbed: no host %q", name)
	return nil
}

// Router is the underlay namespace holding the bridge: the site router.
func (s *Site) Router() *Netns { return s.router }

// RouterAddress is the site router's IPv4 address, every host's gateway.
func (s *Site) RouterAddress() string { return nthAddr(s.subnet, 1) }

// RouterAddress6 is the router's IPv6 address ("" without Options.IPv6).
func (s *Site) RouterAddress6() string {
	if !s.opts.IPv6 {
		return ""
	}
	return nthAddr(s.subnet6, 1)
}

// Subnet is the underlay IPv4 subnet.
func (s *Site) Subnet() netip.Prefix { return s.subnet }

// Subnet6 is the underlay IPv6 subnet (meaningful with Options.IPv6).
func (s *Site) Subnet6() netip.Prefix { return s.subnet6 }

// StartAll starts every host's agent; it fails the test on error.
func (s *Site) StartAll() {
	s.t.Helper()
	for _, h := range s.hosts {
		if err := h.StartAgent(); err != nil {
			s.t.Fatalf("%v", err)
		}
	}
}

// WaitReady waits until every running host's agent is ready, in parallel; it
// fails the test with every host's error.
func (s *Site) WaitReady() {
	s.t.Helper()
	errs := make([]error, len(s.hosts))
	var wg sync.WaitGroup
	for i, h := range s.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.WaitReady(context.Background())
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.t.Fatalf("%v", err)
	}
}

func (s *Site) agentName() string {
	if s.opts.FakeAgent {
		return "the test bed's fake agent"
	}
	return s.bin
}

// agentCommand is the program, arguments and extra environment of an agent.
func (s *Site) agentCommand(configPath string) (string, []string, []string) {
	args := []string{"agent", "--config", configPath}
	env := append([]string(nil), s.opts.AgentEnv...)
	if s.opts.FakeAgent {
		return s.exe, args, append(env, envHelper+"="+helperFakeAgent)
	}
	return s.bin, args, env
}

func (s *Site) addCloser(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, fn)
}

// Leftovers lists whatever of the site still exists after Close: namespace
// names, processes in its namespaces or running from its directory, mounts
// in any mount namespace, this process's descriptors on its namespaces, its
// directory (unless kept by EnvKeep) and state file, root-namespace links
// carrying its id. Empty means clean.
func (s *Site) Leftovers() []string {
	s.mu.Lock()
	inodes := make(map[uint64]bool, len(s.inodes))
	for k := range s.inodes {
		inodes[k] = true
	}
	s.mu.Unlock()
	return leftovers(s.id, s.dir, inodes, os.Getenv(EnvKeep) == "1")
}

func (s *Site) cleanup() {
	if err := s.Close(); err != nil {
		s.t.Errorf("testbed: cleanup of site %s: %v", s.id, err)
	}
}

// Close stops every agent (SIGTERM, SIGKILL after StopTimeout), kills the
// mount namespace holders, closes listeners, deletes every namespace (and so
// every link), logs the tail of each host's log if the test failed, and
// removes the site's directory and state file. It runs automatically when
// the test ends; calling it earlier (to assert on Leftovers) is fine, and
// later calls return the first result.
func (s *Site) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	closers := s.closers
	s.closers = nil
	netnsNames := append([]string(nil), s.state.Netns...)
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, h := range s.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if h.Running() {
				if err := h.StopAgent(); err != nil {
					s.t.Logf("testbed: while closing: %v", err)
				}
			}
			h.mu.Lock()
			holder := h.holder
			h.mu.Unlock()
			if holder != nil && !holder.exited() {
				_ = holder.cmd.Process.Kill()
				<-holder.done
			}
		}()
	}
	wg.Wait()
	s.spawner.stop()
	for _, c := range closers {
		c()
	}
	var errs []error
	for i := len(netnsNames) - 1; i >= 0; i-- {
		if err := removeNetns(netnsNames[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if s.t.Failed() {
		for _, h := range s.hosts {
			if logs := h.Logs(); logs != "" {
				s.t.Logf("testbed: last lines of %s's log (%s):\n%s", h.name, h.logPath, lastLines(logs, 60))
			}
		}
	}
	if os.Getenv(EnvKeep) == "1" {
		s.t.Logf("testbed: %s=1: keeping %s", EnvKeep, s.dir)
	} else if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.Remove(statePath(s.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	s.closeErr = errors.Join(errs...)
	s.mu.Unlock()
	return s.closeErr
}

// addNetns records and creates one more namespace (a workload).
func (s *Site) addNetns(n *Netns) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("site is closed")
	}
	s.state.Netns = append(s.state.Netns, n.name)
	err := s.state.write()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := ip("netns", "add", n.name); err != nil {
		return err
	}
	ino, err := netnsInode(n.Path())
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.inodes[ino] = true
	s.mu.Unlock()
	return nil
}
