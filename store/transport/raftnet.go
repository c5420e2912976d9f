package transport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// RaftTransport is the raft.Transport of the cluster port: raft's RPCs over
// a StreamLayer (Mux.Raft), on the wire exactly like hashicorp/raft's
// NetworkTransport (one type byte, then the msgpack-encoded request; the
// answer is a msgpack error string, then the response), so that nodes
// running either transport work together.
//
// It exists for its memory: NetworkTransport gives every outgoing
// connection a 256 KiB send buffer and every incoming one a 256 KiB receive
// buffer, and a leader keeps at least two connections to each follower
// (heartbeats and the replication pipeline). At 50 nodes that is 25 MB of
// buffers on the leader, which the Go heap then doubles as headroom. Here a
// replication pipeline and an incoming connection buffer
// RaftOptions.BufferSize (16 KiB), other connections 4 KiB: a message larger
// than that is written in several pieces (byte slices of log entries go
// straight to the connection), which costs nothing measurable.
//
// Close closes every connection, dialed or accepted, and waits for the
// transport's goroutines.
type RaftTransport struct {
	stream raft.StreamLayer
	opts   RaftOptions
	log    *slog.Logger
	// codec is shared by every connection: a handle caches how to encode
	// each type, and is safe for concurrent use once configured.
	codec *codec.MsgpackHandle

	consumeCh chan raft.RPC

	heartbeatMu sync.Mutex
	heartbeatFn func(raft.RPC)

	mu            sync.Mutex
	lastHeartbeat map[raft.ServerID]time.Time        // when spaced heartbeats were last sent
	idle          map[raft.ServerAddress][]*peerConn // pooled outgoing connections
	open          map[net.Conn]struct{}              // every connection, to close them all
	closed        bool
	done          chan struct{}
	wg            sync.WaitGroup
}

// RaftOptions tunes a RaftTransport; zero fields take the defaults.
type RaftOptions struct {
	// Timeout bounds the I/O of one RPC (InstallSnapshot: per 256 KiB of
	// snapshot). Default 10 s.
	Timeout time.Duration
	// MaxPool is how many idle connections to one peer are kept for
	// reuse. Default 2.
	MaxPool int
	// BufferSize is the send buffer of a replication pipeline and the
	// receive buffer of an incoming connection (other outgoing connections
	// carry small messages and have 4 KiB). Default 16 KiB.
	BufferSize int
	// HeartbeatSpacing, when set, gives for a peer the least time between
	// two heartbeats to it (0: no limit). raft heartbeats every follower
	// every tenth of its heartbeat timeout; a heartbeat that comes sooner
	// than the spacing waits (the heartbeat goroutine of raft sleeps
	// between heartbeats anyway).
	HeartbeatSpacing func(id raft.ServerID) time.Duration
	// Quit, when closed, ends such waits at once: close it before raft
	// shuts down, which waits for its heartbeat goroutines.
	Quit   <-chan struct{}
	Logger *slog.Logger
}

// Defaults of RaftOptions.
const (
	DefaultRaftTimeout    = 10 * time.Second
	DefaultRaftMaxPool    = 2
	DefaultRaftBufferSize = 16 << 10
)

const (
	// Message types, as hashicorp/raft's NetworkTransport numbers them.
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote

	// snapshotTimeoutScale: InstallSnapshot gets Timeout per this many
	// bytes of snapshot (NetworkTransport's DefaultTimeoutScale).
	snapshotTimeoutScale = 256 << 10
	// answerBufferSize buffers the small messages: answers both ways,
	// heartbeats and votes.
	answerBufferSize = 4 << 10
)

// ErrRaftTransportClosed is returned by calls on a closed RaftTransport.
var ErrRaftTransportClosed = errors.New("raft transport closed")

var errPipelineClosed = errors.New("append pipeline closed")

var (
	_ raft.Transport   = (*RaftTransport)(nil)
	_ raft.WithClose   = (*RaftTransport)(nil)
	_ raft.WithPreVote = (*RaftTransport)(nil)
)

