package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// registry builds the store's command and validator registry: identical
// on every node of a cluster.
func registry(log *slog.Logger) store.Registry {
	reg := store.Registry{Commands: nodeCommands(), Validators: map[string][]store.Validator{}}
	ipam.Register(&reg, log.With("component", "ipam"))
	return reg
}

// openStore starts the datastore: bootstrap, join or resume (SPEC §3).
func (a *Agent) openStore(ctx context.Context) (*store.Node, error) {
	c := a.cfg
	token := ""
	if c.Cluster.TokenFile != "" {
		b, err := os.ReadFile(c.Cluster.TokenFile)
		if err != nil && !(errors.Is(err, os.ErrNotExist) && len(c.Cluster.Join) == 0) {
			return nil, fmt.Errorf("cluster.token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	advertise := a.cfg.AdvertiseAddrPort()
	if !advertise.IsValid() {
		port := c.Cluster.ListenAddrPort().Port()
		addr := a.addr4
		if !addr.IsValid() {
			addr = a.addr6
		}
		advertise = netip.AddrPortFrom(addr, port)
	}
	return store.Open(ctx, store.Config{
		NodeName:  c.Node.Name,
		DataDir:   c.Node.DataDir,
		Listen:    c.Cluster.Listen,
		Advertise: advertise.String(),
		Join:      c.Cluster.Join,
		Token:     token,
		Voters:    c.Cluster.Voters,
		Registry:  registry(a.log),
		Logger:    a.log.With("component", "datastore"),
		Metrics:   a.reg,
	})
}

// datastoreHealth reports the store as a health component: ready when the
// local replica is in sync with the leader.
func (a *Agent) datastoreHealth() localapi.ComponentStatus {
	st := a.store
	cs := localapi.ComponentStatus{Name: "datastore", State: localapi.StateRunning, Live: true}
	if err := st.Err(); err != nil {
		cs.State, cs.Live, cs.Detail = localapi.StateFailed, false, err.Error()
		return cs
	}
	leader, _ := st.Leader()
	switch {
	// Without a leader (cut off from the quorum, or during an election)
	// the replica cannot know it is current, whatever it applied before.
	case leader == "":
		cs.Detail = "no leader (waiting for quorum); serving local reads"
	case st.InSync():
		cs.Ready = true
		cs.Detail = "in sync, leader " + leader
	default:
		cs.Detail = "catching up with leader " + leader
	}
	return cs
}

// seedResources writes what the bootstrap node's config seeds: the IP
// pools, the global BGP peers and the default tier. It runs on every
// start, but the seed command only acts the first time in a cluster's
// life, so later config edits go through `weft apply` as SPEC §2 says.
func (a *Agent) seedResources(ctx context.Context) error {
	var rs []api.Resource
	for _, p := range a.cfg.Network.Pools {
		pool, err := poolResource(p)
		if err != nil {
			return err
		}
		rs = append(rs, pool)
	}
	for i, p := range a.cfg.BGP.Peers {
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
	_, err := a.store.Command(ctx, cmdSeed, payload)
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

// registerNode writes this node's Node resource (addresses, labels, tunnel
// address), keeping what operators set on it.
func (a *Agent) registerNode(ctx context.Context, req registerRequest) error {
	req.Name = a.cfg.Node.Name
	req.Labels = a.cfg.Node.Labels
	if a.addr4.IsValid() {
		req.IPv4Address = netip.PrefixFrom(a.addr4, a.underlay4.Bits()).String()
	}
	if a.addr6.IsValid() {
		req.IPv6Address = netip.PrefixFrom(a.addr6, a.underlay6.Bits()).String()
	}
	payload, _ := json.Marshal(req)
	_, err := a.store.Command(ctx, cmdRegister, payload)
	return err
}

// clusterRoutes registers the cluster calls of the local API.
func (a *Agent) clusterRoutes() {
	a.api.HandleFunc("GET /v1/cluster/members", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		ms, err := a.store.Members(ctx)
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
				localapi.WriteError(w, storeError(err))
				return
			}
			resp.Warning = "no leader: membership as this node last saw it; health unknown"
		}
		localapi.WriteJSON(w, http.StatusOK, resp)
	})
	a.api.HandleFunc("POST /v1/cluster/remove", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.RemoveMemberRequest
		if err := localapi.ReadJSON(w, r, &req); err != nil {
			localapi.WriteError(w, err)
			return
		}
		res, err := a.removeNode(r.Context(), req.Name)
		if err != nil {
			localapi.WriteError(w, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, res)
	})
	a.api.HandleFunc("GET /v1/token", func(w http.ResponseWriter, r *http.Request) {
		tok, err := a.store.TokenString()
		if err != nil {
			localapi.WriteError(w, storeError(err))
			return
		}
		localapi.WriteJSON(w, http.StatusOK, localapi.TokenResponse{Token: tok})
	})
	a.api.HandleFunc("GET /v1/snapshot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Trailer", localapi.TrailerSnapshotRevision+", "+localapi.TrailerSnapshotConsistent)
		// The status line goes out with the first byte: errors after that
		// can only cut the stream, which the client detects (the snapshot
		// carries its own checksum).
		info, err := a.store.SaveSnapshot(r.Context(), w)
		if err != nil {
			a.log.Error("snapshot failed", "err", err)
			panic(http.ErrAbortHandler)
		}
		w.Header().Set(localapi.TrailerSnapshotRevision, fmt.Sprint(info.Revision))
		w.Header().Set(localapi.TrailerSnapshotConsistent, fmt.Sprint(info.Consistent))
		a.log.Info("snapshot saved", "revision", info.Revision, "consistent", info.Consistent)
	})
}

// removeNode removes a dead node from raft and releases what it held:
// IPAM blocks and addresses, its WorkloadEndpoints, node-scoped BGP peers
// and configurations, host endpoints, and its Node resource.
func (a *Agent) removeNode(ctx context.Context, name string) (localapi.RemoveMemberResponse, error) {
	var res localapi.RemoveMemberResponse
	if name == "" {
		return res, localapi.Errorf(localapi.CodeInvalid, "cluster remove needs a node name")
	}
	if name == a.cfg.Node.Name {
		return res, localapi.Errorf(localapi.CodeInvalid, "refusing to remove this node (%s) from itself: run `weft cluster remove %s` on another member", name, name)
	}
	known := false
	if _, ok := a.store.Get(store.Key{Kind: api.KindNode, Name: name}); ok {
		known = true
	}
	if err := a.store.RemoveMember(ctx, name); err != nil {
		if !known || !errors.Is(err, store.ErrNotFound) {
			return res, storeError(err)
		}
		// Not in raft any more (autopilot cleaned it up): still release
		// what it held.
	} else {
		res.RemovedFromRaft = true
	}
	payload, _ := json.Marshal(ipam.ReleaseHostRequest{Node: name})
	out, err := a.store.Command(ctx, ipam.CmdReleaseHost, payload)
	if err != nil {
		return res, storeError(err)
	}
	res.IPAM = json.RawMessage(out)
	payload, _ = json.Marshal(removeRequest{Name: name})
	out, err = a.store.Command(ctx, cmdRemove, payload)
	if err != nil {
		return res, storeError(err)
	}
	var del struct {
		Deleted []string `json:"deleted"`
	}
	_ = json.Unmarshal(out, &del)
	res.Deleted = del.Deleted
	a.log.Info("removed node", "node", name, "raft", res.RemovedFromRaft, "deleted", len(res.Deleted))
	return res, nil
}
