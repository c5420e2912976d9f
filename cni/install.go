package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

// Defaults of `weft install-cni`.
const (
	DefaultBinDir      = "/opt/cni/bin"
	DefaultConfDir     = "/etc/cni/net.d"
	DefaultNetworkName = "weft"
	// ConflistVersion is the CNI version of the conflist Install writes.
	ConflistVersion = "1.0.0"
	// PortmapPlugin is added to the conflist when it is in the bin dir.
	PortmapPlugin = "portmap"
)

// networkNameRE is the library's rule for network names.
var networkNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// InstallOptions says what Install writes where.
type InstallOptions struct {
	// Binary is the weft binary to install (the running one).
	Binary string
	// BinDir receives the plugin as BinDir/weft, ConfDir the conflist
	// ConfDir/10-<NetworkName>.conflist.
	BinDir, ConfDir string
	// NetworkName is the conflist's network name (default "weft").
	NetworkName string
	// Socket is the agent's socket written into the plugin's configuration.
	Socket string
}

// InstallReport says what Install did.
type InstallReport struct {
	Plugin          string `json:"plugin"`
	PluginChanged   bool   `json:"pluginChanged"`
	Conflist        string `json:"conflist"`
	ConflistChanged bool   `json:"conflistChanged"`
	// Portmap is true when the conflist chains the portmap plugin.
	Portmap bool `json:"portmap"`
}

// ConflistName is the file name of the conflist for a network.
func ConflistName(network string) string { return "10-" + network + ".conflist" }

// conflist is the network configuration list Install writes; the field
// order is the file's.
type conflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type weftPluginConf struct {
	Type         string          `json:"type"`
	Socket       string          `json:"socket"`
	Capabilities map[string]bool `json:"capabilities"`
}

type portmapPluginConf struct {
	Type         string          `json:"type"`
	SNAT         bool            `json:"snat"`
	Capabilities map[string]bool `json:"capabilities"`
}

// Conflist renders the network configuration list for weft: the weft
// plugin (with the "ips" capability, so runtimes can ask for specific
// addresses) and, when withPortmap, the portmap plugin for host ports.
func Conflist(network, socket string, withPortmap bool) ([]byte, error) {
	cl := conflist{CNIVersion: ConflistVersion, Name: network, Plugins: []any{
		weftPluginConf{Type: PluginType, Socket: socket, Capabilities: map[string]bool{capabilityIPs: true}},
	}}
	if withPortmap {
		cl.Plugins = append(cl.Plugins, portmapPluginConf{Type: PortmapPlugin, SNAT: true, Capabilities: map[string]bool{"portMappings": true}})
	}
	b, err := json.MarshalIndent(cl, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Install copies the weft binary to BinDir/weft (mode 0755) and writes the
// conflist to ConfDir, each atomically (a temporary file in the target
// directory, renamed into place) and only when its content differs, so a
// repeated install changes nothing. Both files are staged before either is
// renamed, so a directory that cannot be written leaves everything as it
// was; the binary goes into place first, so a runtime never reads a
// conflist whose plugin is missing.
func Install(o InstallOptions) (*InstallReport, error) {
	if o.NetworkName == "" {
		o.NetworkName = DefaultNetworkName
	}
	if !networkNameRE.MatchString(o.NetworkName) {
		return nil, fmt.Errorf("--network-name %q: want letters, digits, '_', '.' or '-', starting with a letter or digit", o.NetworkName)
	}
	if !filepath.IsAbs(o.Socket) {
		return nil, fmt.Errorf("--socket %q: the plugin needs an absolute path", o.Socket)
	}
	var err error
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return nil, err
	}
	if o.ConfDir, err = filepath.Abs(o.ConfDir); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("reading the weft binary: %w", err)
	}
	for _, d := range []struct{ flag, dir string }{{"--bin-dir", o.BinDir}, {"--conf-dir", o.ConfDir}} {
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			return nil, fmt.Errorf("%s %s: cannot create it: %w", d.flag, d.dir, unwrapPath(err))
		}
	}
	rep := &InstallReport{
		Plugin:   filepath.Join(o.BinDir, PluginType),
		Conflist: filepath.Join(o.ConfDir, ConflistName(o.NetworkName)),
		Portmap:  isExecutable(filepath.Join(o.BinDir, PortmapPlugin)),
	}
	conf, err := Conflist(o.NetworkName, o.Socket, rep.Portmap)
	if err != nil {
		return nil, err
	}

	var staged []*stagedFile
	defer func() {
		for _, s := range staged {
			s.discard()
		}
	}()
	if !sameFile(rep.Plugin, bin, 0o755) {
		s, err := stage(o.BinDir, rep.Plugin, bin, 0o755)
		if err != nil {
			return nil, fmt.Errorf("--bin-dir %s: cannot write the plugin: %w", o.BinDir, unwrapPath(err))
		}
		staged = append(staged, s)
		rep.PluginChanged = true
	}
	if !sameFile(rep.Conflist, conf, 0o644) {
		s, err := stage(o.ConfDir, rep.Conflist, conf, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--conf-dir %s: cannot write the conflist: %w", o.ConfDir, unwrapPath(err))
		}
		staged = append(staged, s)
		rep.ConflistChanged = true
	}
	for _, s := range staged {
		if err := s.commit(); err != nil {
			return nil, fmt.Errorf("installing %s: %w", s.target, err)
		}
	}
	return rep, nil
}

// stagedFile is a complete temporary file waiting to be renamed over target.
type stagedFile struct {
	tmp, target string
	done        bool
}

func stage(dir, target string, data []byte, mode os.FileMode) (*stagedFile, error) {
	f, err := os.CreateTemp(dir, "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return nil, err
	}
	s := &stagedFile{tmp: f.Name(), target: target}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		s.discard()
		return nil, werr
	}
	return s, nil
}

func (s *stagedFile) commit() error {
	if err := os.Rename(s.tmp, s.target); err != nil {
		return err
	}
	s.done = true
	return syncDir(filepath.Dir(s.target))
}

func (s *stagedFile) discard() {
	if !s.done {
		os.Remove(s.tmp)
		s.done = true
	}
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sameFile reports whether path is a regular file with exactly data in it
// and the permissions mode.
func sameFile(path string, data []byte, mode os.FileMode) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != mode || fi.Size() != int64(len(data)) {
		return false
	}
	have, err := io.ReadAll(f)
	return err == nil && bytes.Equal(have, data)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// unwrapPath drops the *PathError's repetition of a path the message
// already names ("open /x/.weft.tmp-1: permission denied" becomes
// "permission denied").
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