// NewRaftTransport serves raft over stream (accepting at once) and dials
// peers through it.
func NewRaftTransport(stream raft.StreamLayer, opts RaftOptions) *RaftTransport {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRaftTimeout
	}
	if opts.MaxPool <= 0 {
		opts.MaxPool = DefaultRaftMaxPool
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultRaftBufferSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &RaftTransport{
		stream:    stream,
		opts:      opts,
		log:       opts.Logger,
		consumeCh: make(chan raft.RPC),
		codec:     newCodec(),
		idle:      map[raft.ServerAddress][]*peerConn{},
		open:      map[net.Conn]struct{}{},

		lastHeartbeat: map[raft.ServerID]time.Time{},
		done:          make(chan struct{}),
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return t
}

// Consumer is where raft takes the RPCs other members send.
func (t *RaftTransport) Consumer() <-chan raft.RPC { return t.consumeCh }

// LocalAddr is this node's raft address.
func (t *RaftTransport) LocalAddr() raft.ServerAddress {
	return raft.ServerAddress(t.stream.Addr().String())
}

// SetHeartbeatHandler sets the fast path for heartbeats: they are answered
// on the connection's goroutine, never queued behind log appends.
func (t *RaftTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	t.heartbeatMu.Lock()
	defer t.heartbeatMu.Unlock()
	t.heartbeatFn = cb
}

func (t *RaftTransport) heartbeatHandler() func(raft.RPC) {
	t.heartbeatMu.Lock()
	defer t.heartbeatMu.Unlock()
	return t.heartbeatFn
}

// EncodePeer and DecodePeer: a peer is its address, as NetworkTransport
// encodes it.
func (t *RaftTransport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

func (t *RaftTransport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// Close stops accepting, closes every connection and waits for the
// transport's goroutines. RPCs in flight fail.
func (t *RaftTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	conns := t.open
	t.open = map[net.Conn]struct{}{}
	t.idle = map[raft.ServerAddress][]*peerConn{}
	t.mu.Unlock()
	err := t.stream.Close()
	for c := range conns {
		_ = c.Close()
	}
	t.wg.Wait()
	return err
}

// track registers c so that Close closes it; false (and c closed) once the
// transport is closed.
func (t *RaftTransport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return false
	}
	t.open[c] = struct{}{}
	return true
}

// drop closes c and forgets it.
func (t *RaftTransport) drop(c net.Conn) {
	t.mu.Lock()
	delete(t.open, c)
	t.mu.Unlock()
	_ = c.Close()
}

// newCodec is the msgpack handle of NetworkTransport (times in the old
// format, which every decoder understands).
func newCodec() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.TimeNotBuiltin = true
	return h
}

// peerConn is an outgoing connection.
type peerConn struct {
	target raft.ServerAddress
	conn   net.Conn
	w      *bufio.Writer
	enc    *codec.Encoder
	dec    *codec.Decoder
}

// conn returns an idle connection to target or dials one.
func (t *RaftTransport) conn(target raft.ServerAddress) (*peerConn, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrRaftTransportClosed
	}
	if pool := t.idle[target]; len(pool) > 0 {
		pc := pool[len(pool)-1]
		pool[len(pool)-1] = nil
		t.idle[target] = pool[:len(pool)-1]
		t.mu.Unlock()
		return pc, nil
	}
	t.mu.Unlock()
	c, err := t.stream.Dial(target, t.opts.Timeout)
	if err != nil {
		return nil, err
	}
	if !t.track(c) {
		return nil, ErrRaftTransportClosed
	}
	// Pooled connections carry heartbeats and the odd vote: a small send
	// buffer; a pipeline gets a larger one (pipelineBuffer).
	pc := &peerConn{target: target, conn: c}
	pc.setSendBuffer(answerBufferSize, t.codec)
	pc.dec = codec.NewDecoder(bufio.NewReaderSize(c, answerBufferSize), t.codec)
	return pc, nil
}

// setSendBuffer gives pc a send buffer of size bytes (pc's buffer must be
// empty).
func (pc *peerConn) setSendBuffer(size int, h *codec.MsgpackHandle) {
	if pc.w != nil && pc.w.Size() >= size {
		return
	}
	pc.w = bufio.NewWriterSize(pc.conn, size)
	pc.enc = codec.NewEncoder(pc.w, h)
}

