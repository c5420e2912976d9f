package node

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
)

// /readyz answers 200 only while the local API serves the datastore: never
// before the store is open (a `weft apply` right after readiness would
// fail with "the datastore is not open"), nor once the agent stops.
func TestReadyzWaitsForTheLocalAPI(t *testing.T) {
	a := New(testConfig(t), slog.New(slog.DiscardHandler))
	a.watchAgentReadiness()
	a.health.set(localapi.ComponentStatus{Name: "datastore", State: localapi.StateRunning, Live: true, Ready: true})
	h := metricsHandler(a.reg, a.health)
	code := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code
	}
	if c := code(); c != http.StatusServiceUnavailable {
		t.Fatalf("readyz before the API serves: %d", c)
	}
	a.apiReady.Store(true)
	if c := code(); c != http.StatusOK {
		t.Fatalf("readyz once the API serves: %d", c)
	}
	a.apiReady.Store(false)
	if c := code(); c != http.StatusServiceUnavailable {
		t.Fatalf("readyz while stopping: %d", c)
	}
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte("[node]\nname = \"unit\"\n"), "unit.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// IPv6 forwarding is turned on only on a node with an IPv6 underlay
// address: on a v4-only host it would make the kernel ignore router
// advertisements the host may rely on.
func TestIPv6ForwardingOnlyWithAnIPv6Underlay(t *testing.T) {
	a := New(testConfig(t), slog.New(slog.DiscardHandler))
	a.addr4 = netip.MustParseAddr("192.0.2.1")
	if v, ok := a.linuxConfig().Sysctls["net/ipv6/conf/all/forwarding"]; ok {
		t.Fatalf("v4-only node sets IPv6 forwarding to %q", v)
	}
	if v := a.linuxConfig().Sysctls["net/ipv4/ip_forward"]; v != "1" {
		t.Fatalf("IPv4 forwarding %q", v)
	}
	a.addr6 = netip.MustParseAddr("fd00::1")
	if v := a.linuxConfig().Sysctls["net/ipv6/conf/all/forwarding"]; v != "1" {
		t.Fatalf("dual-stack node: IPv6 forwarding %q", v)
	}
}

// A requested subsystem this build does not run is named, never pretended:
// today only the eBPF backend; nftables, iptables, BGP and WireGuard run.
func TestUnbuiltSubsystemsAreNamed(t *testing.T) {
	for backend, want := range map[string]string{"nftables": "", "iptables": "", "ebpf": "policy-backend"} {
		cfg := testConfig(t)
		cfg.Dataplane.Backend = backend
		cfg.BGP.Enabled, cfg.WireGuard.Enabled = true, true
		a := New(cfg, slog.New(slog.DiscardHandler))
		var names []string
		for _, u := range a.unbuilt() {
			names = append(names, u.name)
		}
		if got := strings.Join(names, ","); got != want {
			t.Errorf("backend %s: unbuilt %q, want %q", backend, got, want)
		}
	}
}
