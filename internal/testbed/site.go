package testbed

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/site"
	"github.com/weftnet/weft/internal/testtier"
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
	// Subnets is the number of underlay subnets (default 1), each a bridge
	// in the router namespace, which routes between them (two racks behind
	// one router). Hosts are split into contiguous groups in order: with 4
	// hosts and 2 subnets, h1 and h2 are on the first, h3 and h4 on the
	// second.
	Subnets int
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

// Site is one test's network (internal/site): an underlay namespace
// ("router") with a bridge per subnet and the site router's address, and
// hosts attached to the bridges; plus the testing lifecycle: the state file,
// t.Cleanup, agents, logs and Leftovers.
type Site struct {
	t    testing.TB
	opts Options
	id   string
	dir  string
	bin  string // weft binary; "" with FakeAgent
	exe  string // test binary, for FakeAgent

	subnets []site.Subnet
	site    *site.Site
	router  *Netns
	hosts   []*Host

	mu        sync.Mutex
	state     siteState
	workloads []*Workload
	closers   []func()
	closed    bool
	closeErr  error
}

var hostNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// New builds a site for t and removes it when t ends (also after a failure
// or a panic). It is an end-to-end test gate (SkipUnlessCapable): skipped
// under -short, needing root otherwise. Unless opts.NoStart it starts every
// host's agent and, unless opts.NoWait, waits until all are ready. Call it
// from the test goroutine.
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
	if opts.Subnets > len(names) || opts.Subnets > 16 {
		t.Fatalf("testbed: %d subnets for %d hosts (at most one per host, and 16)", opts.Subnets, len(names))
	}
	seen := map[string]bool{"router": true}
	for _, n := range names {
		if !hostNameRE.MatchString(n) || seen[n] {
			t.Fatalf("testbed: bad or duplicate host name %q (want %s, not \"router\")", n, hostNameRE)
		}
		seen[n] = true
	}

	s := &Site{t: t, opts: opts, id: newID()}
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
	s.subnets = subnetsFor(s.id, opts.Subnets)
	prefix := Prefix + s.id
	s.dir = filepath.Join(os.TempDir(), prefix)
	start, err := processStart(os.Getpid())
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	s.state = siteState{ID: s.id, PID: os.Getpid(), PIDStart: start, Dir: s.dir, Created: time.Now()}
	spec := site.Spec{Prefix: prefix + "-", Router: "router", Subnets: s.subnets, Record: s.record}
	for i, name := range names {
		subnet := i * opts.Subnets / len(names)
		hs := site.HostSpec{Name: name, Subnet: subnet, Addr: site.NthAddr(s.subnets[subnet].V4, 10+i+1)}
		if opts.IPv6 {
			hs.Addr6 = site.NthAddr(s.subnets[subnet].V6, 10+i+1)
		}
		spec.Hosts = append(spec.Hosts, hs)
	}
	// Record the site before creating anything, so an interrupted run can
	// always be swept (Record adds each namespace before it is created);
	// then make sure cleanup runs however the test ends.
	if err := s.state.write(); err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(s.cleanup)
	built, err := site.Build(spec)
	s.mu.Lock()
	s.site = built
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("testbed: build site %s: %v", s.id, err)
	}
	s.router = newNetns(s, built.Router())
	for _, sh := range built.Hosts() {
		h := &Host{
			site: s,
			sh:   sh,
			name: sh.Name(),
			ns:   newNetns(s, sh.Namespace),
			addr: sh.Address().String(),
			dir:  filepath.Join(s.dir, sh.Name()),
		}
		if sh.Address6().IsValid() {
			h.addr6 = sh.Address6().String()
		}
		h.dataDir = filepath.Join(h.dir, "data")
		h.socket = filepath.Join(h.dir, "weft.sock")
		h.configPath = filepath.Join(h.dir, "weft.toml")
		h.logPath = filepath.Join(h.dir, "agent.log")
		if err := os.MkdirAll(h.dir, 0o755); err != nil {
			t.Fatalf("testbed: %v", err)
		}
		s.hosts = append(s.hosts, h)
	}
	if !opts.NoStart {
		s.StartAll()
		if !opts.NoWait {
			s.WaitReady()
		}
	}
	return s
}

// record adds a namespace to the state file before it is created.
func (s *Site) record(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("site is closed")
	}
	s.state.Netns = append(s.state.Netns, name)
	return s.state.write()
}

