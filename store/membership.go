package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// Role is a member's part in raft.
type Role string

const (
	RoleLeader   Role = "leader"
	RoleVoter    Role = "voter"
	RoleNonVoter Role = "nonvoter"
)

// Member is one server of the raft configuration.
type Member struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Role    Role   `json:"role"`
	// Healthy: the leader heard from it recently and it is in step with
	// the log (raft-autopilot's health).
	Healthy bool `json:"healthy"`
	// LastContact is how long ago the leader last heard from the member
	// (its last answer to raft; 0 for the leader, negative when unknown).
	LastContact time.Duration `json:"lastContact"`
}

// nodeTypeNonVoter marks members that asked never to vote.
const nodeTypeNonVoter autopilot.NodeType = "nonvoter"

// Members lists the raft members with their health as the leader sees it.
// Without a leader (before ctx ends) it returns this node's view of the
// configuration, with unknown health, and an error wrapping ErrNoLeader.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	err := n.onLeader(ctx, "list members", true,
		func(ctx context.Context) (err error) {
			out, err = n.membersAsLeader()
			return err
		},
		func(ctx context.Context, addr string) error {
			return n.call(ctx, http.MethodGet, addr, pathMembers, nil, &out)
		})
	if err != nil && errors.Is(err, ErrNoLeader) {
		servers, cerr := n.raftServers()
		if cerr != nil {
			return nil, err
		}
		out = out[:0]
		for _, s := range servers {
			m := Member{Name: string(s.ID), Address: string(s.Address), Role: RoleNonVoter, LastContact: -1}
			if s.Suffrage == raft.Voter {
				m.Role = RoleVoter
			}
			out = append(out, m)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	}
	return out, err
}

