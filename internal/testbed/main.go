package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/weftnet/weft/internal/site"
	"github.com/weftnet/weft/internal/testtier"
)

// envHelper makes a test binary act as one of the test bed's helper
// programs instead of running tests (see Main).
const (
	envHelper       = "WEFT_TESTBED_HELPER"
	helperFakeAgent = "fake-agent"
	// EnvFakeStopDelay delays the fake agent's exit after SIGTERM by a Go
	// duration, to exercise StopAgent's limit.
	EnvFakeStopDelay = "WEFT_TESTBED_FAKE_STOP_DELAY"
)

// Main is the TestMain of every package that uses the test bed:
//
//	func TestMain(m *testing.M) { testbed.Main(m) }
//
// In a helper process it runs the helper (the fake agent) instead of the
// tests. Otherwise, as root and without -short, it first sweeps what interrupted earlier runs
// left (Sweep), removes this run's sites if the run is interrupted by SIGINT
// or SIGTERM, and removes the weft binary it built at the end.
func Main(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	// Under -short (make test-unit) no site is built: nothing to sweep.
	if !testtier.ShortMain() && os.Geteuid() == 0 {
		if err := Sweep(os.Stderr); err != nil {
			fmt.Fprintf(os.Stderr, "testbed: sweep: %v\n", err)
		}
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-sigs
			fmt.Fprintf(os.Stderr, "testbed: %v: removing this run's sites\n", sig)
			sweepOwnedBy(os.Getpid())
			removeOwnBinDir()
			os.Exit(130)
		}()
	}
	code := m.Run()
	removeOwnBinDir()
	os.Exit(code)
}

func runHelper(mode string, args []string) int {
	switch mode {
	case helperFakeAgent:
		if err := fakeAgent(args); err != nil {
			fmt.Fprintf(os.Stderr, "fake agent: %v\n", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(os.Stderr, "testbed: unknown helper %q\n", mode)
		return 2
	}
}

// fakeAgent stands in for `weft agent --config FILE` when testing the test
// bed: it checks that it runs with a private /run/wireguard tmpfs, drops a
// file there as wireguard-go would its UAPI socket, serves /livez and
// /readyz on metrics.listen and {"name","ready"} on api.socket, and exits 0
// on SIGTERM (after EnvFakeStopDelay).
func fakeAgent(args []string) error {
	if len(args) != 3 || args[0] != "agent" || args[1] != "--config" {
		return fmt.Errorf("usage: agent --config FILE, got %q", args)
	}
	var cfg struct {
		Node    struct{ Name string }
		API     struct{ Socket string }
		Metrics struct{ Listen string }
	}
	if _, err := toml.DecodeFile(args[2], &cfg); err != nil {
		return err
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	if !hasWireGuardTmpfs(string(mounts)) {
		return errors.New(site.WireGuardDir + " is not the host's private tmpfs")
	}
	uapi := filepath.Join(site.WireGuardDir, cfg.Node.Name+".sock")
	if err := os.WriteFile(uapi, nil, 0o600); err != nil {
		return err
	}
	defer os.Remove(uapi)

	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	metricsLn, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return err
	}
	_ = os.Remove(cfg.API.Socket)
	apiLn, err := net.Listen("unix", cfg.API.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.API.Socket)
	api := http.NewServeMux()
	api.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "{\"name\":%q,\"ready\":true}\n", cfg.Node.Name)
	})
	metricsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	apiSrv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = metricsSrv.Serve(metricsLn) }()
	go func() { _ = apiSrv.Serve(apiLn) }()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("fake agent %s ready on %s\n", cfg.Node.Name, cfg.Metrics.Listen)
	sig := <-sigs
	fmt.Printf("fake agent %s: %v, stopping\n", cfg.Node.Name, sig)
	if d := os.Getenv(EnvFakeStopDelay); d != "" {
		delay, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil {
			return fmt.Errorf("%s: %w", EnvFakeStopDelay, err)
		}
		time.Sleep(delay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = metricsSrv.Shutdown(ctx)
	_ = apiSrv.Shutdown(ctx)
	return nil
}
