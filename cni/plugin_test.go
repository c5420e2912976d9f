package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/cni/cnitest"
	"github.com/weftnet/weft/node/localapi"
)

// netconf is a network configuration for the fake agent's socket.
func netconf(socket, version string, extra ...string) []byte {
	s := `{"cniVersion":"` + version + `","name":"weft","type":"weft","socket":"` + socket + `"`
	for _, e := range extra {
		s += "," + e
	}
	return []byte(s + "}")
}

func cmdArgs(id string, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: "/run/netns/" + id, IfName: "eth0", StdinData: conf}
}

func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a CNI error", err, err)
	}
	return e
}

func TestAddDelCheck(t *testing.T) {
	agent := cnitest.NewAgent(t)
	var out bytes.Buffer
	p := &Plugin{Stdout: &out}
	cmd := cmdArgs("ctr1", netconf(agent.Socket, "1.0.0", `"namespace":"shop","labels":{"app":"till"}`))

	if err := p.Add(cmd); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	calls := agent.Calls()
	want := &localapi.WorkloadAddRequest{Name: "ctr1", Namespace: "shop", NetNS: "/run/netns/ctr1", Interface: "eth0",
		Labels: map[string]string{"app": "till"}, Orchestrator: "cni", ContainerID: "ctr1"}
	if len(calls) != 1 || calls[0].Path != "/v1/workloads" || !reflect.DeepEqual(calls[0].Body, want) {
		t.Fatalf("agent got %+v, want one POST /v1/workloads with %+v", calls, want)
	}
	r, err := types100.NewResult(out.Bytes())
	if err != nil {
		t.Fatalf("ADD printed %q: %v", out.String(), err)
	}
	res := r.(*types100.Result)
	wl := agent.Workloads()[0]
	if res.CNIVersion != "1.0.0" || len(res.IPs) != 1 || res.IPs[0].Address.String() != wl.IPs[0] ||
		len(res.Interfaces) != 2 || res.Interfaces[1].Sandbox != "/run/netns/ctr1" || res.Interfaces[0].Name != wl.HostIface {
		t.Fatalf("ADD result %s does not describe workload %+v", out.String(), wl)
	}

	// CHECK with the result the runtime cached.
	var prev map[string]any
	if err := json.Unmarshal(out.Bytes(), &prev); err != nil {
		t.Fatal(err)
	}
	prevJSON, _ := json.Marshal(prev)
	check := cmdArgs("ctr1", netconf(agent.Socket, "1.0.0", `"namespace":"shop"`, `"prevResult":`+string(prevJSON)))
	if err := p.Check(check); err != nil {
		t.Fatalf("CHECK: %v", err)
	}

	del := cmdArgs("ctr1", netconf(agent.Socket, "1.0.0", `"namespace":"shop"`))
	if err := p.Del(del); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if n := len(agent.Workloads()); n != 0 {
		t.Fatalf("%d workloads after DEL", n)
	}
	// DEL again, and DEL of a container whose namespace is gone: success.
	if err := p.Del(del); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	gone := cmdArgs("ctr1", del.StdinData)
	gone.Netns = ""
	if err := p.Del(gone); err != nil {
		t.Fatalf("DEL without netns: %v", err)
	}
	// CHECK of a container that is gone: the CNI code for an unknown container.
	if e := cniError(t, p.Check(check)); e.Code != types.ErrUnknownContainer || !strings.Contains(e.Msg, "not found") {
		t.Fatalf("CHECK after DEL: %+v", e)
	}
}

func TestAddAnswersInTheConfiguredVersion(t *testing.T) {
	agent := cnitest.NewAgent(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		var out bytes.Buffer
		p := &Plugin{Stdout: &out}
		if err := p.Add(cmdArgs("v"+strings.ReplaceAll(v, ".", ""), netconf(agent.Socket, v))); err != nil {
			t.Fatalf("ADD %s: %v", v, err)
		}
		var got struct {
			CNIVersion string `json:"cniVersion"`
		}
		if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.CNIVersion != v {
			t.Fatalf("ADD %s printed %s", v, out.String())
		}
	}
}

