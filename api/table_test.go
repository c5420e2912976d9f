package api

import (
	"slices"
	"strings"
	"testing"
)

func TestKindsAndLookup(t *testing.T) {
	cases := map[string]string{
		"ippools": KindIPPool, "ippool": KindIPPool, "IPPool": KindIPPool, "pool": KindIPPool, "ipp": KindIPPool,
		"netpol": KindNetworkPolicy, "np": KindNetworkPolicy, "policies": KindNetworkPolicy,
		"gnp": KindGlobalNetworkPolicy, "GlobalNetworkPolicies": KindGlobalNetworkPolicy,
		"hep": KindHostEndpoint, "weps": KindWorkloadEndpoint, "nodes": KindNode, "no": KindNode,
		"bgpconfig": KindBGPConfiguration, "bp": KindBGPPeer, "felixconfig": KindFelixConfiguration,
		"ipamconfig": KindIPAMConfiguration, "reservations": KindIPReservation, "tiers": KindTier,
		"netsets": KindNetworkSet, "globalnetworksets": KindGlobalNetworkSet, "pro": KindProfile,
	}
	for name, want := range cases {
		k, ok := LookupKind(name)
		if !ok || k.Kind != want {
			t.Errorf("LookupKind(%q) = %v %v, want %s", name, k.Kind, ok, want)
		}
	}
	if _, ok := LookupKind("bgpfilters"); ok {
		t.Error("bgpfilters is not a weft kind")
	}
	// Every kind constructs, names are unique, namespacing as in Calico.
	seen := map[string]string{}
	for _, k := range Kinds() {
		r, err := New(k.Kind)
		if err != nil || r.Kind() != k.Kind || r.GetTypeMeta().Kind != k.Kind || r.GetTypeMeta().APIVersion != Group {
			t.Errorf("New(%s) = %v, %v", k.Kind, r, err)
		}
		for _, n := range k.Names() {
			if other, dup := seen[n]; dup {
				t.Errorf("name %q used by %s and %s", n, other, k.Kind)
			}
			seen[n] = k.Kind
		}
		wantNS := k.Kind == KindNetworkPolicy || k.Kind == KindNetworkSet || k.Kind == KindWorkloadEndpoint
		if k.Namespaced != wantNS || IsNamespaced(k.Kind) != wantNS {
			t.Errorf("%s namespaced = %v", k.Kind, k.Namespaced)
		}
	}
	if _, err := New("ippool"); err == nil {
		t.Error("New takes exact kind names")
	}
}

func TestColumnsAndRows(t *testing.T) {
	all := readTestdata(t)
	for file, data := range all {
		rs, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			Default(r)
			for _, wide := range []bool{false, true} {
				cols, row := Columns(r.Kind(), wide), Row(r, wide)
				if len(cols) != len(row) {
					t.Errorf("%s: %d columns, %d cells", file, len(cols), len(row))
				}
				if IsNamespaced(r.Kind()) && (cols[0] != "NAMESPACE" || row[0] != r.GetMeta().Namespace) {
					t.Errorf("%s: namespaced kinds start with NAMESPACE: %v %v", file, cols, row)
				}
			}
		}
	}
	pools, _ := Decode(all["ippool.yaml"])
	Default(pools[0])
	if got := strings.Join(Columns(KindIPPool, false), " "); got != "NAME CIDR SELECTOR" {
		t.Errorf("ippool columns %s", got)
	}
	if got := Row(pools[0], false); !slices.Equal(got, []string{"default-ipv4-ippool", "192.168.0.0/16", "all()"}) {
		t.Errorf("ippool row %v", got)
	}
	if got := Row(pools[0], true); !slices.Equal(got, []string{"default-ipv4-ippool", "192.168.0.0/16", "true", "Never", "CrossSubnet", "false", "false", "all()"}) {
		t.Errorf("ippool wide row %v", got)
	}
	peers, _ := Decode(all["bgppeer.yaml"])
	if got := Row(peers[0], false); !slices.Equal(got, []string{"rack1-tor", "192.20.30.40", "rack == 'rack-1'", "64567"}) {
		t.Errorf("bgppeer row %v", got)
	}
	if got := Row(peers[2], false); !slices.Equal(got, []string{"node-peer-v6", "[fd00::1]:1179", "edge-1", "65000"}) {
		t.Errorf("bgppeer row %v", got)
	}
	global := &BGPPeer{Metadata: ObjectMeta{Name: "g"}, Spec: BGPPeerSpec{PeerIP: "10.0.0.1", ASNumber: 1}}
	if got := Row(global, false)[2]; got != "(global)" {
		t.Errorf("global peer NODE = %q", got)
	}
	nps, _ := Decode(all["networkpolicy.yaml"])
	if got := Row(nps[0], true); !slices.Equal(got, []string{"production", "allow-tcp-6379", "default", "100.5", "role == 'database'"}) {
		t.Errorf("networkpolicy wide row %v", got)
	}
	weps, _ := Decode(all["workloadendpoint.yaml"])
	if got := Row(weps[0], true); !slices.Equal(got, []string{"shop", "edge--1-weft-web-eth0", "web", "edge-1",
		"192.168.10.5/32,fd00:10:244::5/128", "weft1a2b3c4d5e6", "kns.shop", "203.0.113.5->192.168.10.5"}) {
		t.Errorf("wep wide row %v", got)
	}
	long := &GlobalNetworkSet{Metadata: ObjectMeta{Name: "s"}}
	for i := 0; i < 20; i++ {
		long.Spec.Nets = append(long.Spec.Nets, "203.0.113.0/24")
	}
	if cell := Row(long, true)[1]; len(cell) != maxCellWidth || !strings.HasSuffix(cell, "...") {
		t.Errorf("long NETS cell not truncated: %q", cell)
	}
}
