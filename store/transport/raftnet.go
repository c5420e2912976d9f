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
// request is written through a buffer of RaftOptions.BufferSize (16 KiB)
// taken from a pool for that one request, so an idle connection holds no
// send buffer; answers are read through 512 bytes; an incoming connection
// reads through BufferSize. A message larger than the buffer goes out in
// pieces (byte slices of log entries straight to the connection), which
// costs nothing measurable.
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
	// writers are send buffers with their encoders, taken for one message
	// at a time: a connection holds none while idle.
	writers sync.Pool

	consumeCh chan raft.RPC

	heartbeatMu sync.Mutex
	heartbeatFn func(raft.RPC)

	mu       sync.Mutex
	lastSent map[raft.ServerID]time.Time        // last AppendEntries (of any kind) to peers with spaced heartbeats
	answers  map[raft.ServerID]Answer           // last answer to an AppendEntries, per peer
	idle     map[raft.ServerAddress][]*peerConn // pooled outgoing connections
	open     map[net.Conn]struct{}              // every connection, to close them all
	closed   bool
	done     chan struct{}
	wg       sync.WaitGroup
}

// RaftOptions tunes a RaftTransport; zero fields take the defaults.
type RaftOptions struct {
	// Timeout bounds the I/O of one RPC (InstallSnapshot: per 256 KiB of
	// snapshot). Default 10 s.
	Timeout time.Duration
	// MaxPool is how many idle connections to one peer are kept for
	// reuse. Default 2.
	MaxPool int
	// BufferSize is the buffer a request is written through (taken from
	// a pool for each request: an idle connection holds none) and the
	// receive buffer of an incoming connection. Default 16 KiB.
	BufferSize int
	// HeartbeatSpacing, when set, gives for a peer the least time between
	// a heartbeat and the previous AppendEntries of any kind to it (0: no
	// limit). raft heartbeats every follower every tenth of its heartbeat
	// timeout, whatever else it sends it; a heartbeat that comes sooner
	// than the spacing waits (raft's heartbeat goroutine sleeps between
	// heartbeats anyway), so a peer that receives entries gets no
	// heartbeats at all.
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
	// answerBufferSize buffers the reading of answers, which are small
	// (tens of bytes), and their writing.
	answerBufferSize = 512
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
		lastSent:  map[raft.ServerID]time.Time{},
		answers:   map[raft.ServerID]Answer{},
		done:      make(chan struct{}),
	}
	t.writers.New = func() any {
		w := bufio.NewWriterSize(nil, t.opts.BufferSize)
		return &msgWriter{w: w, enc: codec.NewEncoder(w, t.codec)}
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
	dec    *codec.Decoder
}

// msgWriter is a send buffer and the encoder writing into it.
type msgWriter struct {
	w   *bufio.Writer
	enc *codec.Encoder
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
	// The dial (a TLS handshake) runs on a goroutine of its own: the deep
	// stack it needs would otherwise stay with the caller, one of raft's
	// long-lived goroutines (three per follower on a leader).
	type dialed struct {
		c   net.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := t.stream.Dial(target, t.opts.Timeout)
		ch <- dialed{c, err}
	}()
	d := <-ch
	c, err := d.c, d.err
	if err != nil {
		return nil, err
	}
	if !t.track(c) {
		return nil, ErrRaftTransportClosed
	}
	pc := &peerConn{target: target, conn: c}
	pc.dec = codec.NewDecoder(bufio.NewReaderSize(c, answerBufferSize), t.codec)
	return pc, nil
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

// send writes one request to pc, streaming it through a send buffer of
// the pool; then more, if any (a snapshot after its request).
func (t *RaftTransport) send(pc *peerConn, rpcType uint8, args any, more io.Reader) error {
	mw := t.writers.Get().(*msgWriter)
	mw.w.Reset(pc.conn)
	err := mw.w.WriteByte(rpcType)
	if err == nil {
		err = mw.enc.Encode(args)
	}
	if err == nil && more != nil {
		_, err = io.Copy(mw.w, more)
	}
	if err == nil {
		err = mw.w.Flush()
	}
	if err != nil {
		return err // mw's state is unknown: not reused
	}
	mw.w.Reset(nil)
	t.writers.Put(mw)
	return nil
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
	if err := t.send(pc, rpcType, args, nil); err != nil {
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
	t.noteSent(id)
	if err := t.call(target, rpcAppendEntries, args, resp); err != nil {
		return err
	}
	t.noteAnswer(id, resp)
	return nil
}

// Answer is what a peer said in its last answer to an AppendEntries
// (heartbeats included): on a leader, a sign of life of every follower
// without asking it anything.
type Answer struct {
	At      time.Time // when it arrived
	Term    uint64    // the peer's current term
	LastLog uint64    // the peer's last log index
	Success bool
}

// LastAnswer returns peer id's last answer to an AppendEntries from this
// node, if any.
func (t *RaftTransport) LastAnswer(id raft.ServerID) (Answer, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.answers[id]
	return a, ok
}

// ForgetAnswers drops the answers of peers for which keep is false.
func (t *RaftTransport) ForgetAnswers(keep func(raft.ServerID) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.answers {
		if !keep(id) {
			delete(t.answers, id)
		}
	}
}

func (t *RaftTransport) noteAnswer(id raft.ServerID, resp *raft.AppendEntriesResponse) {
	a := Answer{At: time.Now(), Term: resp.Term, LastLog: resp.LastLog, Success: resp.Success}
	t.mu.Lock()
	t.answers[id] = a
	t.mu.Unlock()
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

// spaceHeartbeat waits until the last AppendEntries to id is spacing ago.
func (t *RaftTransport) spaceHeartbeat(id raft.ServerID, spacing time.Duration) error {
	if spacing <= 0 {
		t.mu.Lock()
		delete(t.lastSent, id)
		t.mu.Unlock()
		return nil
	}
	for {
		t.mu.Lock()
		last, ok := t.lastSent[id]
		t.mu.Unlock()
		wait := time.Until(last.Add(spacing))
		if !ok || wait <= 0 {
			return nil
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-t.opts.Quit:
			timer.Stop()
			return nil
		case <-t.done:
			timer.Stop()
			return ErrRaftTransportClosed
		}
	}
}

// noteSent records an AppendEntries to id, for spaceHeartbeat.
func (t *RaftTransport) noteSent(id raft.ServerID) {
	if t.opts.HeartbeatSpacing == nil {
		return
	}
	t.mu.Lock()
	t.lastSent[id] = time.Now()
	t.mu.Unlock()
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
	if err := t.send(pc, rpcInstallSnapshot, args, data); err != nil {
		return err
	}
	_, err = pc.receive(resp)
	return err
}

// AppendEntriesPipeline opens a replication pipeline to target: one
// request may be in flight while the next is sent (NetworkTransport's
// default of two in flight).
func (t *RaftTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	pc, err := t.conn(target)
	if err != nil {
		return nil, err
	}
	p := &pipeline{
		t:        t,
		id:       id,
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
	id       raft.ServerID
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
	p.t.noteSent(p.id)
	_ = p.pc.conn.SetWriteDeadline(time.Now().Add(p.t.opts.Timeout))
	if err := p.t.send(p.pc, rpcAppendEntries, args, nil); err != nil {
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
			if err == nil {
				p.t.noteAnswer(p.id, f.resp)
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
