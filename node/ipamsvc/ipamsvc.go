// Package ipamsvc serves `weft ipam ...` over the local API, runs the IPAM
// housekeeping on the leader (empty-block reclaim, garbage collection) and
// exports IPAM metrics.
package ipamsvc

import (
	"cmp"
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/apierr"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// Store is what the service needs of the datastore: reads, commands, and
// whether this node leads (only the leader does the housekeeping).
type Store interface {
	store.Store
	Leader() (name, address string)
	InSync() bool
}

// Config configures the service. Zero durations take the defaults.
type Config struct {
	Node   string
	Logger *slog.Logger
	// Registerer receives the IPAM metrics.
	Registerer prometheus.Registerer
	// GCInterval, LeakGrace and EmptyGrace tune the housekeeping
	// ([ipam] gc_interval, leak_grace_period, empty_block_grace_period).
	GCInterval time.Duration
	LeakGrace  time.Duration
	EmptyGrace time.Duration
}

// Service is the IPAM service.
type Service struct {
	st   Store
	ipam *ipam.Client
	me   string
	log  *slog.Logger
	// GC and reclaim settings.
	period     time.Duration
	leakGrace  time.Duration
	emptyGrace time.Duration

	gcCandidates   prometheus.Gauge
	gcReclamations prometheus.Counter
}

// New builds the service and registers its metrics.
func New(st Store, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		st: st, ipam: ipam.NewClient(st), me: cfg.Node, log: cfg.Logger,
		period:     cmp.Or(cfg.GCInterval, time.Minute),
		leakGrace:  cmp.Or(cfg.LeakGrace, ipam.DefaultLeakGracePeriod),
		emptyGrace: cmp.Or(cfg.EmptyGrace, ipam.DefaultEmptyBlockGrace),
		gcCandidates: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_ipam_allocations_gc_candidates", Help: "Allocations found leaked by the last GC pass and not yet released (stays non-zero when GC is stuck).",
		}),
		gcReclamations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_ipam_allocations_gc_reclamations_total", Help: "Leaked allocations released by the GC.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.gcCandidates, s.gcReclamations, &ipamCollector{st: st})
	}
	return s
}

// Register adds the service's calls to the local API.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/ipam/show", s.handleShow)
	mux.HandleFunc("GET /v1/ipam/check", s.handleCheck)
	mux.HandleFunc("POST /v1/ipam/release", s.handleRelease)
	mux.HandleFunc("POST /v1/ipam/configure", s.handleConfigure)
	mux.HandleFunc("POST /v1/ipam/assign", s.handleAssign)
	mux.HandleFunc("POST /v1/ipam/release-handle", s.handleReleaseHandle)
	mux.HandleFunc("POST /v1/ipam/gc", s.handleGC)
}

// handleAssign allocates addresses for a handle on this node: the call
// orchestrators other than `weft workload` and CNI can use (and the IPAM
// cluster tests do).
func (s *Service) handleAssign(w http.ResponseWriter, r *http.Request) {
	var req ipam.AssignRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		localapi.WriteError(w, err)
		return
	}
	if req.Node == "" {
		req.Node = s.me
	}
	if req.Attrs.Node == "" {
		req.Attrs.Node = req.Node
	}
	var resp ipam.AssignResponse
	if err := s.command(r.Context(), ipam.CmdAssign, req, &resp); err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, resp)
}

func (s *Service) handleReleaseHandle(w http.ResponseWriter, r *http.Request) {
	var req ipam.ReleaseHandleRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		localapi.WriteError(w, err)
		return
	}
	var resp ipam.ReleaseResponse
	if err := s.command(r.Context(), ipam.CmdReleaseHandle, req, &resp); err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, resp)
}

// handleGC runs one garbage-collection pass now, with the grace period of
// the request (default: the configured one).
func (s *Service) handleGC(w http.ResponseWriter, r *http.Request) {
	var req ipam.GCRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		localapi.WriteError(w, err)
		return
	}
	if req.GracePeriodSeconds == nil {
		secs := int64(s.leakGrace / time.Second)
		req.GracePeriodSeconds = &secs
	}
	var resp ipam.GCResponse
	if err := s.command(r.Context(), ipam.CmdGC, req, &resp); err != nil {
		localapi.WriteError(w, err)
		return
	}
	s.gcCandidates.Set(float64(resp.Candidates))
	s.gcReclamations.Add(float64(len(resp.Reclaimed)))
	localapi.WriteJSON(w, http.StatusOK, resp)
}

func (s *Service) handleShow(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := ipam.ShowOptions{
		ShowBlocks:        q.Get("blocks") == "true",
		ShowBorrowed:      q.Get("borrowed") == "true",
		ShowConfiguration: q.Get("configuration") == "true",
		IP:                q.Get("ip"),
		Now:               time.Now(),
	}
	rep, err := ipam.Show(ipam.StoreReader(s.st), opts)
	if err != nil {
		localapi.WriteError(w, apierr.FromIPAM(err))
		return
	}
	localapi.WriteJSON(w, http.StatusOK, rep)
}

func (s *Service) handleCheck(w http.ResponseWriter, r *http.Request) {
	if _, err := s.st.ConsistentRevision(r.Context()); err != nil {
		localapi.WriteError(w, apierr.FromStore(err))
		return
	}
	rep, err := ipam.Check(ipam.StoreReader(s.st))
	if err != nil {
		localapi.WriteError(w, apierr.FromIPAM(err))
		return
	}
	localapi.WriteJSON(w, http.StatusOK, rep)
}

