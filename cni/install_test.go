package cni

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func fakeBinary(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "weft")
	if err := os.WriteFile(p, []byte(content), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInstall(t *testing.T) {
	root := t.TempDir()
	binDir, confDir := filepath.Join(root, "opt/cni/bin"), filepath.Join(root, "etc/cni/net.d")
	opts := InstallOptions{Binary: fakeBinary(t, "#!weft v1"), BinDir: binDir, ConfDir: confDir, Socket: "/run/weft/weft.sock"}

	rep, err := Install(opts)
	if err != nil {
		t.Fatal(err)
	}
	want := InstallReport{Plugin: filepath.Join(binDir, "weft"), PluginChanged: true,
		Conflist: filepath.Join(confDir, "10-weft.conflist"), ConflistChanged: true}
	if *rep != want {
		t.Fatalf("report %+v, want %+v", *rep, want)
	}
	assertFile(t, rep.Plugin, "#!weft v1", 0o755)

	// The conflist is what a runtime (libcni) loads for network "weft".
	list, err := libcni.LoadNetworkConf(confDir, "weft")
	if err != nil {
		t.Fatalf("libcni cannot load the conflist: %v", err)
	}
	if list.CNIVersion != "1.0.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "weft" ||
		!list.Plugins[0].Network.Capabilities["ips"] {
		t.Fatalf("conflist %s", list.Bytes)
	}
	// Its weft section is one the plugin accepts.
	conf, err := ParseNetConf(list.Plugins[0].Bytes)
	if err != nil || conf.Socket != "/run/weft/weft.sock" {
		t.Fatalf("plugin section %s: %+v, %v", list.Plugins[0].Bytes, conf, err)
	}
	confInfo, _ := os.Stat(rep.Conflist)

	// Again: nothing changes.
	rep, err = Install(opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.PluginChanged || rep.ConflistChanged {
		t.Fatalf("second install changed something: %+v", *rep)
	}
	if again, _ := os.Stat(rep.Conflist); !again.ModTime().Equal(confInfo.ModTime()) || !os.SameFile(again, confInfo) {
		t.Fatal("second install rewrote the conflist")
	}

	// A new binary, a new socket and portmap present: both are replaced,
	// and the conflist chains portmap.
	if err := os.WriteFile(filepath.Join(binDir, "portmap"), []byte("#!portmap"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts.Binary = fakeBinary(t, "#!weft v2")
	opts.Socket = "/run/weft/other.sock"
	rep, err = Install(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.PluginChanged || !rep.ConflistChanged || !rep.Portmap {
		t.Fatalf("report %+v", *rep)
	}
	assertFile(t, rep.Plugin, "#!weft v2", 0o755)
	list, err = libcni.LoadNetworkConf(confDir, "weft")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 2 || list.Plugins[1].Network.Type != "portmap" || !list.Plugins[1].Network.Capabilities["portMappings"] ||
		!strings.Contains(string(list.Plugins[0].Bytes), `"/run/weft/other.sock"`) {
		t.Fatalf("conflist %s", list.Bytes)
	}
	assertOnly(t, binDir, "portmap", "weft")
	assertOnly(t, confDir, "10-weft.conflist")
}

func TestInstallNetworkName(t *testing.T) {
	root := t.TempDir()
	rep, err := Install(InstallOptions{Binary: fakeBinary(t, "x"), BinDir: root, ConfDir: root, Socket: "/s.sock", NetworkName: "edge-net"})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(rep.Conflist) != "10-edge-net.conflist" {
		t.Fatalf("conflist %s", rep.Conflist)
	}
	if _, err := libcni.LoadNetworkConf(root, "edge-net"); err != nil {
		t.Fatal(err)
	}
}

func TestInstallRefuses(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := fakeBinary(t, "x")
	good := filepath.Join(root, "bin")
	tests := []struct {
		name string
		opts InstallOptions
		want string
	}{
		{"bin dir under a file", InstallOptions{Binary: bin, BinDir: filepath.Join(file, "bin"), ConfDir: filepath.Join(root, "conf"), Socket: "/s"},
			"--bin-dir " + filepath.Join(file, "bin") + ": cannot create it: not a directory"},
		// /proc/self is a directory nobody can create files in: the
		// plugin is staged in the bin dir, then the conflist fails, and
		// the bin dir must be left as it was.
		{"conf dir not writable", InstallOptions{Binary: bin, BinDir: good, ConfDir: "/proc/self", Socket: "/s"},
			"--conf-dir /proc/self: cannot write the conflist"},
		{"bad network name", InstallOptions{Binary: bin, BinDir: good, ConfDir: good, Socket: "/s", NetworkName: "a/b"},
			`--network-name "a/b"`},
		{"relative socket", InstallOptions{Binary: bin, BinDir: good, ConfDir: good, Socket: "weft.sock"},
			`--socket "weft.sock": the plugin needs an absolute path`},
		{"missing binary", InstallOptions{Binary: filepath.Join(root, "nope"), BinDir: good, ConfDir: good, Socket: "/s"},
			"reading the weft binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Install(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(good); len(entries) != 0 {
				t.Fatalf("a refused install left %v in %s", entries, good)
			}
		})
	}
}

func assertFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if !bytes.Equal(b, []byte(content)) || fi.Mode().Perm() != mode {
		t.Fatalf("%s: %q mode %v, want %q mode %v", path, b, fi.Mode().Perm(), content, mode)
	}
}

// assertOnly checks that dir holds exactly names: no temporary files left.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}
