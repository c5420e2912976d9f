package config

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const examplePath = "../../config.example.toml"

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	cfg, err := parse([]byte(doc), "test.toml", defaults("testhost"))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, doc)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	want := Config{
		Node:    Node{Name: "web-1", DataDir: "/var/lib/weft"},
		Cluster: Cluster{Listen: "0.0.0.0:7700", Voters: 3},
		API:     API{Socket: "/run/weft/weft.sock"},
		Metrics: Metrics{Listen: "0.0.0.0:9091"},
		Log:     Log{Level: "info", Format: "text"},
		Network: Network{
			MTU:             0,
			InterfacePrefix: "weft",
			Pools: []Pool{{
				Name: "default-ipv4", CIDR: "10.244.0.0/16", BlockSize: 26,
				VXLANMode: "Always", IPIPMode: "Never", NATOutgoing: true, NodeSelector: "all()",
			}},
			ResyncPeriod: Duration{90 * time.Second},
		},
		BGP: BGP{Enabled: true, ASNumber: 64512, ListenPort: 179, NodeMesh: true,
			Keepalive: Duration{time.Second}, HoldTime: Duration{3 * time.Second}, SecretsDir: "/etc/weft/secrets"},
		WireGuard: WireGuard{Enabled: false, ListenPort: 51820, Interface: "weft.wg"},
		VXLAN:     VXLAN{Port: 4789, VNI: 4096, Interface: "weft.vxlan"},
		Dataplane: Dataplane{
			Backend:          "nftables",
			IptablesBackend:  "auto",
			FailsafeInbound:  []string{"tcp:22", "udp:68", "tcp:179", "tcp:7700", "udp:51820", "udp:4789"},
			FailsafeOutbound: []string{"udp:53", "udp:67", "tcp:179", "tcp:7700", "udp:51820", "udp:4789"},
		},
		IPAM: IPAM{GCInterval: Duration{time.Minute}, LeakGracePeriod: Duration{15 * time.Minute}, EmptyBlockGracePeriod: Duration{5 * time.Minute}},
	}
	got := defaults(" Web-1\n")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults:\n got  %+v\n want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// An empty file is exactly the defaults.
	empty, err := parse(nil, "empty.toml", defaults("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*empty, want) {
		t.Fatalf("empty file:\n got  %+v\n want %+v", *empty, want)
	}
	// Default() reads the real hostname.
	if h, err := os.Hostname(); err == nil && Default().Node.Name != strings.ToLower(strings.TrimSpace(h)) {
		t.Errorf("Default().Node.Name = %q, hostname %q", Default().Node.Name, h)
	}
}