// reuse returns pc to the pool, or closes it when the pool is full.
func (t *RaftTransport) reuse(pc *peerConn) {
	t.mu.Lock()
	if !t.closed && len(t.idle[pc.target]) < t.opts.MaxPool {
		t.idle[pc.target] = append(t.idle[pc.target], pc)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.drop(pc.conn)
}

// send writes one request.
func (pc *peerConn) send(rpcType uint8, args any) error {
	if err := pc.w.WriteByte(rpcType); err != nil {
		return err
	}
	if err := pc.enc.Encode(args); err != nil {
		return err
	}
	return pc.w.Flush()
}

// receive reads one answer into resp. reusable is false when the
// connection is out of step and must be closed.
func (pc *peerConn) receive(resp any) (reusable bool, err error) {
	var rpcErr string
	if err := pc.dec.Decode(&rpcErr); err != nil {
		return false, err
	}
	if err := pc.dec.Decode(resp); err != nil {
		return false, err
	}
	if rpcErr != "" {
		return true, errors.New(rpcErr)
	}
	return true, nil
}

// call runs one request and answer on a pooled connection.
func (t *RaftTransport) call(target raft.ServerAddress, rpcType uint8, args, resp any) error {
	pc, err := t.conn(target)
	if err != nil {
		return err
	}
	_ = pc.conn.SetDeadline(time.Now().Add(t.opts.Timeout))
	if err := pc.send(rpcType, args); err != nil {
		t.drop(pc.conn)
		return err
	}
	reusable, err := pc.receive(resp)
	if reusable {
		t.reuse(pc)
	} else {
		t.drop(pc.conn)
	}
	return err
}

// AppendEntries sends one AppendEntries (a heartbeat, or entries outside
// the pipeline).
func (t *RaftTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if t.opts.HeartbeatSpacing != nil && isHeartbeat(args) {
		if err := t.spaceHeartbeat(id, t.opts.HeartbeatSpacing(id)); err != nil {
			return err
		}
	}
	return t.call(target, rpcAppendEntries, args, resp)
}

// isHeartbeat is NetworkTransport's test for a heartbeat: an
// AppendEntries without entries, previous entry or commit index.
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leader := req.RPCHeader.Addr
	if len(leader) == 0 {
		//lint:ignore SA1019 leaders older than raft 1.6 fill only this
		leader = req.Leader
	}
	return req.Term != 0 && leader != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// spaceHeartbeat waits until the last heartbeat to id is spacing ago.
func (t *RaftTransport) spaceHeartbeat(id raft.ServerID, spacing time.Duration) error {
	t.mu.Lock()
	if spacing <= 0 {
		delete(t.lastHeartbeat, id)
		t.mu.Unlock()
		return nil
	}
	wait := time.Until(t.lastHeartbeat[id].Add(spacing))
	t.mu.Unlock()
	if wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-t.opts.Quit:
		case <-t.done:
			return ErrRaftTransportClosed
		}
	}
	t.mu.Lock()
	t.lastHeartbeat[id] = time.Now()
	t.mu.Unlock()
	return nil
}

// RequestVote asks target for its vote.
func (t *RaftTransport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.call(target, rpcRequestVote, args, resp)
}

// RequestPreVote asks target whether it would vote.
func (t *RaftTransport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.call(target, rpcRequestPreVote, args, resp)
}

// TimeoutNow makes target start an election (leadership transfer).
func (t *RaftTransport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.call(target, rpcTimeoutNow, args, resp)
}

// InstallSnapshot streams a snapshot on a connection of its own, closed
// afterwards (its state is unknown after an error).
func (t *RaftTransport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	pc, err := t.conn(target)
	if err != nil {
		return err
	}
	defer t.drop(pc.conn)
	timeout := t.opts.Timeout * time.Duration(max(1, args.Size/snapshotTimeoutScale))
	_ = pc.conn.SetDeadline(time.Now().Add(timeout))
	if err := pc.send(rpcInstallSnapshot, args); err != nil {
		return err
	}
	if _, err := io.Copy(pc.w, data); err != nil {
		return err
	}
	if err := pc.w.Flush(); err != nil {
		return err
	}
	_, err = pc.receive(resp)
	return err
}

// AppendEntriesPipeline opens a replication pipeline to target: one
// request may be in flight while the next is sent (NetworkTransport's
// default of two in flight).
func (t *RaftTransport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	pc, err := t.conn(target)
	if err != nil {
		return nil, err
	}
	// Its connection is closed with it, never pooled again.
	pc.setSendBuffer(t.opts.BufferSize, t.codec)
	p := &pipeline{
		t:        t,
		pc:       pc,
		inflight: make(chan *appendFuture),
		doneCh:   make(chan raft.AppendFuture),
		closed:   make(chan struct{}),
	}
	t.wg.Add(1)
	go p.decodeAnswers()
	return p, nil
}

