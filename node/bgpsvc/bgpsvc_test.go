package bgpsvc

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/store"
	"github.com/weftnet/weft/store/storetest"
)

func peerNames(t *testing.T, st store.Store) []string {
	t.Helper()
	objs, _ := st.List(api.KindBGPPeer, "")
	var out []string
	for _, o := range objs {
		out = append(out, o.Name)
	}
	return out
}

// A node's [[bgp.peer]] become its node-specific BGPPeers, reconciled at
// every start; other nodes' and operators' peers are left alone.
func TestConfigPeersReconciled(t *testing.T) {
	st := storetest.Single(t, Register)
	ctx := context.Background()
	operator := &api.BGPPeer{}
	operator.Metadata.Name = "n1-extra"
	operator.Spec = api.BGPPeerSpec{Node: "n1", PeerIP: "192.0.2.50", ASNumber: 65050}
	v, _ := api.StoreValue(operator)
	if _, err := st.Txn(ctx, []store.Op{{Type: store.OpPut, Key: store.Key{Kind: api.KindBGPPeer, Name: "n1-extra"}, Value: v}}); err != nil {
		t.Fatal(err)
	}
	start := func(node string, peers ...config.BGPPeer) {
		t.Helper()
		s := &Service{cfg: Config{Node: node, BGP: config.BGP{Peers: peers}}, log: testLogger(), st: st}
		s.reconcileConfigPeers(ctx)
	}
	start("n1", config.BGPPeer{Address: "192.0.2.1", ASNumber: 65000}, config.BGPPeer{Address: "[fd00::1]:1179", ASNumber: 65001})
	start("n2", config.BGPPeer{Address: "192.0.2.1", ASNumber: 65000})
	want := []string{"n1-extra", "n1.cfg-192-0-2-1", "n1.cfg-fd00--1-1179", "n2.cfg-192-0-2-1"}
	if got := peerNames(t, st); !slices.Equal(got, want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
	o, _ := st.Get(store.Key{Kind: api.KindBGPPeer, Name: "n1.cfg-fd00--1-1179"})
	r, err := api.FromStore(api.KindBGPPeer, o.Value, o.UID, o.Revision, o.Created)
	if err != nil {
		t.Fatal(err)
	}
	if p := r.(*api.BGPPeer); p.Spec.Node != "n1" || p.Spec.PeerIP != "[fd00::1]:1179" || p.Spec.ASNumber != 65001 {
		t.Fatalf("peer %+v", p.Spec)
	}
	// n1 restarts with one peer less: it goes, nothing else does.
	start("n1", config.BGPPeer{Address: "192.0.2.1", ASNumber: 65000})
	want = []string{"n1-extra", "n1.cfg-192-0-2-1", "n2.cfg-192-0-2-1"}
	if got := peerNames(t, st); !slices.Equal(got, want) {
		t.Fatalf("after the restart: peers %v, want %v", got, want)
	}
	o, _ = st.Get(store.Key{Kind: api.KindBGPPeer, Name: "n1.cfg-192-0-2-1"})
	start("n1", config.BGPPeer{Address: "192.0.2.1", ASNumber: 65000})
	if o2, _ := st.Get(o.Key); o2.Revision != o.Revision {
		t.Fatal("an unchanged start rewrote its peer")
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, key, value string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name, key)
		if err := os.WriteFile(p, []byte(value), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("bgp", "tor", "s3cret\n", 0o600)
	write("bgp", "open", "s3cret", 0o644)
	write("bgp", "long", strings.Repeat("x", 81), 0o600)
	if v, err := readSecret(dir, calc.SecretRef{Name: "bgp", Key: "tor"}); err != nil || v != "s3cret" {
		t.Errorf("tor: %q %v", v, err)
	}
	for key, want := range map[string]string{"open": "readable by others", "long": "at most 80 bytes", "missing": "does not exist"} {
		if _, err := readSecret(dir, calc.SecretRef{Name: "bgp", Key: key}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", key, err, want)
		}
	}
	if _, err := readSecret(dir, calc.SecretRef{Name: "..", Key: "x/y"}); err == nil {
		t.Error("a path escape was accepted")
	}
}

// A restart on the same boot is a graceful restart; the first start and
// a start after a reboot are not.
func TestSameBoot(t *testing.T) {
	dir := t.TempDir()
	boot := filepath.Join(dir, "boot_id")
	os.WriteFile(boot, []byte("aaaa\n"), 0o600)
	svc := func() *Service {
		return &Service{cfg: Config{DataDir: dir, BootIDFile: boot}, log: testLogger()}
	}
	if svc().sameBoot() {
		t.Error("first start taken for a restart")
	}
	if !svc().sameBoot() {
		t.Error("restart on the same boot not recognised")
	}
	os.WriteFile(boot, []byte("bbbb\n"), 0o600)
	if svc().sameBoot() {
		t.Error("a reboot taken for a restart")
	}
}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
