package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/node/localapi"
)

// DefaultTimeout bounds one CNI call: a runtime waiting on a plugin that
// never answers is stuck, so a call that has no answer by then fails with
// "try again later".
const DefaultTimeout = 60 * time.Second

// SupportedVersions are the CNI spec versions weft accepts in a network
// configuration and answers in. 1.1.0 (GC, STATUS) is not claimed: the
// agent removes workloads whose namespace has vanished by itself.
func SupportedVersions() version.PluginInfo {
	return version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0")
}

// Agent is the part of the local API client the plugin uses;
// *localapi.Client implements it.
type Agent interface {
	AddWorkload(ctx context.Context, req localapi.WorkloadAddRequest) (localapi.Workload, error)
	DeleteWorkload(ctx context.Context, ref localapi.WorkloadRef) (localapi.Workload, error)
	CheckWorkload(ctx context.Context, ref localapi.WorkloadRef) (localapi.Workload, error)
	ListWorkloads(ctx context.Context, namespace string, all bool) (localapi.WorkloadList, error)
}

// Plugin runs CNI calls against the local agent.
type Plugin struct {
	// Stdout receives the result or the CNI error JSON, Stderr the plugin's
	// log (at the network configuration's log_level, default warn).
	Stdout, Stderr io.Writer
	// Timeout bounds each call; 0 means DefaultTimeout.
	Timeout time.Duration
	// Connect returns a client for the agent's socket; nil means
	// localapi.NewClient.
	Connect func(socket string) Agent
	// About is printed on stderr when the binary is run by hand as a plugin
	// without a command (the library's convention).
	About string
}

// Main runs one CNI call described by the process's environment and
// standard input (the library's skel does the argument checks and
// VERSION), writes the result or a CNI error as JSON to Stdout, and returns
// the process exit status.
func (p *Plugin) Main() int {
	funcs := skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check}
	if e := skel.PluginMainFuncsWithError(funcs, SupportedVersions(), p.About); e != nil {
		p.printError(e)
		return 1
	}
	return 0
}

func (p *Plugin) printError(e *types.Error) {
	enc := json.NewEncoder(p.Stdout)
	enc.SetIndent("", "    ")
	if err := enc.Encode(e); err != nil {
		fmt.Fprintf(p.Stderr, "weft: writing the CNI error %q: %v\n", e.Msg, err)
	}
}

// Add attaches the container's namespace as a workload and prints the CNI
// result.
func (p *Plugin) Add(cmd *skel.CmdArgs) error {
	c, err := p.begin("ADD", cmd)
	if err != nil {
		return err
	}
	if prev := c.conf.PrevResult; prev != nil && (len(prev.Interfaces) > 0 || len(prev.IPs) > 0) {
		return types.NewError(types.ErrInvalidNetworkConfig,
			"network configuration: weft creates the container's interface itself and must be the first plugin of the list (it got a prevResult)", "")
	}
	req, err := BuildAddRequest(cmd, c.conf, c.args)
	if err != nil {
		return err
	}
	c.log.Debug("adding workload", "name", req.Name, "namespace", req.Namespace, "ips", req.IPs, "pools", req.Pools, "labels", req.Labels)
	var w localapi.Workload
	if err := c.do("POST /v1/workloads", false, func(ctx context.Context) (err error) {
		w, err = c.agent.AddWorkload(ctx, *req)
		return err
	}); err != nil {
		return err
	}
	res, err := BuildResult(&w, c.conf.DNS)
	if err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	out, err := res.GetAsVersion(c.conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("converting the result to CNI %s: %v", c.conf.CNIVersion, err), "")
	}
	c.log.Info("workload added", "name", w.Name, "namespace", w.Namespace, "ips", w.IPs, "hostInterface", w.HostIface)
	return out.PrintTo(p.Stdout)
}

// Del detaches the container and releases its addresses. It succeeds when
// there is nothing left to delete, also when the namespace is gone (the
// CNI spec's rule: DEL is idempotent). When the workload is not found by
// its name (the runtime passed other CNI_ARGS than at ADD, or the name was
// reused), the one recorded with this container ID and interface is
// deleted instead.
func (p *Plugin) Del(cmd *skel.CmdArgs) error {
	c, err := p.begin("DEL", cmd)
	if err != nil {
		return err
	}
	ref := BuildRef(cmd, c.conf, c.args)
	del := func(ref localapi.WorkloadRef) error {
		return c.do("POST /v1/workloads/delete", false, func(ctx context.Context) error {
			_, err := c.agent.DeleteWorkload(ctx, ref)
			return err
		})
	}
	err = del(*ref)
	if err == nil {
		c.log.Info("workload deleted", "name", ref.Name, "namespace", ref.Namespace)
		return nil
	}
	if !isAgentCode(err, localapi.CodeNotFound, localapi.CodeConflict) {
		return err
	}
	// Look for the container's workload under any name.
	var list localapi.WorkloadList
	if lerr := c.do("GET /v1/workloads", false, func(ctx context.Context) (err error) {
		list, err = c.agent.ListWorkloads(ctx, "", true)
		return err
	}); lerr != nil {
		return lerr
	}
	for _, w := range list.Items {
		if w.ContainerID != cmd.ContainerID || (w.Interface != "" && w.Interface != cmd.IfName) {
			continue
		}
		other := localapi.WorkloadRef{Name: w.Name, Namespace: w.Namespace, NetNS: cmd.Netns, Interface: cmd.IfName, ContainerID: cmd.ContainerID}
		if derr := del(other); derr != nil && !isAgentCode(derr, localapi.CodeNotFound) {
			return derr
		}
		c.log.Info("workload deleted", "name", w.Name, "namespace", w.Namespace)
		return nil
	}
	c.log.Info("nothing to delete: no workload of this container", "name", ref.Name, "namespace", ref.Namespace)
	return nil
}