func TestDelFindsTheContainerUnderAnotherName(t *testing.T) {
	agent := cnitest.NewAgent(t)
	p := &Plugin{Stdout: &bytes.Buffer{}}
	// Added as a pod, deleted by a runtime that leaves out CNI_ARGS.
	add := cmdArgs("ctr2", netconf(agent.Socket, "1.0.0"))
	add.Args = "K8S_POD_NAMESPACE=tills;K8S_POD_NAME=till-2"
	if err := p.Add(add); err != nil {
		t.Fatal(err)
	}
	// Another container's workload that happens to carry ctr3's name.
	agent.Put(localapi.Workload{Name: "ctr3", Namespace: "default", ContainerID: "someone-else", Interface: "eth0", IPs: []string{"10.244.0.99/32"}})

	if err := p.Del(cmdArgs("ctr2", netconf(agent.Socket, "1.0.0"))); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := p.Del(cmdArgs("ctr3", netconf(agent.Socket, "1.0.0"))); err != nil {
		t.Fatalf("DEL of a replaced container: %v", err)
	}
	ws := agent.Workloads()
	if len(ws) != 1 || ws[0].ContainerID != "someone-else" {
		t.Fatalf("workloads after DEL: %+v, want only the other container's", ws)
	}
}

func TestAgentErrors(t *testing.T) {
	short, err := os.MkdirTemp("", "weftcni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })

	// A socket file nobody listens on.
	dead := filepath.Join(short, "dead.sock")
	ln, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	// A regular file where the socket should be.
	notSock := filepath.Join(short, "file.sock")
	if err := os.WriteFile(notSock, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	invalid := cnitest.NewAgent(t)
	invalid.Fail("POST", "/v1/workloads", localapi.Errorf(localapi.CodeInvalid, `pool "edge" does not exist`))
	busy := cnitest.NewAgent(t)
	busy.Fail("POST", "/v1/workloads", localapi.Errorf(localapi.CodeUnavailable, "the datastore is not in sync yet"))
	old := cnitest.NewAgent(t)
	old.Fail("POST", "/v1/workloads", localapi.Errorf(localapi.CodeNotFound, "no such API call: POST /v1/workloads"))
	conflict := cnitest.NewAgent(t)
	conflict.Fail("POST", "/v1/workloads", localapi.Errorf(localapi.CodeConflict, "address 10.244.0.7 is in use"))
	hung := cnitest.NewAgent(t)
	hung.Hang()

	tests := []struct {
		name   string
		socket string
		code   uint
		msg    string
	}{
		{"no socket", filepath.Join(short, "none.sock"), types.ErrTryAgainLater,
			"weft agent socket " + filepath.Join(short, "none.sock") + ": no such file; is the agent running?"},
		{"nobody listening", dead, types.ErrTryAgainLater, "weft agent socket " + dead + ": connection refused; is the agent running?"},
		{"not a socket", notSock, types.ErrTryAgainLater, "weft agent socket " + notSock + ": not a socket; is the agent running?"},
		{"invalid request", invalid.Socket, types.ErrInvalidNetworkConfig, `weft agent: pool "edge" does not exist`},
		{"agent busy", busy.Socket, types.ErrTryAgainLater, "weft agent: the datastore is not in sync yet"},
		{"agent without the workload API", old.Socket, types.ErrInternal, "weft agent: no such API call: POST /v1/workloads"},
		{"conflict", conflict.Socket, types.ErrInternal, "weft agent: address 10.244.0.7 is in use"},
		{"no answer", hung.Socket, types.ErrTryAgainLater, "no answer to POST /v1/workloads within 300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			p := &Plugin{Stdout: &out, Timeout: 300 * time.Millisecond}
			start := time.Now()
			e := cniError(t, p.Add(cmdArgs("ctr", netconf(tt.socket, "1.0.0"))))
			if e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("error code %d %q, want code %d containing %q", e.Code, e.Msg, tt.code, tt.msg)
			}
			if out.Len() != 0 {
				t.Fatalf("a failed ADD printed a result: %s", out.String())
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}

	// DEL with no agent is an error too: the addresses could not be released.
	p := &Plugin{Stdout: &bytes.Buffer{}}
	if e := cniError(t, p.Del(cmdArgs("ctr", netconf(filepath.Join(short, "none.sock"), "1.0.0")))); e.Code != types.ErrTryAgainLater {
		t.Fatalf("DEL without agent: %+v", e)
	}
	// DEL against an agent without the workload API fails instead of
	// pretending the workload is gone.
	old.Fail("POST", "/v1/workloads/delete", localapi.Errorf(localapi.CodeNotFound, "no such API call: POST /v1/workloads/delete"))
	old.Fail("GET", "/v1/workloads", localapi.Errorf(localapi.CodeNotFound, "no such API call: GET /v1/workloads"))
	if e := cniError(t, p.Del(cmdArgs("ctr", netconf(old.Socket, "1.0.0")))); !strings.Contains(e.Msg, "no such API call") {
		t.Fatalf("DEL against an old agent: %+v", e)
	}
}

func TestAddRefusesBadInputBeforeAskingTheAgent(t *testing.T) {
	agent := cnitest.NewAgent(t)
	p := &Plugin{Stdout: &bytes.Buffer{}}
	prev := `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"br0"}],"ips":[{"address":"10.1.0.2/24"}]}`
	tests := []struct {
		name string
		cmd  *skel.CmdArgs
		code uint
		msg  string
	}{
		{"unknown key", cmdArgs("c", netconf(agent.Socket, "1.0.0", `"mtu":1400`)), types.ErrUnsupportedField, `unknown key "mtu"`},
		{"chained after another plugin", cmdArgs("c", netconf(agent.Socket, "1.0.0", prev)), types.ErrInvalidNetworkConfig, "must be the first plugin"},
		{"bad CNI_ARGS", &skel.CmdArgs{ContainerID: "c", Netns: "/x", IfName: "eth0", Args: "NOPE=1", StdinData: netconf(agent.Socket, "1.0.0")},
			types.ErrInvalidEnvironmentVariables, "unknown args"},
		{"bad IP", &skel.CmdArgs{ContainerID: "c", Netns: "/x", IfName: "eth0", Args: "IP=10.1", StdinData: netconf(agent.Socket, "1.0.0")},
			types.ErrInvalidNetworkConfig, `"10.1" is not an IP address`},
	}
	for _, tt := range tests {
		e := cniError(t, p.Add(tt.cmd))
		if e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
			t.Errorf("%s: error code %d %q, want code %d containing %q", tt.name, e.Code, e.Msg, tt.code, tt.msg)
		}
	}
	if calls := agent.Calls(); len(calls) != 0 {
		t.Fatalf("the agent was asked although the input was bad: %+v", calls)
	}
}

func TestLogLevel(t *testing.T) {
	agent := cnitest.NewAgent(t)
	for _, tt := range []struct {
		level string
		want  bool
	}{{"", false}, {"warn", false}, {"info", true}, {"debug", true}} {
		var stderr bytes.Buffer
		p := &Plugin{Stdout: &bytes.Buffer{}, Stderr: &stderr}
		extra := []string{}
		if tt.level != "" {
			extra = append(extra, `"log_level":"`+tt.level+`"`)
		}
		id := "log" + tt.level
		if err := p.Add(cmdArgs(id, netconf(agent.Socket, "1.0.0", extra...))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(stderr.String(), "workload added"); got != tt.want {
			t.Errorf("log_level %q: logged %q", tt.level, stderr.String())
		}
	}
}