// TestEveryKeyDecodes sets every key to a value other than its default and
// checks each lands in its field, so a field the decoder mishandles fails here.
func TestEveryKeyDecodes(t *testing.T) {
	doc := `
[node]
name = "edge-7"
address = "192.0.2.7,2001:db8::7"
data_dir = "/srv/weft"
labels = { zone = "b", "example.com/rack" = "r-2" }

[cluster]
listen = "192.0.2.7:7800"
advertise = "198.51.100.7:17800"
join = ["192.0.2.1:7800", "node2.example.com:7800"]
token_file = "/etc/weft/token"
voters = 5

[api]
socket = "/run/weft-test/api.sock"

[metrics]
listen = ""

[log]
level = "debug"
format = "json"

[network]
mtu = 1400
interface_prefix = "wl"
resync_period = "1m"

[[network.pool]]
name = "pods-v6"
cidr = "fd00:1::/48"
block_size = 120
vxlan_mode = "CrossSubnet"
ipip_mode = "Never"
nat_outgoing = true
disabled = true
node_selector = "zone == 'b'"

[bgp]
enabled = false
as_number = 4200000000
listen_port = 1179
node_mesh = false
keepalive = "10s"
hold_time = "30s"
secrets_dir = "/srv/weft/secrets"

[[bgp.peer]]
address = "192.0.2.254"
as_number = 65000

[wireguard]
enabled = true
listen_port = 51830
interface = "wg0"
require = true
host_encryption = true
key_rotation_interval = "720h"
persistent_keepalive = "25s"

[vxlan]
port = 8472
vni = 1
interface = "vx0"
tx_checksum_offload = true

[dataplane]
backend = "ebpf"
iptables_backend = "legacy"
failsafe_inbound = ["tcp:2222"]
failsafe_outbound = []

[ipam]
gc_interval = "30s"
leak_grace_period = "2m"
empty_block_grace_period = "10m"
`
	want := Config{
		Node: Node{Name: "edge-7", Address: "192.0.2.7,2001:db8::7", DataDir: "/srv/weft",
			Labels: map[string]string{"zone": "b", "example.com/rack": "r-2"}},
		Cluster: Cluster{Listen: "192.0.2.7:7800", Advertise: "198.51.100.7:17800",
			Join: []string{"192.0.2.1:7800", "node2.example.com:7800"}, TokenFile: "/etc/weft/token", Voters: 5},
		API:     API{Socket: "/run/weft-test/api.sock"},
		Metrics: Metrics{Listen: ""},
		Log:     Log{Level: "debug", Format: "json"},
		Network: Network{MTU: 1400, InterfacePrefix: "wl", ResyncPeriod: Duration{time.Minute},
			Pools: []Pool{{Name: "pods-v6", CIDR: "fd00:1::/48", BlockSize: 120, VXLANMode: "CrossSubnet",
				IPIPMode: "Never", NATOutgoing: true, Disabled: true, NodeSelector: "zone == 'b'"}}},
		BGP: BGP{Enabled: false, ASNumber: 4200000000, ListenPort: 1179, NodeMesh: false,
			Keepalive: Duration{10 * time.Second}, HoldTime: Duration{30 * time.Second}, SecretsDir: "/srv/weft/secrets",
			Peers: []BGPPeer{{Address: "192.0.2.254", ASNumber: 65000}}},
		WireGuard: WireGuard{Enabled: true, ListenPort: 51830, Interface: "wg0", Require: true, HostEncryption: true,
			KeyRotationInterval: Duration{720 * time.Hour}, PersistentKeepalive: Duration{25 * time.Second}},
		VXLAN:     VXLAN{Port: 8472, VNI: 1, Interface: "vx0", TxChecksumOffload: true},
		Dataplane: Dataplane{Backend: "ebpf", IptablesBackend: "legacy", FailsafeInbound: []string{"tcp:2222"}},
		IPAM:      IPAM{GCInterval: Duration{30 * time.Second}, LeakGracePeriod: Duration{2 * time.Minute}, EmptyBlockGracePeriod: Duration{10 * time.Minute}},
	}
	got := mustParse(t, doc)
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("decoded:\n got  %+v\n want %+v", *got, want)
	}
	// Every key of the struct is set to a non-zero value above except the
	// ones whose zero value is the point (metrics.listen, bgp.enabled, ...):
	// make sure the doc above really covers every key.
	for _, key := range structKeys(reflect.TypeOf(Config{}), "") {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(lastPart(key)) + ` = `).MatchString(doc) {
			t.Errorf("key %s is not exercised by this test", key)
		}
	}
}

