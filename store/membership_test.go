package store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/weftnet/weft/store/pki"
)

func TestFiveNodesNonVoterPromotedWhenVoterLost(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3", "n4", "n5")
	roles := c.roles()
	var voters, nonVoters []string
	for _, name := range []string{"n1", "n2", "n3", "n4", "n5"} {
		if roles[name] == "Voter" {
			voters = append(voters, name)
		} else {
			nonVoters = append(nonVoters, name)
		}
	}
	if len(voters) != 3 || len(nonVoters) != 2 {
		t.Fatalf("roles %v, want 3 voters and 2 non-voters", roles)
	}
	// The token is only shown on voters.
	if _, err := c.node(nonVoters[0]).TokenString(); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("token on a non-voter: %v", err)
	}
	if tok, err := c.node(voters[0]).TokenString(); err != nil || tok != c.token {
		t.Errorf("token on a voter: %q, %v (want %q)", tok, err, c.token)
	}
	// Lose a voter that is not the leader: a non-voter takes its place.
	lead := c.leader()
	var lost string
	for _, v := range voters {
		if v != lead.name {
			lost = v
			break
		}
	}
	c.kill(lost)
	waitFor(t, 20*time.Second, "a non-voter promoted in place of "+lost, func() error {
		r := c.roles()
		if r[lost] == "Voter" {
			return fmt.Errorf("%s still a voter: %v", lost, r)
		}
		n := 0
		for _, name := range nonVoters {
			if r[name] == "Voter" {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("roles %v", r)
		}
		return nil
	})
	ms, err := c.followers()[0].Members(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	healthyVoters := 0
	for _, m := range ms {
		if m.Name == lost && m.Healthy {
			t.Errorf("dead member %s reported healthy", lost)
		}
		if (m.Role == RoleVoter || m.Role == RoleLeader) && m.Healthy {
			healthyVoters++
		}
	}
	if healthyVoters != 3 {
		t.Errorf("members %+v: want 3 healthy voters", ms)
	}
	// The lost node comes back as a non-voter and catches up.
	c.restart(lost)
	c.waitConverged()
	if r := c.roles(); r[lost] != "Nonvoter" {
		t.Errorf("returning node is %s", r[lost])
	}
}

func TestRejoinAfterAddressChange(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	moved := c.followers()[0].name
	c.kill(moved)
	mustPut(t, c.leader(), Key{Kind: "K", Name: "while-away"}, "x")
	newAddr := freeAddr(t)
	c.mu.Lock()
	c.addrs[moved] = newAddr
	c.mu.Unlock()
	n := c.restart(moved)
	if n.Advertise() != newAddr {
		t.Fatalf("advertise %s, want %s", n.Advertise(), newAddr)
	}
	waitFor(t, 15*time.Second, "the new address in the configuration", func() error {
		servers, err := c.leader().raftServers()
		if err != nil {
			return err
		}
		for _, s := range servers {
			if string(s.ID) == moved && string(s.Address) == newAddr && s.Suffrage.String() == "Voter" {
				return nil
			}
		}
		return fmt.Errorf("%v", servers)
	})
	c.waitConverged()
	mustPut(t, n, Key{Kind: "K", Name: "from-moved"}, "y")
}

func TestJoinRefusedWithWrongToken(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2")
	before, beforeRev := dumpNode(c.leader())
	good, err := pki.ParseToken(c.token)
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := good
	wrongSecret.Secret[0] ^= 1
	otherCA, _ := pki.NewCA(time.Now())
	wrongCA, _ := pki.NewToken(otherCA)
	for i, tc := range []struct {
		name, token, want string
	}{
		{"wrong secret", wrongSecret.String(), "wrong join token"},
		{"another cluster's token", wrongCA.String(), "pinned by the join token"},
		{"no token", "", "needs the cluster's join token"},
		{"garbage", "weft1.zz", "invalid join token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := c.config(fmt.Sprintf("intruder-%d", i))
			cfg.Token = tc.token
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n, err := Open(ctx, cfg)
			if err == nil {
				n.Close()
				t.Fatal("joined")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
	after, afterRev := dumpNode(c.leader())
	if afterRev != beforeRev || len(after) != len(before) {
		t.Errorf("a refused join changed the state: %d objects at %d -> %d at %d", len(before), beforeRev, len(after), afterRev)
	}
	if r := c.roles(); len(r) != 2 {
		t.Errorf("raft configuration changed: %v", r)
	}
	// A name already in the cluster is refused too.
	cfg := c.config("n2")
	cfg.DataDir = t.TempDir()
	cfg.Listen = freeAddr(t)
	cfg.Advertise = cfg.Listen
	if _, err := Open(ctxTimeout(t, 10*time.Second), cfg); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name: %v", err)
	}
}

func TestRemoveMember(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3", "n4")
	roles := c.roles()
	var nonVoter string
	for name, r := range roles {
		if r == "Nonvoter" {
			nonVoter = name
		}
	}
	f := c.followers()[0]
	if err := f.RemoveMember(ctxTimeout(t, 10*time.Second), nonVoter); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.roles()[nonVoter]; ok {
		t.Fatalf("%s still in the configuration", nonVoter)
	}
	if err := f.RemoveMember(ctxTimeout(t, 10*time.Second), nonVoter); !errors.Is(err, ErrNotFound) {
		t.Errorf("second removal: %v", err)
	}
	// The removed node can no longer use the cluster's RPC, and cannot
	// add itself back.
	removed := c.node(nonVoter)
	err := removed.call(ctxTimeout(t, 5*time.Second), http.MethodPost, c.leader().advertise, pathReadIndex, struct{}{}, nil)
	if !errors.Is(err, ErrNotAllowed) {
		t.Errorf("RPC from a removed node: %v", err)
	}
	c.kill(nonVoter)
	cfg := c.config(nonVoter)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := c.open(cfg) // resumes from its data dir...
	waitFor(t, 5*time.Second, "the cluster to refuse it", func() error {
		if _, ok := c.roles()[nonVoter]; ok {
			return errors.New("re-added itself")
		}
		return nil
	})
	// (It still believes it is listed, so it does not ask; if it asks, it
	// is refused.)
	err = n.call(ctx, http.MethodPost, c.leader().advertise, pathMemberAdd, memberAddRequest{Name: nonVoter, Address: n.advertise}, nil)
	if !errors.Is(err, ErrNotAllowed) {
		t.Errorf("re-adding a removed node: %v", err)
	}
	// Voter removals never break quorum.
	c.kill(nonVoter)
	voters := []string{}
	for name, r := range c.roles() {
		if r == "Voter" {
			voters = append(voters, name)
		}
	}
	lead := c.leader()
	var victim, other string
	for _, v := range voters {
		if v != lead.name {
			if victim == "" {
				victim = v
			} else {
				other = v
			}
		}
	}
	c.kill(other)
	waitFor(t, 10*time.Second, other+" seen unhealthy", func() error {
		if srv := lead.pilot.GetState().Servers[raft.ServerID(other)]; srv != nil && !srv.Health.Healthy {
			return nil
		}
		return errors.New("not yet")
	})
	if err := lead.RemoveMember(ctxTimeout(t, 5*time.Second), victim); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("removing %s with %s dead: %v", victim, other, err)
	}
}

func TestDeadNonVoterIsCleanedUp(t *testing.T) {
	c := newCluster(t, 1)
	c.tuning.DeadServerAfter = time.Second
	c.start("n1", "n2", "n3")
	if r := c.roles(); r["n2"] != "Nonvoter" || r["n3"] != "Nonvoter" {
		t.Fatalf("roles %v", r)
	}
	// n3 has the configuration listing itself when it dies, and still has
	// it when it comes back.
	if err := c.node("n3").WaitInSync(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.kill("n3")
	waitFor(t, 20*time.Second, "n3 removed", func() error {
		if _, ok := c.roles()["n3"]; ok {
			return errors.New("still there")
		}
		return nil
	})
	if _, ok := c.roles()["n2"]; !ok {
		t.Fatal("a live member was removed")
	}
	// Its admission is kept: it comes back by itself.
	c.restart("n3")
	waitFor(t, 10*time.Second, "n3 back", func() error {
		if _, ok := c.roles()["n3"]; !ok {
			return errors.New("not yet")
		}
		return nil
	})
}

func TestJoinAfterLogCompactionUsesSnapshot(t *testing.T) {
	c := newCluster(t, 3)
	c.tuning.SnapshotThreshold = 100
	c.tuning.TrailingLogs = 10
	c.tuning.SnapshotInterval = 50 * time.Millisecond
	c.start("n1")
	n1 := c.node("n1")
	for i := 0; i < 300; i++ {
		mustPut(t, n1, Key{Kind: "K", Name: fmt.Sprint(i)}, "v")
	}
	waitFor(t, 10*time.Second, "a snapshot", func() error {
		if snaps, _ := n1.snaps.List(); len(snaps) == 0 {
			return errors.New("none")
		}
		if first, _ := n1.logs.FirstIndex(); first <= 1 {
			return errors.New("log not compacted yet")
		}
		return nil
	})
	c.join("n2")
	n2 := c.node("n2")
	if err := n2.WaitInSync(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if objs, _ := n2.List("K", ""); len(objs) != 300 {
		t.Fatalf("joined node has %d objects", len(objs))
	}
	c.waitConverged()
}
