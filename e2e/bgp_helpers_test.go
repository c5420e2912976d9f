package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/bgptest"
	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// The BGP tests run BIRD 2 and FRR as the site's router
// (internal/bgptest) and share these helpers.

// bgpNativeTOML is a cluster whose only pool is routed natively (no
// encapsulation): between subnets only BGP can route its blocks.
const bgpNativeTOML = `
[[network.pool]]
name = "native"
cidr = "10.246.0.0/16"
vxlan_mode = "Never"
nat_outgoing = false
`

// blockOf is the IPAM block (of the pool's block size 26) holding addr.
func blockOf(addr string) string {
	return netip.PrefixFrom(netip.MustParseAddr(addr), 26).Masked().String()
}

// rackPeers are BGPPeers making every node peer with the router on its own
// subnet: nodes carry the label rack=r<subnet> (rackTOML).
func rackPeers(site *testbed.Site, v6 bool) string {
	var b strings.Builder
	for i, sn := range site.Subnets() {
		fmt.Fprintf(&b, "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rack-%d}\nspec: {nodeSelector: \"rack == 'r%d'\", peerIP: %q, asNumber: %d}\n---\n",
			i, i, sn.RouterAddr().String(), bgptest.RouterAS)
		if v6 && sn.RouterAddr6().IsValid() {
			fmt.Fprintf(&b, "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rack-%d-v6}\nspec: {nodeSelector: \"rack == 'r%d'\", peerIP: %q, asNumber: %d}\n---\n",
				i, i, sn.RouterAddr6().String(), bgptest.RouterAS)
		}
	}
	return b.String()
}

// rackTOML labels each host with its subnet.
func rackTOML(h *testbed.Host) string {
	return fmt.Sprintf("[node]\nlabels = { rack = \"r%d\" }\n", h.Subnet())
}

// applyYAML runs `weft apply -f -` on h with the documents.
func applyYAML(t *testing.T, h *testbed.Host, docs string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resources.yaml")
	if err := os.WriteFile(path, []byte(docs), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Weft("apply", "-f", path); err != nil {
		t.Fatalf("weft apply on %s: %v\n%s", h.Name(), err, out)
	}
}

// bgpRoutesOf is h's BGP table (`weft bgp routes -o json`).
func bgpRoutesOf(h *testbed.Host) ([]localapi.BGPRoute, error) {
	out, err := h.Weft("bgp", "routes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var r localapi.BGPRoutesResponse
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, err
	}
	return r.Routes, nil
}

// netipPrefix is the /bits prefix holding addr, as a string.
func netipPrefix(addr string, bits int) (string, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "", err
	}
	p, err := a.Prefix(bits)
	return p.String(), err
}
