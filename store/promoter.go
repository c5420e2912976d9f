package store

import (
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// promoter is raft-autopilot's promoter: it keeps exactly Config.Voters
// voters. It promotes healthy, stable non-voters while voters are missing,
// swaps a voter that has been unhealthy for VoterFailover for a healthy
// non-voter, and demotes voters beyond the configured number.
//
// Voters are counted from the live raft configuration, never from
// autopilot's state: the state is refreshed every AutopilotInterval, so
// right after a promotion it still shows the new voter as a non-voter, and a
// promoter trusting it promotes another one (a 50-node cluster with voters
// = 3 was seen to keep 4).
//
// It also keeps each member's health history (healthHistory): autopilot
// v0.3.0 does not.
type promoter struct {
	self   raft.ServerID
	voters int
	tuning Tuning
	now    func() time.Time
	// servers is the raft configuration as it is now (the latest, even if
	// not yet committed).
	servers        func() ([]raft.Server, error)
	unreachableFor func(raft.ServerID, time.Time) time.Duration
	health         *healthHistory
}

func newPromoter(n *Node, d *pilotDelegate) *promoter {
	return &promoter{
		self:           raft.ServerID(n.name),
		voters:         n.cfg.Voters,
		tuning:         n.cfg.Tuning,
		now:            time.Now,
		servers:        n.raftServers,
		unreachableFor: d.unreachableFor,
		health:         newHealthHistory(5 * n.cfg.Tuning.AutopilotInterval),
	}
}

// GetServerExt runs for every member each time autopilot computes its state,
// on the member's new state: the health history corrects StableSince there,
// for everything that reads it (stability checks, the order of voters).
func (p *promoter) GetServerExt(_ *autopilot.Config, srv *autopilot.ServerState) any {
	srv.Health.StableSince = p.health.observe(srv.Server.ID, srv.Health.Healthy, p.now())
	return nil
}

// GetStateExt runs once the new state is complete: members that left are
// forgotten.
func (p *promoter) GetStateExt(_ *autopilot.Config, s *autopilot.State) any {
	p.health.keepOnly(s.Servers)
	return nil
}

func (p *promoter) GetNodeTypes(_ *autopilot.Config, s *autopilot.State) map[raft.ServerID]autopilot.NodeType {
	out := make(map[raft.ServerID]autopilot.NodeType, len(s.Servers))
	for id, srv := range s.Servers {
		t := srv.Server.NodeType
		if t == "" {
			t = autopilot.NodeVoter
		}
		out[id] = t
	}
	return out
}

func (p *promoter) IsPotentialVoter(t autopilot.NodeType) bool { return t == autopilot.NodeVoter }

func (p *promoter) CalculatePromotionsAndDemotions(c *autopilot.Config, s *autopilot.State) autopilot.RaftChanges {
	servers, err := p.servers()
	if err != nil {
		return autopilot.RaftChanges{}
	}
	now := p.now()
	var voters, failed, candidates []raft.ServerID
	for _, srv := range servers {
		st, known := s.Servers[srv.ID]
		if srv.Suffrage == raft.Voter {
			voters = append(voters, srv.ID)
			if known && srv.ID != p.self && srv.ID != s.Leader && !st.Health.Healthy && now.Sub(st.Health.StableSince) >= p.tuning.VoterFailover {
				failed = append(failed, srv.ID)
			}
			continue
		}
		// Autopilot promotes only what its state shows as a non-voter.
		if known && srv.Suffrage == raft.Nonvoter && st.State == autopilot.RaftNonVoter &&
			st.Server.NodeType != nodeTypeNonVoter && st.Health.IsStable(now, s.ServerStabilizationTime(c)) {
			candidates = append(candidates, srv.ID)
		}
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i] < failed[j] })
	sort.Slice(candidates, func(i, j int) bool { return candidates[i] < candidates[j] })
	var ch autopilot.RaftChanges
	for _, id := range failed {
		if len(candidates) == 0 {
			break
		}
		ch.Demotions = append(ch.Demotions, id)
		ch.Promotions = append(ch.Promotions, candidates[0])
		candidates = candidates[1:]
	}
	count := len(voters) - len(ch.Demotions) + len(ch.Promotions)
	for ; count < p.voters && len(candidates) > 0; count++ {
		ch.Promotions = append(ch.Promotions, candidates[0])
		candidates = candidates[1:]
	}
	if count > p.voters {
		ch.Demotions = append(ch.Demotions, p.surplus(s, voters, ch.Demotions, count-p.voters)...)
	}
	return ch
}

