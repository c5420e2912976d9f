// Package bgpsvc runs this node's BGP speaker (node/bgp) inside the agent:
// it hands the speaker the configuration the calculation computed and the
// dataplane's reports, feeds what the speaker learned back into the
// calculation (so learned routes reach the kernel through the routes
// manager, the one writer of routes), reads session passwords from their
// files, writes this node's own peers ([[bgp.peer]]) to the store, and
// serves the BGP calls of the local API.
package bgpsvc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/node/bgp"
	"github.com/weftnet/weft/node/calc"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// Config configures the service.
type Config struct {
	Node   string
	Logger *slog.Logger
	// Registerer receives the speaker's metrics.
	Registerer prometheus.Registerer
	// BGP is the node's [bgp] section.
	BGP config.BGP
	// DataDir keeps the boot ID of the last start (graceful restart: an
	// agent restarted on the same boot finds its routes in the kernel).
	DataDir string
	// BootIDFile is the kernel's boot ID (default
	// /proc/sys/kernel/random/boot_id).
	BootIDFile string
	// Local takes the speaker's state for the calculation (the local input
	// calc.LocalKindBGP; calcrun.Runner.SetLocal).
	Local func(calc.LocalInput)
}

// Service is this node's BGP service.
type Service struct {
	cfg     Config
	log     *slog.Logger
	st      store.Store
	reports dataplane.Reports
	speaker *bgp.Speaker // nil when bgp.enabled = false

	secretsMu sync.Mutex
	secrets   map[calc.SecretRef]secret
}

type secret struct {
	value string
	err   error
	read  time.Time
}

// New returns the service; the speaker runs from [Service.Run].
func New(cfg Config, st store.Store, reports dataplane.Reports) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BootIDFile == "" {
		cfg.BootIDFile = "/proc/sys/kernel/random/boot_id"
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "bgp"), st: st, reports: reports, secrets: map[calc.SecretRef]secret{}}
	if !cfg.BGP.Enabled {
		return s
	}
	restarting := s.sameBoot()
	s.speaker = bgp.New(bgp.Config{
		Logger: cfg.Logger, Registerer: cfg.Registerer, Restarting: restarting, Secret: s.secret,
	})
	return s
}

// Enabled reports whether this node runs a speaker.
func (s *Service) Enabled() bool { return s.speaker != nil }

