package store

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// These tests run the real raft-autopilot (its state computation, its
// reconciliation) with weft's promoter, against a fake raft and a fake
// application whose members' health the test sets. Time is autopilot's
// (and the promoter's) injected clock, which the test moves; what the
// library and the promoter make of it is theirs.

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeRaft is the raft autopilot sees: a configuration that promotions and
// demotions change at once.
type fakeRaft struct {
	mu       sync.Mutex
	servers  []raft.Server
	changes  []string // "+id" promoted, "-id" demoted, in order
	lastIdx  uint64
	leaderID raft.ServerID
}

func newFakeRaft(leader string, voters, nonVoters []string) *fakeRaft {
	f := &fakeRaft{leaderID: raft.ServerID(leader), lastIdx: 100}
	for _, v := range voters {
		f.servers = append(f.servers, raft.Server{ID: raft.ServerID(v), Address: raft.ServerAddress(v + ":7700"), Suffrage: raft.Voter})
	}
	for _, v := range nonVoters {
		f.servers = append(f.servers, raft.Server{ID: raft.ServerID(v), Address: raft.ServerAddress(v + ":7700"), Suffrage: raft.Nonvoter})
	}
	return f
}

func (f *fakeRaft) setSuffrage(id raft.ServerID, s raft.ServerSuffrage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.servers {
		if f.servers[i].ID == id {
			f.servers[i].Suffrage = s
		}
	}
}

func (f *fakeRaft) config() []raft.Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]raft.Server(nil), f.servers...)
}

func (f *fakeRaft) voters() []string {
	var out []string
	for _, s := range f.config() {
		if s.Suffrage == raft.Voter {
			out = append(out, string(s.ID))
		}
	}
	sort.Strings(out)
	return out
}

func (f *fakeRaft) changeLog() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.changes, " ")
}

type doneFuture struct{ cfg raft.Configuration }

func (doneFuture) Error() error                        { return nil }
func (doneFuture) Index() uint64                       { return 0 }
func (d doneFuture) Configuration() raft.Configuration { return d.cfg }
func (f *fakeRaft) LastIndex() uint64                  { return f.lastIdx }
func (f *fakeRaft) State() raft.RaftState              { return raft.Leader }
func (f *fakeRaft) Stats() map[string]string           { return map[string]string{"last_log_term": "1"} }
func (f *fakeRaft) Leader() raft.ServerAddress         { return raft.ServerAddress(f.leaderID + ":7700") }
func (f *fakeRaft) GetConfiguration() raft.ConfigurationFuture {
	return doneFuture{raft.Configuration{Servers: f.config()}}
}

func (f *fakeRaft) AddVoter(id raft.ServerID, _ raft.ServerAddress, _ uint64, _ time.Duration) raft.IndexFuture {
	f.setSuffrage(id, raft.Voter)
	f.mu.Lock()
	f.changes = append(f.changes, "+"+string(id))
	f.mu.Unlock()
	return doneFuture{}
}

func (f *fakeRaft) DemoteVoter(id raft.ServerID, _ uint64, _ time.Duration) raft.IndexFuture {
	f.setSuffrage(id, raft.Nonvoter)
	f.mu.Lock()
	f.changes = append(f.changes, "-"+string(id))
	f.mu.Unlock()
	return doneFuture{}
}

func (f *fakeRaft) AddNonvoter(raft.ServerID, raft.ServerAddress, uint64, time.Duration) raft.IndexFuture {
	return doneFuture{}
}

func (f *fakeRaft) RemoveServer(raft.ServerID, uint64, time.Duration) raft.IndexFuture {
	return doneFuture{}
}

func (f *fakeRaft) LeadershipTransferToServer(raft.ServerID, raft.ServerAddress) raft.Future {
	return doneFuture{}
}

// fakeApp is the application side: every member is alive and in step with
// the log unless the test marks it down.
type fakeApp struct {
	raft   *fakeRaft
	config autopilot.Config
	states atomic.Int64 // states computed
	mu     sync.Mutex
	down   map[raft.ServerID]bool
}

func (a *fakeApp) setDown(id raft.ServerID, down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down[id] = down
}

func (a *fakeApp) AutopilotConfig() *autopilot.Config   { c := a.config; return &c }
func (a *fakeApp) NotifyState(*autopilot.State)         { a.states.Add(1) }
func (a *fakeApp) RemoveFailedServer(*autopilot.Server) {}

