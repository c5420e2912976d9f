package transport

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// tcpStream is a plain TCP raft.StreamLayer on loopback.
type tcpStream struct{ net.Listener }

func newTCPStream(t *testing.T) *tcpStream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &tcpStream{ln}
}

func (s *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// transportKind builds a raft transport over a stream: ours, or
// hashicorp/raft's NetworkTransport (what older weft nodes run).
type transportKind struct {
	name string
	make func(s raft.StreamLayer) raft.Transport
}

var (
	ours = transportKind{"RaftTransport", func(s raft.StreamLayer) raft.Transport {
		return NewRaftTransport(s, RaftOptions{Timeout: 5 * time.Second})
	}}
	theirs = transportKind{"NetworkTransport", func(s raft.StreamLayer) raft.Transport {
		return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: s, MaxPool: 2, Timeout: 5 * time.Second,
			Logger: hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Off}),
		})
	}}
)

func closeTransport(t *testing.T, tr raft.Transport) {
	t.Cleanup(func() {
		if c, ok := tr.(raft.WithClose); ok {
			_ = c.Close()
		}
	})
}

// answerer plays raft on the receiving side: it answers every RPC and
// counts heartbeats taken by the fast path.
type answerer struct {
	heartbeats atomic.Int64
	snapshot   chan []byte
}

func serveAnswers(t *testing.T, tr raft.Transport) *answerer {
	a := &answerer{snapshot: make(chan []byte, 1)}
	tr.SetHeartbeatHandler(func(rpc raft.RPC) {
		a.heartbeats.Add(1)
		req := rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil)
	})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			var rpc raft.RPC
			select {
			case rpc = <-tr.Consumer():
			case <-done:
				return
			}
			switch req := rpc.Command.(type) {
			case *raft.AppendEntriesRequest:
				var last uint64
				if n := len(req.Entries); n > 0 {
					last = req.Entries[n-1].Index
				}
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true, LastLog: last}, nil)
			case *raft.RequestVoteRequest:
				rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
			case *raft.RequestPreVoteRequest:
				rpc.Respond(&raft.RequestPreVoteResponse{Term: req.Term, Granted: true}, nil)
			case *raft.TimeoutNowRequest:
				rpc.Respond(&raft.TimeoutNowResponse{}, fmt.Errorf("refused on purpose"))
			case *raft.InstallSnapshotRequest:
				b, err := io.ReadAll(rpc.Reader)
				a.snapshot <- b
				rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: err == nil}, nil)
			}
		}
	}()
	return a
}

// TestRaftTransportSpeaksNetworkTransport: every kind of RPC works between
// RaftTransport and hashicorp/raft's NetworkTransport in both directions
// (a cluster in a rolling upgrade), and between two RaftTransports.
func TestRaftTransportSpeaksNetworkTransport(t *testing.T) {
	for _, pair := range [][2]transportKind{{ours, theirs}, {theirs, ours}, {ours, ours}} {
		t.Run(pair[0].name+"→"+pair[1].name, func(t *testing.T) {
			client := pair[0].make(newTCPStream(t))
			closeTransport(t, client)
			server := pair[1].make(newTCPStream(t))
			closeTransport(t, server)
			a := serveAnswers(t, server)
			target := server.LocalAddr()
			header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("c"), Addr: []byte(client.LocalAddr())}

			// A heartbeat takes the fast path.
			var hresp raft.AppendEntriesResponse
			if err := client.AppendEntries("s", target, &raft.AppendEntriesRequest{RPCHeader: header, Term: 7}, &hresp); err != nil || !hresp.Success || hresp.Term != 7 {
				t.Fatalf("heartbeat: %+v, %v", hresp, err)
			}
			if a.heartbeats.Load() != 1 {
				t.Errorf("%d heartbeats on the fast path, want 1", a.heartbeats.Load())
			}
			// Entries do not, and arrive intact.
			big := bytes.Repeat([]byte("x"), 100<<10) // larger than a send buffer
			var aresp raft.AppendEntriesResponse
			req := &raft.AppendEntriesRequest{RPCHeader: header, Term: 7, PrevLogEntry: 1, PrevLogTerm: 7, LeaderCommitIndex: 1,
				Entries: []*raft.Log{{Index: 2, Term: 7, Data: big}, {Index: 3, Term: 7, Data: []byte("y")}}}
			if err := client.AppendEntries("s", target, req, &aresp); err != nil || aresp.LastLog != 3 {
				t.Fatalf("append: %+v, %v", aresp, err)
			}
			var vresp raft.RequestVoteResponse
			if err := client.RequestVote("s", target, &raft.RequestVoteRequest{RPCHeader: header, Term: 8}, &vresp); err != nil || !vresp.Granted {
				t.Fatalf("vote: %+v, %v", vresp, err)
			}
			var pvresp raft.RequestPreVoteResponse
			if err := client.(raft.WithPreVote).RequestPreVote("s", target, &raft.RequestPreVoteRequest{RPCHeader: header, Term: 9}, &pvresp); err != nil || !pvresp.Granted {
				t.Fatalf("pre-vote: %+v, %v", pvresp, err)
			}
			// An error answer keeps its message.
			var tresp raft.TimeoutNowResponse
			if err := client.TimeoutNow("s", target, &raft.TimeoutNowRequest{RPCHeader: header}, &tresp); err == nil || err.Error() != "refused on purpose" {
				t.Fatalf("timeout-now: %v, want the server's error", err)
			}
			// A snapshot streams after its request.
			snap := bytes.Repeat([]byte("snapshot"), 50_000)
			var sresp raft.InstallSnapshotResponse
			if err := client.InstallSnapshot("s", target, &raft.InstallSnapshotRequest{RPCHeader: header, Term: 9, Size: int64(len(snap))}, &sresp, bytes.NewReader(snap)); err != nil || !sresp.Success {
				t.Fatalf("snapshot: %+v, %v", sresp, err)
			}
			if got := <-a.snapshot; !bytes.Equal(got, snap) {
				t.Fatalf("snapshot arrived with %d bytes, want %d", len(got), len(snap))
			}
			// A pipeline answers in order.
			p, err := client.AppendEntriesPipeline("s", target)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			go func() {
				for i := uint64(1); i <= 20; i++ {
					_, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header, Term: 9, PrevLogEntry: i, PrevLogTerm: 9, LeaderCommitIndex: i,
						Entries: []*raft.Log{{Index: i + 1, Term: 9, Data: []byte("e")}}}, &raft.AppendEntriesResponse{})
					if err != nil {
						t.Errorf("pipeline send %d: %v", i, err)
						return
					}
				}
			}()
			for i := uint64(1); i <= 20; i++ {
				select {
				case f := <-p.Consumer():
					if f.Error() != nil || f.Response().LastLog != i+1 || f.Request().PrevLogEntry != i {
						t.Fatalf("pipeline answer %d: %+v, %v", i, f.Response(), f.Error())
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("pipeline answer %d missing", i)
				}
			}
		})
	}
}

