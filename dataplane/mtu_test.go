package dataplane

import "testing"

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