func (a *fakeApp) FetchServerStats(_ context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	out := map[raft.ServerID]*autopilot.ServerStats{}
	for id := range servers {
		out[id] = &autopilot.ServerStats{LastContact: 10 * time.Millisecond, LastTerm: 1, LastIndex: a.raft.LastIndex()}
	}
	return out
}

func (a *fakeApp) KnownServers() map[raft.ServerID]*autopilot.Server {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[raft.ServerID]*autopilot.Server{}
	for _, s := range a.raft.config() {
		status := autopilot.NodeAlive
		if a.down[s.ID] {
			status = autopilot.NodeFailed
		}
		out[s.ID] = &autopilot.Server{
			ID: s.ID, Name: string(s.ID), Address: s.Address, NodeStatus: status,
			RaftVersion: raft.ProtocolVersionMax, IsLeader: s.ID == a.raft.leaderID, NodeType: autopilot.NodeVoter,
		}
	}
	return out
}

// pilotRig is a running autopilot with weft's promoter.
type pilotRig struct {
	clock *fakeClock
	raft  *fakeRaft
	app   *fakeApp
	pilot *autopilot.Autopilot
	tune  Tuning
	p     *countingPromoter
}

// countingPromoter counts autopilot's reconciliations.
type countingPromoter struct {
	*promoter
	rounds atomic.Int64
}

func (c *countingPromoter) CalculatePromotionsAndDemotions(conf *autopilot.Config, s *autopilot.State) autopilot.RaftChanges {
	defer c.rounds.Add(1)
	return c.promoter.CalculatePromotionsAndDemotions(conf, s)
}

// reconciled waits until autopilot has reconciled n more times.
func (g *pilotRig) reconciled(t *testing.T, n int64) {
	t.Helper()
	waitCount(t, &g.p.rounds, n, "reconciliations")
}

