package ipip

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
	"testing/fstest"
)

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func TestProbe(t *testing.T) {
	const rel = "6.1.0-18-amd64"
	dir := "lib/modules/" + rel + "/"
	for _, tc := range []struct {
		name      string
		fs        fstest.MapFS
		available bool
		reason    string
	}{
		{"loaded", fstest.MapFS{"sys/module/ipip/parameters/log_ecn_error": {}}, true, "loaded"},
		{"built in", fstest.MapFS{dir + "modules.builtin": {Data: []byte("kernel/net/ipv4/tunnel4.ko\nkernel/net/ipv4/ipip.ko\n")}}, true, "built into"},
		{"installed, compressed", fstest.MapFS{
			dir + "modules.builtin": {Data: []byte("kernel/net/ipv4/tunnel4.ko\n")},
			dir + "modules.dep":     {Data: []byte("kernel/net/ipv4/ipip.ko.xz: kernel/net/ipv4/tunnel4.ko.xz kernel/net/ipv4/ip_tunnel.ko.xz\n")},
		}, true, "loads on first use"},
		{"only a dependency of another module", fstest.MapFS{
			dir + "modules.dep": {Data: []byte("kernel/net/ipv4/gre.ko: kernel/net/ipv4/ipip.ko\n")},
		}, false, "no ipip module"},
		{"config says not set", fstest.MapFS{"proc/config.gz": {Data: gz(t, "CONFIG_NET_IP_TUNNEL=y\n# CONFIG_NET_IPIP is not set\n")}}, false, "CONFIG_NET_IPIP is not set"},
		{"config says built in", fstest.MapFS{"proc/config.gz": {Data: gz(t, "CONFIG_NET_IPIP=y\n")}}, true, "CONFIG_NET_IPIP=y"},
		{"config says module, none installed", fstest.MapFS{"proc/config.gz": {Data: gz(t, "CONFIG_NET_IPIP=m\n")}}, false, "not installed"},
		{"nothing known", fstest.MapFS{}, false, "no ipip module"},
	} {
		got := Probe(tc.fs, rel)
		if got.Available != tc.available || !strings.Contains(got.Reason, tc.reason) {
			t.Errorf("%s: %+v, want available=%v with %q", tc.name, got, tc.available, tc.reason)
		}
	}
}
