package dataplane

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestWorkloadIfaceName(t *testing.T) {
	// Same scheme as Calico's cali + SHA1("<namespace>.<name>")[:11].
	got, err := WorkloadIfaceName("weft", "default", "nginx")
	if err != nil || got != "weftc440f455693" {
		t.Fatalf("got %q, %v", got, err)
	}
	if len(got) != 15 {
		t.Errorf("length %d", len(got))
	}
	if got, _ := WorkloadIfaceName("w", "default", "nginx"); got != "wc440f455693" {
		t.Errorf("short prefix: %q", got)
	}
	for _, bad := range []string{"", "weftx", "we/f", "we ft"} {
		if _, err := WorkloadIfaceName(bad, "default", "nginx"); err == nil {
			t.Errorf("prefix %q accepted", bad)
		}
	}
}

func TestVXLANMAC(t *testing.T) {
	mac := VXLANMAC("node-a")
	if mac.String() != "66:07:02:c1:cc:60" {
		t.Errorf("got %s", mac)
	}
	if mac[0]&1 != 0 || mac[0]&2 == 0 {
		t.Error("not a locally administered unicast MAC")
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func validWorkload(name, ip string) Workload {
	iface, _ := WorkloadIfaceName("weft", "ns", name)
	return Workload{Namespace: "ns", Name: name, HostIface: iface, NetNS: "/run/netns/" + name, IPs: mustPrefixes(ip)}
}

func TestDesiredValidate(t *testing.T) {
	mac := VXLANMAC("n1")
	good := Desired{
		Workloads: []Workload{validWorkload("a", "10.244.1.2/32"), validWorkload("b", "fd00::2/128")},
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.244.1.0/26"), Class: RouteClassBlock, Type: RouteBlackhole},
			{Dst: netip.MustParsePrefix("10.244.2.0/26"), Class: RouteClassBlock, Dev: "weft.vxlan", Via: netip.MustParseAddr("10.244.2.0"), OnLink: true},
			{Dst: netip.MustParsePrefix("10.244.1.2/32"), Class: RouteClassWorkload, Dev: "weftx"},
			{Dst: netip.MustParsePrefix("10.244.9.0/24"), Table: 7, Class: RouteClassWireGuard, Dev: "weft.wg"},
		},
		Rules:      []Rule{{Family: 4, Priority: 99, Table: 7, Mark: 0x100000, Mask: 0x100000, Invert: true}},
		VXLAN:      &VXLANDevice{TunnelAddr: netip.MustParseAddr("10.244.1.0"), MAC: mac, Source: netip.MustParseAddr("192.168.1.1")},
		VXLANPeers: []VXLANPeer{{Node: "n2", TunnelIP: netip.MustParseAddr("10.244.2.0"), VTEPMAC: VXLANMAC("n2"), UnderlayIP: netip.MustParseAddr("192.168.1.2")}},
		NAT:        NATConfig{MasqPools: mustPrefixes("10.244.0.0/16"), AllPools: mustPrefixes("10.244.0.0/16")},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid state rejected: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(d *Desired)
		want   string
	}{
		{"workload /24", func(d *Desired) { d.Workloads[0].IPs = mustPrefixes("10.244.1.0/24") }, "want a /32"},
		{"workload no netns", func(d *Desired) { d.Workloads[0].NetNS = "" }, "network namespace"},
		{"workload long iface", func(d *Desired) { d.Workloads[0].Iface = "a-very-long-iface-name" }, "not a valid interface name"},
		{"workload multicast MAC", func(d *Desired) { d.Workloads[0].MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1} }, "unicast"},
		{"two workloads one iface", func(d *Desired) { d.Workloads[1].HostIface = d.Workloads[0].HostIface }, "used by two workloads"},
		{"address twice", func(d *Desired) { d.Workloads[1].IPs = mustPrefixes("10.244.1.2/32") }, "used by workloads"},
		{"route host bits", func(d *Desired) { d.Routes[0].Dst = netip.MustParsePrefix("10.244.1.1/26") }, "host bits"},
		{"blackhole with dev", func(d *Desired) { d.Routes[0].Dev = "eth0" }, "blackhole"},
		{"onlink without via", func(d *Desired) { d.Routes[1].Via = netip.Addr{} }, "onlink needs a gateway"},
		{"no device, no gateway", func(d *Desired) { d.Routes[1].Dev, d.Routes[1].Via, d.Routes[1].OnLink = "", netip.Addr{}, false }, "needs a device"},
		{"onlink without device", func(d *Desired) { d.Routes[1].Dev = "" }, "needs a device"},
		{"gateway family", func(d *Desired) { d.Routes[1].Via = netip.MustParseAddr("fd00::1") }, "family"},
		{"duplicate route", func(d *Desired) { d.Routes = append(d.Routes, d.Routes[0]) }, "two routes"},
		{"route clashes with a workload's", func(d *Desired) {
			d.Routes = append(d.Routes, Route{Dst: netip.MustParsePrefix("10.244.1.2/32"), Class: RouteClassBlock, Type: RouteBlackhole})
		}, "two routes"},
		{"same destination in another table is fine, not in the same", func(d *Desired) {
			d.Routes = append(d.Routes, Route{Dst: netip.MustParsePrefix("10.244.9.0/24"), Table: 7, Class: RouteClassBGP, Dev: "eth0"})
		}, "two routes to 10.244.9.0/24 table 7"},
		{"table out of range", func(d *Desired) { d.Routes[0].Table = 253 }, "table 253"},
		{"no class", func(d *Desired) { d.Routes[0].Class = 0 }, "unknown class"},
		{"workload MTU", func(d *Desired) { d.Workloads[0].MTU = 40 }, "MTU 40"},
		{"rule family", func(d *Desired) { d.Rules[0].Family = 5 }, "family 5"},
		{"rule priority", func(d *Desired) { d.Rules[0].Priority = 32766 }, "priority 32766"},
		{"rule mark outside mask", func(d *Desired) { d.Rules[0].Mark = 0x3 }, "outside mask"},
		{"inverted rule without mark", func(d *Desired) { d.Rules[0].Mask, d.Rules[0].Mark = 0, 0 }, "needs a mark"},
		{"rule twice", func(d *Desired) { d.Rules = append(d.Rules, d.Rules[0]) }, "listed twice"},
		{"vxlan no source", func(d *Desired) { d.VXLAN.Source = netip.Addr{} }, "source"},
		{"vxlan bad MAC", func(d *Desired) { d.VXLAN.MAC = nil }, "MAC"},
		{"peer MAC twice", func(d *Desired) {
			d.VXLANPeers = append(d.VXLANPeers, VXLANPeer{Node: "n3", TunnelIP: netip.MustParseAddr("10.244.3.0"), VTEPMAC: VXLANMAC("n2"), UnderlayIP: netip.MustParseAddr("192.168.1.3")})
		}, "used twice"},
		{"nat invalid", func(d *Desired) { d.NAT.AllPools = append(d.NAT.AllPools, netip.Prefix{}) }, "nat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := clone(good)
			tc.mutate(&d)
			err := d.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func clone(d Desired) Desired {
	c := d
	c.Workloads = append([]Workload(nil), d.Workloads...)
	for i := range c.Workloads {
		c.Workloads[i].IPs = append([]netip.Prefix(nil), d.Workloads[i].IPs...)
	}
	c.Routes = append([]Route(nil), d.Routes...)
	c.Rules = append([]Rule(nil), d.Rules...)
	if d.VXLAN != nil {
		v := *d.VXLAN
		c.VXLAN = &v
	}
	c.VXLANPeers = append([]VXLANPeer(nil), d.VXLANPeers...)
	c.NAT.AllPools = append([]netip.Prefix(nil), d.NAT.AllPools...)
	return c
}

func TestDesiredEqualIgnoresOrder(t *testing.T) {
	a := Desired{
		Workloads: []Workload{validWorkload("a", "10.0.0.1/32"), validWorkload("b", "10.0.0.2/32")},
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.1.0.0/16"), Type: RouteBlackhole},
			{Dst: netip.MustParsePrefix("10.2.0.0/16"), Type: RouteBlackhole},
		},
		NAT: NATConfig{AllPools: mustPrefixes("10.1.0.0/16", "10.2.0.0/16")},
	}
	b := clone(a)
	b.Workloads[0], b.Workloads[1] = b.Workloads[1], b.Workloads[0]
	b.Routes[0], b.Routes[1] = b.Routes[1], b.Routes[0]
	b.NAT.AllPools[0], b.NAT.AllPools[1] = b.NAT.AllPools[1], b.NAT.AllPools[0]
	if !a.Equal(&b) {
		t.Error("reordered state not equal")
	}
	b.Workloads[0].Iface = "eth0" // "" means eth0
	if !a.Equal(&b) {
		t.Error("explicit default interface not equal")
	}
	b.Routes[1].Type = RouteUnicast
	if a.Equal(&b) {
		t.Error("changed route still equal")
	}
	c := clone(a)
	c.VXLAN = &VXLANDevice{}
	if a.Equal(&c) || c.Equal(&a) {
		t.Error("VXLAN presence ignored")
	}
	var nilD *Desired
	if nilD.Equal(&a) || !nilD.Equal(nil) {
		t.Error("nil handling")
	}
}

func TestHostRoutes(t *testing.T) {
	w := validWorkload("a", "10.0.0.1/32")
	w.IPs = append(w.IPs, netip.MustParsePrefix("fd00::1/128"))
	got := w.HostRoutes()
	want := []Route{
		{Dst: netip.MustParsePrefix("10.0.0.1/32"), Class: RouteClassWorkload, Dev: w.HostIface},
		{Dst: netip.MustParsePrefix("fd00::1/128"), Class: RouteClassWorkload, Dev: w.HostIface},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if k := got[0].Key(); k.Table != TableMain {
		t.Errorf("host route key %v: want the main table", k)
	}
}
