// Package cluster holds what the agent does about the cluster as a whole:
// its store commands (seeding a new cluster's resources, registering this
// node's Node, removing a dead node's leftovers), registered like IPAM's
// with [Register], and the cluster calls of the local API (members,
// remove, token, snapshot).
package cluster

import (
	"encoding/json"
	"fmt"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// The cluster's store commands. Each runs inside the raft apply
// (deterministic, atomic), so a read-modify-write of a shared object never
// races with another node's. The names keep their "node." prefix: they are
// in every cluster's raft log.
const (
	cmdSeed     = "node.seed"
	cmdRegister = "node.register"
	cmdRemove   = "node.remove"
)

// seedMarker records that the cluster's initial resources were created, so
// that only the bootstrap node's configuration seeds them, once.
var seedMarker = store.Key{Kind: "WeftCluster", Name: "seeded"}

// seedRequest carries the resources the bootstrap node's config seeds:
// IP pools ([[network.pool]]) and global BGP peers ([[bgp.peer]]), plus the
// default tier.
type seedRequest struct {
	Resources []json.RawMessage `json:"resources"`
}

// registerRequest is what an agent says about itself at start and when its
// tunnel addresses change. Fields the agent does not own (asNumber,
// routeReflectorClusterID, labels added by operators) are kept.
type registerRequest struct {
	Name        string            `json:"name"`
	IPv4Address string            `json:"ipv4Address,omitempty"` // address/prefix
	IPv6Address string            `json:"ipv6Address,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	VXLANAddr   string            `json:"vxlanTunnelAddr,omitempty"`
	VXLANMAC    string            `json:"vxlanTunnelMAC,omitempty"`
	// ClearVXLAN drops the tunnel address (no pool uses VXLAN any more).
	ClearVXLAN bool `json:"clearVXLAN,omitempty"`
	// IPIPAddr records the IP-in-IP tunnel address (spec.bgp.
	// ipv4IPIPTunnelAddr); ClearIPIP drops it.
	IPIPAddr  string `json:"ipipTunnelAddr,omitempty"`
	ClearIPIP bool   `json:"clearIPIP,omitempty"`
}

// removeRequest deletes what a removed node held besides IPAM state (which
// ipam.releaseHost handles): calico.md §1.13's cascade.
type removeRequest struct {
	Name string `json:"name"`
}

// Register adds the cluster commands to a store registry.
func Register(reg *store.Registry) {
	if reg.Commands == nil {
		reg.Commands = map[string]store.CommandHandler{}
	}
	reg.Commands[cmdSeed] = applySeed
	reg.Commands[cmdRegister] = applyRegister
	reg.Commands[cmdRemove] = applyRemove
}

func applySeed(tx store.Tx, payload []byte) ([]byte, error) {
	var req seedRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, fmt.Errorf("%w: seed request: %v", store.ErrInvalid, err)
	}
	if _, done := tx.Get(seedMarker); done {
		return json.Marshal(map[string]int{"created": 0})
	}
	created := 0
	for _, raw := range req.Resources {
		rs, err := api.Decode(raw)
		if err != nil || len(rs) != 1 {
			return nil, fmt.Errorf("%w: seed resource: %v", store.ErrInvalid, err)
		}
		r := rs[0]
		api.Default(r)
		if err := api.Validate(r); err != nil {
			return nil, fmt.Errorf("%w: seed: %v", store.ErrInvalid, err)
		}
		k := storeKey(r)
		if _, exists := tx.Get(k); exists {
			continue
		}
		v, err := api.StoreValue(r)
		if err != nil {
			return nil, err
		}
		if _, err := tx.Put(k, v); err != nil {
			return nil, err
		}
		created++
	}
	if _, err := tx.Put(seedMarker, []byte(`{"seeded":true}`)); err != nil {
		return nil, err
	}
	return json.Marshal(map[string]int{"created": created})
}

func applyRegister(tx store.Tx, payload []byte) ([]byte, error) {
	var req registerRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, fmt.Errorf("%w: register request: %v", store.ErrInvalid, err)
	}
	k := store.Key{Kind: api.KindNode, Name: req.Name}
	n := &api.Node{}
	if o, ok := tx.Get(k); ok {
		r, err := api.FromStore(api.KindNode, o.Value, o.UID, o.Revision, o.Created)
		if err != nil {
			return nil, err
		}
		n = r.(*api.Node)
	}
	n.Metadata.Name = req.Name
	if n.Metadata.Labels == nil {
		n.Metadata.Labels = map[string]string{}
	}
	for lk, lv := range req.Labels {
		n.Metadata.Labels[lk] = lv
	}
	if len(n.Metadata.Labels) == 0 {
		n.Metadata.Labels = nil
	}
	if n.Spec.BGP == nil {
		n.Spec.BGP = &api.NodeBGPSpec{}
	}
	n.Spec.BGP.IPv4Address = req.IPv4Address
	n.Spec.BGP.IPv6Address = req.IPv6Address
	n.Spec.Addresses = nil
	for _, a := range []string{req.IPv4Address, req.IPv6Address} {
		if a != "" {
			n.Spec.Addresses = append(n.Spec.Addresses, api.NodeAddress{Address: a, Type: api.NodeAddressCalicoNodeIP})
		}
	}
	if req.VXLANAddr != "" {
		n.Spec.IPv4VXLANTunnelAddr = req.VXLANAddr
		n.Spec.VXLANTunnelMACAddr = req.VXLANMAC
	}
	if req.ClearVXLAN {
		n.Spec.IPv4VXLANTunnelAddr, n.Spec.VXLANTunnelMACAddr = "", ""
	}
	if req.IPIPAddr != "" {
		n.Spec.BGP.IPv4IPIPTunnelAddr = req.IPIPAddr
	}
	if req.ClearIPIP {
		n.Spec.BGP.IPv4IPIPTunnelAddr = ""
	}
	n.Spec.OrchRefs = nil
	// Metadata the store owns is filled in again on read.
	n.Metadata.ResourceVersion, n.Metadata.UID, n.Metadata.CreationTimestamp = "", "", nil
	api.Default(n)
	if err := api.Validate(n); err != nil {
		return nil, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	v, err := api.StoreValue(n)
	if err != nil {
		return nil, err
	}
	if o, ok := tx.Get(k); ok && string(o.Value) == string(v) {
		return []byte(`{"changed":false}`), nil
	}
	if _, err := tx.Put(k, v); err != nil {
		return nil, err
	}
	return []byte(`{"changed":true}`), nil
}

// applyRemove deletes a removed node's WorkloadEndpoints, node-scoped BGP
// peers, node.<name> configurations, host endpoints, and the Node itself.
func applyRemove(tx store.Tx, payload []byte) ([]byte, error) {
	var req removeRequest
	if err := json.Unmarshal(payload, &req); err != nil || req.Name == "" {
		return nil, fmt.Errorf("%w: remove request", store.ErrInvalid)
	}
	var gone []store.Key
	for _, o := range tx.List(api.KindWorkloadEndpoint, "") {
		var w api.WorkloadEndpoint
		if json.Unmarshal(o.Value, &w) == nil && w.Spec.Node == req.Name {
			gone = append(gone, o.Key)
		}
	}
	for _, o := range tx.List(api.KindBGPPeer, "") {
		var p api.BGPPeer
		if json.Unmarshal(o.Value, &p) == nil && p.Spec.Node == req.Name {
			gone = append(gone, o.Key)
		}
	}
	for _, o := range tx.List(api.KindHostEndpoint, "") {
		var h api.HostEndpoint
		if json.Unmarshal(o.Value, &h) == nil && h.Spec.Node == req.Name {
			gone = append(gone, o.Key)
		}
	}
	for _, kind := range []string{api.KindBGPConfiguration, api.KindFelixConfiguration} {
		if k := (store.Key{Kind: kind, Name: "node." + req.Name}); hasKey(tx, k) {
			gone = append(gone, k)
		}
	}
	if k := (store.Key{Kind: api.KindNode, Name: req.Name}); hasKey(tx, k) {
		gone = append(gone, k)
	}
	names := make([]string, 0, len(gone))
	for _, k := range gone {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
		names = append(names, k.String())
	}
	return json.Marshal(map[string]any{"deleted": names})
}

func hasKey(tx store.Tx, k store.Key) bool {
	_, ok := tx.Get(k)
	return ok
}

// storeKey maps a resource to its store key.
func storeKey(r api.Resource) store.Key {
	kind, ns, name := api.Key(r)
	return store.Key{Kind: kind, Namespace: ns, Name: name}
}