func withDefaults(o Options) Options {
	if o.Hosts <= 0 {
		o.Hosts = 1
	}
	if o.Subnets <= 0 {
		o.Subnets = 1
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

// SkipUnlessCapable is the gate of every test that uses the test bed: an
// end-to-end test (testtier.EndToEnd) is skipped under -short (make
// test-unit); otherwise it needs root and `ip`, which the tests run inside
// hosts (missing, it skips, or fails under make test).
func SkipUnlessCapable(t testing.TB) {
	t.Helper()
	testtier.EndToEnd(t, "ip")
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

// subnetsFor derives the site's n underlay subnets from its id: the k-th is
// 10.<200..243>.<y+k>.0/24 (clear of weft's default pool 10.244.0.0/16)
// and fd77:xxxx:xxxx:k::/64. They only exist inside the site's namespaces.
func subnetsFor(id string, n int) []site.Subnet {
	h := fnv.New32a()
	h.Write([]byte(id))
	v := h.Sum32()
	var out []site.Subnet
	for k := range n {
		v4 := netip.AddrFrom4([4]byte{10, byte(200 + v%44), byte(v>>8) + byte(k), 0})
		var a6 [16]byte
		a6[0], a6[1] = 0xfd, 0x77
		a6[2], a6[3], a6[4], a6[5] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		a6[7] = byte(k)
		out = append(out, site.Subnet{V4: netip.PrefixFrom(v4, 24), V6: netip.PrefixFrom(netip.AddrFrom16(a6), 64)})
	}
	return out
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

// Router is the underlay namespace holding the bridges: the site router.
func (s *Site) Router() *Netns { return s.router }

// RouterAddress is the site router's IPv4 address on the first subnet, the
// gateway of its hosts (Host.Gateway names each host's).
func (s *Site) RouterAddress() string { return s.subnets[0].RouterAddr().String() }

// RouterAddress6 is the router's IPv6 address on the first subnet ("" without
// Options.IPv6).
func (s *Site) RouterAddress6() string {
	if !s.opts.IPv6 {
		return ""
	}
	return s.subnets[0].RouterAddr6().String()
}

// Subnet is the first underlay IPv4 subnet.
func (s *Site) Subnet() netip.Prefix { return s.subnets[0].V4 }

// Subnet6 is the first underlay IPv6 subnet (meaningful with Options.IPv6).
func (s *Site) Subnet6() netip.Prefix { return s.subnets[0].V6 }

// Subnets are all underlay subnets (Options.Subnets), the router holding the
// first address of each; meaningful V6 prefixes only with Options.IPv6.
func (s *Site) Subnets() []site.Subnet { return append([]site.Subnet(nil), s.subnets...) }

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
	built := s.site
	s.mu.Unlock()
	inodes := map[uint64]bool{}
	if built != nil {
		inodes = built.Inodes()
	}
	return leftovers(s.id, s.dir, inodes, os.Getenv(EnvKeep) == "1")
}

func (s *Site) cleanup() {
	if err := s.Close(); err != nil {
		s.t.Errorf("testbed: cleanup of site %s: %v", s.id, err)
	}
}

// Close stops every agent (SIGTERM, SIGKILL after StopTimeout), closes
// listeners, kills whatever else still runs in the site, deletes every
// namespace (and so every link and mount namespace), logs the tail of each
// host's log if the test failed, and removes the site's directory and state
// file. It runs automatically when the test ends; calling it earlier (to
// assert on Leftovers) is fine, and later calls return the first result.
func (s *Site) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	closers := s.closers
	s.closers = nil
	built := s.site
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
		}()
	}
	wg.Wait()
	for _, c := range closers {
		c()
	}
	var errs []error
	if built != nil {
		errs = append(errs, built.Close())
	}
	if s.t.Failed() {
		for _, h := range s.hosts {
			if logs := h.Logs(); logs != "" {
				s.t.Logf("testbed: last lines of %s's log (%s):\n%s", h.name, h.logPath, site.LastLines(logs, 60))
			}
		}
	}
	if os.Getenv(EnvKeep) == "1" {
		s.t.Logf("testbed: %s=1: keeping %s", EnvKeep, s.dir)
	} else if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, err)
	}
	if errors.Join(errs...) == nil {
		if err := os.Remove(statePath(s.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	s.closeErr = errors.Join(errs...)
	s.mu.Unlock()
	return s.closeErr
}
