package dataplane

import (
	"regexp"
	"testing"
)

func TestWorkloadMTU(t *testing.T) {
	for _, tc := range []struct {
		name     string
		underlay int
		enc      Encaps
		override int
		want     int
	}{
		{"native", 1500, Encaps{}, 0, 1500},
		{"vxlan v4", 1500, Encaps{VXLANv4: true}, 0, 1450},
		{"vxlan v6", 1500, Encaps{VXLANv6: true}, 0, 1430},
		{"wireguard v4", 1500, Encaps{WireGuardV4: true}, 0, 1440},
		{"wireguard v6", 9000, Encaps{WireGuardV6: true}, 0, 8920},
		{"smallest of enabled, subtracted once", 1500, Encaps{VXLANv4: true, WireGuardV4: true}, 0, 1440},
		{"override wins", 1500, Encaps{VXLANv4: true}, 1300, 1300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := WorkloadMTU(tc.underlay, tc.enc, tc.override); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
	if VXLANDeviceMTU(1500, false) != 1450 || VXLANDeviceMTU(1500, true) != 1430 {
		t.Error("VXLAN device MTU")
	}
}

func TestWorkloadMTUConfiguredDevices(t *testing.T) {
	for _, tc := range []struct {
		name string
		enc  Encaps
		want int
	}{
		{"ipip", Encaps{IPIP: true}, 1480},
		{"ipip and vxlan: the smaller", Encaps{IPIP: true, VXLANv4: true}, 1450},
		{"vxlanMTU set", Encaps{VXLANv4: true, VXLANMTU: 1400}, 1400},
		{"ipipMTU set below vxlan's", Encaps{VXLANv4: true, IPIP: true, IPIPMTU: 1300}, 1300},
		{"configured MTU of a disabled encapsulation ignored", Encaps{IPIPMTU: 1300}, 1500},
	} {
		if got := WorkloadMTU(1500, tc.enc, 0); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
	if IPIPDeviceMTU(1500) != 1480 {
		t.Error("IPIP device MTU")
	}
}

func TestSelectUnderlay(t *testing.T) {
	links := []Link{
		{Name: "lo", MTU: 65536, Up: true, Loopback: true},
		{Name: "eth0", MTU: 1500, Up: true, HoldsNodeAddr: true},
		{Name: "eth1", MTU: 1400, Up: true},
		{Name: "ens3", MTU: 9000, Up: false},
		{Name: "wg0", MTU: 1300, Up: true},
	}
	for _, tc := range []struct {
		name    string
		links   []Link
		pattern string
		want    Underlay
	}{
		{"node address first", links, "", Underlay{1500, "eth0", "address"}},
		{"default pattern without an address", links[2:], "", Underlay{1400, "eth1", "pattern"}},
		{"an explicit pattern: the smallest match", links, "^eth", Underlay{1400, "eth1", "pattern"}},
		{"an explicit pattern ignores down interfaces", links, "^ens", Underlay{FallbackUnderlayMTU, "", "fallback"}},
		{"an explicit pattern matching wg0", links, "^wg", Underlay{1300, "wg0", "pattern"}},
		{"nothing", nil, "", Underlay{FallbackUnderlayMTU, "", "fallback"}},
	} {
		var re *regexp.Regexp
		if tc.pattern != "" {
			re = regexp.MustCompile(tc.pattern)
		}
		got, err := SelectUnderlay(tc.links, re)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	if _, err := SelectUnderlay([]Link{{Name: "eth0", MTU: 500, Up: true}}, nil); err == nil {
		t.Error("an underlay MTU of 500 was accepted")
	}
}