func TestGoodConfigs(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, c *Config)
	}{
		{"pools replace the default pool and get per-pool defaults", `
[[network.pool]]
name = "v4"
cidr = "10.10.0.0/16"
[[network.pool]]
name = "v6"
cidr = "fd00:10::/48"
`, func(t *testing.T, c *Config) {
			want := []Pool{
				{Name: "v4", CIDR: "10.10.0.0/16", BlockSize: 26, VXLANMode: "Never", IPIPMode: "Never", NodeSelector: "all()"},
				{Name: "v6", CIDR: "fd00:10::/48", BlockSize: 122, VXLANMode: "Never", IPIPMode: "Never", NodeSelector: "all()"},
			}
			if !reflect.DeepEqual(c.Network.Pools, want) {
				t.Errorf("pools = %+v", c.Network.Pools)
			}
		}},
		{"an empty pool array means no pool", "[network]\npool = []\n", func(t *testing.T, c *Config) {
			if len(c.Network.Pools) != 0 {
				t.Errorf("pools = %+v", c.Network.Pools)
			}
		}},
		{"a disabled pool may be smaller than its blocks", `
[[network.pool]]
name = "tiny"
cidr = "10.9.0.0/28"
disabled = true
`, func(t *testing.T, c *Config) {
			if c.Network.Pools[0].BlockSize != 26 {
				t.Errorf("block size = %d", c.Network.Pools[0].BlockSize)
			}
		}},
		{"ipip on an IPv4 pool", `
[[network.pool]]
name = "ipip"
cidr = "10.9.0.0/16"
ipip_mode = "CrossSubnet"
`, func(t *testing.T, c *Config) {
			if p := c.Network.Pools[0]; p.IPIPMode != "CrossSubnet" || p.VXLANMode != "Never" {
				t.Errorf("pool = %+v", p)
			}
		}},
		{`name = "" means the hostname`, "[node]\nname = \"\"\n", func(t *testing.T, c *Config) {
			if c.Node.Name != "testhost" {
				t.Errorf("name = %q", c.Node.Name)
			}
		}},
		{"dotted keys and inline tables", "node.labels.zone = \"a\"\ncluster = { voters = 1 }\n", func(t *testing.T, c *Config) {
			if c.Node.Labels["zone"] != "a" || c.Cluster.Voters != 1 {
				t.Errorf("labels = %v voters = %d", c.Node.Labels, c.Cluster.Voters)
			}
		}},
		{"TOML 1.1 multi-line inline table", "[node]\nlabels = {\n  zone = \"a\",\n  rack = \"r1\",\n}\n", func(t *testing.T, c *Config) {
			if len(c.Node.Labels) != 2 {
				t.Errorf("labels = %v", c.Node.Labels)
			}
		}},
		{"IPv6 first, IPv4 second, spaces", "[node]\naddress = \"2001:db8::1 , 192.0.2.1\"\n", func(t *testing.T, c *Config) {
			v4, v6 := c.Node.Addresses()
			if v4 != netip.MustParseAddr("192.0.2.1") || v6 != netip.MustParseAddr("2001:db8::1") {
				t.Errorf("addresses = %v %v", v4, v6)
			}
		}},
		{"IPv6 listeners", "[cluster]\nlisten = \"[::]:7700\"\nadvertise = \"[2001:db8::1]:7700\"\n[metrics]\nlisten = \"[::1]:9091\"\n", nil},
		{"failsafe with networks; empty lists", `
[dataplane]
failsafe_inbound = ["tcp:10.0.0.0/8:22", "udp:fd00::/8:53", "sctp:[fd00::/8]:9", "tcp:0.0.0.0/0:179"]
failsafe_outbound = []
`, func(t *testing.T, c *Config) {
			if len(c.Dataplane.InboundFailsafe()) != 4 || c.Dataplane.FailsafeOutbound != nil {
				t.Errorf("failsafe = %v / %v", c.Dataplane.FailsafeInbound, c.Dataplane.FailsafeOutbound)
			}
		}},
		{"bgp peers in Calico's peerIP forms", `
[[bgp.peer]]
address = "192.0.2.1"
as_number = 65000
[[bgp.peer]]
address = "192.0.2.2:1179"
as_number = 65000
[[bgp.peer]]
address = "[2001:db8::2]:179"
as_number = 65001
`, func(t *testing.T, c *Config) {
			if len(c.BGP.Peers) != 3 {
				t.Errorf("peers = %v", c.BGP.Peers)
			}
		}},
		{"same port on different listen addresses", "[cluster]\nlisten = \"192.0.2.1:7700\"\n[metrics]\nlisten = \"127.0.0.1:7700\"\n", nil},
		{"wireguard port may equal vxlan port while wireguard is off", "[wireguard]\nlisten_port = 4789\n", nil},
		{"multi-line strings and comments do not confuse line finding", `
[node]
name = "n1"  # a comment with [brackets] and key = "value"
labels = { note = "x" }
[cluster]
token_file = '''
/etc/weft/token'''
voters = 1
`, func(t *testing.T, c *Config) {
			if c.Cluster.TokenFile != "/etc/weft/token" || c.Cluster.Voters != 1 {
				t.Errorf("cluster = %+v", c.Cluster)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.doc)
			if tt.check != nil {
				tt.check(t, c)
			}
			assertRoundTrip(t, c)
		})
	}
}

