package wireguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/netns/nstest"
	"github.com/weftnet/weft/internal/testtier"
)

// The test binary doubles as the device process: the starter runs it
// again with this variable set and "--interface NAME".
const deviceEnv = "WEFT_WG_TEST_DEVICE"

func TestMain(m *testing.M) {
	if os.Getenv(deviceEnv) != "" {
		name := ""
		for i, a := range os.Args {
			if a == "--interface" && i+1 < len(os.Args) {
				name = os.Args[i+1]
			}
		}
		signal.Ignore(syscall.SIGPIPE)
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		if err := RunDevice(ctx, DeviceConfig{Name: name, Logger: log}); err != nil {
			log.Error("device", "err", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func skipKernel(t *testing.T) {
	t.Helper()
	testtier.Kernel(t, "wg", "ping", "ip", "nft")
}

// keyRing is an in-memory KeyRing.
type keyRing struct {
	mu   sync.Mutex
	cur  wgtypes.Key
	more []wgtypes.Key
}

func newKeyRing(t *testing.T) *keyRing {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &keyRing{cur: k}
}

func (r *keyRing) PrivateKey(pub dataplane.WireGuardKey) (dataplane.WireGuardKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range append([]wgtypes.Key{r.cur}, r.more...) {
		if pub.IsZero() && k == r.cur || dataplane.WireGuardKey(k.PublicKey()) == pub {
			return dataplane.WireGuardKey(k), true
		}
	}
	return dataplane.WireGuardKey{}, false
}

func (r *keyRing) pub() dataplane.WireGuardKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return dataplane.WireGuardKey(r.cur.PublicKey())
}

// addNext adds a key (a rotation) and returns its public key.
func (r *keyRing) addNext(t *testing.T) dataplane.WireGuardKey {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.more = append(r.more, k)
	return dataplane.WireGuardKey(k.PublicKey())
}

// recordingStarter starts the test binary as the device process and
// kills whatever it started at cleanup.
type recordingStarter struct {
	t     *testing.T
	inner ProcessStarter
	mu    sync.Mutex
	procs []*Process
}

func newStarter(t *testing.T) *recordingStarter {
	s := &recordingStarter{t: t, inner: ProcessStarter{
		Command: []string{os.Args[0]}, Env: []string{deviceEnv + "=1"},
		LogPath: t.TempDir() + "/device.log",
	}}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range s.procs {
			_ = syscall.Kill(p.Pid, syscall.SIGTERM) // it removes its socket
			select {
			case <-p.Done():
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(p.Pid, syscall.SIGKILL)
				<-p.Done()
			}
		}
	})
	return s
}

func (s *recordingStarter) Start(name string) (*Process, error) {
	p, err := s.inner.Start(name)
	if err == nil {
		s.mu.Lock()
		s.procs = append(s.procs, p)
		s.mu.Unlock()
	}
	return p, err
}

func (s *recordingStarter) started() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.procs)
}

// node is one side of the tests: a namespace with an underlay address, a
// device, keys and a manager.
type node struct {
	ns      *nstest.NS
	under   netip.Addr
	tunnel  netip.Addr
	keys    *keyRing
	starter *recordingStarter
	iface   string
	m       *Manager
}

func uniqueIface(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "wgt" + hex.EncodeToString(b[:])
}

func twoNodes(t *testing.T) (a, b *node) {
	t.Helper()
	skipKernel(t)
	iface := uniqueIface(t)
	t.Cleanup(func() { os.Remove(uapiPath(iface + "a")); os.Remove(uapiPath(iface + "b")) }) // one name in both namespaces: their sockets would collide, so b's differs
	a = &node{ns: nstest.New(t, "a"), under: netip.MustParseAddr("192.168.61.1"), tunnel: netip.MustParseAddr("10.244.1.1"), iface: iface + "a"}
	b = &node{ns: nstest.New(t, "b"), under: netip.MustParseAddr("192.168.61.2"), tunnel: netip.MustParseAddr("10.244.2.1"), iface: iface + "b"}
	nstest.Veth(t, a.ns, "upl", netip.MustParsePrefix("192.168.61.1/24"), b.ns, "upl", netip.MustParsePrefix("192.168.61.2/24"))
	for _, n := range []*node{a, b} {
		n.keys = newKeyRing(t)
		n.starter = newStarter(t)
		n.m = n.newManager(t)
	}
	return a, b
}

func (n *node) newManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Config{NetNS: n.ns.Path, Name: n.iface, Keys: n.keys, Start: n.starter, ForceUserspace: true,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func (n *node) peer(key dataplane.WireGuardKey, block string) dataplane.WireGuardPeer {
	return dataplane.WireGuardPeer{Node: n.iface, PublicKey: key, Endpoint: netip.AddrPortFrom(n.under, 51820),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix(block)}}
}