// TestRaftTransportConnectionMemory: a leader holds (at least) two raft
// connections to each follower. Each connection, both its ends counted,
// must stay small: hashicorp/raft's NetworkTransport spends 256 KiB of
// buffer on each end, half a megabyte per connection, 25 MB on the leader
// of 50 nodes.
func TestRaftTransportConnectionMemory(t *testing.T) {
	const conns = 32
	client := ours.make(newTCPStream(t))
	closeTransport(t, client)
	server := ours.make(newTCPStream(t))
	closeTransport(t, server)
	serveAnswers(t, server)
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(client.LocalAddr())}

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	var pipes []raft.AppendPipeline
	for range conns {
		p, err := client.AppendEntriesPipeline("s", server.LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		// One round trip, so that the accepting side serves it too.
		if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header, Term: 1, PrevLogEntry: 1, LeaderCommitIndex: 1}, &raft.AppendEntriesResponse{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Consumer():
		case <-time.After(5 * time.Second):
			t.Fatal("no answer")
		}
		pipes = append(pipes, p)
	}
	after := heap()
	perConn := (int64(after) - int64(before)) / conns
	t.Logf("%d KiB of heap per raft connection (both ends)", perConn>>10)
	if perConn > 96<<10 {
		t.Errorf("a raft connection costs %d KiB of heap (both ends), want at most 96 KiB", perConn>>10)
	}
	for _, p := range pipes {
		p.Close()
	}
}

// TestRaftTransportCloseEndsEverything: Close closes dialed and accepted
// connections and returns once the transport's goroutines are gone, also
// with a pipeline still open and a request waiting for raft.
func TestRaftTransportCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	client := NewRaftTransport(newTCPStream(t), RaftOptions{Timeout: 5 * time.Second})
	server := NewRaftTransport(newTCPStream(t), RaftOptions{Timeout: 5 * time.Second})
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(client.LocalAddr())}
	p, err := client.AppendEntriesPipeline("s", server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	// Nobody consumes on the server: the request waits for raft.
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header, Term: 1, PrevLogEntry: 1, LeaderCommitIndex: 1}, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var resp raft.RequestVoteResponse
		if err := client.RequestVote("s", server.LocalAddr(), &raft.RequestVoteRequest{RPCHeader: header, Term: 2}, &resp); err == nil {
			t.Error("a vote nobody answered succeeded")
		}
	}()
	// Both requests reached the server (two accepted connections).
	for deadline := time.Now().Add(5 * time.Second); ; {
		server.mu.Lock()
		n := len(server.open)
		server.mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections accepted, want 2", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		server.Close()
		client.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
	if _, err := client.AppendEntriesPipeline("s", server.LocalAddr()); err == nil {
		t.Error("a closed transport opened a pipeline")
	}
}