// assertRoundTrip checks that Effective output parses back to an equal Config.
func assertRoundTrip(t *testing.T, c *Config) {
	t.Helper()
	out, err := c.Effective()
	if err != nil {
		t.Fatalf("Effective: %v", err)
	}
	back, err := parse(out, "effective.toml", defaults("testhost"))
	if err != nil {
		t.Fatalf("Effective output does not parse: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("round trip differs:\n got  %+v\n want %+v\n%s", back, c, out)
	}
}

func TestEffective(t *testing.T) {
	c := defaults("testhost")
	out, err := c.Effective()
	if err != nil {
		t.Fatal(err)
	}
	// Spot-check the layout users see from `weft config check`.
	for _, want := range []string{
		"[node]\nname = \"testhost\"\n",
		"[cluster]\nlisten = \"0.0.0.0:7700\"\n",
		"resync_period = \"90s\"\n\n[[network.pool]]\nname = \"default-ipv4\"\n",
		"failsafe_inbound = [\"tcp:22\", \"udp:68\", \"tcp:179\", \"tcp:7700\", \"udp:51820\", \"udp:4789\"]\n",
		"labels = {}\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Effective output lacks %q:\n%s", want, out)
		}
	}
	assertRoundTrip(t, &c)

	// Strings that need escaping survive.
	c.Node.Labels = map[string]string{"example.com/zone": "a", "k": "v"}
	c.Node.Address = ""
	c.Cluster.Join = []string{"a\"b\\c\x01é:1"} // invalid, but Effective must still write it faithfully
	out, err = c.Effective()
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if _, err := toml.Decode(string(out), &raw); err != nil {
		t.Fatalf("Effective wrote invalid TOML: %v\n%s", err, out)
	}
	join := raw["cluster"].(map[string]any)["join"].([]any)[0]
	if join != c.Cluster.Join[0] {
		t.Errorf("join = %q, want %q", join, c.Cluster.Join[0])
	}
}

func TestExampleParsesToTheDefaults(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parse(data, "config.example.toml", defaults("testhost"))
	if err != nil {
		t.Fatalf("config.example.toml: %v", err)
	}
	want := defaults("testhost")
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("config.example.toml does not show the defaults:\n got  %+v\n want %+v", *got, want)
	}
	// With its commented-out examples enabled it still parses.
	if _, err := parse([]byte(uncommentExamples(string(data))), "uncommented.toml", defaults("testhost")); err != nil {
		t.Fatalf("config.example.toml with examples enabled: %v", err)
	}
	// Load reads the real file the same way.
	if _, err := Load(examplePath); err != nil {
		t.Fatalf("Load: %v", err)
	}
}

// uncommentExamples enables the example lines of config.example.toml: a "#"
// directly followed by a [table] or a key assignment.
func uncommentExamples(doc string) string {
	return regexp.MustCompile(`(?m)^#(\[|[a-z_]+ = )`).ReplaceAllString(doc, "$1")
}

