package routes

import (
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/kroute"
)

// A route through the VXLAN device (weft.vxlan starts with the default
// workload prefix "weft") that is no longer desired is removed: only
// routes through workload interfaces are left to the links package.
func TestUndesiredRouteThroughVXLANDeviceIsRemoved(t *testing.T) {
	k := newFake("eth0", "weft.vxlan", "weft0123456789a")
	via := dataplane.Route{Dst: pfx("10.244.2.0/26"), Dev: "weft.vxlan", Via: addr("10.244.2.0"), OnLink: true}
	host := dataplane.Route{Dst: pfx("10.244.1.5/32"), Dev: "weft0123456789a"}
	k.routes["10.244.2.0/26"] = *kroute.FromDesired(via, 3).Netlink()
	k.routes["10.244.1.5/32"] = *kroute.FromDesired(host, 4).Netlink()
	m := NewWithKernel(Config{}, k)
	m.Set(&dataplane.Desired{})
	if err := pass(m); err != nil {
		t.Fatal(err)
	}
	if strings.Join(k.deletes, ",") != "10.244.2.0/26" {
		t.Errorf("deleted %v, want only the route through weft.vxlan", k.deletes)
	}
}
