package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
)

// Writes a follower forwards are coalesced: the ones waiting while a
// request is in flight travel together in the next one (each remains its
// own raft entry, applied and answered separately), and a few requests may
// be in flight at once. Under load this turns thousands of small HTTP
// exchanges per second into a few hundred without adding latency when idle.
const (
	forwardMaxBatch    = 256
	forwardMaxBytes    = 4 << 20
	forwardMaxInflight = 4
)

type forwardCall struct {
	req  proposeRequest
	done chan struct{}
	sent bool // taken into a request (guarded by forwarder.mu)
	res  *applyResult
	err  error
}

// forwarder queues writes per leader address.
type forwarder struct {
	n      *Node
	mu     sync.Mutex
	queues map[string]*forwardQueue
}

type forwardQueue struct {
	addr     string
	pending  []*forwardCall
	inflight int
}

func newForwarder(n *Node) *forwarder {
	return &forwarder{n: n, queues: map[string]*forwardQueue{}}
}

// propose hands one entry to the leader at addr and waits for its result.
func (f *forwarder) propose(ctx context.Context, addr, cmd string, payload []byte) (*applyResult, error) {
	c := &forwardCall{req: proposeRequest{Command: cmd, Payload: payload}, done: make(chan struct{})}
	f.mu.Lock()
	q := f.queues[addr]
	if q == nil {
		q = &forwardQueue{addr: addr}
		f.queues[addr] = q
	}
	q.pending = append(q.pending, c)
	if q.inflight < forwardMaxInflight {
		q.inflight++
		go f.run(q)
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		f.mu.Lock()
		defer f.mu.Unlock()
		if !c.sent {
			for i, p := range q.pending {
				if p == c {
					q.pending = append(q.pending[:i], q.pending[i+1:]...)
					break
				}
			}
			// Never left this node: safe to report as not applied.
			return nil, fmt.Errorf("%w: %v", errNotLeader, ctx.Err())
		}
		return nil, fmt.Errorf("%w: forwarded to the leader at %s, no answer before the deadline", ErrIndeterminate, addr)
	}
}

// run sends batches from q until it is empty.
func (f *forwarder) run(q *forwardQueue) {
	for {
		f.mu.Lock()
		n, size := 0, 0
		for n < len(q.pending) && n < forwardMaxBatch {
			size += len(q.pending[n].req.Payload)
			if n > 0 && size > forwardMaxBytes {
				break
			}
			n++
		}
		if n == 0 {
			q.inflight--
			if q.inflight == 0 && len(q.pending) == 0 {
				delete(f.queues, q.addr)
			}
			f.mu.Unlock()
			return
		}
		batch := append([]*forwardCall(nil), q.pending[:n]...)
		q.pending = append(q.pending[:0], q.pending[n:]...)
		for _, c := range batch {
			c.sent = true
		}
		f.mu.Unlock()
		f.send(q.addr, batch)
	}
}

func (f *forwarder) send(addr string, batch []*forwardCall) {
	req := proposeBatchRequest{Entries: make([]proposeRequest, len(batch))}
	for i, c := range batch {
		req.Entries[i] = c.req
	}
	ctx, cancel := context.WithTimeout(f.n.ctx, defaultWriteTimeout)
	defer cancel()
	var resp proposeBatchResponse
	err := f.n.call(ctx, http.MethodPost, addr, pathPropose, req, &resp)
	if err == nil && len(resp.Results) != len(batch) {
		err = fmt.Errorf("leader answered %d results for %d entries", len(resp.Results), len(batch))
	}
	for i, c := range batch {
		switch {
		case err != nil && (errors.Is(err, errNotLeader) || notSent(err) || isFinal(err)):
			c.err = err
		case err != nil:
			// Sent, but no answer: it may have been applied.
			c.err = fmt.Errorf("%w: forwarding to the leader at %s: %v", ErrIndeterminate, addr, err)
		default:
			r := resp.Results[i]
			if r.Failed != nil {
				c.err = r.Failed.err()
			} else {
				c.res = &applyResult{Revision: r.Revision, Objects: r.Objects, Data: r.Data, Err: r.Error.Err()}
			}
		}
		close(c.done)
	}
}

// proposeBatchRequest carries entries for the leader to apply, each as its
// own raft entry.
type proposeBatchRequest struct {
	Entries []proposeRequest `json:"entries"`
}

type proposeBatchResponse struct {
	Results []proposeResult `json:"results"`
}

// proposeResult is one entry's outcome: Failed when the leader could not
// apply it (not the leader, too large...), otherwise the FSM's answer, whose
// Error is the command's own error.
type proposeResult struct {
	proposeResponse
	Failed *WireError `json:"failed,omitempty"`
}

// failure converts a leader-side error for the wire, keeping errNotLeader
// recognisable.
func failure(err error) *WireError {
	w := ToWire(err)
	if errors.Is(err, errNotLeader) {
		w.Code = codeNotLeader
	}
	return w
}

func (w *WireError) err() error {
	if w.Code == codeNotLeader {
		return fmt.Errorf("%w: %s", errNotLeader, w.Message)
	}
	return w.Err()
}

// handlePropose applies a batch of forwarded entries concurrently, so that
// they share raft's group commit, and answers them in order.
func (n *Node) handlePropose(w http.ResponseWriter, r *http.Request) {
	var req proposeBatchRequest
	if err := decodeBodyLimit(w, r, &req, forwardMaxBytes*4/3+maxRPCBody); err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), defaultWriteTimeout)
	defer cancel()
	results := make([]proposeResult, len(req.Entries))
	var wg sync.WaitGroup
	for i, e := range req.Entries {
		if err := n.checkProposal(e); err != nil {
			results[i].Failed = failure(err)
			continue
		}
		wg.Add(1)
		go func(i int, e proposeRequest) {
			defer wg.Done()
			res, err := n.applyAsLeader(ctx, e.Command, e.Payload)
			if err != nil {
				results[i].Failed = failure(err)
				return
			}
			results[i].proposeResponse = proposeResponse{Revision: res.Revision, Objects: res.Objects, Data: res.Data, Error: ToWire(res.Err)}
		}(i, e)
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, proposeBatchResponse{Results: results})
}

// checkProposal vets an entry a member forwarded before it is appended to
// the log: once committed, every replica applies it, so the leader is the
// last place where a malformed entry can be refused without a trace. A
// txn's payload must decode to ops that pass the checks Txn runs (reserved
// kinds excepted: members forward the store's own writes), and a
// registered command's payload must be JSON.
func (n *Node) checkProposal(e proposeRequest) error {
	if err := checkSize(e.Payload); err != nil {
		return err
	}
	if e.Command == commandTxn {
		var ops []Op
		if err := json.Unmarshal(e.Payload, &ops); err != nil {
			return fmt.Errorf("%w: txn payload is not a list of operations: %v", ErrInvalid, err)
		}
		return checkOps(ops, true)
	}
	if _, ok := n.cfg.Registry.Commands[e.Command]; !ok {
		return fmt.Errorf("%w: unknown command %q", ErrInvalid, e.Command)
	}
	return checkCommandPayload(e.Command, e.Payload)
}