// TestExampleDocumentsEveryKey keeps config.example.toml complete: every
// toml key of Config must be written in it (commented-out examples count).
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	doc := uncommentExamples(string(data))
	var raw map[string]any
	if _, err := toml.Decode(doc, &raw); err != nil {
		t.Fatal(err)
	}
	keys := structKeys(reflect.TypeOf(Config{}), "")
	if len(keys) < 35 {
		t.Fatalf("only %d keys found by reflection: %v", len(keys), keys)
	}
	for _, key := range keys {
		if !hasKey(raw, strings.Split(key, ".")) {
			t.Errorf("config.example.toml does not document %s", key)
		}
	}
	// And each key line carries a comment (trailing, or on the line above).
	lines := strings.Split(doc, "\n")
	keyLine := regexp.MustCompile(`^[a-z_]+ = `)
	for i, l := range lines {
		if keyLine.MatchString(l) && !strings.Contains(l, "#") && (i == 0 || !strings.HasPrefix(lines[i-1], "#")) {
			t.Errorf("config.example.toml line %d has no comment: %s", i+1, l)
		}
	}
}

// structKeys lists the dotted toml keys of t (array-of-table and map fields
// by their own name; array elements by their fields).
func structKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		name := tomlName(t.Field(i))
		if name == "" {
			continue
		}
		key := prefix + name
		ft := t.Field(i).Type
		switch {
		case ft == reflect.TypeOf(Duration{}):
			keys = append(keys, key)
		case ft.Kind() == reflect.Struct:
			keys = append(keys, structKeys(ft, key+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, structKeys(ft.Elem(), key+".")...)
		default:
			keys = append(keys, key)
		}
	}
	return keys
}

func lastPart(key string) string { return key[strings.LastIndexByte(key, '.')+1:] }

func hasKey(v any, path []string) bool {
	if len(path) == 0 {
		return true
	}
	switch x := v.(type) {
	case map[string]any:
		next, ok := x[path[0]]
		return ok && hasKey(next, path[1:])
	case []map[string]any:
		return len(x) > 0 && hasKey(x[0], path)
	}
	return false
}

func TestAllProblemsAreCollectedInFileOrder(t *testing.T) {
	doc := `[node]
name = "n1"

[cluster]
voters = 4
listen = "nowhere"

[[network.pool]]
name = "a"
cidr = 10

[log]
levle = "debug"
`
	_, err := parse([]byte(doc), "multi.toml", defaults("testhost"))
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v", err)
	}
	var got []string
	for _, fe := range cerr.Errors {
		got = append(got, fe.Error())
	}
	want := []string{
		`multi.toml:5: cluster.voters: must be 1, 3, 5 or 7, got 4`,
		`multi.toml:6: cluster.listen: must be host:port (IPv6 in brackets: [::1]:7700), got "nowhere"`,
		// Only the type error: "cidr: required" would be noise.
		`multi.toml:10: network.pool[0].cidr: must be a string, got integer 10`,
		`multi.toml:13: log.levle: unknown key (did you mean "level"?)`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("problems:\n got  %q\n want %q", got, want)
	}
	if e := err.Error(); e != want[0]+" (and 3 more problems)" {
		t.Errorf("Error() = %q", e)
	}
	if cerr.Errors[0] != (FieldError{File: "multi.toml", Line: 5, Key: "cluster.voters", Msg: "must be 1, 3, 5 or 7, got 4"}) {
		t.Errorf("first = %#v", cerr.Errors[0])
	}
}

func TestKeysAreCaseSensitive(t *testing.T) {
	_, err := parse([]byte("[cluster]\nVoters = 5\n"), "c.toml", defaults("h"))
	if err == nil || err.Error() != `c.toml:2: cluster.Voters: unknown key (did you mean "voters"?)` {
		t.Fatalf("err = %v", err)
	}
}

