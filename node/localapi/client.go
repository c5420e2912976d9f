package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// DefaultSocket is the agent's socket when neither --socket nor
// WEFT_SOCKET says otherwise.
const DefaultSocket = "/run/weft/weft.sock"

// Client talks to one agent over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Socket is the path this client dials.
func (c *Client) Socket() string { return c.socket }

// do sends a request with an optional JSON body and decodes a JSON response
// into out (when non-nil). Errors from the agent come back as *Error. The
// typed methods (api.go) are the client's API.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding the agent's answer to %s %s: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://weft"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
		return nil, errorFromBody(resp, data, method, path)
	}
	return resp, nil
}

// errorFromBody turns an error response into an *Error: the agent's
// ErrorBody, or, for an answer that is not one (Go's HTTP server refusing
// a malformed request, an older or foreign server), the status with the
// first line of what it said.
func errorFromBody(resp *http.Response, data []byte, method, path string) *Error {
	var eb ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
		return &Error{Code: eb.Code, Message: eb.Error}
	}
	code := CodeInternal
	switch resp.StatusCode {
	case http.StatusBadRequest:
		code = CodeInvalid
	case http.StatusRequestEntityTooLarge:
		code = CodeTooLarge
	case http.StatusServiceUnavailable:
		code = CodeUnavailable
	}
	msg := fmt.Sprintf("agent answered %s to %s %s", resp.Status, method, cutMessage(path, 200))
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	line = strings.TrimSpace(line)
	if line != "" && line != resp.Status {
		msg += ": " + cutMessage(line, 200)
	}
	return &Error{Code: code, Message: msg}
}

// dialError turns connection failures into one clear sentence.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("no agent socket at %s (is `weft agent` running? set --socket or WEFT_SOCKET)", c.socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("agent socket %s refuses connections (the agent is not running)", c.socket)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
		return fmt.Errorf("permission denied on agent socket %s (root only)", c.socket)
	}
	return fmt.Errorf("talking to the agent at %s: %w", c.socket, err)
}
