package calc

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/store"
)

func ipipNode(t *testing.T, name, addr, ipipTunnel string) store.Object {
	n := api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: addr, IPv4IPIPTunnelAddr: ipipTunnel}}}
	n.Metadata.Name = name
	return obj(t, api.KindNode, "", name, n)
}

func ipipPool(t *testing.T, name, cidr, mode string) store.Object {
	p := api.IPPool{Spec: api.IPPoolSpec{CIDR: cidr, BlockSize: 26, IPIPMode: mode, VXLANMode: api.EncapNever, NATOutgoing: true}}
	p.Metadata.Name = name
	return obj(t, api.KindIPPool, "", name, p)
}

func felixConfig(t *testing.T, name string, spec api.FelixConfigurationSpec) store.Object {
	c := api.FelixConfiguration{Spec: spec}
	c.TypeMeta = api.TypeMeta{APIVersion: api.Group, Kind: api.KindFelixConfiguration}
	c.Metadata.Name = name
	return obj(t, api.KindFelixConfiguration, "", name, c)
}

// ipipScenario: n1 (us) and n2 on 192.168.7.0/24, n3 on another subnet,
// each with an IP-in-IP tunnel address, one pool in the given ipipMode.
func ipipScenario(t *testing.T, mode string) []store.Object {
	return []store.Object{
		ipipNode(t, "n1", "192.168.7.1/24", "10.244.0.1"),
		ipipNode(t, "n2", "192.168.7.2/24", "10.244.0.65"),
		ipipNode(t, "n3", "192.168.8.3/24", "10.244.0.129"),
		ipipPool(t, "p", "10.244.0.0/16", mode),
		block(t, "10.244.0.0/26", "n1", map[int]string{0: "n1", 5: "n1", 9: "n2"}),
		block(t, "10.244.0.64/26", "n2", map[int]string{0: "n2", 1: "n1"}),
		block(t, "10.244.0.128/26", "n3", map[int]string{0: "n3"}),
		wep(t, "default", "a", "n1", "weft0123456789a", "10.244.0.5/32"),
	}
}