// Check asks the agent to verify the workload (its veth, addresses and
// routes) and compares it with the result the runtime recorded at ADD.
func (p *Plugin) Check(cmd *skel.CmdArgs) error {
	c, err := p.begin("CHECK", cmd)
	if err != nil {
		return err
	}
	ref := BuildRef(cmd, c.conf, c.args)
	var w localapi.Workload
	if err := c.do("POST /v1/workloads/check", true, func(ctx context.Context) (err error) {
		w, err = c.agent.CheckWorkload(ctx, *ref)
		return err
	}); err != nil {
		return err
	}
	if err := CheckPrevResult(c.conf.PrevResult, &w, cmd.IfName); err != nil {
		return types.NewError(types.ErrInternal, "CHECK: "+err.Error(), "")
	}
	c.log.Debug("workload checked", "name", w.Name, "namespace", w.Namespace)
	return nil
}

// call is one CNI call in progress.
type call struct {
	conf    *NetConf
	args    *Args
	agent   Agent
	log     *slog.Logger
	timeout time.Duration
}

func (p *Plugin) begin(command string, cmd *skel.CmdArgs) (*call, error) {
	conf, err := ParseNetConf(cmd.StdinData)
	if err != nil {
		return nil, err
	}
	args, err := ParseArgs(cmd.Args)
	if err != nil {
		return nil, err
	}
	stderr := p.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: conf.LogLevel})).With(
		"plugin", PluginType, "cmd", command, "network", conf.Name, "container", cmd.ContainerID, "netns", cmd.Netns, "ifname", cmd.IfName)
	log.Debug("network configuration", "config", compactJSON(cmd.StdinData), "args", cmd.Args)
	connect := p.Connect
	if connect == nil {
		connect = func(socket string) Agent { return localapi.NewClient(socket) }
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &call{conf: conf, args: args, agent: connect(conf.Socket), log: log, timeout: timeout}, nil
}

// do runs one API call (named "METHOD /path" for messages) within the
// call's timeout and turns failures into CNI errors. forCheck maps "not
// found" to the CNI code for an unknown container.
func (c *call) do(r string, forCheck bool, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	err := f(ctx)
	if err == nil {
		return nil
	}
	var apiErr *localapi.Error
	switch {
	case errors.As(err, &apiErr):
		code := types.ErrInternal
		switch apiErr.Code {
		case localapi.CodeInvalid:
			code = types.ErrInvalidNetworkConfig
		case localapi.CodeUnavailable:
			code = types.ErrTryAgainLater
		case localapi.CodeNotFound:
			if forCheck {
				code = types.ErrUnknownContainer
			}
		}
		return &agentError{cni: types.NewError(code, "weft agent: "+apiErr.Message, ""), code: apiErr.Code}
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weft agent socket %s: no answer to %s within %s; is the agent running and healthy?", c.conf.Socket, r, c.timeout), "")
	}
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("weft agent socket %s: %s; is the agent running?", c.conf.Socket, diagnoseSocket(c.conf.Socket, r, err)), "")
}

// agentError is a CNI error that came from the agent, keeping the agent's
// code for the plugin's own decisions.
type agentError struct {
	cni  *types.Error
	code string
}

func (e *agentError) Error() string { return e.cni.Error() }

// Unwrap lets the skel find the *types.Error to print.
func (e *agentError) Unwrap() error { return e.cni }

func isAgentCode(err error, codes ...string) bool {
	var ae *agentError
	if !errors.As(err, &ae) {
		return false
	}
	for _, c := range codes {
		if ae.code == c {
			return true
		}
	}
	return false
}

// diagnoseSocket says in a few words why the agent's socket cannot be
// used. When the socket looks fine, the call itself failed (the agent
// closed the connection, say): that error is reported.
func diagnoseSocket(socket string, r string, err error) string {
	fi, serr := os.Stat(socket)
	switch {
	case errors.Is(serr, fs.ErrNotExist):
		return "no such file"
	case errors.Is(serr, fs.ErrPermission):
		return "permission denied"
	case serr == nil && fi.Mode()&fs.ModeSocket == 0:
		return "not a socket"
	}
	conn, derr := net.DialTimeout("unix", socket, 2*time.Second)
	switch {
	case derr == nil:
		conn.Close()
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Sprintf("%s: %v", r, err)
	case errors.Is(derr, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(derr, syscall.EACCES), errors.Is(derr, syscall.EPERM):
		return "permission denied"
	}
	return derr.Error()
}
