package localapi

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/weftnet/weft/ipam"
)

// The typed calls of the local API, one method per call (docs/design.md
// lists them with their paths).

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (NodeStatus, error) {
	var st NodeStatus
	return st, c.do(ctx, "GET", "/v1/status", nil, &st)
}

// Write is POST /v1/resources: apply, create or replace documents.
func (c *Client) Write(ctx context.Context, req WriteRequest) (WriteResponse, error) {
	var resp WriteResponse
	return resp, c.do(ctx, "POST", "/v1/resources", req, &resp)
}

// ListOptions narrow a resource listing.
type ListOptions struct {
	Namespace     string
	AllNamespaces bool
	Name          string
	// Consistent reads after a linearizable barrier instead of from the
	// local replica.
	Consistent bool
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Namespace != "" {
		q.Set("namespace", o.Namespace)
	}
	if o.AllNamespaces {
		q.Set("allNamespaces", "true")
	}
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	if o.Consistent {
		q.Set("consistent", "true")
	}
	return q
}

// List is GET /v1/resources/{kind}.
func (c *Client) List(ctx context.Context, kind string, o ListOptions) (ListResponse, error) {
	var resp ListResponse
	return resp, c.do(ctx, "GET", withQuery("/v1/resources/"+url.PathEscape(kind), o.query()), nil, &resp)
}

// Delete is POST /v1/resources/delete.
func (c *Client) Delete(ctx context.Context, req DeleteRequest) (WriteResponse, error) {
	var resp WriteResponse
	return resp, c.do(ctx, "POST", "/v1/resources/delete", req, &resp)
}

// WatchOptions say what to watch and from which revision (0: a listing of
// the current state, then SYNC, then changes).
type WatchOptions struct {
	Kinds     []string
	Namespace string
	Name      string
	Revision  uint64
}

