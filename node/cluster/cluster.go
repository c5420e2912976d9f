package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/apierr"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// Store is what the cluster service needs of the datastore.
type Store interface {
	store.Store
	Members(ctx context.Context) ([]store.Member, error)
	RemoveMember(ctx context.Context, name string) error
	TokenString() (string, error)
	SaveSnapshot(ctx context.Context, w io.Writer) (store.SnapshotInfo, error)
}

// Self is how this node describes itself in its Node resource.
type Self struct {
	Name   string
	Labels map[string]string
	// Address4 and Address6 are the underlay addresses with their
	// connected subnet's length (invalid: none).
	Address4, Address6 netip.Prefix
}

// Service is the cluster service: the cluster calls of the local API, and
// the writes an agent makes about itself.
type Service struct {
	st   Store
	self Self
	log  *slog.Logger
}

// New returns the service.
func New(st Store, self Self, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, self: self, log: log}
}

// Seed writes what the bootstrap node's config seeds: the IP pools, the
// global BGP peers and the default tier. It runs on every start, but the
// seed command only acts the first time in a cluster's life, so later
// config edits go through `weft apply` as SPEC §2 says.
func Seed(ctx context.Context, st store.Store, cfg *config.Config) error {
	var rs []api.Resource
	for _, p := range cfg.Network.Pools {
		pool, err := poolResource(p)
		if err != nil {
			return err
		}
		rs = append(rs, pool)
	}
	for i, p := range cfg.BGP.Peers {
		peer := &api.BGPPeer{}
		peer.Metadata.Name = fmt.Sprintf("seed-peer-%d", i)
		peer.Spec.PeerIP = p.Address
		asn := api.ASNumber(p.ASNumber)
		peer.Spec.ASNumber = asn
		rs = append(rs, peer)
	}
	rs = append(rs, api.DefaultTier())
	var req seedRequest
	for _, r := range rs {
		api.Default(r)
		if err := api.Validate(r); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		b, err := api.Encode("json", []api.Resource{r})
		if err != nil {
			return err
		}
		req.Resources = append(req.Resources, b)
	}
	payload, _ := json.Marshal(req)
	_, err := st.Command(ctx, cmdSeed, payload)
	return err
}

// poolResource turns a [[network.pool]] into an IPPool.
func poolResource(p config.Pool) (*api.IPPool, error) {
	pool := &api.IPPool{}
	pool.Metadata.Name = p.Name
	pool.Spec = api.IPPoolSpec{
		CIDR:         p.CIDR,
		BlockSize:    p.BlockSize,
		VXLANMode:    p.VXLANMode,
		IPIPMode:     p.IPIPMode,
		NATOutgoing:  p.NATOutgoing,
		Disabled:     p.Disabled,
		NodeSelector: p.NodeSelector,
	}
	return pool, nil
}

// Tunnel is a change of this node's tunnel addresses recorded on its Node:
// the VXLAN address and its VTEP MAC, or Clear (of the VXLAN address); the
// IP-in-IP address, or ClearIPIP.
type Tunnel struct {
	VXLANAddr string
	VXLANMAC  string
	Clear     bool
	IPIPAddr  string
	ClearIPIP bool
}

// RegisterNode writes this node's Node resource (addresses, labels, and a
// tunnel change when given), keeping what operators set on it.
func (s *Service) RegisterNode(ctx context.Context, t Tunnel) error {
	req := registerRequest{Name: s.self.Name, Labels: s.self.Labels,
		VXLANAddr: t.VXLANAddr, VXLANMAC: t.VXLANMAC, ClearVXLAN: t.Clear,
		IPIPAddr: t.IPIPAddr, ClearIPIP: t.ClearIPIP}
	if s.self.Address4.IsValid() {
		req.IPv4Address = s.self.Address4.String()
	}
	if s.self.Address6.IsValid() {
		req.IPv6Address = s.self.Address6.String()
	}
	payload, _ := json.Marshal(req)
	_, err := s.st.Command(ctx, cmdRegister, payload)
	return err
}

