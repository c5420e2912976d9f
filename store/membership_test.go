package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/weftnet/weft/internal/testtier"
	"github.com/weftnet/weft/store/pki"
	"github.com/weftnet/weft/store/transport"
)

func TestFiveNodesNonVoterPromotedWhenVoterLost(t *testing.T) {
	testtier.Long(t)
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
	// Non-voters wait longer for the leader (they are heartbeated less).
	for _, name := range voters {
		waitRaftTimeouts(t, c.node(name), true)
	}
	for _, name := range nonVoters {
		waitRaftTimeouts(t, c.node(name), false)
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
	for _, name := range nonVoters {
		if c.roles()[name] == "Voter" {
			waitRaftTimeouts(t, c.node(name), true) // promoted: a voter's timeouts
		}
	}
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

// impostor serves a cluster address with the certificate of another
// member: it answers status checks as a healthy, up-to-date member and
// accepts raft streams, counting everything that reaches it.
type impostor struct {
	mux       *transport.Mux
	srv       *http.Server
	requests  atomic.Int32
	raftConns atomic.Int32
	wg        sync.WaitGroup
}

func startImpostor(t *testing.T, addr string, id *pki.Identity, mimic *Node) *impostor {
	t.Helper()
	m, err := transport.Listen(addr, pki.ServerConfig(id), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	imp := &impostor{mux: m}
	imp.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		imp.requests.Add(1)
		st := mimic.localStats()
		st.LastContact = 0
		writeJSON(w, http.StatusOK, st)
	})}
	raftLn := m.Raft(raft.ServerAddress(addr), nil)
	imp.wg.Add(2)
	go func() { defer imp.wg.Done(); _ = imp.srv.Serve(m.RPC()) }()
	go func() {
		defer imp.wg.Done()
		for {
			c, err := raftLn.Accept()
			if err != nil {
				return
			}
			imp.raftConns.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(imp.close)
	return imp
}

func (imp *impostor) close() {
	_ = imp.srv.Close()
	_ = imp.mux.Close()
	imp.wg.Wait()
}

// TestMemberAtAnAddressMustBeTheOneListedThere: n3 dies and another node
// of the cluster (its certificate is genuine) starts on n3's address. The
// leader must not take it for n3: no status check, no replication reaches
// it, and n3 is seen unhealthy. When n3 comes back, all is well again.
func TestMemberAtAnAddressMustBeTheOneListedThere(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	c.mu.Lock()
	n3addr := c.addrs["n3"]
	c.mu.Unlock()
	sec, ok, err := c.node("n1").clusterSecrets()
	if err != nil || !ok {
		t.Fatalf("cluster secrets: %v %v", ok, err)
	}
	_, ca, err := sec.token()
	if err != nil {
		t.Fatal(err)
	}
	id4, err := issueIdentity(ca, "n4")
	if err != nil {
		t.Fatal(err)
	}
	c.kill("n3")
	lead := c.leader()
	imp := startImpostor(t, n3addr, id4, lead)

	var st serverStats
	if err := lead.call(ctxTimeout(t, 5*time.Second), http.MethodGet, n3addr, pathStatus, nil, &st); !errors.Is(err, pki.ErrWrongPeer) || !notSent(err) {
		t.Errorf("status call to n3's address: %v, want a dial refusal for the wrong peer", err)
	}
	if conn, err := lead.raftStream().Dial(raft.ServerAddress(n3addr), time.Second); !errors.Is(err, pki.ErrWrongPeer) {
		if conn != nil {
			conn.Close()
		}
		t.Errorf("raft dial to n3's address: %v, want a refusal for the wrong peer", err)
	}
	waitFor(t, 15*time.Second, "n3 seen unhealthy", func() error {
		ms, err := lead.Members(ctxTimeout(t, 5*time.Second))
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Name == "n3" && m.Healthy {
				return errors.New("n3 healthy")
			}
		}
		return nil
	})
	mustPut(t, lead, Key{Kind: "K", Name: "while-n3-is-away"}, "x")
	if n := imp.requests.Load(); n != 0 {
		t.Errorf("the impostor answered %d status checks meant for n3", n)
	}
	if n := imp.raftConns.Load(); n != 0 {
		t.Errorf("the impostor got %d raft streams meant for n3", n)
	}

	imp.close()
	c.restart("n3")
	waitFor(t, 15*time.Second, "n3 healthy again", func() error {
		ms, err := c.leader().Members(ctxTimeout(t, 5*time.Second))
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Name == "n3" && !m.Healthy {
				return errors.New("n3 unhealthy")
			}
		}
		return nil
	})
	c.waitConverged()
}

