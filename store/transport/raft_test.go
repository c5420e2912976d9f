package transport

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// recordingFSM remembers every applied command.
type recordingFSM struct {
	mu      sync.Mutex
	applied []string
}

func (f *recordingFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, string(l.Data))
	return nil
}

func (f *recordingFSM) has(cmd string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.applied {
		if a == cmd {
			return true
		}
	}
	return false
}

func (f *recordingFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *recordingFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (nopSnapshot) Release()                             {}

type raftNode struct {
	raft *raft.Raft
	fsm  *recordingFSM
}

// TestRaftClusterOverMux runs three raft nodes in this process, each behind
// its own mux on loopback, with mutual TLS on every raft stream: they must
// elect a leader and replicate an entry to everyone.
func TestRaftClusterOverMux(t *testing.T) {
	names := []string{"node-a", "node-b", "node-c"}
	cluster := newTestCluster(t, names...)
	muxes := map[string]*Mux{}
	var servers []raft.Server
	for _, n := range names {
		m := startMux(t, cluster.ids[n], Options{})
		muxes[n] = m
		servers = append(servers, raft.Server{ID: raft.ServerID(n), Address: raft.ServerAddress(m.Addr().String())})
	}

	nodes := map[string]*raftNode{}
	for _, n := range names {
		logger := hclog.New(&hclog.LoggerOptions{Name: n, Output: io.Discard, Level: hclog.Off})
		stream := muxes[n].Raft(raft.ServerAddress(muxes[n].Addr().String()), cluster.clientTLS(n, ALPNRaft))
		trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  stream,
			MaxPool: 3,
			Timeout: 2 * time.Second,
			Logger:  logger,
		})
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(n)
		conf.Logger = logger
		// Tight but race-detector-safe timings on a 2-core box.
		conf.HeartbeatTimeout = 500 * time.Millisecond
		conf.ElectionTimeout = 500 * time.Millisecond
		conf.LeaderLeaseTimeout = 250 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		fsm := &recordingFSM{}
		r, err := raft.NewRaft(conf, fsm, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatalf("NewRaft %s: %v", n, err)
		}
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Errorf("shutdown %s: %v", n, err)
			}
			_ = trans.Close()
		})
		nodes[n] = &raftNode{raft: r, fsm: fsm}
	}
	if err := nodes["node-a"].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}

	var leader *raftNode
	waitFor(t, 30*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				leader = n
				return true
			}
		}
		return false
	})
	if err := leader.raft.Apply([]byte("hello over mTLS"), 10*time.Second).Error(); err != nil {
		t.Fatalf("apply: %v", err)
	}
	for name, n := range nodes {
		waitFor(t, 30*time.Second, name+" to apply the entry", func() bool { return n.fsm.has("hello over mTLS") })
	}
	// Every follower knows who leads, by the leader's advertised address.
	leaderAddr, _ := leader.raft.LeaderWithID()
	for name, n := range nodes {
		waitFor(t, 30*time.Second, name+" to know the leader", func() bool {
			addr, _ := n.raft.LeaderWithID()
			return addr == leaderAddr
		})
	}
}

// TestRaftDialTimeoutCoversHandshake dials a peer that accepts TCP but
// never answers the TLS handshake: Dial must give up after its timeout
// instead of hanging.
func TestRaftDialTimeoutCoversHandshake(t *testing.T) {
	cluster := newTestCluster(t, "node-a")
	m := startMux(t, cluster.ids["node-a"], Options{})
	stream := m.Raft("127.0.0.1:1", cluster.clientTLS("node-a", ALPNRaft))

	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	held := make(chan net.Conn, 1)
	go func() {
		c, err := mute.Accept()
		if err == nil {
			held <- c // keep it open, say nothing
		}
	}()
	defer func() {
		select {
		case c := <-held:
			c.Close()
		default:
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		c, err := stream.Dial(raft.ServerAddress(mute.Addr().String()), 300*time.Millisecond)
		if c != nil {
			c.Close()
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Dial to a mute peer succeeded")
		}
		t.Logf("Dial failed after %s: %v", time.Since(start), err)
	case <-ctx.Done():
		t.Fatal("Dial ignored its timeout during the TLS handshake")
	}
}

func TestRaftLayerAddrIsAdvertised(t *testing.T) {
	cluster := newTestCluster(t, "node-a")
	m := startMux(t, cluster.ids["node-a"], Options{})
	stream := m.Raft("10.1.2.3:7946", cluster.clientTLS("node-a", ALPNRaft))
	if got := stream.Addr().String(); got != "10.1.2.3:7946" {
		t.Errorf("Addr = %q, want the advertised address", got)
	}
	if stream.Addr().Network() != "tcp" {
		t.Errorf("Network = %q", stream.Addr().Network())
	}
}
