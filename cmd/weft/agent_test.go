package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/testtier"
	"github.com/weftnet/weft/node/localapi"
)

// testAgent is a real `weft agent` process with its own data dir, socket
// and metrics port.
type testAgent struct {
	t       *testing.T
	dir     string
	config  string
	socket  string
	metrics string
	cmd     *exec.Cmd
	stderr  *bytes.Buffer
	done    chan error
}

func newTestAgent(t *testing.T, extraEnv ...string) *testAgent {
	t.Helper()
	// The agent programs its network namespace: it runs in a private one
	// (unshare -n), which needs root.
	testtier.Kernel(t, "unshare", "ip")
	dir := t.TempDir()
	a := &testAgent{
		t: t, dir: dir,
		config:  filepath.Join(dir, "weft.toml"),
		socket:  filepath.Join(dir, "run", "weft.sock"),
		metrics: agentAddress + ":9091",
	}
	toml := fmt.Sprintf(`[node]
name = "lifecycle"
address = %q
data_dir = %q
[cluster]
listen = "%s:7700"
[api]
socket = %q
[metrics]
listen = %q
[log]
level = "debug"
[bgp]
enabled = false
[wireguard]
enabled = false
[dataplane]
backend = "iptables"
`, agentAddress, filepath.Join(dir, "data"), agentAddress, a.socket, a.metrics)
	if err := os.WriteFile(a.config, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	a.start(extraEnv...)
	return a
}

// agentAddress is the node address the test agent gets on the loopback
// of its private network namespace.
const agentAddress = "10.255.77.1"

// start runs the agent in a network namespace of its own, which vanishes
// with it: whatever it programs never touches the machine's.
func (a *testAgent) start(extraEnv ...string) {
	script := fmt.Sprintf("ip link set lo up && ip addr add %s/32 dev lo && exec %q agent --config %q", agentAddress, weftBinary(a.t), a.config)
	a.cmd = exec.Command("unshare", "--net", "--", "sh", "-c", script)
	a.cmd.Env = append(os.Environ(), extraEnv...)
	a.stderr = &bytes.Buffer{}
	a.cmd.Stderr = a.stderr
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan error, 1)
	go func() { a.done <- a.cmd.Wait() }()
	a.t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		<-a.done
		if a.t.Failed() {
			a.t.Logf("agent log:\n%s", a.stderr.String())
		}
	})
}

// get fetches a URL from inside the agent's network namespace: the
// connection is dialed on a thread in that namespace (a socket belongs to
// the namespace it was created in), then used from here.
func (a *testAgent) get(path string) (int, string, error) {
	ns, err := netns.Open(fmt.Sprintf("/proc/%d/ns/net", a.cmd.Process.Pid))
	if err != nil {
		return 0, "", err
	}
	defer ns.Close()
	var conn net.Conn
	err = ns.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", a.metrics, 5*time.Second)
		return err
	})
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req, _ := http.NewRequest("GET", "http://"+a.metrics+path, nil)
	req.Close = true
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitReady polls /readyz until it answers 200.
func (a *testAgent) waitReady() {
	a.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if code, _, err := a.get("/readyz"); err == nil && code == http.StatusOK {
			return
		}
		select {
		case err := <-a.done:
			a.t.Fatalf("agent exited before ready: %v\n%s", err, a.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	a.t.Fatalf("agent not ready after 20s\n%s", a.stderr.String())
}

func TestAgentLifecycle(t *testing.T) {
	a := newTestAgent(t)
	a.waitReady()

	// The socket is root-only and answers the status call.
	fi, err := os.Stat(a.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	fi, _ = os.Stat(filepath.Join(a.dir, "data"))
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode %v, want 0700", fi.Mode().Perm())
	}
	stdout, stderr, code := runWeft(t, nil, "node", "status", "--socket", a.socket, "-o", "json")
	if code != 0 {
		t.Fatalf("node status: %s", stderr)
	}
	var st localapi.NodeStatus
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("node status -o json is not JSON: %v\n%s", err, stdout)
	}
	if st.Name != "lifecycle" || !st.Ready || st.PID != a.cmd.Process.Pid || st.Address != agentAddress ||
		st.Datastore == nil || st.Datastore.Role != "leader" || st.Datastore.Leader != "lifecycle" || !st.Datastore.InSync {
		t.Fatalf("status = %+v", st)
	}
	// WEFT_SOCKET works as --socket.
	if _, stderr, code := runWeft(t, []string{"WEFT_SOCKET=" + a.socket}, "node", "status"); code != 0 {
		t.Fatalf("node status via WEFT_SOCKET: %s", stderr)
	}

	// Metrics and liveness.
	for path, want := range map[string]string{"/metrics": "weft_build_info", "/livez": "COMPONENT"} {
		code, body, err := a.get(path)
		if err != nil {
			t.Fatal(err)
		}
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("%s: %d %q", path, code, body)
		}
	}

	// The iptables backend is built, and says which variant it uses
	// (an unbuilt subsystem's warning: TestUnbuiltSubsystemsAreNamed).
	if strings.Contains(a.stderr.String(), "policy-backend is not built") || !strings.Contains(a.stderr.String(), "iptables backend: variant detected") {
		t.Errorf("the agent does not say it runs the iptables backend and which variant:\n%s", a.stderr.String())
	}

	// A second agent on the same data dir is refused with a clear error.
	_, stderr, code = runWeft(t, nil, "agent", "--config", a.config)
	if code == 0 || !strings.Contains(stderr, "is in use by another weft agent") {
		t.Fatalf("second agent: code %d, stderr %q", code, stderr)
	}

	// SIGTERM stops it cleanly within 5 s and removes the socket.
	start := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.done:
		if err != nil {
			t.Fatalf("agent exited with %v after SIGTERM\n%s", err, a.stderr.String())
		}
		a.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatalf("agent still running 5s after SIGTERM")
	}
	t.Logf("stopped in %v", time.Since(start))
	if _, err := os.Stat(a.socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after stop: %v", err)
	}
}

func TestAgentSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	a := newTestAgent(t, "NOTIFY_SOCKET="+sockPath, "WATCHDOG_USEC=200000")
	expect := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q notification within 10s\n%s", want, a.stderr.String())
			}
		}
	}
	expect("READY=1")
	expect("WATCHDOG=1")
	expect("WATCHDOG=1")
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("STOPPING=1")
}

func TestSystemdUnitVerifies(t *testing.T) {
	// Debian's systemd package (make deps) has it.
	testtier.Tools(t, "systemd-analyze")
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal(err)
	}
	wants := map[string][]string{
		"weft.service": {"Type=notify", "WatchdogSec=", "Restart=on-failure", "CapabilityBoundingSet=", "RuntimeDirectory=", "StateDirectory=",
			"ExecStart=/usr/local/bin/weft agent", "Wants=network-online.target weft-wireguard.service", "After=network-online.target weft-wireguard.service"},
		// The device process outlives weft.service restarts: a unit of
		// its own, not PartOf/BindsTo weft.service (those propagate a
		// restart), ordered before the agent.
		"weft-wireguard.service": {"Type=notify", "ExecStart=/usr/local/bin/weft wireguard device --config /etc/weft/weft.toml",
			"Restart=on-failure", "RuntimeDirectory=wireguard", "RuntimeDirectoryPreserve=yes", "CapabilityBoundingSet=CAP_NET_ADMIN",
			"DeviceAllow=/dev/net/tun rw", "Before=weft.service"},
	}
	dir := t.TempDir()
	var paths []string
	for name, want := range wants {
		unit, err := os.ReadFile("../../contrib/systemd/" + name)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !bytes.Contains(unit, []byte(w)) {
				t.Errorf("%s lacks %s", name, w)
			}
		}
		for _, bad := range []string{"PartOf=", "BindsTo=", "PropagatesStopTo=", "StopPropagatedFrom="} {
			if bytes.Contains(unit, []byte(bad)) {
				t.Errorf("%s has %s: a restart of weft.service would restart the WireGuard device", name, bad)
			}
		}
		// verify insists that ExecStart exists: point it at the binary
		// under test, and change nothing else.
		unit = bytes.Replace(unit, []byte("/usr/local/bin/weft"), []byte(weftBinary(t)), 1)
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, unit, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		// Any output is a warning about the units (unknown keys, bad values).
		var lines []string
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		t.Fatalf("systemd-analyze verify: %v\n%s", err, strings.Join(lines, "\n"))
	}
}