// waitCount waits until counter has grown by n.
func waitCount(t *testing.T, counter *atomic.Int64, n int64, what string) {
	t.Helper()
	want := counter.Load() + n
	waitFor(t, 10*time.Second, fmt.Sprintf("%d %s", n, what), func() error {
		if got := counter.Load(); got < want {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

func startPilot(t *testing.T, r *fakeRaft, voters int, updateEvery time.Duration) *pilotRig {
	t.Helper()
	return startPilotWith(t, r, voters, updateEvery, nil)
}

// startPilotWith lets before prepare the rig (e.g. members down) before
// autopilot computes its first state.
func startPilotWith(t *testing.T, r *fakeRaft, voters int, updateEvery time.Duration, before func(*pilotRig)) *pilotRig {
	t.Helper()
	// autopilot measures how long it has been running with the real clock
	// (State.ServerStabilizationTime); a fake clock in the past keeps that
	// consistent.
	clock := &fakeClock{now: time.Now().Add(-24 * time.Hour)}
	tune := DefaultTuning()
	app := &fakeApp{raft: r, down: map[raft.ServerID]bool{}, config: autopilot.Config{
		LastContactThreshold: tune.LastContactThreshold, MaxTrailingLogs: 4096, MinQuorum: uint(voters),
		ServerStabilizationTime: tune.ServerStabilization,
	}}
	p := &countingPromoter{promoter: &promoter{
		self: r.leaderID, voters: voters, tuning: tune, now: clock.Now,
		servers:        func() ([]raft.Server, error) { return r.config(), nil },
		unreachableFor: func(raft.ServerID, time.Time) time.Duration { return 0 },
		health:         newHealthHistory(time.Hour),
	}}
	pilot := autopilot.New(r, app,
		autopilot.WithLogger(hclog.NewNullLogger()),
		autopilot.WithTimeProvider(clock),
		autopilot.WithUpdateInterval(updateEvery),
		autopilot.WithReconcileInterval(2*time.Millisecond),
		autopilot.WithPromoter(p),
	)
	g := &pilotRig{clock: clock, raft: r, app: app, pilot: pilot, tune: tune, p: p}
	if before != nil {
		before(g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pilot.Start(ctx)
	t.Cleanup(func() {
		cancel()
		<-pilot.Stop()
	})
	return g
}

// settle waits until autopilot has computed n more states (reconciliation
// runs far more often).
func (g *pilotRig) settle(t *testing.T, n int64) {
	t.Helper()
	waitCount(t, &g.app.states, n, "autopilot states")
}

func (g *pilotRig) health(id raft.ServerID) autopilot.ServerHealth {
	if s, ok := g.pilot.GetState().Servers[id]; ok {
		return s.Health
	}
	return autopilot.ServerHealth{}
}

// TestVoterFailoverWaitsForVoterFailover: a voter that has been a healthy
// member for an hour turns unhealthy. It must stay a voter until it has
// been unhealthy for VoterFailover, and autopilot's state must say since
// when it is unhealthy. raft-autopilot v0.3.0 alone keeps StableSince at
// the member's first sighting, so the voter was demoted at once.
func TestVoterFailoverWaitsForVoterFailover(t *testing.T) {
	r := newFakeRaft("a", []string{"a", "b", "c"}, []string{"d"})
	g := startPilot(t, r, 3, 2*time.Millisecond)
	g.settle(t, 3)
	g.clock.advance(time.Hour) // members stable for an hour
	g.settle(t, 3)

	g.app.setDown("c", true)
	down := g.clock.Now()
	g.reconciled(t, 1)
	waitFor(t, 10*time.Second, "c unhealthy in autopilot's state", func() error {
		if g.health("c").Healthy {
			return fmt.Errorf("c healthy")
		}
		return nil
	})
	g.settle(t, 20) // many reconciliations with c unhealthy
	if got := g.raft.changeLog(); got != "" {
		t.Fatalf("membership changed as soon as c turned unhealthy: %s (voter failover is %s)", got, g.tune.VoterFailover)
	}
	if since := g.health("c").StableSince; !since.Equal(down) {
		t.Errorf("autopilot says c is unhealthy since %s, it turned unhealthy at %s", since, down)
	}

	g.clock.advance(g.tune.VoterFailover - time.Second)
	g.settle(t, 20)
	if got := g.raft.changeLog(); got != "" {
		t.Fatalf("c demoted after %s unhealthy: %s (voter failover is %s)", g.tune.VoterFailover-time.Second, got, g.tune.VoterFailover)
	}
	g.clock.advance(2 * time.Second)
	waitFor(t, 10*time.Second, "c replaced by d", func() error {
		if v := g.raft.voters(); fmt.Sprint(v) != "[a b d]" {
			return fmt.Errorf("voters %v, changes %q", v, g.raft.changeLog())
		}
		return nil
	})
	// Back to health: a healthy member is stable since it recovered.
	g.app.setDown("c", false)
	up := g.clock.Now()
	waitFor(t, 10*time.Second, "c healthy again", func() error {
		if h := g.health("c"); !h.Healthy || !h.StableSince.Equal(up) {
			return fmt.Errorf("c: %+v, recovered at %s", h, up)
		}
		return nil
	})
}

// TestVotersCountedFromTheLiveConfiguration: autopilot's state is a
// snapshot refreshed every AutopilotInterval, and the configuration changes
// in between. Here the snapshot was taken while b and c were non-voters
// still catching up (unhealthy), and they have been promoted since. The
// promoter must count the voters raft has now, or it promotes the healthy
// d and e too, beyond cluster.voters.
func TestVotersCountedFromTheLiveConfiguration(t *testing.T) {
	r := newFakeRaft("a", []string{"a"}, []string{"b", "c", "d", "e"})
	// One state at start, none after: the state stays as it was then.
	g := startPilotWith(t, r, 3, time.Hour, func(g *pilotRig) {
		g.app.setDown("b", true)
		g.app.setDown("c", true)
	})
	r.setSuffrage("b", raft.Voter)
	r.setSuffrage("c", raft.Voter)
	// d and e are stable now (b and c not yet failed); reconciliation runs
	// every 2 ms against the old state.
	g.clock.advance(g.tune.ServerStabilization + time.Second)
	g.reconciled(t, 20)
	if v := r.voters(); fmt.Sprint(v) != "[a b c]" {
		t.Fatalf("voters %v (changes %q), want [a b c]", v, r.changeLog())
	}
}

// TestSurplusVotersAreDemoted: with more voters than cluster.voters (a
// promotion that landed late, or voters lowered), the surplus is demoted.
func TestSurplusVotersAreDemoted(t *testing.T) {
	r := newFakeRaft("a", []string{"a", "b", "c", "d"}, []string{"e"})
	g := startPilot(t, r, 3, 2*time.Millisecond)
	waitFor(t, 10*time.Second, "3 voters", func() error {
		if v := r.voters(); fmt.Sprint(v) != "[a b c]" {
			return fmt.Errorf("voters %v (changes %q)", v, r.changeLog())
		}
		return nil
	})
	g.settle(t, 10)
	if v := r.voters(); fmt.Sprint(v) != "[a b c]" {
		t.Fatalf("voters %v after settling (changes %q)", v, r.changeLog())
	}
}