// TestAddressOfAnotherMemberIsFatal: a node whose address is listed for
// another member cannot become a member until an operator steps in; it
// says so at once instead of retrying forever.
func TestAddressOfAnotherMemberIsFatal(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	c.mu.Lock()
	n2addr := c.addrs["n2"]
	c.mu.Unlock()

	// The leader's own answer is final (not retried until the deadline).
	start := time.Now()
	if err := c.leader().addMember(ctxTimeout(t, 10*time.Second), "n9", n2addr); !errors.Is(err, ErrConflict) || time.Since(start) > 5*time.Second {
		t.Errorf("adding a member at n2's address: %v after %v, want ErrConflict at once", err, time.Since(start))
	}

	// A joiner at n2's address.
	cfg := c.config("n4")
	cfg.Advertise = n2addr
	start = time.Now()
	n, err := Open(ctxTimeout(t, 20*time.Second), cfg)
	if err == nil {
		n.Close()
		t.Fatal("a node joined at another member's address")
	}
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `"n2"`) || time.Since(start) > 10*time.Second {
		t.Errorf("join at n2's address: %v after %v, want a prompt conflict naming n2", err, time.Since(start))
	}

	// A member restarting at n2's address stops with that error.
	c.kill("n3")
	cfg = c.config("n3")
	cfg.Advertise = n2addr
	n3 := c.open(cfg)
	select {
	case <-n3.Failed():
		if !errors.Is(n3.Err(), ErrConflict) {
			t.Errorf("n3 failed with %v, want ErrConflict", n3.Err())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("n3 resumed at n2's address and did not stop")
	}
}

// syncBuffer is a log sink safe for the node's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestFailedMembershipAttemptsAreLogged: a node that cannot reach the
// leader to confirm its membership says so, without a line per attempt.
func TestFailedMembershipAttemptsAreLogged(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2")
	var logs syncBuffer
	cfg := c.config("n3")
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n3 := c.open(cfg)
	c.waitVoters(3, "n1", "n2", "n3")
	c.faults.cut("n3", "n1")
	c.faults.cut("n3", "n2")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if err := n3.ensureMembership(ctx, nil); err == nil {
		t.Fatal("membership confirmed across a partition")
	}
	const msg = "could not confirm this node's raft membership yet"
	if got := strings.Count(logs.String(), msg); got != 1 {
		t.Errorf("%d warnings %q in 1.5 s of attempts every %v, want 1; log:\n%s", got, msg, c.tuning.RetryInterval, logs.String())
	}
}

// TestNonceFloodDoesNotBreakAJoin: anyone may ask for join nonces; 10,000
// of them, asked for while nodes join, must not invalidate a joiner's.
func TestNonceFloodDoesNotBreakAJoin(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1")
	addr := c.node("n1").advertise
	tok, err := pki.ParseToken(c.token)
	if err != nil {
		t.Fatal(err)
	}
	client := transport.NewJoinClient(tok.CAFingerprint)
	defer client.CloseIdleConnections()
	getNonce := func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, peerURL(addr, pathJoinNonce), nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var nr nonceResponse
		return nr.Nonce, decodeResponse(resp, pathJoinNonce, &nr)
	}
	ctx := ctxTimeout(t, 30*time.Second)

	// A joiner takes its nonce, then the flood comes between it and its
	// proof, while another node joins the usual way.
	nonce, err := getNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const flood, workers = 10000, 8
	var wg sync.WaitGroup
	var floodErr atomic.Value
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < flood/workers; i++ {
				if _, err := getNonce(ctx); err != nil {
					floodErr.Store(err)
					return
				}
			}
		}()
	}
	joined := make(chan struct{})
	go func() {
		defer close(joined)
		c.join("n2")
	}()
	wg.Wait()
	if err, _ := floodErr.Load().(error); err != nil {
		t.Fatalf("nonce request: %v", err)
	}
	<-joined

	keyPEM, err := pki.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(keyPEM, "n3")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.node("n1").admit(ctx, joinRequest{Name: "n3", CSR: csr, Nonce: nonce, Proof: tok.Proof(proofMessage(nonce, "n3", csr))})
	if err != nil {
		t.Fatalf("join with a nonce taken before the flood: %v", err)
	}
	if _, err := pki.NewIdentity(resp.Cert, keyPEM, resp.CA); err != nil {
		t.Fatalf("certificate: %v", err)
	}
	c.waitVoters(2, "n1", "n2")
}