type pipeline struct {
	t        *RaftTransport
	pc       *peerConn
	inflight chan *appendFuture
	doneCh   chan raft.AppendFuture

	closeOnce sync.Once
	closed    chan struct{}
}

// AppendEntries sends args and hands the answer's future to the decoder;
// it blocks while the previous request still waits for its answer.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	f := &appendFuture{start: time.Now(), args: args, resp: resp, done: make(chan struct{})}
	_ = p.pc.conn.SetWriteDeadline(time.Now().Add(p.t.opts.Timeout))
	if err := p.pc.send(rpcAppendEntries, args); err != nil {
		p.t.drop(p.pc.conn)
		return nil, err
	}
	select {
	case p.inflight <- f:
		return f, nil
	case <-p.closed:
		return nil, errPipelineClosed
	}
}

func (p *pipeline) decodeAnswers() {
	defer p.t.wg.Done()
	for {
		select {
		case f := <-p.inflight:
			_ = p.pc.conn.SetReadDeadline(time.Now().Add(p.t.opts.Timeout))
			reusable, err := p.pc.receive(f.resp)
			if !reusable {
				p.t.drop(p.pc.conn)
			}
			f.err = err
			close(f.done)
			select {
			case p.doneCh <- f:
			case <-p.closed:
				return
			case <-p.t.done:
				return
			}
		case <-p.closed:
			return
		case <-p.t.done:
			return
		}
	}
}

// Consumer delivers the futures of answered requests, in order.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

// Close ends the pipeline and closes its connection.
func (p *pipeline) Close() error {
	p.closeOnce.Do(func() {
		close(p.closed)
		p.t.drop(p.pc.conn)
	})
	return nil
}

// appendFuture is one pipelined AppendEntries.
type appendFuture struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
	done  chan struct{}
}

func (f *appendFuture) Error() error {
	<-f.done
	return f.err
}

func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.args }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }

func (t *RaftTransport) acceptLoop() {
	defer t.wg.Done()
	var backoff time.Duration
	for {
		c, err := t.stream.Accept()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.log.Warn("raft transport: accept failed; retrying", "error", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-t.done:
				return
			}
			continue
		}
		backoff = 0
		if !t.track(c) {
			return
		}
		t.wg.Add(1)
		go t.serve(c)
	}
}

// serve answers the requests of one incoming connection until it closes.
func (t *RaftTransport) serve(c net.Conn) {
	defer t.wg.Done()
	defer t.drop(c)
	r := bufio.NewReaderSize(c, t.opts.BufferSize)
	w := bufio.NewWriterSize(c, answerBufferSize)
	dec := codec.NewDecoder(r, t.codec)
	enc := codec.NewEncoder(w, t.codec)
	for {
		if err := t.handle(r, dec, enc); err != nil {
			select {
			case <-t.done:
			default:
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					t.log.Debug("raft transport: closing connection", "remote", c.RemoteAddr().String(), "error", err)
				}
			}
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

// handle reads one request, has raft answer it and writes the answer.
func (t *RaftTransport) handle(r *bufio.Reader, dec *codec.Decoder, enc *codec.Encoder) error {
	rpcType, err := r.ReadByte()
	if err != nil {
		return err
	}
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{RespChan: respCh}
	heartbeat := false
	switch rpcType {
	case rpcAppendEntries:
		var req raft.AppendEntriesRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
		heartbeat = isHeartbeat(&req)
	case rpcRequestVote:
		var req raft.RequestVoteRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
	case rpcRequestPreVote:
		var req raft.RequestPreVoteRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
	case rpcInstallSnapshot:
		var req raft.InstallSnapshotRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
		rpc.Reader = io.LimitReader(r, req.Size)
	case rpcTimeoutNow:
		var req raft.TimeoutNowRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
	default:
		return fmt.Errorf("unknown raft message type %d", rpcType)
	}

	fast := false
	if heartbeat {
		if fn := t.heartbeatHandler(); fn != nil {
			fn(rpc)
			fast = true
		}
	}
	if !fast {
		select {
		case t.consumeCh <- rpc:
		case <-t.done:
			return ErrRaftTransportClosed
		}
	}
	select {
	case resp := <-respCh:
		msg := ""
		if resp.Error != nil {
			msg = resp.Error.Error()
		}
		if err := enc.Encode(msg); err != nil {
			return err
		}
		return enc.Encode(resp.Response)
	case <-t.done:
		return ErrRaftTransportClosed
	}
}