func (n *node) device(key dataplane.WireGuardKey, peers ...dataplane.WireGuardPeer) *dataplane.Desired {
	return &dataplane.Desired{WireGuard: &dataplane.WireGuardDevice{
		ListenPort: 51820, Mark: dataplane.WireGuardMark, MTU: 1440, PublicKey: key,
		Addresses: []netip.Prefix{netip.PrefixFrom(n.tunnel, 32)}, Peers: peers,
	}}
}

func apply(t *testing.T, m *Manager, d *dataplane.Desired) {
	t.Helper()
	if err := applyErr(m, d); err != nil {
		t.Fatal(err)
	}
}

func applyErr(m *Manager, d *dataplane.Desired) error {
	m.Set(d)
	ctx := context.Background()
	if err := m.Apply(ctx, dataplane.PhaseUpdate); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := m.Apply(ctx, dataplane.PhaseRemove); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

// connect configures both sides as peers and routes each other's tunnel
// block through the device.
func connect(t *testing.T, a, b *node) {
	t.Helper()
	apply(t, a.m, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))
	apply(t, b.m, b.device(dataplane.WireGuardKey{}, a.peer(a.keys.pub(), "10.244.1.0/24")))
	a.ns.Run("ip", "route", "replace", "10.244.2.0/24", "dev", a.iface)
	b.ns.Run("ip", "route", "replace", "10.244.1.0/24", "dev", b.iface)
}

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// The userspace device: created in a device process, configured through
// its UAPI socket (wg(8) sees it), encrypting between two namespaces,
// with the MTU, address, mark and port desired.
func TestUserspaceDeviceBetweenTwoNamespaces(t *testing.T) {
	a, b := twoNodes(t)
	connect(t, a, b)
	a.ns.Run("ping", "-c", "3", "-i", "0.1", "-W", "2", b.tunnel.String())
	mustContain(t, "wg show", a.ns.Run("wg", "show", a.iface),
		"public key: "+a.keys.pub().String(), "listening port: 51820", "fwmark: 0x100000",
		"peer: "+b.keys.pub().String(), "endpoint: 192.168.61.2:51820", "allowed ips: 10.244.2.0/24", "latest handshake")
	mustContain(t, "link", a.ns.Run("ip", "-d", "link", "show", a.iface), "mtu 1440", "tun", "UP")
	mustContain(t, "addresses", a.ns.Run("ip", "addr", "show", "dev", a.iface), "inet 10.244.1.1/32")
	st := a.m.Status()
	if st == nil || st.Kind != KindUserspace || st.DevicePID == 0 || len(st.Peers) != 1 || st.Peers[0].ReceiveBytes == 0 || st.Problem != "" {
		t.Fatalf("status %+v", st)
	}
	if pub, ok := a.m.AppliedPublicKey(); !ok || pub != a.keys.pub() {
		t.Fatalf("applied key %s, want %s", pub, a.keys.pub())
	}
	// Applying the same state again writes nothing.
	before := a.m.KernelWrites()
	apply(t, a.m, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))
	if w := a.m.KernelWrites() - before; w != 0 {
		t.Fatalf("a re-apply wrote %d times", w)
	}
}

// A restarted agent (a new manager) adopts the running device process:
// nothing is written, no process is started, the sessions stay (the
// latest handshake does not change).
func TestRestartedManagerAdoptsTheDevice(t *testing.T) {
	a, b := twoNodes(t)
	connect(t, a, b)
	a.ns.Run("ping", "-c", "2", "-i", "0.1", "-W", "2", b.tunnel.String())
	hs := a.m.Status().Peers[0].LatestHandshake
	pid := a.m.Status().DevicePID
	a.m.Close()

	restarted := a.newManager(t)
	apply(t, restarted, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))
	if w := restarted.KernelWrites(); w != 0 {
		t.Fatalf("adopting wrote %d times", w)
	}
	if n := a.starter.started(); n != 1 {
		t.Fatalf("%d device processes started, want the first only", n)
	}
	st := restarted.Status()
	if st.DevicePID != pid || !st.Peers[0].LatestHandshake.Equal(hs) {
		t.Fatalf("after adoption pid %d (was %d), handshake %s (was %s)", st.DevicePID, pid, st.Peers[0].LatestHandshake, hs)
	}
	a.ns.Run("ping", "-c", "2", "-i", "0.1", "-W", "2", b.tunnel.String())
}

