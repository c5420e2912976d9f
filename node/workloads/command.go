package workloads

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// cmdPutWorkload writes a WorkloadEndpoint inside the raft apply, where no
// race can slip past its checks: a second workload of the same namespace
// and name on another node is refused (workload names are unique per
// namespace across the cluster, like pod names), and so is an address that
// another endpoint or a node's tunnel already holds — two endpoints never
// hold one address, whatever IPAM says (an `ipam release --force` of a
// live address, a restore from an old backup).
const cmdPutWorkload = "node.putWorkload"

// Register adds the workload commands to a store registry.
func Register(reg *store.Registry) {
	if reg.Commands == nil {
		reg.Commands = map[string]store.CommandHandler{}
	}
	reg.Commands[cmdPutWorkload] = applyPutWorkload
}

func applyPutWorkload(tx store.Tx, payload []byte) ([]byte, error) {
	rs, err := api.Decode(payload)
	if err != nil || len(rs) != 1 {
		return nil, fmt.Errorf("%w: workload endpoint: %v", store.ErrInvalid, err)
	}
	w, ok := rs[0].(*api.WorkloadEndpoint)
	if !ok {
		return nil, fmt.Errorf("%w: not a WorkloadEndpoint", store.ErrInvalid)
	}
	api.Default(w)
	if err := api.Validate(w); err != nil {
		return nil, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	k := storeKey(w)
	mine := addrs(w)
	for _, o := range tx.List(api.KindWorkloadEndpoint, "") {
		if o.Key == k {
			continue
		}
		var other api.WorkloadEndpoint
		if json.Unmarshal(o.Value, &other) != nil {
			continue
		}
		if o.Namespace == k.Namespace && other.Spec.Workload == w.Spec.Workload {
			return nil, &store.KeyError{Key: k, Err: fmt.Errorf("%w: workload %s/%s already exists on node %s", store.ErrExists, k.Namespace, w.Spec.Workload, other.Spec.Node)}
		}
		for a := range addrs(&other) {
			if mine[a] {
				return nil, &store.KeyError{Key: k, Err: fmt.Errorf("%w: address %s is held by workload %s/%s on node %s", store.ErrConflict, a, o.Namespace, other.Spec.Workload, other.Spec.Node)}
			}
		}
	}
	for _, o := range tx.List(api.KindNode, "") {
		var n api.Node
		if json.Unmarshal(o.Value, &n) != nil {
			continue
		}
		if a, err := netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr); err == nil && mine[a] {
			return nil, &store.KeyError{Key: k, Err: fmt.Errorf("%w: address %s is node %s's VXLAN tunnel address", store.ErrConflict, a, o.Name)}
		}
	}
	v, err := api.StoreValue(w)
	if err != nil {
		return nil, err
	}
	o, err := tx.Put(k, v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(o.Revision)
}

// addrs are the addresses of an endpoint.
func addrs(w *api.WorkloadEndpoint) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, s := range w.Spec.IPNetworks {
		if p, err := netip.ParsePrefix(s); err == nil {
			out[p.Addr()] = true
		}
	}
	return out
}

// storeKey maps a resource to its store key.
func storeKey(r api.Resource) store.Key {
	kind, ns, name := api.Key(r)
	return store.Key{Kind: kind, Namespace: ns, Name: name}
}
