package mtu

import "testing"

func TestPhysicalPattern(t *testing.T) {
	for name, want := range map[string]bool{
		"eth0": true, "enp3s0": true, "ens18": true, "wlan0": true, "wlp2s0": true, "eno1": true,
		"lo": false, "weft1234567890a": false, "weft.vxlan": false, "docker0": false, "veth12": false, "br0": false,
	} {
		if got := PhysicalPattern.MatchString(name); got != want {
			t.Errorf("%s: got %v", name, got)
		}
	}
}