// Key rotation at the device level: the rotating node switches first, its
// peer follows when it learns the new key (here 300 ms later); a ping every
// 20 ms across the switch loses nothing: WireGuard holds the packets
// while it handshakes (the rotating node's first initiation is dropped:
// its peer does not know the key yet), and the peer greets the new key
// when it did not handshake by itself (the pass greetDelay later).
func TestKeyRotationLosesNothing(t *testing.T) {
	a, b := twoNodes(t)
	connect(t, a, b)
	a.ns.Run("ping", "-c", "2", "-i", "0.1", "-W", "2", b.tunnel.String())
	next := a.keys.addNext(t)
	ping := exec.Command("ip", "netns", "exec", a.ns.Name, "ping", "-c", "100", "-i", "0.02", "-W", "5", b.tunnel.String())
	var out strings.Builder
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	apply(t, a.m, a.device(next, b.peer(b.keys.pub(), "10.244.2.0/24")))
	time.Sleep(300 * time.Millisecond)
	rotated := b.device(dataplane.WireGuardKey{}, dataplane.WireGuardPeer{Node: a.iface, PublicKey: next,
		Endpoint: netip.AddrPortFrom(a.under, 51820), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}})
	apply(t, b.m, rotated)
	time.Sleep(greetDelay + 50*time.Millisecond)
	apply(t, b.m, rotated) // the pass the greeting's timer asks for
	err := ping.Wait()
	if err != nil || !strings.Contains(out.String(), " 0% packet loss") {
		t.Fatalf("ping across the rotation: %v\n%s", err, out.String())
	}
	mustContain(t, "wg show", b.ns.Run("wg", "show", b.iface), "peer: "+next.String())
	if strings.Contains(b.ns.Run("wg", "show", b.iface), a.keys.pub().String()) {
		t.Fatal("the old key is still a peer")
	}
}

// Peers, allowed IPs and addresses no longer desired go; the device goes
// with its process when none is desired.
func TestRemovals(t *testing.T) {
	a, b := twoNodes(t)
	connect(t, a, b)
	peer := b.peer(b.keys.pub(), "10.244.2.0/24")
	peer.AllowedIPs = append(peer.AllowedIPs, netip.MustParsePrefix("10.99.0.0/16"))
	apply(t, a.m, a.device(dataplane.WireGuardKey{}, peer))
	mustContain(t, "wg show", a.ns.Run("wg", "show", a.iface, "allowed-ips"), "10.99.0.0/16")
	apply(t, a.m, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))
	if out := a.ns.Run("wg", "show", a.iface, "allowed-ips"); strings.Contains(out, "10.99.0.0/16") || !strings.Contains(out, "10.244.2.0/24") {
		t.Fatalf("allowed IPs after shrinking: %s", out)
	}
	d := a.device(dataplane.WireGuardKey{})
	d.WireGuard.Addresses = nil
	apply(t, a.m, d)
	if out := a.ns.Run("wg", "show", a.iface, "peers"); strings.TrimSpace(out) != "" {
		t.Fatalf("peers left: %q", out)
	}
	if out := a.ns.Run("ip", "addr", "show", "dev", a.iface); strings.Contains(out, "10.244.1.1") {
		t.Fatalf("address left: %s", out)
	}
	pid := a.m.Status().DevicePID
	apply(t, a.m, &dataplane.Desired{})
	if _, err := a.ns.Try("ip", "link", "show", a.iface); err == nil {
		t.Fatal("device still there")
	}
	if _, err := os.Stat(uapiPath(a.iface)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("UAPI socket left: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("device process %d still runs", pid)
		}
	}
}

// A device process that dies (its device and routes go with it) is
// replaced by the next pass.
func TestDeadDeviceProcessIsReplaced(t *testing.T) {
	a, b := twoNodes(t)
	connect(t, a, b)
	pid := a.m.Status().DevicePID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := a.ns.Try("ip", "link", "show", a.iface); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the device outlived its process")
		}
		time.Sleep(10 * time.Millisecond)
	}
	apply(t, a.m, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))
	if st := a.m.Status(); st.DevicePID == pid || st.DevicePID == 0 {
		t.Fatalf("device pid %d after replacing %d", st.DevicePID, pid)
	}
	a.ns.Run("ip", "route", "replace", "10.244.2.0/24", "dev", a.iface)
	a.ns.Run("ping", "-c", "2", "-i", "0.1", "-W", "3", b.tunnel.String())
}