// Register adds the service's calls to the local API.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/cluster/members", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		ms, err := s.st.Members(ctx)
		resp := localapi.MembersResponse{Members: make([]localapi.Member, 0, len(ms))}
		for _, m := range ms {
			last := m.LastContact.Seconds()
			if m.LastContact < 0 {
				last = -1 // unknown (the store says -1ns), as localapi.Member documents
			}
			resp.Members = append(resp.Members, localapi.Member{
				Name: m.Name, Address: m.Address, Role: string(m.Role), Healthy: m.Healthy,
				LastContactSeconds: last,
			})
		}
		if err != nil {
			if !errors.Is(err, store.ErrNoLeader) || len(ms) == 0 {
				localapi.WriteError(w, apierr.FromStore(err))
				return
			}
			resp.Warning = "no leader: membership as this node last saw it; health unknown"
		}
		localapi.WriteJSON(w, http.StatusOK, resp)
	})
	mux.HandleFunc("POST /v1/cluster/remove", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.RemoveMemberRequest
		if err := localapi.ReadJSON(w, r, &req); err != nil {
			localapi.WriteError(w, err)
			return
		}
		res, err := s.RemoveNode(r.Context(), req.Name)
		if err != nil {
			localapi.WriteError(w, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/token", func(w http.ResponseWriter, r *http.Request) {
		tok, err := s.st.TokenString()
		if err != nil {
			localapi.WriteError(w, apierr.FromStore(err))
			return
		}
		localapi.WriteJSON(w, http.StatusOK, localapi.TokenResponse{Token: tok})
	})
	mux.HandleFunc("GET /v1/snapshot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Trailer", localapi.TrailerSnapshotRevision+", "+localapi.TrailerSnapshotConsistent)
		// The status line goes out with the first byte: errors after that
		// can only cut the stream, which the client detects (the snapshot
		// carries its own checksum).
		info, err := s.st.SaveSnapshot(r.Context(), w)
		if err != nil {
			s.log.Error("snapshot failed", "err", err)
			panic(http.ErrAbortHandler)
		}
		w.Header().Set(localapi.TrailerSnapshotRevision, fmt.Sprint(info.Revision))
		w.Header().Set(localapi.TrailerSnapshotConsistent, fmt.Sprint(info.Consistent))
		s.log.Info("snapshot saved", "revision", info.Revision, "consistent", info.Consistent)
	})
}

// RemoveNode removes a dead node from raft and releases what it held:
// IPAM blocks and addresses, its WorkloadEndpoints, node-scoped BGP peers
// and configurations, host endpoints, and its Node resource.
func (s *Service) RemoveNode(ctx context.Context, name string) (localapi.RemoveMemberResponse, error) {
	var res localapi.RemoveMemberResponse
	if name == "" {
		return res, localapi.Errorf(localapi.CodeInvalid, "cluster remove needs a node name")
	}
	if name == s.self.Name {
		return res, localapi.Errorf(localapi.CodeInvalid, "refusing to remove this node (%s) from itself: run `weft cluster remove %s` on another member", name, name)
	}
	known := false
	if _, ok := s.st.Get(store.Key{Kind: api.KindNode, Name: name}); ok {
		known = true
	}
	if err := s.st.RemoveMember(ctx, name); err != nil {
		if !known || !errors.Is(err, store.ErrNotFound) {
			return res, apierr.FromStore(err)
		}
		// Not in raft any more (autopilot cleaned it up): still release
		// what it held.
	} else {
		res.RemovedFromRaft = true
	}
	payload, _ := json.Marshal(ipam.ReleaseHostRequest{Node: name})
	out, err := s.st.Command(ctx, ipam.CmdReleaseHost, payload)
	if err != nil {
		return res, apierr.FromStore(err)
	}
	res.IPAM = json.RawMessage(out)
	payload, _ = json.Marshal(removeRequest{Name: name})
	out, err = s.st.Command(ctx, cmdRemove, payload)
	if err != nil {
		return res, apierr.FromStore(err)
	}
	var del struct {
		Deleted []string `json:"deleted"`
	}
	_ = json.Unmarshal(out, &del)
	res.Deleted = del.Deleted
	s.log.Info("removed node", "node", name, "raft", res.RemovedFromRaft, "deleted", len(res.Deleted))
	return res, nil
}