// Run runs the speaker and writes this node's own peers until ctx ends.
func (s *Service) Run(ctx context.Context) {
	go s.reconcileConfigPeers(ctx)
	if s.speaker == nil {
		<-ctx.Done()
		return
	}
	go func() {
		for {
			r, changed := s.reports.LatestReport()
			s.speaker.SetReport(r)
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
	go s.feed(ctx)
	if err := s.speaker.Run(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("BGP speaker stopped", "err", err)
	}
}

// feedEvery bounds how often the speaker's state is copied for the
// calculation: a burst of learned routes changes it thousands of times.
const feedEvery = 10 * time.Millisecond

// feedPassWait bounds how long a change of the speaker's state waits for
// the dataplane pass of the previous one to end. A pass programming
// thousands of learned routes takes seconds; computing the state again
// every feedEvery meanwhile only takes the CPU that pass needs (the loop
// applies only the latest state anyway). When no pass follows a feed (the
// state computed did not change), the next feed goes after this.
const feedPassWait = 200 * time.Millisecond

// feed hands the speaker's state to the calculation whenever it changes,
// at most every feedEvery and, while the dataplane applies the previous
// state, once that pass ended (at most feedPassWait later).
func (s *Service) feed(ctx context.Context) {
	if s.cfg.Local == nil {
		return
	}
	var last time.Time
	for {
		var passed <-chan struct{} // closed by the next dataplane report
		if s.reports != nil {
			_, passed = s.reports.LatestReport()
		}
		changed := s.speaker.Changed()
		st, _ := s.speaker.State()
		s.cfg.Local(calc.LocalInput{Kind: calc.LocalKindBGP, Value: st})
		last = time.Now()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		if wait := feedEvery - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if passed == nil {
			continue
		}
		if wait := feedPassWait - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-passed:
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// SetOutput implements calcrun.OutputSink: the speaker's configuration.
func (s *Service) SetOutput(out calc.Output) {
	if s.speaker != nil {
		s.speaker.Set(out.BGP)
	}
}

// Status is the BGP part of `weft node status`.
func (s *Service) Status(ctx context.Context) *localapi.BGPStatus {
	if s.speaker == nil {
		return &localapi.BGPStatus{State: localapi.StateDisabled, Peers: []localapi.BGPPeerStatus{}}
	}
	st := s.speaker.Status(ctx)
	return &st
}

// Health is the bgp component of /readyz: always ready (a router being
// down does not make the node unready).
func (s *Service) Health() localapi.ComponentStatus {
	cs := localapi.ComponentStatus{Name: "bgp", State: localapi.StateDisabled, Live: true, Ready: true, Detail: "bgp.enabled = false"}
	if s.speaker == nil {
		return cs
	}
	st := s.speaker.Status(context.Background())
	up := 0
	for _, p := range st.Peers {
		if p.State == "up" {
			up++
		}
	}
	cs.State, cs.Detail = st.State, fmt.Sprintf("%d of %d sessions established", up, len(st.Peers))
	if st.Syncing {
		cs.Detail += "; graceful restart: waiting for the peers' routes"
	}
	return cs
}

// Register adds the service's calls to the local API.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/bgp/routes", func(w http.ResponseWriter, r *http.Request) {
		if s.speaker == nil {
			localapi.WriteError(w, localapi.Errorf(localapi.CodeUnavailable, "BGP is not running on this node (bgp.enabled = false)"))
			return
		}
		routes, err := s.speaker.Routes(r.Context())
		if err != nil {
			localapi.WriteError(w, localapi.Errorf(localapi.CodeInternal, "%v", err))
			return
		}
		localapi.WriteJSON(w, http.StatusOK, localapi.BGPRoutesResponse{Routes: routes})
	})
}

// bootIDFile is where the boot ID of the last start is kept.
const bootIDFile = "bgp-boot-id"

// sameBoot reports whether the last start of this agent was on this boot
// of the machine (its kernel still holds the routes: graceful restart),
// and records this boot.
func (s *Service) sameBoot() bool {
	cur, err := os.ReadFile(s.cfg.BootIDFile)
	if err != nil || s.cfg.DataDir == "" {
		return false
	}
	cur = bytes.TrimSpace(cur)
	path := filepath.Join(s.cfg.DataDir, bootIDFile)
	prev, _ := os.ReadFile(path)
	same := len(cur) > 0 && bytes.Equal(bytes.TrimSpace(prev), cur)
	if err := os.WriteFile(path+".tmp", append(cur, '\n'), 0o600); err == nil {
		_ = os.Rename(path+".tmp", path)
	}
	if same {
		s.log.Info("restarted on the same boot: graceful restart, the learned routes in the kernel stay until the peers are back")
	}
	return same
}

// MaxPasswordLen is TCP MD5's key limit.
const MaxPasswordLen = 80

// secret reads <secrets_dir>/<name>/<key>: a regular file owned by the
// agent's user and readable by it alone; one trailing newline is dropped.
// Answers are cached for a few seconds.
func (s *Service) secret(ref calc.SecretRef) (string, error) {
	s.secretsMu.Lock()
	defer s.secretsMu.Unlock()
	if c, ok := s.secrets[ref]; ok && time.Since(c.read) < 5*time.Second {
		return c.value, c.err
	}
	v, err := readSecret(s.cfg.BGP.SecretsDir, ref)
	s.secrets[ref] = secret{value: v, err: err, read: time.Now()}
	return v, err
}

func readSecret(dir string, ref calc.SecretRef) (string, error) {
	if strings.ContainsAny(ref.Name, "/\x00") || strings.ContainsAny(ref.Key, "/\x00") || ref.Key == "." || ref.Key == ".." {
		return "", fmt.Errorf("invalid secret reference %s/%s", ref.Name, ref.Key)
	}
	path := filepath.Join(dir, ref.Name, ref.Key)
	fi, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s does not exist", path)
		}
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return "", fmt.Errorf("%s is owned by uid %d, not by the agent's user", path, st.Uid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSuffix(string(b), "\n")
	switch {
	case v == "":
		return "", fmt.Errorf("%s is empty", path)
	case len(v) > MaxPasswordLen:
		return "", fmt.Errorf("%s: a TCP MD5 password has at most %d bytes, got %d", path, MaxPasswordLen, len(v))
	}
	return v, nil
}