// Bad input: a port in use gives one clear error; an interface of that
// name that is not a WireGuard device is refused and left alone.
func TestPortInUseAndForeignInterface(t *testing.T) {
	a, b := twoNodes(t)
	var udp *net.UDPConn
	if err := a.ns.Do(func() error {
		var err error
		udp, err = net.ListenUDP("udp", &net.UDPAddr{Port: 51820})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	err := applyErr(a.m, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))
	if err == nil || !strings.Contains(err.Error(), "listen port 51820: address already in use") {
		t.Fatalf("err = %v", err)
	}
	if st := a.m.Status(); st == nil || !strings.Contains(st.Problem, "address already in use") {
		t.Fatalf("status %+v", st)
	}
	udp.Close()
	apply(t, a.m, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))

	// b: a veth holds the name.
	h := b.ns.Netlink()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: b.iface}, PeerName: "other"}); err != nil {
		t.Fatal(err)
	}
	err = applyErr(b.m, b.device(dataplane.WireGuardKey{}))
	if err == nil || !strings.Contains(err.Error(), "is a veth, not a WireGuard device") {
		t.Fatalf("err = %v", err)
	}
	if err := applyErr(b.m, &dataplane.Desired{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName(b.iface); err != nil {
		t.Fatalf("the foreign interface was removed: %v", err)
	}
}

// The kernel's WireGuard, where the module exists: the same manager
// creates a kernel device and configures it through genetlink.
func TestKernelDevice(t *testing.T) {
	skipKernel(t)
	if ok, why := kernelHasWireGuard(t); !ok {
		t.Skip("this kernel has no WireGuard: " + why)
	}
	a, b := twoNodes(t)
	for _, n := range []*node{a, b} {
		m, err := New(Config{NetNS: n.ns.Path, Name: n.iface, Keys: n.keys})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		n.m = m
	}
	connect(t, a, b)
	a.ns.Run("ping", "-c", "3", "-i", "0.1", "-W", "2", b.tunnel.String())
	mustContain(t, "link", a.ns.Run("ip", "-d", "link", "show", a.iface), "wireguard")
	if st := a.m.Status(); st.Kind != KindKernel {
		t.Fatalf("kind %s", st.Kind)
	}
	restarted, err := New(Config{NetNS: a.ns.Path, Name: a.iface, Keys: a.keys})
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()
	apply(t, restarted, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))
	if w := restarted.KernelWrites(); w != 0 {
		t.Fatalf("adopting the kernel device wrote %d times", w)
	}
}

// kernelHasWireGuard tries to create a wireguard link in a scratch
// namespace.
func kernelHasWireGuard(t *testing.T) (bool, string) {
	ns := nstest.New(t, "probe")
	err := ns.Netlink().LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "wgprobe"}})
	if errors.Is(err, unix.EOPNOTSUPP) {
		return false, "creating a wireguard link returns EOPNOTSUPP (no module, and none can be loaded)"
	}
	if err != nil {
		return false, err.Error()
	}
	return true, ""
}

// A missing /dev/net/tun is one clear error of the device process.
func TestMissingTUNDevice(t *testing.T) {
	old := tunDevicePath
	tunDevicePath = "/nonexistent/net/tun"
	defer func() { tunDevicePath = old }()
	err := RunDevice(context.Background(), DeviceConfig{Name: "wgtnotun"})
	if err == nil || !regexp.MustCompile(`/nonexistent/net/tun does not exist: the userspace WireGuard device needs the tun driver`).MatchString(err.Error()) {
		t.Fatalf("err = %v", err)
	}
}

// Endpoint roaming: when a peer's packets come from a new address,
// WireGuard follows it, and applying the same desired state again (the
// store still says the old address) does not pull the endpoint back: a
// node behind NAT stays reachable.
func TestEndpointRoamingIsKept(t *testing.T) {
	a, b := twoNodes(t)
	connect(t, a, b)
	// b's packets now reach a from another address (a NAT in front of b
	// changed its mapping).
	b.ns.Run("ip", "addr", "add", "192.168.61.3/24", "dev", "upl")
	b.ns.Run("nft", "add table ip roam; add chain ip roam post { type nat hook postrouting priority 100; }; add rule ip roam post udp sport 51820 snat to 192.168.61.3")
	// a learns the new source from b's next packets.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := b.ns.Try("ping", "-c", "1", "-W", "1", a.tunnel.String()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b cannot reach a from its new address")
		}
	}
	mustContain(t, "wg show before", a.ns.Run("wg", "show", a.iface, "endpoints"), "192.168.61.3:51820")
	apply(t, a.m, a.device(dataplane.WireGuardKey{}, b.peer(b.keys.pub(), "10.244.2.0/24")))
	mustContain(t, "wg show after a re-apply", a.ns.Run("wg", "show", a.iface, "endpoints"), "192.168.61.3:51820")
	a.ns.Run("ping", "-c", "2", "-i", "0.1", "-W", "2", b.tunnel.String())

	// A changed desired endpoint is written.
	moved := b.peer(b.keys.pub(), "10.244.2.0/24")
	moved.Endpoint = netip.MustParseAddrPort("192.168.61.2:51821")
	apply(t, a.m, a.device(dataplane.WireGuardKey{}, moved))
	mustContain(t, "wg show after the store moved it", a.ns.Run("wg", "show", a.iface, "endpoints"), "192.168.61.2:51821")
}
