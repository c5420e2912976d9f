package localapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// serve runs h on a unix socket in a temporary directory and returns a
// client for it.
func serve(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return NewClient(sock)
}

// An error quoting a huge input (a 500 KB label value) reaches the caller
// as its code and the start of its message, not as a bare "400 Bad
// Request" (the client reads at most 64 KiB of an error body, so an uncut
// message was not valid JSON any more).
func TestHugeErrorMessageReachesTheClient(t *testing.T) {
	huge := strings.Repeat("b", 500_000)
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, Errorf(CodeInvalid, "metadata.labels[\"a\"]: value %q must be no more than 63 characters", huge))
	})
	_, err := c.Write(context.Background(), WriteRequest{Mode: ModeApply})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v, want *Error", err, err)
	}
	if e.Code != CodeInvalid || !strings.HasPrefix(e.Message, `metadata.labels["a"]: value "bbbb`) ||
		!strings.Contains(e.Message, "message cut, 500065 bytes in all") || len(e.Message) > 4200 {
		t.Fatalf("error code %q, %d bytes: %.120s … %s", e.Code, len(e.Message), e.Message, e.Message[max(0, len(e.Message)-60):])
	}
}

// An error answer that is not an ErrorBody (Go's server refusing a
// malformed request) keeps what the server said and maps the status.
func TestNonJSONErrorKeepsItsFirstLine(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "malformed query\nsecond line", http.StatusBadRequest)
	})
	_, err := c.ListWorkloads(context.Background(), "", false)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v, want *Error", err, err)
	}
	want := "agent answered 400 Bad Request to GET /v1/workloads: malformed query"
	if e.Code != CodeInvalid || e.Message != want {
		t.Fatalf("error %q %q, want %q %q", e.Code, e.Message, CodeInvalid, want)
	}
}

func TestCutMessage(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc… (message cut, 6 bytes in all)"},
		{"aé", 2, "a… (message cut, 3 bytes in all)"}, // never half a character
	} {
		if got := cutMessage(c.in, c.max); got != c.want {
			t.Errorf("cutMessage(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}
