package ipam

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/weftnet/weft/store"
)

// Client runs IPAM's store commands with typed requests and responses:
// what the agent's services (workloads, tunnel addresses, the local API)
// use instead of encoding JSON payloads themselves.
type Client struct{ st store.Store }

// NewClient returns a client over a store.
func NewClient(st store.Store) *Client { return &Client{st: st} }

// Run runs one IPAM command (CmdAssign, CmdRelease, ...) with a JSON
// request and decodes its response into resp (when non-nil). Store errors
// come back unchanged (errors.Is works on them).
func (c *Client) Run(ctx context.Context, cmd string, req, resp any) error {
	payload, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encoding the request: %w", cmd, err)
	}
	out, err := c.st.Command(ctx, cmd, payload)
	if err != nil {
		return err
	}
	if resp != nil {
		if err := json.Unmarshal(out, resp); err != nil {
			return fmt.Errorf("%s: decoding the answer: %w", cmd, err)
		}
	}
	return nil
}

// Assign is CmdAssign.
func (c *Client) Assign(ctx context.Context, req AssignRequest) (AssignResponse, error) {
	var resp AssignResponse
	return resp, c.Run(ctx, CmdAssign, req, &resp)
}

// ReleaseHandle is CmdReleaseHandle.
func (c *Client) ReleaseHandle(ctx context.Context, handle string) (ReleaseResponse, error) {
	var resp ReleaseResponse
	return resp, c.Run(ctx, CmdReleaseHandle, ReleaseHandleRequest{Handle: handle}, &resp)
}
