package testbed

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestMergeTOML(t *testing.T) {
	tests := []struct {
		name      string
		base, add string
		want      tomlDoc
	}{
		{
			name: "tables merge key by key",
			base: "[cluster]\nlisten = \"a:1\"\nadvertise = \"a:1\"\n",
			add:  "[cluster]\nvoters = 1\nlisten = \"b:2\"\n",
			want: tomlDoc{"cluster": tomlDoc{"listen": "b:2", "advertise": "a:1", "voters": int64(1)}},
		},
		{
			name: "new tables are added",
			base: "[node]\nname = \"h1\"\n",
			add:  "[wireguard]\nenabled = true\n",
			want: tomlDoc{"node": tomlDoc{"name": "h1"}, "wireguard": tomlDoc{"enabled": true}},
		},
		{
			name: "arrays replace",
			base: "[cluster]\njoin = [\"a\", \"b\"]\n",
			add:  "[cluster]\njoin = [\"c\"]\n",
			want: tomlDoc{"cluster": tomlDoc{"join": []any{"c"}}},
		},
		{
			name: "arrays of tables replace",
			base: "[[network.pool]]\nname = \"a\"\n",
			add:  "[[network.pool]]\nname = \"b\"\ncidr = \"10.1.0.0/16\"\n",
			want: tomlDoc{"network": tomlDoc{"pool": []map[string]any{{"name": "b", "cidr": "10.1.0.0/16"}}}},
		},
		{
			name: "empty fragment changes nothing",
			base: "[log]\nlevel = \"debug\"\n",
			add:  "",
			want: tomlDoc{"log": tomlDoc{"level": "debug"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, err := parseTOML("base", tt.base)
			if err != nil {
				t.Fatal(err)
			}
			src, err := parseTOML("add", tt.add)
			if err != nil {
				t.Fatal(err)
			}
			mergeTOML(dst, src)
			if !reflect.DeepEqual(normalize(dst), normalize(tt.want)) {
				t.Fatalf("merged:\n%#v\nwant:\n%#v", dst, tt.want)
			}
		})
	}
}

// normalize turns nested tomlDoc values into map[string]any so that
// DeepEqual compares contents, not the alias spelling.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case []map[string]any:
		out := []any{}
		for _, e := range x {
			out = append(out, normalize(e))
		}
		return out
	default:
		return v
	}
}

func TestParseTOMLNamesTheFragment(t *testing.T) {
	_, err := parseTOML("Options.ExtraTOML", "[cluster\n")
	if err == nil || !strings.Contains(err.Error(), "Options.ExtraTOML") {
		t.Fatalf("want an error naming the fragment, got %v", err)
	}
}

// TestHostConfigLayers checks the order in which configuration layers apply
// and that join settings land in [cluster], without any namespace.
func TestHostConfigLayers(t *testing.T) {
	s := &Site{opts: withDefaults(Options{
		ExtraTOML: "[log]\nlevel = \"info\"\n[cluster]\nvoters = 1\n",
		HostTOML: func(h *Host) string {
			return "[node.labels]\nhost = \"" + h.name + "\"\n[log]\nformat = \"json\"\n"
		},
	})}
	h := &Host{site: s, name: "h2", addr: "10.200.1.12", addr6: "fd77::c", dataDir: "/d", socket: "/s"}
	peer := &Host{site: s, name: "h1", addr: "10.200.1.11"}
	h.SetTOML("[log]\nlevel = \"warn\"\n")
	h.SetJoin("/tok", peer)
	doc, err := h.configLocked()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"node": map[string]any{
			"name": "h2", "address": "10.200.1.12,fd77::c", "data_dir": "/d",
			"labels": map[string]any{"host": "h2"},
		},
		"cluster": map[string]any{
			"listen": "10.200.1.12:7700", "advertise": "10.200.1.12:7700", "voters": int64(1),
			"join": []string{"10.200.1.11:7700"}, "token_file": "/tok",
		},
		"api":     map[string]any{"socket": "/s"},
		"metrics": map[string]any{"listen": "10.200.1.12:9091"},
		"log":     map[string]any{"level": "warn", "format": "json"},
	}
	if got := normalize(doc); !reflect.DeepEqual(got, want) {
		t.Fatalf("config:\n%#v\nwant:\n%#v", got, want)
	}
	text, err := h.Config()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`join = ["10.200.1.11:7700"]`, `[node.labels]`, `address = "10.200.1.12,fd77::c"`} {
		if !strings.Contains(text, line) {
			t.Errorf("rendered config lacks %q:\n%s", line, text)
		}
	}
}

