package store

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

func TestErrorsKeepTheirSentinelOverTheWire(t *testing.T) {
	k := Key{Kind: "IPPool", Name: "a"}
	for _, err := range []error{
		ErrNotFound, ErrExists, ErrConflict, ErrNoLeader, ErrTooLarge, ErrNotAllowed, ErrInvalid, ErrIndeterminate,
		&KeyError{Key: k, Err: ErrConflict},
		&KeyError{Key: k, Err: fmt.Errorf("%w: expected revision 3, found 4", ErrConflict)},
		fmt.Errorf("validator: %w", &KeyError{Key: k, Err: fmt.Errorf("%w: overlaps pool b", ErrInvalid)}),
		errors.New("something else"),
	} {
		got := ToWire(err).Err()
		if got.Error() != err.Error() {
			t.Errorf("message %q came back as %q", err, got)
		}
		if ErrorCode(got) != ErrorCode(err) {
			t.Errorf("%v: code %s came back as %s", err, ErrorCode(err), ErrorCode(got))
		}
		var want, have *KeyError
		if errors.As(err, &want) && err.Error() == want.Error() && (!errors.As(got, &have) || have.Key != want.Key) {
			t.Errorf("%v lost its key", err)
		}
	}
	if ToWire(nil) != nil || (*WireError)(nil).Err() != nil {
		t.Error("nil errors do not stay nil")
	}
}

func TestNonceCache(t *testing.T) {
	c := newNonceCache(2, time.Minute)
	now := time.Now()
	c.add([]byte("a"), now)
	c.add([]byte("b"), now.Add(time.Second))
	c.add([]byte("c"), now.Add(2*time.Second)) // evicts the oldest, a
	if c.take([]byte("a"), now) {
		t.Error("evicted nonce accepted")
	}
	if !c.take([]byte("b"), now.Add(3*time.Second)) {
		t.Error("fresh nonce refused")
	}
	if c.take([]byte("b"), now.Add(3*time.Second)) {
		t.Error("nonce accepted twice")
	}
	if c.take([]byte("c"), now.Add(2*time.Minute)) {
		t.Error("expired nonce accepted")
	}
}

func TestProofBindsNameAndCSR(t *testing.T) {
	base := proofMessage([]byte("nonce-0123456789"), "n1", []byte("csr"))
	for _, other := range [][]byte{
		proofMessage([]byte("nonce-0123456788"), "n1", []byte("csr")),
		proofMessage([]byte("nonce-0123456789"), "n2", []byte("csr")),
		proofMessage([]byte("nonce-0123456789"), "n1", []byte("csR")),
		proofMessage([]byte("nonce-0123456789"), "n1c", []byte("sr")),
	} {
		if reflect.DeepEqual(base, other) {
			t.Errorf("different requests share a proof message")
		}
	}
}

// pilotState builds an autopilot state: spec maps a server to its raft
// state, health and how long it has been in that health.
type srvSpec struct {
	state    autopilot.RaftState
	healthy  bool
	since    time.Duration
	nonVoter bool // asked never to vote
}

func pilotState(now time.Time, spec map[string]srvSpec) *autopilot.State {
	s := &autopilot.State{Servers: map[raft.ServerID]*autopilot.ServerState{}}
	for name, sp := range spec {
		typ := autopilot.NodeVoter
		if sp.nonVoter {
			typ = nodeTypeNonVoter
		}
		s.Servers[raft.ServerID(name)] = &autopilot.ServerState{
			Server: autopilot.Server{ID: raft.ServerID(name), NodeType: typ},
			State:  sp.state,
			Health: autopilot.ServerHealth{Healthy: sp.healthy, StableSince: now.Add(-sp.since)},
		}
	}
	return s
}

func TestPromoter(t *testing.T) {
	const (
		leader = autopilot.RaftLeader
		voter  = autopilot.RaftVoter
		non    = autopilot.RaftNonVoter
	)
	ok := func(s autopilot.RaftState) srvSpec { return srvSpec{state: s, healthy: true, since: time.Hour} }
	tests := []struct {
		name    string
		voters  int
		spec    map[string]srvSpec
		promote []string
		demote  []string
	}{
		{"grow to the target", 3, map[string]srvSpec{"a": ok(leader), "b": ok(non), "c": ok(non), "d": ok(non)}, []string{"b", "c"}, nil},
		{"target reached", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": ok(voter), "d": ok(non)}, nil, nil},
		{"not yet stable", 3, map[string]srvSpec{"a": ok(leader), "b": {state: non, healthy: true, since: time.Millisecond}}, nil, nil},
		{"unhealthy non-voter", 3, map[string]srvSpec{"a": ok(leader), "b": {state: non, since: time.Hour}}, nil, nil},
		{"permanent non-voter", 3, map[string]srvSpec{"a": ok(leader), "b": {state: non, healthy: true, since: time.Hour, nonVoter: true}}, nil, nil},
		{"replace a dead voter", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": {state: voter, since: time.Hour}, "d": ok(non)}, []string{"d"}, []string{"c"}},
		{"voter only briefly unhealthy", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": {state: voter, since: time.Second}, "d": ok(non)}, nil, nil},
		{"dead voter, nobody to take over", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": {state: voter, since: time.Hour}}, nil, nil},
		{"single voter cluster", 1, map[string]srvSpec{"a": ok(leader), "b": ok(non)}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{name: "a", cfg: Config{Voters: tc.voters, Tuning: DefaultTuning()}}
			p := &promoter{d: &pilotDelegate{n: n}}
			now := time.Now()
			st := pilotState(now, tc.spec)
			ch := p.CalculatePromotionsAndDemotions(&autopilot.Config{ServerStabilizationTime: time.Minute}, st)
			ids := func(in []raft.ServerID) []string {
				var out []string
				for _, id := range in {
					out = append(out, string(id))
				}
				sort.Strings(out)
				return out
			}
			if got := ids(ch.Promotions); !reflect.DeepEqual(got, tc.promote) {
				t.Errorf("promotions %v, want %v", got, tc.promote)
			}
			if got := ids(ch.Demotions); !reflect.DeepEqual(got, tc.demote) {
				t.Errorf("demotions %v, want %v", got, tc.demote)
			}
		})
	}
}