func (s *Service) handleRelease(w http.ResponseWriter, r *http.Request) {
	var req ipam.ReleaseRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		localapi.WriteError(w, err)
		return
	}
	var resp ipam.ReleaseResponse
	if err := s.command(r.Context(), ipam.CmdRelease, req, &resp); err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, resp)
}

func (s *Service) handleConfigure(w http.ResponseWriter, r *http.Request) {
	var req ipam.ConfigureRequest
	if err := localapi.ReadJSON(w, r, &req); err != nil {
		localapi.WriteError(w, err)
		return
	}
	var resp ipam.ConfigureResponse
	if err := s.command(r.Context(), ipam.CmdConfigure, req, &resp); err != nil {
		localapi.WriteError(w, err)
		return
	}
	localapi.WriteJSON(w, http.StatusOK, resp)
}

// command runs an IPAM store command with a JSON request and response,
// mapping errors onto the local API's.
func (s *Service) command(ctx context.Context, name string, req, resp any) error {
	return apierr.FromIPAM(s.ipam.Run(ctx, name, req, resp))
}

// DeletePool is the delete hook for IPPools: Calico's delete flow, refused
// while addresses are in use unless forced.
func (s *Service) DeletePool(ctx context.Context, k store.Key, rev uint64, force bool) (store.Object, error) {
	var resp ipam.DeletePoolResponse
	if err := s.command(ctx, ipam.CmdDeletePool, ipam.DeletePoolRequest{Name: k.Name, Force: force, Revision: rev}, &resp); err != nil {
		return store.Object{}, err
	}
	return store.Object{Key: k, Revision: s.st.Revision()}, nil
}

// Run does the housekeeping until ctx ends. It runs on every node but acts
// only on the leader: one node does the cluster-wide IPAM chores, and a new
// leader takes over.
func (s *Service) Run(ctx context.Context) {
	for {
		// Jitter keeps a restarted cluster from doing it in lockstep.
		wait := s.period + time.Duration(rand.Int64N(int64(s.period/5)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if leader, _ := s.st.Leader(); leader != s.me || !s.st.InSync() {
			continue
		}
		s.runOnce(ctx)
	}
}

func (s *Service) runOnce(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	emptySecs := int64(s.emptyGrace / time.Second)
	var rr ipam.ReclaimEmptyResponse
	if err := s.command(cctx, ipam.CmdReclaimEmpty, ipam.ReclaimEmptyRequest{GracePeriodSeconds: &emptySecs}, &rr); err != nil {
		s.log.Warn("ipam: reclaiming empty blocks failed", "err", err)
	} else if len(rr.Released)+len(rr.Orphans) > 0 {
		s.log.Info("ipam: reclaimed empty blocks", "released", rr.Released, "orphans", rr.Orphans)
	}
	leakSecs := int64(s.leakGrace / time.Second)
	var gc ipam.GCResponse
	if err := s.command(cctx, ipam.CmdGC, ipam.GCRequest{GracePeriodSeconds: &leakSecs}, &gc); err != nil {
		s.log.Warn("ipam: garbage collection failed", "err", err)
		return
	}
	s.gcCandidates.Set(float64(gc.Candidates))
	s.gcReclamations.Add(float64(len(gc.Reclaimed)))
	for _, r := range gc.Reclaimed {
		s.log.Info("ipam: released leaked address", "ip", r.IP, "handle", r.Handle, "node", r.Node)
	}
}

// ipamCollector exports IPAM usage computed from the local replica at
// scrape time (calico.md §4.4's ipam_* metrics).
type ipamCollector struct{ st store.Store }

var (
	descInUse    = prometheus.NewDesc("weft_ipam_allocations_in_use", "Addresses allocated, per pool.", []string{"pool"}, nil)
	descBorrowed = prometheus.NewDesc("weft_ipam_allocations_borrowed", "Addresses allocated from a block affine to another node, per pool.", []string{"pool"}, nil)
	descBlocks   = prometheus.NewDesc("weft_ipam_blocks", "Blocks claimed, per pool.", []string{"pool"}, nil)
	descPoolSize = prometheus.NewDesc("weft_ipam_ippool_size", "Addresses in the pool.", []string{"pool", "cidr"}, nil)
	descReserved = prometheus.NewDesc("weft_ipam_ippool_reserved", "Addresses of the pool reserved by IPReservations.", []string{"pool"}, nil)
	descNodeUse  = prometheus.NewDesc("weft_ipam_allocations_per_node", "Addresses used on each node.", []string{"node"}, nil)
)

func (c *ipamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInUse, descBorrowed, descBlocks, descPoolSize, descReserved, descNodeUse} {
		ch <- d
	}
}

func (c *ipamCollector) Collect(ch chan<- prometheus.Metric) {
	u, err := ipam.Usage(ipam.StoreReader(c.st))
	if err != nil {
		return
	}
	for _, p := range u.Pools {
		ch <- prometheus.MustNewConstMetric(descInUse, prometheus.GaugeValue, float64(p.InUse), p.Name)
		ch <- prometheus.MustNewConstMetric(descBorrowed, prometheus.GaugeValue, float64(p.Borrowed), p.Name)
		ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.GaugeValue, float64(p.Blocks), p.Name)
		ch <- prometheus.MustNewConstMetric(descPoolSize, prometheus.GaugeValue, p.Size, p.Name, p.CIDR)
		ch <- prometheus.MustNewConstMetric(descReserved, prometheus.GaugeValue, p.Reserved, p.Name)
	}
	for _, n := range u.Nodes {
		ch <- prometheus.MustNewConstMetric(descNodeUse, prometheus.GaugeValue, float64(n.InUse), n.Node)
	}
}
