// Package cnitest is a stand-in for the weft agent's workload API, for
// testing the CNI plugin without root: an HTTP server on a unix socket in a
// temporary directory that keeps workloads in memory, decodes requests as
// strictly as the agent does, and records every call.
package cnitest

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/node/localapi"
)

// Call is one request the agent received.
type Call struct {
	Method, Path string
	// Body is the decoded request: *localapi.WorkloadAddRequest or
	// *localapi.WorkloadRef; nil for GET.
	Body any
}

// Agent is the fake agent.
type Agent struct {
	// Socket is the unix socket it listens on.
	Socket string

	srv *http.Server
	ln  net.Listener

	mu        sync.Mutex
	workloads map[string]*localapi.Workload // namespace/name
	calls     []Call
	failures  map[string]*localapi.Error // "METHOD path" → answer
	hang      bool
	nextHost  uint32
	closeOnce sync.Once
	stop      chan struct{}
}

// NewAgent starts a fake agent on a socket in a new temporary directory
// (short, so the path fits a unix socket address) and stops it when the
// test ends.
func NewAgent(t testing.TB) *Agent {
	t.Helper()
	dir, err := os.MkdirTemp("", "weftcni-")
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		Socket:    filepath.Join(dir, "agent.sock"),
		workloads: map[string]*localapi.Workload{},
		failures:  map[string]*localapi.Error{},
		stop:      make(chan struct{}),
	}
	a.ln, err = net.Listen("unix", a.Socket)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/workloads", a.handleAdd)
	mux.HandleFunc("POST /v1/workloads/delete", a.handleDelete)
	mux.HandleFunc("POST /v1/workloads/check", a.handleCheck)
	mux.HandleFunc("GET /v1/workloads", a.handleList)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.record(r, nil)
		localapi.WriteError(w, localapi.Errorf(localapi.CodeNotFound, "no such API call: %s %s", r.Method, r.URL.Path))
	})
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = a.srv.Serve(a.ln) }()
	t.Cleanup(func() {
		a.Close()
		os.RemoveAll(dir)
	})
	return a
}

// Close stops the agent: its socket goes away, so later calls find no
// agent.
func (a *Agent) Close() {
	a.closeOnce.Do(func() {
		close(a.stop)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.srv.Shutdown(ctx)
		os.Remove(a.Socket)
	})
}

// Fail makes the agent answer method+path with err from now on.
func (a *Agent) Fail(method, path string, err *localapi.Error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failures[method+" "+path] = err
}

// Hang makes the agent never answer (until the client gives up or the
// agent is closed).
func (a *Agent) Hang() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hang = true
}

// Calls returns the requests received so far.
func (a *Agent) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Call(nil), a.calls...)
}