func TestValidateInCode(t *testing.T) {
	c := defaults("testhost")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Cluster.Voters = 2
	c.Network.Pools = append(c.Network.Pools, Pool{Name: "x", CIDR: "10.244.5.0/24", BlockSize: 26, VXLANMode: "Never", IPIPMode: "Never", NodeSelector: "all()"})
	err := c.Validate()
	want := `cluster.voters: must be 1, 3, 5 or 7, got 2 (and 1 more problem)`
	if err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v, want %s", err, want)
	}
	var cerr *Error
	errors.As(err, &cerr)
	if got := cerr.Errors[1].Error(); got != `network.pool[1].cidr: 10.244.5.0/24 overlaps pool "default-ipv4" (10.244.0.0/16, network.pool[0])` {
		t.Errorf("second problem = %s", got)
	}
}

func TestDefaultHostnameThatIsNotANodeName(t *testing.T) {
	_, err := parse(nil, "c.toml", defaults("my_host"))
	want := `c.toml: node.name: must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.'; starting and ending with a letter or digit), got "my_host"; set node.name when the hostname is not a valid node name`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "weft.toml")
	if err := os.WriteFile(path, []byte("[cluster]\nvoters = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil || c.Cluster.Voters != 1 {
		t.Fatalf("Load = %+v, %v", c, err)
	}
	if err := os.WriteFile(path, []byte("[cluster]\nvoters = 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":2: cluster.voters: ") {
		t.Fatalf("Load error = %v", err)
	}
	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.toml") {
		t.Fatalf("Load of a missing file = %v", err)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		fe   FieldError
		want string
	}{
		{FieldError{File: "f.toml", Line: 3, Key: "a.b", Msg: "bad"}, "f.toml:3: a.b: bad"},
		{FieldError{File: "f.toml", Key: "a.b", Msg: "bad"}, "f.toml: a.b: bad"},
		{FieldError{Line: 3, Key: "a.b", Msg: "bad"}, "line 3: a.b: bad"},
		{FieldError{Key: "a.b", Msg: "bad"}, "a.b: bad"},
		{FieldError{File: "f.toml", Line: 1, Msg: "invalid TOML: x"}, "f.toml:1: invalid TOML: x"},
	}
	for _, tt := range tests {
		if got := tt.fe.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.fe, got, tt.want)
		}
	}
}

func TestLineIndex(t *testing.T) {
	doc := `# comment [not.a.table]
title = "x" # key = 1
s = """
[fake]
fake = 1
"""
lit = '''a'''''
[a]
b.c = 1
d = [
  1,
  { e = 2 },
  [3, 4],
]
[[a.list]]
x = 1
[[a.list]]
x = 2
[[a.list.sub]]
y = 1
[a.list.tbl]
z = 1
[ "q.k" . 'r' ]
"esc\u0041" = 1
t = 1979-05-27 07:32:00Z
u = 3
`
	want := map[string]int{
		"title":              2,
		"s":                  3,
		"lit":                7,
		"a":                  8,
		"a.b":                9,
		"a.b.c":              9,
		"a.d":                10,
		"a.d[0]":             11,
		"a.d[1]":             12,
		"a.d[1].e":           12,
		"a.d[2]":             13,
		"a.d[2][1]":          13,
		"a.list":             15,
		"a.list[0]":          15,
		"a.list[0].x":        16,
		"a.list[1]":          17,
		"a.list[1].x":        18,
		"a.list[1].sub[0]":   19,
		"a.list[1].sub[0].y": 20,
		"a.list[1].tbl.z":    22,
		`"q.k".r`:            23,
		`"q.k".r.escA`:       24,
		`"q.k".r.t`:          25,
		`"q.k".r.u`:          26,
	}
	var raw map[string]any
	if _, err := toml.Decode(doc, &raw); err != nil {
		t.Fatalf("test document is not valid TOML: %v", err)
	}
	idx := indexLines(doc)
	for k, line := range want {
		if idx[k] != line {
			t.Errorf("line of %s = %d, want %d", k, idx[k], line)
		}
	}
	for _, fake := range []string{"fake", "fake.fake", "not.a.table", "key"} {
		if _, ok := idx[fake]; ok {
			t.Errorf("%s indexed from inside a string or comment", fake)
		}
	}
	// A missing key is found on its nearest written ancestor.
	if got := idx.lineOf(keyPath{}.Key("a").Key("list").Index(1).Key("missing")); got != 17 {
		t.Errorf("lineOf(missing) = %d, want 17", got)
	}
}