// TestRaftTransportSpacesHeartbeats: a heartbeat to a peer with a spacing
// waits until the last AppendEntries of any kind to it is that old; other
// messages do not wait, and Quit ends the waits.
func TestRaftTransportSpacesHeartbeats(t *testing.T) {
	const spacing = 300 * time.Millisecond
	quit := make(chan struct{})
	client := NewRaftTransport(newTCPStream(t), RaftOptions{
		Timeout: 5 * time.Second, Quit: quit,
		HeartbeatSpacing: func(id raft.ServerID) time.Duration {
			if id == "nonvoter" {
				return spacing
			}
			return 0
		},
	})
	closeTransport(t, client)
	server := ours.make(newTCPStream(t))
	closeTransport(t, server)
	a := serveAnswers(t, server)
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(client.LocalAddr())}
	heartbeat := func(id raft.ServerID) time.Duration {
		t.Helper()
		start := time.Now()
		var resp raft.AppendEntriesResponse
		if err := client.AppendEntries(id, server.LocalAddr(), &raft.AppendEntriesRequest{RPCHeader: header, Term: 3}, &resp); err != nil || !resp.Success {
			t.Fatalf("heartbeat to %s: %+v, %v", id, resp, err)
		}
		return time.Since(start)
	}
	heartbeat("nonvoter")
	if took := heartbeat("nonvoter"); took < spacing*9/10 {
		t.Errorf("a second heartbeat to a spaced peer went out after %s, want about %s", took, spacing)
	}
	// Entries count as a heartbeat: the next one is spaced from them.
	p, err := client.AppendEntriesPipeline("nonvoter", server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sent := time.Now()
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header, Term: 3, PrevLogEntry: 1, PrevLogTerm: 3, LeaderCommitIndex: 1,
		Entries: []*raft.Log{{Index: 2, Term: 3}}}, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	heartbeat("nonvoter")
	if took := time.Since(sent); took < spacing*9/10 {
		t.Errorf("a heartbeat went out %s after entries, want about %s", took, spacing)
	}
	// Only heartbeats are spaced: entries and commit indexes go at once.
	for _, req := range []*raft.AppendEntriesRequest{
		{RPCHeader: header, Term: 3, PrevLogEntry: 1, PrevLogTerm: 3, LeaderCommitIndex: 1, Entries: []*raft.Log{{Index: 2, Term: 3}}},
		{RPCHeader: header, Term: 3, PrevLogEntry: 2, PrevLogTerm: 3, LeaderCommitIndex: 2},
	} {
		if isHeartbeat(req) {
			t.Errorf("%+v taken for a heartbeat", req)
		}
	}
	// Quit ends the waits.
	close(quit)
	if took := heartbeat("nonvoter"); took > spacing*9/10 {
		t.Errorf("a heartbeat waited %s after Quit", took)
	}
	if n := a.heartbeats.Load(); n != 4 {
		t.Errorf("%d heartbeats arrived, want 4", n)
	}
}

// TestRaftTransportRemembersAnswers: the last answer of each peer to an
// AppendEntries, heartbeat or pipelined, is kept with its term and last
// log index (autopilot's view of a member's health).
func TestRaftTransportRemembersAnswers(t *testing.T) {
	client := NewRaftTransport(newTCPStream(t), RaftOptions{Timeout: 5 * time.Second})
	closeTransport(t, client)
	server := ours.make(newTCPStream(t))
	closeTransport(t, server)
	serveAnswers(t, server)
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(client.LocalAddr())}
	if _, ok := client.LastAnswer("s"); ok {
		t.Fatal("an answer before any request")
	}
	before := time.Now()
	var resp raft.AppendEntriesResponse
	if err := client.AppendEntries("s", server.LocalAddr(), &raft.AppendEntriesRequest{RPCHeader: header, Term: 4}, &resp); err != nil {
		t.Fatal(err)
	}
	if a, ok := client.LastAnswer("s"); !ok || a.Term != 4 || !a.Success || a.At.Before(before) {
		t.Fatalf("after a heartbeat: %+v, %v", a, ok)
	}
	p, err := client.AppendEntriesPipeline("s", server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header, Term: 5, PrevLogEntry: 6, PrevLogTerm: 5, LeaderCommitIndex: 6,
		Entries: []*raft.Log{{Index: 7, Term: 5}}}, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	<-p.Consumer()
	if a, ok := client.LastAnswer("s"); !ok || a.Term != 5 || a.LastLog != 7 {
		t.Fatalf("after an append: %+v, %v", a, ok)
	}
	client.ForgetAnswers(func(raft.ServerID) bool { return false })
	if _, ok := client.LastAnswer("s"); ok {
		t.Error("an answer survived ForgetAnswers")
	}
}
