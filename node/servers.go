package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// listenSocket opens the local API unix socket: parent directory created
// (0755), a stale socket from a dead agent removed, a live one refused, and
// the socket itself restricted to root (0600).
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory %s: %w", filepath.Dir(path), err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api.socket %s exists and is not a socket: refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("api.socket %s is in use by another running agent", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	}
	// Create the socket with no permissions for group/other from the start,
	// so there is no window in which it is reachable by others.
	l, err := listenUnixPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("listening on api.socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("setting mode 0600 on %s: %w", path, err)
	}
	return l, nil
}

// httpServer runs one http.Server on a listener until shutdown.
type httpServer struct {
	name string
	srv  *http.Server
	l    net.Listener
	log  *slog.Logger
	done chan struct{}
	// cancel ends the contexts of the requests being handled; inflight
	// counts the handlers still running.
	cancel   context.CancelFunc
	inflight sync.WaitGroup
}

func startHTTP(name string, l net.Listener, h http.Handler, log *slog.Logger) *httpServer {
	base, cancel := context.WithCancel(context.Background())
	s := &httpServer{name: name, l: l, log: log, done: make(chan struct{}), cancel: cancel}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.inflight.Add(1)
			defer s.inflight.Done()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("server stopped", "server", name, "err", err)
		}
	}()
	return s
}

// shutdown stops accepting and lets in-flight requests finish until ctx
// ends; then it ends the contexts of the requests still running, so that
// each either completes or undoes what it did and answers, and waits for
// them for drain at most, before closing what is left (long watches). A
// handler is never cut off half-way while the services it writes through
// are still there: the agent closes the store and the dataplane only after
// this returns.
func (s *httpServer) shutdown(ctx context.Context, drain time.Duration) {
	if s == nil {
		return
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		s.cancel()
		finished := make(chan struct{})
		go func() { s.inflight.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(drain):
			s.log.Warn("requests still running at shutdown; cutting them off", "server", s.name)
		}
		_ = s.srv.Close()
	}
	s.cancel()
	<-s.done
}

// metricsHandler serves /metrics from the agent's own registry and the
// health endpoints.
func metricsHandler(reg *prometheus.Registry, h *health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	probe := func(want func(live, ready bool) bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			cs, live, ready := h.report()
			var buf bytes.Buffer
			writeTable(&buf, cs)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if want(live, ready) {
				w.WriteHeader(http.StatusOK)
			} else {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			_, _ = w.Write(buf.Bytes())
		}
	}
	mux.HandleFunc("GET /livez", probe(func(live, _ bool) bool { return live }))
	mux.HandleFunc("GET /readyz", probe(func(live, ready bool) bool { return live && ready }))
	return mux
}