func TestHelpers(t *testing.T) {
	c := defaults("h")
	if v4, v6 := c.Node.Addresses(); v4.IsValid() || v6.IsValid() {
		t.Errorf("unset address gives %v %v", v4, v6)
	}
	if got := c.Cluster.ListenAddrPort(); got != netip.MustParseAddrPort("0.0.0.0:7700") {
		t.Errorf("ListenAddrPort = %v", got)
	}
	if got := c.AdvertiseAddrPort(); got.IsValid() {
		t.Errorf("AdvertiseAddrPort with nothing known = %v, want zero (autodetect)", got)
	}
	c.Node.Address = "2001:db8::5,192.0.2.5"
	if got := c.AdvertiseAddrPort(); got != netip.MustParseAddrPort("192.0.2.5:7700") {
		t.Errorf("AdvertiseAddrPort from node.address = %v", got)
	}
	c.Node.Address = "2001:db8::5"
	if got := c.AdvertiseAddrPort(); got != netip.MustParseAddrPort("[2001:db8::5]:7700") {
		t.Errorf("AdvertiseAddrPort from IPv6 node.address = %v", got)
	}
	c.Node.Address = ""
	c.Cluster.Listen = "192.0.2.9:7701"
	if got := c.AdvertiseAddrPort(); got != netip.MustParseAddrPort("192.0.2.9:7701") {
		t.Errorf("AdvertiseAddrPort from a specific listen address = %v", got)
	}
	c.Cluster.Advertise = "198.51.100.1:1"
	if got := c.AdvertiseAddrPort(); got != netip.MustParseAddrPort("198.51.100.1:1") {
		t.Errorf("AdvertiseAddrPort from advertise = %v", got)
	}
	if got := c.Network.Pools[0].Prefix(); got != netip.MustParsePrefix("10.244.0.0/16") {
		t.Errorf("Prefix = %v", got)
	}
	if got := (Pool{CIDR: "junk"}).Prefix(); got.IsValid() {
		t.Errorf("Prefix of junk = %v", got)
	}
	for level, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if got := (Log{Level: level}).SlogLevel(); got != want {
			t.Errorf("SlogLevel(%s) = %v", level, got)
		}
	}
	in := c.Dataplane.InboundFailsafe()
	if len(in) != 6 || in[0] != (ProtoPort{Protocol: "tcp", Port: 22}) || in[5] != (ProtoPort{Protocol: "udp", Port: 4789}) {
		t.Errorf("InboundFailsafe = %v", in)
	}
	if out := c.Dataplane.OutboundFailsafe(); len(out) != 6 || out[0] != (ProtoPort{Protocol: "udp", Port: 53}) {
		t.Errorf("OutboundFailsafe = %v", out)
	}
}