func run(t *testing.T, cfg Config, objs []store.Object, locals ...LocalInput) Output {
	t.Helper()
	d := New(cfg)
	for _, o := range objs {
		d.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	for _, in := range locals {
		if err := d.OnLocal(in); err != nil {
			t.Fatal(err)
		}
	}
	return mustCompute(t, d)
}

func hasProblem(out Output, parts ...string) bool {
	return slices.ContainsFunc(out.Problems, func(p string) bool {
		for _, s := range parts {
			if !strings.Contains(p, s) {
				return false
			}
		}
		return true
	})
}

var noIPIP = LocalInput{Kind: LocalKindIPIP, Value: Support{Reason: "this kernel is built without IP-in-IP"}}

// IP-in-IP Always: the device with this node's tunnel address; every
// remote block (also on this subnet) and borrowed address via the peer's
// underlay address, onlink, on weft.ipip; workloads at underlay − 20; this
// node's tunnel address is wanted.
func TestIPIPAlways(t *testing.T) {
	cfg := testCfg
	cfg.UnderlayMTU = 1500
	out := run(t, cfg, ipipScenario(t, api.EncapAlways))
	d := out.Desired
	want := map[string]string{
		"10.244.0.0/26":   "blackhole 10.244.0.0/26",
		"10.244.0.64/26":  "10.244.0.64/26 via 192.168.7.2 dev weft.ipip onlink",
		"10.244.0.128/26": "10.244.0.128/26 via 192.168.8.3 dev weft.ipip onlink",
		"10.244.0.9/32":   "10.244.0.9/32 via 192.168.7.2 dev weft.ipip onlink",
	}
	if got := routeMap(d.Routes); !reflect.DeepEqual(got, want) {
		t.Fatalf("routes:\n got %v\nwant %v", got, want)
	}
	if d.IPIP == nil || *d.IPIP != (dataplane.IPIPDevice{TunnelAddr: netip.MustParseAddr("10.244.0.1"), Source: cfg.Address, MTU: 1480}) {
		t.Fatalf("ipip device = %+v", d.IPIP)
	}
	if d.VXLAN != nil || d.Workloads[0].MTU != 1480 || len(out.Problems) != 0 {
		t.Errorf("vxlan %+v, workload MTU %d, problems %v", d.VXLAN, d.Workloads[0].MTU, out.Problems)
	}
	if tn := out.Tunnels; !tn.IPIP.Wanted || tn.IPIP.Addr.String() != "10.244.0.1" || tn.VXLAN.Wanted {
		t.Errorf("tunnel needs %+v", tn)
	}

	// ipipMTU, and an explicit pattern-free underlay: both MTUs follow.
	out = run(t, cfg, append(ipipScenario(t, api.EncapAlways), felixConfig(t, "default", api.FelixConfigurationSpec{IPIPMTU: new(1400)})))
	if out.Desired.IPIP.MTU != 1400 || out.Desired.Workloads[0].MTU != 1400 {
		t.Errorf("ipipMTU 1400: device %d, workload %d", out.Desired.IPIP.MTU, out.Desired.Workloads[0].MTU)
	}
}

// CrossSubnet: a peer on this subnet natively, one across subnets over
// IP-in-IP.
func TestIPIPCrossSubnet(t *testing.T) {
	d := run(t, testCfg, ipipScenario(t, api.EncapCrossSubnet)).Desired
	got := routeMap(d.Routes)
	if got["10.244.0.64/26"] != "10.244.0.64/26 via 192.168.7.2 dev " || got["10.244.0.128/26"] != "10.244.0.128/26 via 192.168.8.3 dev weft.ipip onlink" {
		t.Fatalf("routes %v", got)
	}
}

// A node that cannot honour IP-in-IP (no ipip module, or ipipEnabled
// false) blackholes an Always pool's remote blocks — never routes them
// natively to a peer on its own subnet, nor leaves them to the default
// route — says so once per pool, and wants no tunnel address; a
// CrossSubnet pool keeps its native routes within the subnet.
func TestIPIPNotHonouredIsLoudAndNeverUnencapsulated(t *testing.T) {
	for name, extra := range map[string]struct {
		objs   []store.Object
		locals []LocalInput
		why    string
	}{
		"no module":   {locals: []LocalInput{noIPIP}, why: "built without IP-in-IP"},
		"ipipEnabled": {objs: []store.Object{felixConfig(t, "default", api.FelixConfigurationSpec{IPIPEnabled: new(false)})}, why: "ipipEnabled is false"},
	} {
		out := run(t, testCfg, append(ipipScenario(t, api.EncapAlways), extra.objs...), extra.locals...)
		got := routeMap(out.Desired.Routes)
		want := map[string]string{
			"10.244.0.0/26": "blackhole 10.244.0.0/26", "10.244.0.64/26": "blackhole 10.244.0.64/26",
			"10.244.0.128/26": "blackhole 10.244.0.128/26", "10.244.0.9/32": "blackhole 10.244.0.9/32",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: routes %v, want blackholes only", name, got)
		}
		if out.Desired.IPIP != nil || out.Tunnels.IPIP.Wanted {
			t.Errorf("%s: device %+v, tunnel %+v", name, out.Desired.IPIP, out.Tunnels.IPIP)
		}
		if !hasProblem(out, "pool p uses IP-in-IP (ipipMode Always)", extra.why, "dropped here", "never sent unencapsulated") || len(out.Problems) != 1 {
			t.Errorf("%s: problems %q", name, out.Problems)
		}
		out = run(t, testCfg, append(ipipScenario(t, api.EncapCrossSubnet), extra.objs...), extra.locals...)
		got = routeMap(out.Desired.Routes)
		if got["10.244.0.64/26"] != "10.244.0.64/26 via 192.168.7.2 dev " || got["10.244.0.128/26"] != "blackhole 10.244.0.128/26" {
			t.Errorf("%s, CrossSubnet: routes %v", name, got)
		}
		if !hasProblem(out, "nodes in other subnets") {
			t.Errorf("%s, CrossSubnet: problems %q", name, out.Problems)
		}
	}
	if err := New(testCfg).OnLocal(LocalInput{Kind: LocalKindIPIP, Value: "yes"}); err == nil {
		t.Error("a local input of the wrong type was taken")
	}
	if err := New(testCfg).OnLocal(LocalInput{Kind: api.KindNode, Value: Support{}}); err == nil {
		t.Error("a store kind was taken as a local input")
	}
}

// A peer without an IP-in-IP tunnel address (it cannot decapsulate) gets
// no route, and the problem names it.
func TestIPIPPeerWithoutTunnelAddress(t *testing.T) {
	objs := ipipScenario(t, api.EncapAlways)
	objs[2] = ipipNode(t, "n3", "192.168.8.3/24", "")
	out := run(t, testCfg, objs)
	got := routeMap(out.Desired.Routes)
	if got["10.244.0.128/26"] != "blackhole 10.244.0.128/26" || got["10.244.0.64/26"] == "" {
		t.Errorf("routes %v", got)
	}
	if !hasProblem(out, "node n3 has no IP-in-IP tunnel address") {
		t.Errorf("problems %q", out.Problems)
	}
}

// FelixConfiguration's VXLAN fields reach the device: node.<this node>
// over default, field by field; another node's configuration is not ours;
// deleting ours falls back to default, then to the config file.
func TestFelixVXLANSettings(t *testing.T) {
	cfg := testCfg
	cfg.VXLANVNI, cfg.VXLANPort = 4096, 4789
	base := scenario(t, api.EncapAlways)
	def := felixConfig(t, "default", api.FelixConfigurationSpec{VXLANPort: new(4790), VXLANVNI: new(4097), VXLANMTU: new(1400)})
	mine := felixConfig(t, "node.n1", api.FelixConfigurationSpec{VXLANVNI: new(5000)})
	theirs := felixConfig(t, "node.n2", api.FelixConfigurationSpec{VXLANPort: new(9999)})
	d := New(cfg)
	for _, o := range append(base, def, mine, theirs) {
		d.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	dev := mustCompute(t, d).Desired.VXLAN
	if dev == nil || dev.VNI != 5000 || dev.Port != 4790 || dev.MTU != 1400 {
		t.Fatalf("device %+v: want VNI 5000 (node.n1), port 4790 (default), MTU 1400", dev)
	}
	d.OnEvent(store.Event{Type: store.EventDelete, Object: mine})
	if dev = mustCompute(t, d).Desired.VXLAN; dev.VNI != 4097 || dev.Port != 4790 {
		t.Fatalf("after deleting node.n1: %+v", dev)
	}
	d.OnEvent(store.Event{Type: store.EventDelete, Object: def})
	if dev = mustCompute(t, d).Desired.VXLAN; dev.VNI != 4096 || dev.Port != 4789 || dev.MTU != 0 {
		t.Fatalf("after deleting default: %+v, want the config file's", dev)
	}

	// vxlanEnabled false: no device, blackholes for the remote blocks,
	// one problem.
	out := run(t, cfg, append(base, felixConfig(t, "default", api.FelixConfigurationSpec{VXLANEnabled: new(false)})))
	if out.Desired.VXLAN != nil || out.Tunnels.VXLAN.Wanted || routeMap(out.Desired.Routes)["10.244.0.128/26"] != "blackhole 10.244.0.128/26" {
		t.Errorf("vxlanEnabled false: device %+v, tunnel %+v, routes %v", out.Desired.VXLAN, out.Tunnels.VXLAN, routeMap(out.Desired.Routes))
	}
	if !hasProblem(out, "pool p uses VXLAN", "vxlanEnabled is false") {
		t.Errorf("problems %q", out.Problems)
	}
}

// natOutgoingAddress, natPortRange and natOutgoingExclusions.
func TestFelixNATSettings(t *testing.T) {
	base := scenario(t, api.EncapAlways)
	n := run(t, testCfg, base).Desired.NAT
	if len(n.ExcludeDests) != 3 || n.SNATAddress.IsValid() || n.PortMin != 0 {
		t.Fatalf("default NAT %+v: nodes excluded, masquerade", n)
	}
	only := run(t, testCfg, append(base, felixConfig(t, "default", api.FelixConfigurationSpec{NATOutgoingExclusions: api.NATOutgoingExclusionsIPPoolsOnly}))).Desired.NAT
	if len(only.ExcludeDests) != 0 {
		t.Errorf("IPPoolsOnly: excluded %v", only.ExcludeDests)
	}
	ports, _ := api.PortRange(32768, 60999)
	out := run(t, testCfg, append(base, felixConfig(t, "default", api.FelixConfigurationSpec{NATOutgoingAddress: "192.0.2.9", NATPortRange: &ports})))
	if n := out.Desired.NAT; n.SNATAddress.String() != "192.0.2.9" || n.PortMin != 32768 || n.PortMax != 60999 {
		t.Errorf("SNAT with ports: %+v", n)
	}
	// Ports without an address: SNAT to this node's own address.
	out = run(t, testCfg, append(base, felixConfig(t, "default", api.FelixConfigurationSpec{NATPortRange: &ports}),
		pool(t, "p6", "fd00:244::/48", api.EncapNever, true)))
	if n := out.Desired.NAT; n.SNATAddress != testCfg.Address || n.PortMin != 32768 {
		t.Errorf("ports alone: %+v", n)
	}
	if !hasProblem(out, "natPortRange", "IPv6") {
		t.Errorf("no problem for the IPv6 pool the range does not reach: %q", out.Problems)
	}
}

// routeRefreshInterval and logSeverityScreen become the loop's settings;
// a stored configuration with a field weft refuses is reported.
func TestFelixLoopSettings(t *testing.T) {
	out := run(t, testCfg, []store.Object{felixConfig(t, "default", api.FelixConfigurationSpec{
		RouteRefreshInterval: &api.Duration{Duration: 30 * time.Second}, LogSeverityScreen: "Warning",
	})})
	if out.Desired.Loop != (dataplane.LoopSettings{ResyncPeriod: 30 * time.Second, LogLevel: "warn"}) || len(out.Problems) != 0 {
		t.Errorf("loop %+v, problems %v", out.Desired.Loop, out.Problems)
	}
	for sev, want := range map[string]string{"Trace": "debug", "Debug": "debug", "Info": "info", "Error": "error", "Fatal": "error", "": ""} {
		if got := logLevel(sev); got != want {
			t.Errorf("%q → %q, want %q", sev, got, want)
		}
	}
	out = run(t, testCfg, []store.Object{felixConfig(t, "node.n1", api.FelixConfigurationSpec{WireguardEnabled: new(true), VXLANPort: new(4790)})})
	if !hasProblem(out, "spec.wireguardEnabled", "stored before weft refused it") {
		t.Errorf("problems %q", out.Problems)
	}
}

// The underlay MTU comes from the links the node observes (a local input),
// with mtuIfacePattern applied; a change of either reaches the workloads
// and the tunnel devices at once.
func TestUnderlayMTUFromLinks(t *testing.T) {
	cfg := testCfg
	cfg.UnderlayMTU = 1500 // detected at start
	links := func(eth0, eth1 int) LocalInput {
		return LocalInput{Kind: LocalKindLinks, Value: []dataplane.Link{
			{Name: "eth0", MTU: eth0, Up: true, HoldsNodeAddr: true}, {Name: "eth1", MTU: eth1, Up: true},
		}}
	}
	d := New(cfg)
	for _, o := range scenario(t, api.EncapAlways) {
		d.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	if out := mustCompute(t, d); out.Desired.Workloads[0].MTU != 1450 || out.Desired.VXLAN.MTU != 0 {
		t.Fatalf("before any links: workload %d, vxlan %d", out.Desired.Workloads[0].MTU, out.Desired.VXLAN.MTU)
	}
	mustLocal := func(in LocalInput) {
		if err := d.OnLocal(in); err != nil {
			t.Fatal(err)
		}
	}
	mustLocal(links(9000, 1400))
	if out := mustCompute(t, d); out.Desired.Workloads[0].MTU != 8950 || out.Desired.VXLAN.MTU != 8950 {
		t.Errorf("eth0 at 9000: workload %d, vxlan %d", out.Desired.Workloads[0].MTU, out.Desired.VXLAN.MTU)
	}
	d.OnEvent(store.Event{Type: store.EventPut, Object: felixConfig(t, "default", api.FelixConfigurationSpec{MTUIfacePattern: "^eth1$"})})
	if out := mustCompute(t, d); out.Desired.Workloads[0].MTU != 1350 || out.Desired.VXLAN.MTU != 1350 {
		t.Errorf("pattern eth1 (1400): workload %d, vxlan %d", out.Desired.Workloads[0].MTU, out.Desired.VXLAN.MTU)
	}
	mustLocal(links(9000, 1300))
	if out := mustCompute(t, d); out.Desired.Workloads[0].MTU != 1250 {
		t.Errorf("eth1 at 1300: workload %d", out.Desired.Workloads[0].MTU)
	}
	// A store RESET keeps the local inputs.
	d.Reset()
	for _, o := range scenario(t, api.EncapAlways) {
		d.OnEvent(store.Event{Type: store.EventPut, Object: o})
	}
	if out := mustCompute(t, d); out.Desired.Workloads[0].MTU != 8950 {
		t.Errorf("after a reset (pattern gone, links kept): workload %d", out.Desired.Workloads[0].MTU)
	}
	mustLocal(LocalInput{Kind: LocalKindLinks})
	if out := mustCompute(t, d); out.Desired.Workloads[0].MTU != 1450 {
		t.Errorf("links withdrawn: workload %d, want the start-time 1500 − 50", out.Desired.Workloads[0].MTU)
	}
	if slices.Contains(d.Kinds(), LocalKindLinks) {
		t.Errorf("a local kind in the store watch: %v", d.Kinds())
	}
}