// Watch is GET /v1/watch: newline-delimited WatchEvents until ctx ends;
// the caller closes the stream.
func (c *Client) Watch(ctx context.Context, o WatchOptions) (io.ReadCloser, error) {
	q := url.Values{}
	if len(o.Kinds) > 0 {
		q.Set("kinds", strings.Join(o.Kinds, ","))
	}
	if o.Namespace != "" {
		q.Set("namespace", o.Namespace)
	}
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	if o.Revision != 0 {
		q.Set("revision", strconv.FormatUint(o.Revision, 10))
	}
	resp, err := c.send(ctx, "GET", withQuery("/v1/watch", q), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Profile is GET /debug/pprof/<name> (query: "seconds=30" for a CPU
// profile): the agent's pprof profile; the caller closes the stream.
func (c *Client) Profile(ctx context.Context, name, query string) (io.ReadCloser, error) {
	path := "/debug/pprof/" + name
	if query != "" {
		path += "?" + query
	}
	resp, err := c.send(ctx, "GET", path, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// AddWorkload is POST /v1/workloads (`weft workload add`, CNI ADD).
func (c *Client) AddWorkload(ctx context.Context, req WorkloadAddRequest) (Workload, error) {
	var w Workload
	return w, c.do(ctx, "POST", "/v1/workloads", req, &w)
}

// DeleteWorkload is POST /v1/workloads/delete (`weft workload del`, CNI DEL).
func (c *Client) DeleteWorkload(ctx context.Context, ref WorkloadRef) (Workload, error) {
	var w Workload
	return w, c.do(ctx, "POST", "/v1/workloads/delete", ref, &w)
}

// CheckWorkload is POST /v1/workloads/check (CNI CHECK).
func (c *Client) CheckWorkload(ctx context.Context, ref WorkloadRef) (Workload, error) {
	var w Workload
	return w, c.do(ctx, "POST", "/v1/workloads/check", ref, &w)
}

// ListWorkloads is GET /v1/workloads: this node's workloads of a namespace
// ("" is "default"), or of all namespaces.
func (c *Client) ListWorkloads(ctx context.Context, namespace string, all bool) (WorkloadList, error) {
	q := url.Values{}
	if namespace != "" {
		q.Set("namespace", namespace)
	}
	if all {
		q.Set("allNamespaces", "true")
	}
	var l WorkloadList
	return l, c.do(ctx, "GET", withQuery("/v1/workloads", q), nil, &l)
}

// Members is GET /v1/cluster/members.
func (c *Client) Members(ctx context.Context) (MembersResponse, error) {
	var resp MembersResponse
	return resp, c.do(ctx, "GET", "/v1/cluster/members", nil, &resp)
}

// RemoveMember is POST /v1/cluster/remove.
func (c *Client) RemoveMember(ctx context.Context, name string) (RemoveMemberResponse, error) {
	var resp RemoveMemberResponse
	return resp, c.do(ctx, "POST", "/v1/cluster/remove", RemoveMemberRequest{Name: name}, &resp)
}

// Token is GET /v1/token.
func (c *Client) Token(ctx context.Context) (TokenResponse, error) {
	var resp TokenResponse
	return resp, c.do(ctx, "GET", "/v1/token", nil, &resp)
}

// Snapshot is GET /v1/snapshot: the backup stream, whose trailers
// (TrailerSnapshotRevision, TrailerSnapshotConsistent) are known once the
// body has been read. The caller closes the body.
func (c *Client) Snapshot(ctx context.Context) (*http.Response, error) {
	return c.send(ctx, "GET", "/v1/snapshot", nil)
}

// IPAMShowOptions are the query of GET /v1/ipam/show.
type IPAMShowOptions struct {
	Blocks, Borrowed, Configuration bool
	IP                              string
}

// IPAMShow is GET /v1/ipam/show.
func (c *Client) IPAMShow(ctx context.Context, o IPAMShowOptions) (ipam.ShowReport, error) {
	q := url.Values{}
	for k, on := range map[string]bool{"blocks": o.Blocks, "borrowed": o.Borrowed, "configuration": o.Configuration} {
		if on {
			q.Set(k, "true")
		}
	}
	if o.IP != "" {
		q.Set("ip", o.IP)
	}
	var rep ipam.ShowReport
	return rep, c.do(ctx, "GET", withQuery("/v1/ipam/show", q), nil, &rep)
}

// IPAMCheck is GET /v1/ipam/check.
func (c *Client) IPAMCheck(ctx context.Context) (ipam.CheckReport, error) {
	var rep ipam.CheckReport
	return rep, c.do(ctx, "GET", "/v1/ipam/check", nil, &rep)
}

// IPAMRelease is POST /v1/ipam/release.
func (c *Client) IPAMRelease(ctx context.Context, req ipam.ReleaseRequest) (ipam.ReleaseResponse, error) {
	var resp ipam.ReleaseResponse
	return resp, c.do(ctx, "POST", "/v1/ipam/release", req, &resp)
}

// IPAMConfigure is POST /v1/ipam/configure.
func (c *Client) IPAMConfigure(ctx context.Context, req ipam.ConfigureRequest) (ipam.ConfigureResponse, error) {
	var resp ipam.ConfigureResponse
	return resp, c.do(ctx, "POST", "/v1/ipam/configure", req, &resp)
}

// IPAMAssign is POST /v1/ipam/assign.
func (c *Client) IPAMAssign(ctx context.Context, req ipam.AssignRequest) (ipam.AssignResponse, error) {
	var resp ipam.AssignResponse
	return resp, c.do(ctx, "POST", "/v1/ipam/assign", req, &resp)
}

// IPAMReleaseHandle is POST /v1/ipam/release-handle.
func (c *Client) IPAMReleaseHandle(ctx context.Context, handle string) (ipam.ReleaseResponse, error) {
	var resp ipam.ReleaseResponse
	return resp, c.do(ctx, "POST", "/v1/ipam/release-handle", ipam.ReleaseHandleRequest{Handle: handle}, &resp)
}

// IPAMGC is POST /v1/ipam/gc.
func (c *Client) IPAMGC(ctx context.Context, req ipam.GCRequest) (ipam.GCResponse, error) {
	var resp ipam.GCResponse
	return resp, c.do(ctx, "POST", "/v1/ipam/gc", req, &resp)
}

// withQuery appends q to path, and no bare "?" when q is empty (the path
// is named in errors).
func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// Patch is POST /v1/resources/patch.
func (c *Client) Patch(ctx context.Context, req PatchRequest) (WriteResponse, error) {
	var resp WriteResponse
	return resp, c.do(ctx, "POST", "/v1/resources/patch", req, &resp)
}