func TestParseProtoPort(t *testing.T) {
	tests := []struct {
		in      string
		want    ProtoPort
		wantErr string
	}{
		{in: "tcp:22", want: ProtoPort{Protocol: "tcp", Port: 22}},
		{in: "udp:65535", want: ProtoPort{Protocol: "udp", Port: 65535}},
		{in: "sctp:10.0.0.0/8:9", want: ProtoPort{Protocol: "sctp", Net: netip.MustParsePrefix("10.0.0.0/8"), Port: 9}},
		{in: "tcp:fd00::/8:22", want: ProtoPort{Protocol: "tcp", Net: netip.MustParsePrefix("fd00::/8"), Port: 22}},
		{in: "tcp:[fd00::/8]:22", want: ProtoPort{Protocol: "tcp", Net: netip.MustParsePrefix("fd00::/8"), Port: 22}},
		{in: "22", wantErr: "must be"},
		{in: "TCP:22", wantErr: "protocol must be"},
		{in: "tcp:0", wantErr: "out of range"},
		{in: "tcp:65536", wantErr: "out of range"},
		{in: "tcp:", wantErr: "not a number"},
		{in: "tcp:ssh", wantErr: "not a number"},
		{in: "tcp:10.0.0.1:22", wantErr: "not a CIDR"},
		{in: "tcp:10.0.0.1/8:22", wantErr: "host bits"},
	}
	for _, tt := range tests {
		got, err := ParseProtoPort(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseProtoPort(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseProtoPort(%q) = %v, %v", tt.in, got, err)
			continue
		}
		if again, err := ParseProtoPort(got.String()); err != nil || again != got {
			t.Errorf("String() %q does not parse back: %v %v", got.String(), again, err)
		}
	}
}

func TestNodeAddress(t *testing.T) {
	tests := []struct {
		in      string
		v4, v6  string
		wantErr string
	}{
		{in: "192.0.2.1", v4: "192.0.2.1"},
		{in: "2001:db8::1", v6: "2001:db8::1"},
		{in: "192.0.2.1,2001:db8::1", v4: "192.0.2.1", v6: "2001:db8::1"},
		{in: "::ffff:192.0.2.1", v4: "192.0.2.1"},
		{in: "2001:db8::1,2001:db8::2", wantErr: "more than one IPv6"},
		{in: "192.0.2.1,", wantErr: "not an IP address"},
		{in: "fe80::1%eth0", wantErr: "zoned"},
		{in: "0.0.0.0", wantErr: "not a unicast"},
		{in: "127.0.0.1", wantErr: "not a unicast"},
		{in: "224.0.0.1", wantErr: "not a unicast"},
	}
	for _, tt := range tests {
		v4, v6, err := parseNodeAddress(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || addrString(v4) != tt.v4 || addrString(v6) != tt.v6 {
			t.Errorf("%q: got %v %v %v", tt.in, v4, v6, err)
		}
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func TestLabelRules(t *testing.T) {
	long := strings.Repeat("a", 64)
	goodKeys := []string{"zone", "a.b_c-d", "example.com/zone", "k8s.io/x", strings.Repeat("a", 63)}
	badKeys := []string{"", "-a", "a-", "example.com/", "/a", "Example.com/a", "a/b/c", long, "a b"}
	for _, k := range goodKeys {
		if err := checkLabelKey(k); err != nil {
			t.Errorf("key %q: %v", k, err)
		}
	}
	for _, k := range badKeys {
		if checkLabelKey(k) == nil {
			t.Errorf("key %q accepted", k)
		}
	}
	for _, v := range []string{"", "a", "A-b_c.d", strings.Repeat("z", 63)} {
		if err := checkLabelValue(v); err != nil {
			t.Errorf("value %q: %v", v, err)
		}
	}
	for _, v := range []string{"-a", "a-", "a b", long, "a/b"} {
		if checkLabelValue(v) == nil {
			t.Errorf("value %q accepted", v)
		}
	}
	for _, n := range []string{"a", "web-1", "web-1.site.example", strings.Repeat("a", 63)} {
		if err := checkDNS1123Subdomain(n); err != nil {
			t.Errorf("name %q: %v", n, err)
		}
	}
	for _, n := range []string{"", "A", "a_b", "-a", "a.", ".a", "a..b", strings.Repeat("a", 64), strings.Repeat("a.", 127) + "a"} {
		if checkDNS1123Subdomain(n) == nil {
			t.Errorf("name %q accepted", n)
		}
	}
}

func TestDurationText(t *testing.T) {
	for d, want := range map[time.Duration]string{90 * time.Second: "90s", time.Second: "1s", 1500 * time.Millisecond: "1.5s", 0: "0s"} {
		b, _ := Duration{d}.MarshalText()
		if string(b) != want {
			t.Errorf("MarshalText(%v) = %s, want %s", d, b, want)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back.Duration != d {
			t.Errorf("UnmarshalText(%s) = %v, %v", b, back, err)
		}
	}
}