// Workloads returns the workloads it holds, sorted by namespace and name.
func (a *Agent) Workloads() []localapi.Workload {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []localapi.Workload
	for _, w := range a.workloads {
		out = append(out, *w)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Put stores a workload as if it had been added (e.g. under another name
// than the plugin would choose).
func (a *Agent) Put(w localapi.Workload) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.workloads[w.Namespace+"/"+w.Name] = &w
}

// begin records the call and reports whether a canned failure or a hang
// takes over the answer.
func (a *Agent) begin(w http.ResponseWriter, r *http.Request, body any) bool {
	a.record(r, body)
	a.mu.Lock()
	hang := a.hang
	fail := a.failures[r.Method+" "+r.URL.Path]
	a.mu.Unlock()
	if hang {
		select {
		case <-r.Context().Done():
		case <-a.stop:
		}
		return true
	}
	if fail != nil {
		localapi.WriteError(w, fail)
		return true
	}
	return false
}

func (a *Agent) record(r *http.Request, body any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, Call{Method: r.Method, Path: r.URL.Path, Body: body})
}

func key(namespace, name string) string {
	if namespace == "" {
		namespace = "default"
	}
	return namespace + "/" + name
}

func (a *Agent) handleAdd(w http.ResponseWriter, r *http.Request) {
	var req localapi.WorkloadAddRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		a.record(r, nil)
		localapi.WriteError(w, err)
		return
	}
	if a.begin(w, r, &req) {
		return
	}
	if req.Name == "" || req.NetNS == "" {
		localapi.WriteError(w, localapi.Errorf(localapi.CodeInvalid, "name and netns are required"))
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := key(req.Namespace, req.Name)
	if old, ok := a.workloads[k]; ok {
		if old.NetNS == req.NetNS && old.ContainerID == req.ContainerID {
			localapi.WriteJSON(w, http.StatusOK, old)
			return
		}
		localapi.WriteError(w, localapi.Errorf(localapi.CodeExists, "workload %s already exists", k))
		return
	}
	iface := req.Interface
	if iface == "" {
		iface = "eth0"
	}
	a.nextHost++
	ips := req.IPs
	if len(ips) == 0 {
		ips = []string{netip.AddrFrom4([4]byte{10, 244, 0, byte(a.nextHost)}).String()}
	}
	var prefixes []string
	gw6 := ""
	for _, s := range ips {
		ad, err := netip.ParseAddr(s)
		if err != nil {
			localapi.WriteError(w, localapi.Errorf(localapi.CodeInvalid, "bad address %q", s))
			return
		}
		prefixes = append(prefixes, netip.PrefixFrom(ad, ad.BitLen()).String())
		if ad.Is6() {
			gw6 = "fe80::ecee:eeff:feee:eeee"
		}
	}
	ns := req.Namespace
	if ns == "" {
		ns = "default"
	}
	h := fnv.New32a()
	h.Write([]byte(k))
	wl := &localapi.Workload{
		Name: req.Name, Namespace: ns, Node: "fake", NetNS: req.NetNS,
		Endpoint:  "fake-cni-" + req.ContainerID + "-" + iface,
		HostIface: fmt.Sprintf("weft%08x", h.Sum32()),
		Interface: iface, MAC: fmt.Sprintf("0a:58:0a:f4:00:%02x", a.nextHost&0xff),
		IPs: prefixes, Gateway4: "169.254.1.1", Gateway6: gw6, MTU: 1450,
		Labels: req.Labels, Orchestrator: req.Orchestrator, ContainerID: req.ContainerID,
	}
	a.workloads[k] = wl
	localapi.WriteJSON(w, http.StatusOK, wl)
}

// lookup finds the workload a ref names, as the agent does: not found, or
// found but recorded for another container (a conflict).
func (a *Agent) lookup(ref *localapi.WorkloadRef) (*localapi.Workload, error) {
	k := key(ref.Namespace, ref.Name)
	wl, ok := a.workloads[k]
	if !ok {
		return nil, localapi.Errorf(localapi.CodeNotFound, "workload %s not found", k)
	}
	if ref.ContainerID != "" && wl.ContainerID != ref.ContainerID {
		return nil, localapi.Errorf(localapi.CodeConflict, "workload %s belongs to container %s, not %s", k, wl.ContainerID, ref.ContainerID)
	}
	return wl, nil
}

func (a *Agent) handleDelete(w http.ResponseWriter, r *http.Request) {
	var ref localapi.WorkloadRef
	if err := localapi.ReadJSON(w, r, &ref); err != nil {
		a.record(r, nil)
		localapi.WriteError(w, err)
		return
	}
	if a.begin(w, r, &ref) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	wl, err := a.lookup(&ref)
	if err != nil {
		localapi.WriteError(w, err)
		return
	}
	delete(a.workloads, key(wl.Namespace, wl.Name))
	localapi.WriteJSON(w, http.StatusOK, wl)
}

func (a *Agent) handleCheck(w http.ResponseWriter, r *http.Request) {
	var ref localapi.WorkloadRef
	if err := localapi.ReadJSON(w, r, &ref); err != nil {
		a.record(r, nil)
		localapi.WriteError(w, err)
		return
	}
	if a.begin(w, r, &ref) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	wl, err := a.lookup(&ref)
	if err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, wl)
}

func (a *Agent) handleList(w http.ResponseWriter, r *http.Request) {
	if a.begin(w, r, nil) {
		return
	}
	ns := r.URL.Query().Get("namespace")
	all := r.URL.Query().Get("allNamespaces") == "true"
	var list localapi.WorkloadList
	for _, wl := range a.Workloads() {
		if all || wl.Namespace == ns || (ns == "" && wl.Namespace == "default") {
			list.Items = append(list.Items, wl)
		}
	}
	if list.Items == nil {
		list.Items = []localapi.Workload{}
	}
	localapi.WriteJSON(w, http.StatusOK, list)
}
