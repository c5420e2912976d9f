package scalebench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux this runs on).
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time (user + system) a process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields are counted after
	// its closing parenthesis, where field 3 (state) is the first.
	i := strings.LastIndexByte(string(st), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// rssKB is a process's resident set (VmRSS) in KiB.
func rssKB(pid int) (int, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// cpuMeter measures the CPU share of a set of processes over a window.
type cpuMeter struct {
	start time.Time
	base  map[int]time.Duration
}

func startCPU(pids ...int) (*cpuMeter, error) {
	m := &cpuMeter{start: time.Now(), base: map[int]time.Duration{}}
	for _, pid := range pids {
		t, err := cpuTime(pid)
		if err != nil {
			return nil, err
		}
		m.base[pid] = t
	}
	return m, nil
}

// used returns each process's CPU time since start, and the wall time.
func (m *cpuMeter) used() (map[int]time.Duration, time.Duration, error) {
	wall := time.Since(m.start)
	out := map[int]time.Duration{}
	for pid, b := range m.base {
		t, err := cpuTime(pid)
		if err != nil {
			return nil, 0, err
		}
		out[pid] = t - b
	}
	return out, wall, nil
}

// medianRSS samples VmRSS five times 200 ms apart and returns the median,
// in MB.
func medianRSS(pid int) (float64, error) {
	var s []int
	for range 5 {
		kb, err := rssKB(pid)
		if err != nil {
			return 0, err
		}
		s = append(s, kb)
		time.Sleep(200 * time.Millisecond)
	}
	slices.Sort(s)
	return float64(s[len(s)/2]) / 1024, nil
}

// members asks h's agent for the member list (the leader's view).
func members(ctx context.Context, h *testbed.Host) ([]localapi.Member, error) {
	ms, err := localapi.NewClient(h.Socket()).Members(ctx)
	if err != nil {
		return nil, err
	}
	if ms.Warning != "" {
		return ms.Members, fmt.Errorf("members: %s", ms.Warning)
	}
	return ms.Members, nil
}

// voterCounts counts voting members (the leader included) and how many of
// them are healthy, and names the leader.
func voterCounts(ms []localapi.Member) (voters, healthy int, leader string) {
	for _, m := range ms {
		if m.Role == "leader" {
			leader = m.Name
		}
		if m.Role == "leader" || m.Role == "voter" {
			voters++
			if m.Healthy {
				healthy++
			}
		}
	}
	return voters, healthy, leader
}

// allHealthy reports whether every member is healthy.
func allHealthy(ms []localapi.Member) bool {
	for _, m := range ms {
		if !m.Healthy {
			return false
		}
	}
	return true
}

// putNetworkSet writes (apply) a small GlobalNetworkSet through h's
// socket: one replicated store write.
func putNetworkSet(ctx context.Context, c *localapi.Client, name string, i int) error {
	doc := fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: %s\n  labels:\n    bench: scale\nspec:\n  nets:\n  - 192.0.2.%d/32\n", name, i%256)
	_, err := c.Write(ctx, localapi.WriteRequest{Mode: localapi.ModeApply, Data: doc})
	return err
}

// watchNames streams GlobalNetworkSet events from h's agent and sends the
// name and arrival time of every PUT after the initial SYNC to out; synced
// is closed at the SYNC.
func watchNames(ctx context.Context, h *testbed.Host, synced chan<- struct{}, out chan<- arrival) error {
	body, err := localapi.NewClient(h.Socket()).Watch(ctx, localapi.WatchOptions{Kinds: []string{"GlobalNetworkSet"}})
	if err != nil {
		return err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	seenSync := false
	for sc.Scan() {
		now := time.Now()
		var ev localapi.WatchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("watch on %s: %w", h.Name(), err)
		}
		switch ev.Type {
		case "SYNC":
			if !seenSync {
				seenSync = true
				close(synced)
			}
		case "PUT":
			if !seenSync {
				continue
			}
			var obj struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if json.Unmarshal(ev.Object, &obj) == nil {
				select {
				case out <- arrival{host: h.Name(), name: obj.Metadata.Name, at: now}:
				case <-ctx.Done():
					return nil
				}
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("watch on %s ended: %v", h.Name(), sc.Err())
}

type arrival struct {
	host, name string
	at         time.Time
}

// hog is busy loops beside the agents, started and killed by PID.
type hog struct{ cmds []*exec.Cmd }

func startHog(b *testing.B, n int) *hog {
	b.Helper()
	h := &hog{}
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			h.stop()
			b.Fatalf("start CPU hog: %v", err)
		}
		h.cmds = append(h.cmds, cmd)
	}
	b.Cleanup(h.stop)
	return h
}

func (h *hog) stop() {
	for _, c := range h.cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	h.cmds = nil
}

// quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }

// loadAverage is the first field of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// countInLog counts lines containing substr in h's agent log from offset on.
func countInLog(h *testbed.Host, offset int, substr string) int {
	logs := h.Logs()
	if offset > len(logs) {
		return 0
	}
	return strings.Count(logs[offset:], substr)
}
