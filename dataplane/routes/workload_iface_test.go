package routes

import (
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dataplane/internal/kroute"
)

// Every weft route no longer desired is removed, through the VXLAN device
// (weft.vxlan starts with the default workload prefix "weft") and through
// a workload interface alike: this manager is the one writer of both.
func TestUndesiredRoutesAreRemovedWhateverTheirDevice(t *testing.T) {
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
	slices.Sort(k.deletes)
	if strings.Join(k.deletes, ",") != "10.244.1.5/32,10.244.2.0/26" {
		t.Errorf("deleted %v, want both", k.deletes)
	}
}
