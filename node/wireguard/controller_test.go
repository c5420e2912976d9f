package wireguard

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/cluster"
	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/storetest"
)

// fakeDevice is the dataplane: it "applies" the key the desired state
// asks for only when the test lets it, and publishes a report each time.
type fakeDevice struct {
	mu      sync.Mutex
	want    dataplane.WireGuardKey
	applied dataplane.WireGuardKey
	hold    bool
	changed chan struct{}
}

func newFakeDevice() *fakeDevice { return &fakeDevice{changed: make(chan struct{})} }

func (f *fakeDevice) AppliedPublicKey() (dataplane.WireGuardKey, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, !f.applied.IsZero()
}

func (f *fakeDevice) LatestReport() (*dataplane.Report, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &dataplane.Report{}, f.changed
}

// set takes a desired state, as the loop would.
func (f *fakeDevice) set(d *dataplane.WireGuardDevice, current dataplane.WireGuardKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d == nil {
		return
	}
	f.want = d.PublicKey
	if f.want.IsZero() {
		f.want = current
	}
	if !f.hold {
		f.applied = f.want
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeDevice) setHold(hold bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = hold
	if !hold {
		f.applied = f.want
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

type rig struct {
	st   *store.Node
	c    *Controller
	keys *Keys
	dev  *fakeDevice
	ctx  context.Context
}

// run wires the controller to the real calculation over a one-node store,
// as the agent does.
func run(t *testing.T, enabled bool, tweak ...func(*Config)) *rig {
	t.Helper()
	st := storetest.Single(t, func(r *store.Registry) {
		cluster.Register(r)
		Register(r)
		ipam.Register(r, slog.New(slog.DiscardHandler))
	})
	ctx, cancel := context.WithCancel(context.Background())
	reg := cluster.New(st, cluster.Self{Name: "n1", Address4: netip.MustParsePrefix("192.0.2.1/24")}, nil)
	if err := reg.RegisterNode(ctx, cluster.Tunnel{}); err != nil {
		t.Fatal(err)
	}
	r := &rig{st: st, dev: newFakeDevice(), ctx: ctx}
	if enabled {
		k, err := OpenKeys(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		r.keys = k
	}
	cfg0 := Config{Node: "n1", RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	for _, f := range tweak {
		f(&cfg0)
	}
	r.c = New(cfg0, st, r.keys, r.dev, r.dev)
	cfg := calc.Config{NodeName: "n1", Address: netip.MustParseAddr("192.0.2.1"),
		WireGuard: calc.WireGuardConfig{Enabled: enabled, Interface: "weft.wg", ListenPort: 51820}}
	disp := calc.New(cfg)
	done := make(chan struct{}, 2)
	go func() { r.c.Run(ctx); done <- struct{}{} }()
	go func() {
		defer func() { done <- struct{}{} }()
		events, err := st.Watch(ctx, 0, store.WatchFilter{Kinds: disp.Kinds()})
		if err != nil {
			t.Error(err)
			return
		}
		for ev := range events {
			disp.OnEvent(ev)
			if out, err := disp.Compute(ev.Revision); err == nil {
				var cur dataplane.WireGuardKey
				if r.keys != nil {
					cur, _ = r.keys.Current()
				}
				r.dev.set(out.Desired.WireGuard, cur)
				r.c.Set(out.Tunnels)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return r
}

func (r *rig) node(t *testing.T) *api.Node {
	t.Helper()
	o, ok := r.st.Get(store.Key{Kind: api.KindNode, Name: "n1"})
	if !ok {
		t.Fatal("no Node")
	}
	res, err := api.FromStore(o.Kind, o.Value, o.UID, o.Revision, o.Created)
	if err != nil {
		t.Fatal(err)
	}
	return res.(*api.Node)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func applyDoc(t *testing.T, st *store.Node, doc string) {
	t.Helper()
	rs, err := api.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	api.Default(rs[0])
	v, _ := api.StoreValue(rs[0])
	kind, ns, name := api.Key(rs[0])
	if _, err := st.Txn(context.Background(), []store.Op{{Type: store.OpPut, Key: store.Key{Kind: kind, Namespace: ns, Name: name}, Value: v}}); err != nil {
		t.Fatal(err)
	}
}

// The node publishes its public key and listen port, and gets a tunnel
// address from IPAM (handle wireguard-tunnel-addr-n1) once a pool exists.
func TestPublishesKeyPortAndTunnelAddress(t *testing.T) {
	r := run(t, true)
	pub, _ := r.keys.Current()
	waitFor(t, "the key and port published", func() bool {
		n := r.node(t)
		return n.Status.WireguardPublicKey == pub.String() && n.Metadata.Annotations[calc.AnnotationWireGuardPort] == "51820"
	})
	applyDoc(t, r.st, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.90.0.0/16, blockSize: 26}\n")
	waitFor(t, "a tunnel address", func() bool {
		n := r.node(t)
		return n.Spec.Wireguard != nil && n.Spec.Wireguard.InterfaceIPv4Address != ""
	})
	if _, ok := r.st.Get(ipam.HandleKey(ipam.TunnelHandle(ipam.TunnelWireguard, "n1", false))); !ok {
		t.Fatal("no IPAM handle for the tunnel address")
	}
}

// A rotation announces the next key first, publishes it only once the
// device uses it, then makes it current; Rotate answers after that.
func TestRotationOrder(t *testing.T) {
	r := run(t, true)
	old, _ := r.keys.Current()
	waitFor(t, "the key published", func() bool { return r.node(t).Status.WireguardPublicKey == old.String() })
	r.dev.setHold(true)
	type result struct {
		prev, next dataplane.WireGuardKey
		err        error
	}
	res := make(chan result, 1)
	go func() {
		p, n, err := r.c.Rotate(r.ctx)
		res <- result{p, n, err}
	}()
	var next dataplane.WireGuardKey
	waitFor(t, "the next key announced", func() bool {
		n, ok := r.keys.Next()
		next = n
		return ok && r.node(t).Metadata.Annotations[calc.AnnotationWireGuardNextKey] == n.String()
	})
	time.Sleep(200 * time.Millisecond) // several retries of the controller
	if got := r.node(t).Status.WireguardPublicKey; got != old.String() {
		t.Fatalf("published %s before the device used it", got)
	}
	r.dev.setHold(false)
	select {
	case got := <-res:
		if got.err != nil || got.prev != old || got.next != next {
			t.Fatalf("rotate: %+v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("rotation did not finish")
	}
	n := r.node(t)
	if n.Status.WireguardPublicKey != next.String() || n.Metadata.Annotations[calc.AnnotationWireGuardNextKey] != "" {
		t.Fatalf("after rotation: key %s annotations %v", n.Status.WireguardPublicKey, n.Metadata.Annotations)
	}
	if cur, _ := r.keys.Current(); cur != next {
		t.Fatal("the next key is not current")
	}
}

// WireGuard off: whatever the Node still publishes is cleared, and
// rotate-key says WireGuard is off.
func TestDisabledClears(t *testing.T) {
	r := run(t, false)
	u := nodeUpdate{Name: "n1", PublicKey: ptr(dataplane.WireGuardKey{1}.String()), ListenPort: ptr(51820), Addr4: ptr("10.90.0.7")}
	if _, err := r.st.Command(r.ctx, cmdUpdate, mustJSON(t, u)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the WireGuard state cleared", func() bool {
		n := r.node(t)
		return n.Status.WireguardPublicKey == "" && n.Spec.Wireguard == nil && len(n.Metadata.Annotations) == 0
	})
	if _, _, err := r.c.Rotate(r.ctx); err == nil {
		t.Fatal("rotated with WireGuard off")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// key_rotation_interval: a key older than the interval is rotated on its
// own, in the same lossless order.
func TestAutomaticRotation(t *testing.T) {
	r := run(t, true, func(c *Config) { c.RotationInterval = 2 * time.Second })
	first, _ := r.keys.Current()
	waitFor(t, "the key published", func() bool { return r.node(t).Status.WireguardPublicKey == first.String() })
	waitFor(t, "an automatic rotation", func() bool {
		cur, _ := r.keys.Current()
		return cur != first && r.node(t).Status.WireguardPublicKey == cur.String()
	})
}
