package bgpsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/store"
)

// A node's [[bgp.peer]] are its own peers: BGPPeers with spec.node set to
// the node, named "<node>.cfg-<address>" and marked with the annotation
// AnnotationConfigPeerOf, written at every start so that the store holds
// exactly the TOML's (a peer removed from the TOML goes). Operators may
// add node-specific BGPPeers of their own; those are never touched.

// AnnotationConfigPeerOf marks a BGPPeer written from a node's [[bgp.peer]].
const AnnotationConfigPeerOf = "weft.io/config-peer-of"

// cmdConfigPeers is the store command that replaces a node's TOML peers in
// one raft apply.
const cmdConfigPeers = "bgp.configPeers"

type configPeersRequest struct {
	Node  string            `json:"node"`
	Peers []json.RawMessage `json:"peers"`
}

// Register adds the service's store commands to a registry.
func Register(reg *store.Registry) {
	if reg.Commands == nil {
		reg.Commands = map[string]store.CommandHandler{}
	}
	reg.Commands[cmdConfigPeers] = applyConfigPeers
}

// ConfigPeers turns a node's [[bgp.peer]] into its BGPPeer resources.
func ConfigPeers(node string, peers []config.BGPPeer) ([]*api.BGPPeer, error) {
	var out []*api.BGPPeer
	for i, p := range peers {
		r := &api.BGPPeer{}
		r.Metadata.Name = node + ".cfg-" + nameFromAddress(p.Address)
		r.Metadata.Annotations = map[string]string{AnnotationConfigPeerOf: node}
		r.Spec = api.BGPPeerSpec{Node: node, PeerIP: p.Address, ASNumber: api.ASNumber(p.ASNumber)}
		api.Default(r)
		if err := api.Validate(r); err != nil {
			return nil, fmt.Errorf("bgp.peer[%d]: %w", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// nameFromAddress makes a DNS label of a peer address ("192.0.2.1" →
// "192-0-2-1", "[fd00::1]:1179" → "fd00--1-1179").
func nameFromAddress(a string) string {
	r := strings.NewReplacer("[", "", "]", "", ".", "-", ":", "-")
	return strings.Trim(r.Replace(strings.ToLower(a)), "-")
}

// reconcileConfigPeers writes this node's [[bgp.peer]] until it succeeds.
func (s *Service) reconcileConfigPeers(ctx context.Context) {
	peers, err := ConfigPeers(s.cfg.Node, s.cfg.BGP.Peers)
	if err != nil {
		s.log.Error("this node's [[bgp.peer]] cannot become BGPPeers", "err", err)
		return
	}
	req := configPeersRequest{Node: s.cfg.Node}
	for _, p := range peers {
		b, err := api.Encode("json", []api.Resource{p})
		if err != nil {
			s.log.Error("encoding a BGPPeer", "err", err)
			return
		}
		req.Peers = append(req.Peers, b)
	}
	payload, _ := json.Marshal(req)
	for wait := time.Second; ctx.Err() == nil; wait = min(2*wait, 30*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		out, err := s.st.Command(cctx, cmdConfigPeers, payload)
		cancel()
		if err == nil {
			s.log.Info("this node's own BGP peers written", "peers", len(peers), "result", string(out))
			return
		}
		s.log.Warn("writing this node's own BGP peers failed; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func applyConfigPeers(tx store.Tx, payload []byte) ([]byte, error) {
	var req configPeersRequest
	if err := json.Unmarshal(payload, &req); err != nil || req.Node == "" {
		return nil, fmt.Errorf("%w: config peers request", store.ErrInvalid)
	}
	want := map[store.Key][]byte{}
	for _, raw := range req.Peers {
		rs, err := api.Decode(raw)
		if err != nil || len(rs) != 1 {
			return nil, fmt.Errorf("%w: config peer: %v", store.ErrInvalid, err)
		}
		p, ok := rs[0].(*api.BGPPeer)
		if !ok || p.Spec.Node != req.Node || p.Metadata.Annotations[AnnotationConfigPeerOf] != req.Node {
			return nil, fmt.Errorf("%w: config peer %s is not node %s's own", store.ErrInvalid, api.Describe(rs[0]), req.Node)
		}
		api.Default(p)
		if err := api.Validate(p); err != nil {
			return nil, fmt.Errorf("%w: %v", store.ErrInvalid, err)
		}
		v, err := api.StoreValue(p)
		if err != nil {
			return nil, err
		}
		want[store.Key{Kind: api.KindBGPPeer, Name: p.Metadata.Name}] = v
	}
	var removed, written []string
	for _, o := range tx.List(api.KindBGPPeer, "") {
		var p api.BGPPeer
		if json.Unmarshal(o.Value, &p) != nil || p.Metadata.Annotations[AnnotationConfigPeerOf] != req.Node {
			continue
		}
		if _, keep := want[o.Key]; keep {
			continue
		}
		if err := tx.Delete(o.Key); err != nil {
			return nil, err
		}
		removed = append(removed, o.Name)
	}
	keys := make([]store.Key, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	for _, k := range keys {
		if o, ok := tx.Get(k); ok && string(o.Value) == string(want[k]) {
			continue
		}
		if _, err := tx.Put(k, want[k]); err != nil {
			return nil, err
		}
		written = append(written, k.Name)
	}
	return json.Marshal(map[string][]string{"written": written, "removed": removed})
}
