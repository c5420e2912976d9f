package workloadsbench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// benchTOML: production log level (the test bed defaults to debug, which
// costs CPU and memory the measurements should not include); BGP plays no
// part here.
const benchTOML = "[log]\nlevel = \"info\"\n[bgp]\nenabled = false\n"

// startCluster builds a site of n hosts whose first host bootstraps the
// cluster and whose others join with its token, with extra merged into
// every host's configuration, and waits until every agent is ready and all
// are healthy members.
func startCluster(b *testing.B, n int, extra string) *testbed.Site {
	b.Helper()
	site := testbed.New(b, testbed.Options{
		Hosts: n, NoStart: true, ReadyTimeout: 90 * time.Second, ExpectTimeout: 60 * time.Second,
		ExtraTOML: benchTOML + extra,
	})
	if err := site.StartCluster(context.Background()); err != nil {
		b.Fatal(err)
	}
	return site
}

// workload is a namespace attached by `weft workload add`.
type workload struct {
	*testbed.Workload
	ip string
}

// add runs `weft workload add name --netns path extra... -o json` on the
// workload's host and returns its IPv4 address.
func add(w *testbed.Workload, extra ...string) (string, error) {
	args := append([]string{"workload", "add", w.Name(), "--netns", w.Path(), "-o", "json"}, extra...)
	out, err := w.Host().Weft(args...)
	if err != nil {
		return "", err
	}
	var info localapi.Workload
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return "", fmt.Errorf("weft workload add printed %q: %w", out, err)
	}
	for _, p := range info.IPs {
		if pp, err := netip.ParsePrefix(p); err == nil && pp.Addr().Is4() {
			return pp.Addr().String(), nil
		}
	}
	return "", fmt.Errorf("weft workload add answered no IPv4 address: %+v", info)
}

// attach creates and attaches a workload, failing the benchmark on error.
func attach(b *testing.B, site *testbed.Site, h *testbed.Host, name string, extra ...string) *workload {
	b.Helper()
	w := site.AddWorkload(h, name)
	ip, err := add(w, extra...)
	if err != nil {
		b.Fatalf("%s: weft workload add %s: %v", h.Name(), name, err)
	}
	return &workload{Workload: w, ip: ip}
}

// listen accepts (and closes) TCP connections on port inside n until the
// benchmark ends: the target of reachability probes.
func listen(b *testing.B, n *testbed.Netns, port int) {
	b.Helper()
	var ln net.Listener
	if err := n.Do(func() error {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		ln = l
		return err
	}); err != nil {
		b.Fatalf("listen in %s: %v", n.Label(), err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// statusKB is a field of a process's /proc/PID/status in KiB (VmRSS: the
// resident set; RssFile: its file-backed part).
func statusKB(pid int, field string) (int, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func cpuCount() int { return runtime.NumCPU() }
