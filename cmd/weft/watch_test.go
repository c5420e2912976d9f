package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/node/localapi"
)

// When the agent ends a watch (it restarted, or the watcher fell behind),
// `weft get -w` says so in one line and exits non-zero, after printing what
// it received: a script watching changes must not take the end of the
// stream for the end of the changes.
func TestWatchEndedByTheAgentIsAnError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/watch", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		obj := json.RawMessage(`{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"s1"},"spec":{"nets":["192.0.2.0/24"]}}`)
		_ = enc.Encode(localapi.WatchEvent{Type: "PUT", Revision: 5, Object: obj})
		_ = enc.Encode(localapi.WatchEvent{Type: "SYNC", Revision: 5})
		// ...and the agent ends the stream.
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	stdout, stderr, code := runWeft(t, nil, "get", "globalnetworksets", "-w", "--socket", sock)
	if code == 0 {
		t.Fatalf("exit 0 after the agent ended the watch; stdout %q", stdout)
	}
	if !strings.Contains(stdout, "s1") {
		t.Errorf("the event received before the end was not printed: %q", stdout)
	}
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "watch ended by the agent") {
		t.Errorf("stderr %q: want one line saying the agent ended the watch", stderr)
	}
}