func TestSubnetsStayClearOfTheDefaultPool(t *testing.T) {
	pool := netip.MustParsePrefix("10.244.0.0/16")
	seen := map[netip.Prefix]bool{}
	for range 2000 {
		id := newID()
		if !validID(id) {
			t.Fatalf("newID gave invalid id %q", id)
		}
		subnets := subnetsFor(id, 3)
		if len(subnets) != 3 {
			t.Fatalf("%d subnets, want 3", len(subnets))
		}
		for k, sn := range subnets {
			v4, v6 := sn.V4, sn.V6
			if v4.Overlaps(pool) || v4.Bits() != 24 {
				t.Fatalf("id %s: subnet %s overlaps %s or is not a /24", id, v4, pool)
			}
			if b := v4.Addr().As4()[1]; b < 200 || b > 243 {
				t.Fatalf("id %s: subnet %s outside 10.200-243.x.0/24", id, v4)
			}
			if !netip.MustParsePrefix("fd77::/16").Contains(v6.Addr()) || v6.Bits() != 64 {
				t.Fatalf("id %s: v6 subnet %s not a fd77::/16 /64", id, v6)
			}
			for _, other := range subnets[:k] {
				if other.V4.Overlaps(v4) || other.V6.Overlaps(v6) {
					t.Fatalf("id %s: subnets %v and %v overlap", id, other, sn)
				}
			}
		}
		if again := subnetsFor(id, 3); again[0] != subnets[0] || again[2] != subnets[2] {
			t.Fatalf("subnetsFor(%s) not deterministic", id)
		}
		seen[subnets[0].V4] = true
	}
	if len(seen) < 1000 {
		t.Fatalf("only %d distinct subnets for 2000 ids", len(seen))
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{"abc123": true, "ABC123": false, "abc12": false, "abc-12": false, "../../": false} {
		if validID(id) != want {
			t.Errorf("validID(%q) = %v", id, !want)
		}
	}
}

func TestHasWireGuardTmpfs(t *testing.T) {
	tests := map[string]bool{
		"49 45 0:40 / /run/wireguard rw,relatime - tmpfs weft-wg rw,mode=700":                     true,
		"49 45 0:40 / /run/wireguard rw,relatime shared:5 - tmpfs weft-wg rw,mode=700":            true,
		"49 45 0:40 / /run/wireguard rw,relatime - tmpfs tmpfs rw,mode=700":                       false,
		"49 45 0:40 / /run rw,relatime - tmpfs weft-wg rw":                                        false,
		"25 1 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=401000k": false,
		"": false,
	}
	for line, want := range tests {
		if got := hasWireGuardTmpfs(line); got != want {
			t.Errorf("hasWireGuardTmpfs(%q) = %v, want %v", line, got, want)
		}
	}
}

func TestMountIsSites(t *testing.T) {
	inodes := map[uint64]bool{4026532281: true}
	tests := map[string]bool{
		"600 30 0:4 net:[4026532281] /run/netns/wtb-abc123-h1 rw - nsfs nsfs rw":     true,
		"600 30 0:4 net:[4026532281] /somewhere/else rw - nsfs nsfs rw":              true,
		"600 30 0:4 net:[4026530000] /run/netns/other rw - nsfs nsfs rw":             false,
		"601 30 0:4 net:[4026530000] /run/netns/wtb-abc123-router rw - nsfs nsfs rw": true,
		"602 30 0:4 net:[4026530000] /run/netns/wtb-zzz999-h1 rw - nsfs nsfs rw":     false,
	}
	for line, want := range tests {
		if got := mountIsSites(line, Prefix+"abc123", inodes); got != want {
			t.Errorf("mountIsSites(%q) = %v, want %v", line, got, want)
		}
	}
}

func TestProcessStartAndGone(t *testing.T) {
	start, err := processStart(os.Getpid())
	if err != nil || start == 0 {
		t.Fatalf("processStart(self) = %d, %v", start, err)
	}
	if processGone(os.Getpid()) {
		t.Fatal("processGone(self) = true")
	}
	st := &siteState{PID: os.Getpid(), PIDStart: start}
	if !st.ownerAlive() {
		t.Fatal("ownerAlive false for this process")
	}
	st.PIDStart++
	if st.ownerAlive() {
		t.Fatal("ownerAlive true for a reused pid (different start time)")
	}
}

func TestConnectivityErrorShowsTheFullMatrix(t *testing.T) {
	a := &Netns{label: "h1"}
	b := &Netns{label: "h2"}
	err := error(&ConnectivityError{
		Rounds:  3,
		Elapsed: 2 * time.Second,
		Outcomes: []Outcome{
			{Check: Reach(a, "10.200.0.12", Ping()), Seen: true},
			{Check: NoReach(b, "10.200.0.11", TCP(80)), Seen: true},
			{Check: Reach(b, "10.200.0.11", TCP(7700)), Seen: false, Detail: "connection refused"},
		},
	})
	var ce *ConnectivityError
	if !errors.As(err, &ce) {
		t.Fatal("not a ConnectivityError")
	}
	msg := err.Error()
	for _, want := range []string{
		"2 of 3 checks wrong after 2s (3 rounds)",
		"FROM", "EXPECT", "SEEN",
		"h1", "10.200.0.12", "ping",
		"tcp:80", "tcp:7700", "connection refused",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("report lacks %q:\n%s", want, msg)
		}
	}
	if lines := strings.Count(msg, "\n"); lines != 5 {
		t.Errorf("want header, title and one line per check (5 lines), got %d:\n%s", lines, msg)
	}
	if strings.Count(msg, "✗") != 2 {
		t.Errorf("want the two wrong checks marked:\n%s", msg)
	}
}

func TestMesh(t *testing.T) {
	hosts := []*Host{{name: "h1", ns: &Netns{label: "h1"}, addr: "a1"}, {name: "h2", ns: &Netns{label: "h2"}, addr: "a2"}, {name: "h3", ns: &Netns{label: "h3"}, addr: "a3"}}
	cs := Mesh(hosts, Ping(), func(from, to *Host) bool { return from.name != "h3" && to.name != "h3" })
	if len(cs) != 6 {
		t.Fatalf("want 6 checks, got %d", len(cs))
	}
	for _, c := range cs {
		from := c.From.Netns().Label()
		if want := from != "h3" && c.To != "a3"; c.Reachable != want {
			t.Errorf("%s -> %s: reachable %v, want %v", from, c.To, c.Reachable, want)
		}
		if c.To == "a"+from[1:] {
			t.Errorf("self check %s -> %s", from, c.To)
		}
	}
}
