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

func TestJoinNonces(t *testing.T) {
	j, err := newJoinNonces(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newJoinNonces(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	nonce, err := j.issue(now)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := j.issue(now); reflect.DeepEqual(again, nonce) {
		t.Fatal("two nonces alike")
	}
	for _, at := range []time.Duration{0, time.Second, time.Minute, -time.Second} {
		if err := j.check(nonce, now.Add(at)); err != nil {
			t.Errorf("checked %v after issue: %v", at, err)
		}
	}
	flip := func(i int) []byte {
		b := append([]byte(nil), nonce...)
		b[i] ^= 1
		return b
	}
	for name, tc := range map[string]struct {
		nonce []byte
		at    time.Duration
		by    *joinNonces
	}{
		"expired":             {nonce, time.Minute + time.Second, j},
		"from the future":     {nonce, -time.Minute, j},
		"issued by another":   {nonce, 0, other},
		"time changed":        {flip(nonceTimeLen - 1), 0, j},
		"random part changed": {flip(nonceTimeLen), 0, j},
		"MAC changed":         {flip(nonceLen - 1), 0, j},
		"truncated":           {nonce[:nonceLen-1], 0, j},
		"empty":               {nil, 0, j},
		"forged length":       {make([]byte, nonceLen), 0, j},
	} {
		err := tc.by.check(tc.nonce, now.Add(tc.at))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		// Refusals tell the joiner to start over, not that it is refused.
		if !errors.Is(err, ErrConflict) || errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v, want an ErrConflict", name, err)
		}
	}
	if err := j.check(nonce, now); err != nil {
		t.Errorf("checking other nonces changed this one: %v", err)
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
		name   string
		voters int
		spec   map[string]srvSpec
		// live overrides the suffrage of the live raft configuration (by
		// default it matches the state)
		live    map[string]raft.ServerSuffrage
		promote []string
		demote  []string
	}{
		{"grow to the target", 3, map[string]srvSpec{"a": ok(leader), "b": ok(non), "c": ok(non), "d": ok(non)}, nil, []string{"b", "c"}, nil},
		{"target reached", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": ok(voter), "d": ok(non)}, nil, nil, nil},
		{"not yet stable", 3, map[string]srvSpec{"a": ok(leader), "b": {state: non, healthy: true, since: time.Millisecond}}, nil, nil, nil},
		{"unhealthy non-voter", 3, map[string]srvSpec{"a": ok(leader), "b": {state: non, since: time.Hour}}, nil, nil, nil},
		{"permanent non-voter", 3, map[string]srvSpec{"a": ok(leader), "b": {state: non, healthy: true, since: time.Hour, nonVoter: true}}, nil, nil, nil},
		{"replace a dead voter", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": {state: voter, since: time.Hour}, "d": ok(non)}, nil, []string{"d"}, []string{"c"}},
		{"voter only briefly unhealthy", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": {state: voter, since: time.Second}, "d": ok(non)}, nil, nil, nil},
		{"dead voter, nobody to take over", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": {state: voter, since: time.Hour}}, nil, nil, nil},
		{"single voter cluster", 1, map[string]srvSpec{"a": ok(leader), "b": ok(non)}, nil, nil, nil},
		// The state lags behind the configuration: b and c were promoted.
		{"promotions not yet in the state", 3, map[string]srvSpec{"a": ok(leader), "b": ok(non), "c": ok(non), "d": ok(non)},
			map[string]raft.ServerSuffrage{"b": raft.Voter, "c": raft.Voter}, nil, nil},
		{"one more voter than configured", 3, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": ok(voter), "d": ok(voter), "e": ok(non)}, nil, nil, []string{"d"}},
		{"surplus: the unhealthy voter goes first", 3, map[string]srvSpec{"a": ok(leader), "b": {state: voter, since: time.Second}, "c": ok(voter), "d": ok(voter)}, nil, nil, []string{"b"}},
		{"voters lowered to 1", 1, map[string]srvSpec{"a": ok(leader), "b": ok(voter), "c": ok(voter)}, nil, nil, []string{"b", "c"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			st := pilotState(now, tc.spec)
			st.Leader = "a"
			var live []raft.Server
			for name, sp := range tc.spec {
				suffrage := raft.Nonvoter
				if sp.state == leader || sp.state == voter {
					suffrage = raft.Voter
				}
				if s, ok := tc.live[name]; ok {
					suffrage = s
				}
				live = append(live, raft.Server{ID: raft.ServerID(name), Suffrage: suffrage})
			}
			p := &promoter{
				self: "a", voters: tc.voters, tuning: DefaultTuning(),
				now:     func() time.Time { return now },
				servers: func() ([]raft.Server, error) { return live, nil },
				health:  newHealthHistory(time.Minute),
			}
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

func TestIsFinal(t *testing.T) {
	k := Key{Kind: "IPPool", Name: "a"}
	for _, tc := range []struct {
		err   error
		final bool
	}{
		// Answers, produced here or decoded from the wire.
		{ErrConflict, true},
		{fmt.Errorf("%w: address used by member n2", ErrConflict), true},
		{&KeyError{Key: k, Err: ErrNotFound}, true},
		{ErrExists, true},
		{ErrInvalid, true},
		{ErrNotAllowed, true},
		{ErrTooLarge, true},
		{ErrIndeterminate, true},
		{ToWire(fmt.Errorf("%w: nope", ErrNotAllowed)).Err(), true},
		{ToWire(ErrConflict).Err(), true},
		// Failures to get an answer.
		{ErrNoLeader, false},
		{fmt.Errorf("%w: raft is overloaded", ErrNoLeader), false},
		{ToWire(ErrNoLeader).Err(), false},
		{errNotLeader, false},
		{fmt.Errorf("%w: leader lost", errNotLeader), false},
		{errors.New("connection reset"), false},
		{ToWire(errors.New("boom")).Err(), false},
	} {
		if got := isFinal(tc.err); got != tc.final {
			t.Errorf("isFinal(%v) = %v, want %v", tc.err, got, tc.final)
		}
	}
}

func TestRateLimit(t *testing.T) {
	r := rateLimit{every: 10 * time.Second}
	t0 := time.Now()
	for _, step := range []struct {
		at    time.Duration
		allow bool
	}{
		{0, true}, {time.Second, false}, {9 * time.Second, false}, {10 * time.Second, true}, {15 * time.Second, false}, {21 * time.Second, true},
	} {
		if got := r.allow(t0.Add(step.at)); got != step.allow {
			t.Errorf("at +%v: allow = %v, want %v", step.at, got, step.allow)
		}
	}
}
