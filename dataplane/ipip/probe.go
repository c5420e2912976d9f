package ipip

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Support says whether this kernel can create IP-in-IP devices, and why.
type Support struct {
	Available bool
	// Reason explains the answer in one line (where it was found, or what
	// is missing).
	Reason string
}

// ProbeSystem is [Probe] of the running kernel, over the real filesystem.
func ProbeSystem() Support {
	var u unix.Utsname
	release := ""
	if err := unix.Uname(&u); err == nil {
		release = unix.ByteSliceToString(u.Release[:])
	}
	return Probe(os.DirFS("/"), release)
}

// Probe tells whether a kernel of that release can create IP-in-IP
// devices, reading only (nothing is loaded or created): the module is
// loaded or built in with parameters (sys/module/ipip), built in
// (lib/modules/<release>/modules.builtin, or CONFIG_NET_IPIP=y in
// proc/config.gz), or installed as a module that creating a device loads
// (modules.dep). fsys is rooted at "/" (tests pass a fake tree).
func Probe(fsys fs.FS, release string) Support {
	if _, err := fs.Stat(fsys, "sys/module/ipip"); err == nil {
		return Support{Available: true, Reason: "the ipip module is loaded"}
	}
	modDir := path.Join("lib/modules", release)
	if release != "" {
		if ok, _ := listsModule(fsys, path.Join(modDir, "modules.builtin"), false); ok {
			return Support{Available: true, Reason: "ipip is built into the kernel"}
		}
		if ok, _ := listsModule(fsys, path.Join(modDir, "modules.dep"), true); ok {
			return Support{Available: true, Reason: "the ipip module is installed and loads on first use"}
		}
	}
	switch configValue(fsys, "CONFIG_NET_IPIP") {
	case "y":
		return Support{Available: true, Reason: "ipip is built into the kernel (CONFIG_NET_IPIP=y)"}
	case "n":
		return Support{Reason: "this kernel is built without IP-in-IP (CONFIG_NET_IPIP is not set)"}
	case "m":
		return Support{Reason: fmt.Sprintf("the ipip module is not installed for kernel %s (CONFIG_NET_IPIP=m, not in %s/modules.dep)", release, modDir)}
	}
	return Support{Reason: fmt.Sprintf("no ipip module: not loaded (/sys/module/ipip), not built in and not installed under /%s", modDir)}
}

// listsModule reports whether a modules.builtin or modules.dep file names
// ipip.ko (dep lines are "path: deps"; modules may be compressed).
func listsModule(fsys fs.FS, name string, dep bool) (bool, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p := sc.Text()
		if dep {
			p, _, _ = strings.Cut(p, ":")
		}
		base := path.Base(strings.TrimSpace(p))
		for _, ext := range []string{"", ".xz", ".zst", ".gz"} {
			if base == "ipip.ko"+ext {
				return true, nil
			}
		}
	}
	return false, sc.Err()
}

// configValue reads a kernel option from proc/config.gz: "y", "m", "n"
// (explicitly not set), or "" when unknown.
func configValue(fsys fs.FS, option string) string {
	f, err := fsys.Open("proc/config.gz")
	if err != nil {
		return ""
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return ""
	}
	data, err := io.ReadAll(io.LimitReader(zr, 16<<20))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return ""
	}
	for line := range bytes.Lines(data) {
		l := strings.TrimSpace(string(line))
		if l == "# "+option+" is not set" {
			return "n"
		}
		if v, ok := strings.CutPrefix(l, option+"="); ok {
			return v
		}
	}
	return ""
}