func (n *Node) membersAsLeader() ([]Member, error) {
	if n.raft.State() != raft.Leader {
		return nil, errNotLeader
	}
	servers, err := n.raftServers()
	if err != nil {
		return nil, err
	}
	st := n.pilot.GetState()
	out := make([]Member, 0, len(servers))
	for _, s := range servers {
		m := Member{Name: string(s.ID), Address: string(s.Address), Role: RoleNonVoter, LastContact: -1}
		if s.Suffrage == raft.Voter {
			m.Role = RoleVoter
		}
		if ss, ok := st.Servers[s.ID]; ok {
			m.Healthy = ss.Health.Healthy
			m.LastContact = ss.Stats.LastContact
		}
		if string(s.ID) == n.name {
			m.Role, m.Healthy, m.LastContact = RoleLeader, true, 0
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveMember removes a member from raft and forgets its admission (it
// must join again with the token, from an empty data dir). It refuses to
// remove the last voter, or a voter whose removal would leave fewer healthy
// voters than a quorum.
func (n *Node) RemoveMember(ctx context.Context, name string) error {
	return n.onLeader(ctx, "remove member", false,
		func(ctx context.Context) error { return n.removeMemberAsLeader(ctx, name) },
		func(ctx context.Context, addr string) error {
			return n.call(ctx, http.MethodPost, addr, pathMemberRemove, memberRemoveRequest{Name: name}, nil)
		})
}

func (n *Node) removeMemberAsLeader(ctx context.Context, name string) error {
	if n.raft.State() != raft.Leader {
		return errNotLeader
	}
	servers, err := n.raftServers()
	if err != nil {
		return err
	}
	var target *raft.Server
	voters, healthyOthers := 0, 0
	st := n.pilot.GetState()
	for i, s := range servers {
		if string(s.ID) == name {
			target = &servers[i]
		}
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(s.ID) == name {
			continue
		}
		ss, known := st.Servers[s.ID]
		if string(s.ID) == n.name || !known || ss.Health.Healthy {
			healthyOthers++
		}
	}
	_, hasRecord := n.fsm.Get(memberKey(name))
	if target == nil && !hasRecord {
		return &KeyError{Key: Key{Kind: "Member", Name: name}, Err: ErrNotFound}
	}
	if target != nil && target.Suffrage == raft.Voter {
		remaining := voters - 1
		if remaining == 0 {
			return fmt.Errorf("%w: %q is the last voter", ErrNotAllowed, name)
		}
		if quorum := remaining/2 + 1; healthyOthers < quorum {
			return fmt.Errorf("%w: removing %q would leave %d healthy voters of %d, below a quorum of %d", ErrNotAllowed, name, healthyOthers, remaining, quorum)
		}
	}
	if hasRecord {
		// First, so the node cannot add itself back in between.
		if _, err := n.txn(ctx, []Op{{Type: OpDelete, Key: memberKey(name)}}); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("forget member %q: %w", name, err)
		}
	}
	if target == nil {
		return nil
	}
	n.log.Info("removing member", "member", name)
	if err := n.raft.RemoveServer(target.ID, 0, 10*time.Second).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return errNotLeader
		}
		return fmt.Errorf("remove %q from raft: %w", name, err)
	}
	return nil
}

// pilotDelegate is raft-autopilot's view of the cluster: members come from
// the raft configuration; a member is alive while it answers the leader's
// raft messages.
type pilotDelegate struct {
	n *Node

	mu        sync.Mutex
	term      uint64 // the leader's term the two maps below belong to
	lastOK    map[raft.ServerID]time.Time
	firstSeen map[raft.ServerID]time.Time
}

func newPilot(n *Node) *autopilot.Autopilot {
	d := &pilotDelegate{n: n, lastOK: map[raft.ServerID]time.Time{}, firstSeen: map[raft.ServerID]time.Time{}}
	t := n.cfg.Tuning
	return autopilot.New(n.raft, d,
		autopilot.WithLogger(newHclog(n.log, "autopilot")),
		autopilot.WithUpdateInterval(t.AutopilotInterval),
		autopilot.WithReconcileInterval(t.ReconcileInterval),
		autopilot.WithPromoter(newPromoter(n, d)),
	)
}

func (d *pilotDelegate) AutopilotConfig() *autopilot.Config {
	t := d.n.cfg.Tuning
	return &autopilot.Config{
		CleanupDeadServers:      t.DeadServerAfter > 0,
		LastContactThreshold:    t.LastContactThreshold,
		MaxTrailingLogs:         4096,
		MinQuorum:               uint(d.n.cfg.Voters),
		ServerStabilizationTime: t.ServerStabilization,
	}
}

func (d *pilotDelegate) NotifyState(s *autopilot.State) {
	d.n.metrics.setAutopilot(s)
}

// aliveWindow: a member is alive if it answered this recently.
func (d *pilotDelegate) aliveWindow() time.Duration {
	t := d.n.cfg.Tuning
	return t.LastContactThreshold + t.AutopilotInterval
}

// FetchServerStats reports each member's raft state as the leader last
// heard it, from raft's own traffic: every follower answers a heartbeat or
// an append at least every HeartbeatTimeout, and each answer carries its
// term and last log index (transport.RaftTransport.LastAnswer). LastContact
// is how long ago that answer came. Asking each member for its status
// instead (an HTTP call per member every AutopilotInterval, one connection
// and two goroutines per member) was, once raft itself was quiet, most of
// an idle 50-node leader's work. An answer from an older term (this node led
// before) does not count.
func (d *pilotDelegate) FetchServerStats(_ context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	now := time.Now()
	term := d.n.raft.CurrentTerm()
	out := make(map[raft.ServerID]*autopilot.ServerStats, len(servers))
	d.mu.Lock()
	defer d.mu.Unlock()
	for id := range servers {
		if string(id) == d.n.name {
			st := d.n.localStats()
			out[id] = &autopilot.ServerStats{LastContact: st.LastContact, LastTerm: st.LastTerm, LastIndex: st.LastIndex}
			d.lastOK[id] = now
			continue
		}
		a, ok := d.n.raftNet.LastAnswer(id)
		if !ok || a.Term != term {
			continue
		}
		out[id] = &autopilot.ServerStats{LastContact: now.Sub(a.At), LastTerm: a.Term, LastIndex: a.LastLog}
		d.lastOK[id] = a.At
	}
	return out
}

func (d *pilotDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	servers, err := d.n.raftServers()
	if err != nil {
		return nil
	}
	_, leaderID := d.n.raft.LeaderWithID()
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if term := d.n.raft.CurrentTerm(); term != d.term {
		// What this node saw when it led before says nothing now.
		d.term = term
		d.lastOK = map[raft.ServerID]time.Time{}
		d.firstSeen = map[raft.ServerID]time.Time{}
	}
	out := make(map[raft.ServerID]*autopilot.Server, len(servers))
	for _, s := range servers {
		if _, ok := d.firstSeen[s.ID]; !ok {
			d.firstSeen[s.ID] = now
		}
		status := autopilot.NodeFailed
		seen := d.lastOK[s.ID]
		if seen.IsZero() {
			seen = d.firstSeen[s.ID] // grace for a member not polled yet
		}
		if string(s.ID) == d.n.name || now.Sub(seen) <= d.aliveWindow() {
			status = autopilot.NodeAlive
		}
		typ := autopilot.NodeVoter
		if o, ok := d.n.fsm.Get(memberKey(string(s.ID))); ok {
			var rec memberRecord
			if json.Unmarshal(o.Value, &rec) == nil && rec.NonVoter {
				typ = nodeTypeNonVoter
			}
		}
		out[s.ID] = &autopilot.Server{
			ID:          s.ID,
			Name:        string(s.ID),
			Address:     s.Address,
			NodeStatus:  status,
			RaftVersion: raft.ProtocolVersionMax,
			IsLeader:    s.ID == leaderID,
			NodeType:    typ,
		}
	}
	for id := range d.firstSeen { // forget members that left
		if _, ok := out[id]; !ok {
			delete(d.firstSeen, id)
			delete(d.lastOK, id)
		}
	}
	d.n.raftNet.ForgetAnswers(func(id raft.ServerID) bool { _, ok := out[id]; return ok })
	return out
}

// unreachableFor is how long the leader has not reached a member.
func (d *pilotDelegate) unreachableFor(id raft.ServerID, now time.Time) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := d.lastOK[id]
	if seen.IsZero() {
		seen = d.firstSeen[id]
	}
	if seen.IsZero() {
		return 0
	}
	return now.Sub(seen)
}

func (d *pilotDelegate) RemoveFailedServer(srv *autopilot.Server) {
	d.n.goBackground("remove-dead", func(context.Context) {
		d.n.log.Warn("removing a member unreachable for too long", "member", srv.Name, "after", d.n.cfg.Tuning.DeadServerAfter)
		if err := d.n.raft.RemoveServer(srv.ID, 0, 10*time.Second).Error(); err != nil {
			d.n.log.Warn("could not remove a dead member", "member", srv.Name, "error", err)
		}
	})
}
