package ipam

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// DefaultLeakGracePeriod is how long an allocation must stay leaked before
// ipam.gc releases it (Calico's leakGracePeriod default).
const DefaultLeakGracePeriod = 15 * time.Minute

// GCRequest is the payload of ipam.gc.
type GCRequest struct {
	// GracePeriodSeconds: nil means DefaultLeakGracePeriod; 0 releases a
	// leak as soon as it is seen.
	GracePeriodSeconds *int64 `json:"gracePeriodSeconds,omitempty"`
}

// GCResponse reports the pass, for logs and metrics
// (ipam_allocations_gc_candidates, ipam_allocations_gc_reclamations).
type GCResponse struct {
	// Candidates are addresses found leaked and not (yet) released.
	Candidates int `json:"candidates"`
	// CandidateHandles are their handles, sorted.
	CandidateHandles []string `json:"candidateHandles"`
	// Reclaimed are the addresses released by this pass.
	Reclaimed []Released `json:"reclaimed"`
}

// allocationRef is one allocated ordinal.
type allocationRef struct {
	block netip.Prefix
	b     *Block
	o     int
	attr  AllocationAttribute
}

// workloadEndpointIPs reads the addresses (spec.ipNetworks) of a stored
// WorkloadEndpoint.
func workloadEndpointIPs(value []byte) ([]netip.Addr, bool) {
	var w api.WorkloadEndpoint
	if json.Unmarshal(value, &w) != nil {
		return nil, false
	}
	var out []netip.Addr
	for _, s := range w.Spec.IPNetworks {
		if a, err := ParseAddrOrPrefix(s); err == nil {
			out = append(out, a)
		}
	}
	return out, true
}

// splitEndpoint splits "<namespace>/<name>".
func splitEndpoint(ref string) (ns, name string, ok bool) {
	ns, name, ok = strings.Cut(ref, "/")
	return ns, name, ok && name != ""
}

// leaked judges one allocation (calico.md §4.4): a tunnel address by
// whether its node exists; a workload address by whether its
// WorkloadEndpoint exists and, when that lists addresses, lists this one.
// An allocation that names neither cannot be judged and is never leaked.
func leaked(g getter, ref allocationRef) bool {
	if isTunnelType(ref.attr.Type) {
		if ref.attr.Node == "" {
			return false
		}
		_, ok := g.Get(store.Key{Kind: KindNode, Name: ref.attr.Node})
		return !ok
	}
	ns, name, ok := splitEndpoint(ref.attr.WorkloadEndpoint)
	if !ok {
		return false
	}
	o, ok := g.Get(store.Key{Kind: KindWorkloadEndpoint, Namespace: ns, Name: name})
	if !ok {
		return true
	}
	ips, ok := workloadEndpointIPs(o.Value)
	if !ok || len(ips) == 0 {
		// Not decodable, or still being set up: in use.
		return false
	}
	return !slices.Contains(ips, addrAt(ref.block, ref.o))
}

// gc is the ipam.gc command. A handle whose every address is leaked
// becomes a candidate (its handle records since when); once it has been a
// candidate for the grace period all its addresses are released together
// (handles are all-or-none). The judgement and the release happen in the
// same atomic apply, so the "final re-check" Calico needs is implicit.
func (s *session) gc(r GCRequest) (GCResponse, error) {
	grace := DefaultLeakGracePeriod
	if r.GracePeriodSeconds != nil {
		if *r.GracePeriodSeconds < 0 {
			return GCResponse{}, newError(ErrBadRequest, store.ErrInvalid, "gracePeriodSeconds must not be negative")
		}
		grace = time.Duration(*r.GracePeriodSeconds) * time.Second
	}
	resp := GCResponse{CandidateHandles: []string{}, Reclaimed: []Released{}}
	blocks, err := s.blockPrefixes()
	if err != nil {
		return resp, err
	}
	byHandle := map[string][]allocationRef{}
	err = s.eachBlock(blocks, func(p netip.Prefix, b *Block) error {
		for o := range b.Allocations {
			if attr, ok := b.attribute(o); ok {
				byHandle[attr.Handle] = append(byHandle[attr.Handle], allocationRef{p, b, o, attr})
			}
		}
		return nil
	})
	if err != nil {
		return resp, err
	}
	ids := make([]string, 0, len(byHandle))
	for id := range byHandle {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		refs := byHandle[id]
		all := true
		for _, ref := range refs {
			if !leaked(s.tx, ref) {
				all = false
				break
			}
		}
		h, ok, err := s.handle(id)
		if err != nil {
			return resp, err
		}
		if !ok {
			// No handle object to record the first sighting in: ipam
			// check reports it; leave it to an operator.
			continue
		}
		switch {
		case !all:
			if h.LeakedSince != nil {
				h.LeakedSince = nil
				s.putHandle(h)
			}
		case h.LeakedSince == nil:
			// The first sighting only marks it, even with no grace: an
			// allocation whose workload endpoint is being written right now
			// (a workload add between its IPAM assign and its endpoint
			// write) looks leaked for a moment, and must not be released
			// under it.
			t := s.now
			h.LeakedSince = &t
			s.putHandle(h)
			resp.Candidates += len(refs)
			resp.CandidateHandles = append(resp.CandidateHandles, id)
		case s.now.Sub(*h.LeakedSince) >= grace && s.now.After(*h.LeakedSince):
			for _, ref := range refs {
				rel, err := s.releaseOrdinal(ref.block, ref.b, ref.o)
				if err != nil {
					return resp, err
				}
				resp.Reclaimed = append(resp.Reclaimed, rel)
			}
			s.deleteHandle(id)
			s.log.Info("released leaked addresses", "handle", id, "addresses", len(refs))
		default:
			resp.Candidates += len(refs)
			resp.CandidateHandles = append(resp.CandidateHandles, id)
		}
	}
	return resp, s.flush()
}