// surplus picks n voters to demote, never this node or one already being
// demoted: first members that asked never to vote, then unhealthy ones,
// then by name (the last ones).
func (p *promoter) surplus(s *autopilot.State, voters, demoted []raft.ServerID, n int) []raft.ServerID {
	rank := func(id raft.ServerID) int {
		st, ok := s.Servers[id]
		switch {
		case ok && st.Server.NodeType == nodeTypeNonVoter:
			return 0
		case ok && !st.Health.Healthy:
			return 1
		default:
			return 2
		}
	}
	var pick []raft.ServerID
	for _, id := range voters {
		if id != p.self && id != s.Leader && !containsID(demoted, id) {
			pick = append(pick, id)
		}
	}
	sort.Slice(pick, func(i, j int) bool {
		if ri, rj := rank(pick[i]), rank(pick[j]); ri != rj {
			return ri < rj
		}
		return pick[i] > pick[j]
	})
	return pick[:min(n, len(pick))]
}

func containsID(ids []raft.ServerID, id raft.ServerID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// FilterFailedServerRemovals lets autopilot remove only members that have
// been unreachable for DeadServerAfter (autopilot itself bounds removals so
// that quorum is never at risk).
func (p *promoter) FilterFailedServerRemovals(_ *autopilot.Config, _ *autopilot.State, failed *autopilot.FailedServers) *autopilot.FailedServers {
	now := p.now()
	dead := func(list []*autopilot.Server) []*autopilot.Server {
		var out []*autopilot.Server
		for _, srv := range list {
			if srv.ID != p.self && p.unreachableFor(srv.ID, now) >= p.tuning.DeadServerAfter {
				out = append(out, srv)
			}
		}
		return out
	}
	return &autopilot.FailedServers{
		StaleNonVoters:  failed.StaleNonVoters,
		StaleVoters:     failed.StaleVoters,
		FailedNonVoters: dead(failed.FailedNonVoters),
		FailedVoters:    dead(failed.FailedVoters),
	}
}

// healthHistory records since when each member has been healthy, or
// unhealthy, as the leader's autopilot saw it. raft-autopilot v0.3.0 means
// to keep this in ServerHealth.StableSince but never updates it after a
// member's first state: buildServerState (state.go) keeps a pointer to the
// previous health, overwrites the health it points to, then compares the
// two, which are always equal. StableSince thus stays the time autopilot
// first saw the member, and a voter that turns unhealthy after VoterFailover
// of membership was demoted at its first failed check (seen 4.2 s after the
// trouble began, against 30 s configured).
type healthHistory struct {
	mu sync.Mutex
	// gap: a member not observed for this long (this node did not lead in
	// between) starts over, as if new.
	gap   time.Duration
	marks map[raft.ServerID]healthMark
}

type healthMark struct {
	healthy     bool
	since, seen time.Time
}

func newHealthHistory(gap time.Duration) *healthHistory {
	return &healthHistory{gap: gap, marks: map[raft.ServerID]healthMark{}}
}

// observe records a member's health at now and returns since when it has
// had that health.
func (h *healthHistory) observe(id raft.ServerID, healthy bool, now time.Time) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.marks[id]
	if !ok || m.healthy != healthy || now.Sub(m.seen) > h.gap {
		m = healthMark{healthy: healthy, since: now}
	}
	m.seen = now
	h.marks[id] = m
	return m.since
}

// keepOnly forgets members not in servers.
func (h *healthHistory) keepOnly(servers map[raft.ServerID]*autopilot.ServerState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.marks {
		if _, ok := servers[id]; !ok {
			delete(h.marks, id)
		}
	}
}
