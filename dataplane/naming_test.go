package dataplane

import "testing"

func TestIsWorkloadIface(t *testing.T) {
	for _, tc := range []struct {
		prefix, name string
		want         bool
	}{
		{"weft", "weft0123456789a", true},
		{"weft", "weftc440f455693", true},
		{"weft", "weft.vxlan", false},
		{"weft", "weftbr-up", false},
		{"weft", "weft0123456789", false},
		{"weft", "weftABCDEF01234", false},
		{"weft", "weft0123456789g", false},
		{"cali", "weft0123456789a", false},
		{"wl", "wl0123456789a", true},
		{"wl", "wl0123456789abc", false},
		{"weft", "weft", false},
		{"weft", "", false},
		{"", "0123456789a", false},
	} {
		if got := IsWorkloadIface(tc.prefix, tc.name); got != tc.want {
			t.Errorf("IsWorkloadIface(%q, %q) = %v, want %v", tc.prefix, tc.name, got, tc.want)
		}
	}
	// Every name WorkloadIfaceName makes has the shape.
	for _, prefix := range []string{"w", "weft", "ab_c"} {
		name, err := WorkloadIfaceName(prefix, "default", "nginx")
		if err != nil || !IsWorkloadIface(prefix, name) {
			t.Errorf("WorkloadIfaceName(%q) = %q, %v: not recognised", prefix, name, err)
		}
	}
}
