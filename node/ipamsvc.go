package node

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// ipamService serves `weft ipam ...`, runs the IPAM housekeeping on the
// leader (empty-block reclaim, garbage collection) and exports IPAM
// metrics.
type ipamService struct {
	st  *store.Node
	me  string
	log *slog.Logger
	// GC and reclaim settings (tests shrink them).
	period     time.Duration
	leakGrace  time.Duration
	emptyGrace time.Duration

	gcCandidates   prometheus.Gauge
	gcReclamations prometheus.Counter
}

func newIPAMService(st *store.Node, me string, log *slog.Logger, reg prometheus.Registerer) *ipamService {
	s := &ipamService{
		st: st, me: me, log: log,
		period:     time.Minute,
		leakGrace:  ipam.DefaultLeakGracePeriod,
		emptyGrace: ipam.DefaultEmptyBlockGrace,
		gcCandidates: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_ipam_allocations_gc_candidates", Help: "Allocations found leaked by the last GC pass and not yet released (stays non-zero when GC is stuck).",
		}),
		gcReclamations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_ipam_allocations_gc_reclamations_total", Help: "Leaked allocations released by the GC.",
		}),
	}
	reg.MustRegister(s.gcCandidates, s.gcReclamations, &ipamCollector{st: st})
	return s
}

func (s *ipamService) register(mux *http.ServeMux) {
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
func (s *ipamService) handleAssign(w http.ResponseWriter, r *http.Request) {
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

func (s *ipamService) handleReleaseHandle(w http.ResponseWriter, r *http.Request) {
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
func (s *ipamService) handleGC(w http.ResponseWriter, r *http.Request) {
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

func (s *ipamService) handleShow(w http.ResponseWriter, r *http.Request) {
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
		localapi.WriteError(w, ipamError(err))
		return
	}
	localapi.WriteJSON(w, http.StatusOK, rep)
}

func (s *ipamService) handleCheck(w http.ResponseWriter, r *http.Request) {
	if _, err := s.st.ConsistentRevision(r.Context()); err != nil {
		localapi.WriteError(w, storeError(err))
		return
	}
	rep, err := ipam.Check(ipam.StoreReader(s.st))
	if err != nil {
		localapi.WriteError(w, ipamError(err))
		return
	}
	localapi.WriteJSON(w, http.StatusOK, rep)
}

func (s *ipamService) handleRelease(w http.ResponseWriter, r *http.Request) {
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

func (s *ipamService) handleConfigure(w http.ResponseWriter, r *http.Request) {
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

// command runs an IPAM store command with a JSON request and response.
func (s *ipamService) command(ctx context.Context, name string, req, resp any) error {
	payload, err := json.Marshal(req)
	if err != nil {
		return err
	}
	out, err := s.st.Command(ctx, name, payload)
	if err != nil {
		return ipamError(err)
	}
	if resp != nil {
		if err := json.Unmarshal(out, resp); err != nil {
			return err
		}
	}
	return nil
}

// ipamError maps IPAM and store errors onto local API errors.
func ipamError(err error) error {
	// IPAM's conflicts (pool exhausted, address taken, handle mismatch)
	// explain themselves; storeError's advice for revision conflicts ("get
	// it again and retry") would mislead.
	if errors.Is(err, store.ErrConflict) {
		return &localapi.Error{Code: localapi.CodeConflict, Message: err.Error()}
	}
	if e := storeError(err); e != err {
		return e
	}
	var ie *ipam.Error
	if errors.As(err, &ie) {
		return &localapi.Error{Code: localapi.CodeInvalid, Message: err.Error()}
	}
	return err
}

// deletePool is the delete hook for IPPools: Calico's delete flow, refused
// while addresses are in use unless forced.
func (s *ipamService) deletePool(ctx context.Context, k store.Key, rev uint64, force bool) (store.Object, error) {
	var resp ipam.DeletePoolResponse
	if err := s.command(ctx, ipam.CmdDeletePool, ipam.DeletePoolRequest{Name: k.Name, Force: force, Revision: rev}, &resp); err != nil {
		return store.Object{}, err
	}
	return store.Object{Key: k, Revision: s.st.Revision()}, nil
}

// housekeeping runs on every node but acts only on the leader: one node
// does the cluster-wide IPAM chores, and a new leader takes over.
func (s *ipamService) housekeeping(ctx context.Context) {
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

func (s *ipamService) runOnce(ctx context.Context) {
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
type ipamCollector struct{ st *store.Node }

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
