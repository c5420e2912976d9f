package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/weftnet/weft/store/transport"
)

// Node-to-node RPC: HTTP/1.1 + JSON over the rpc ALPN (mutual TLS). Every
// request must come from a current member (in the raft configuration or
// with a member record); errors travel as WireError so their sentinels
// survive.
const (
	pathPropose      = "/v1/propose"
	pathReadIndex    = "/v1/read-index"
	pathStatus       = "/v1/status"
	pathMembers      = "/v1/members"
	pathMemberAdd    = "/v1/members/add"
	pathMemberRemove = "/v1/members/remove"
)

// codeNotLeader is the wire code of errNotLeader (retry elsewhere).
const codeNotLeader = "not_leader"

// maxRPCBody bounds request bodies: a MaxRequestSize payload in base64 plus
// room for the envelope.
const maxRPCBody = MaxRequestSize*4/3 + 64<<10

type errorBody struct {
	Error *WireError `json:"error"`
}

type proposeRequest struct {
	Command string `json:"command"`
	Payload []byte `json:"payload,omitempty"`
}

type proposeResponse struct {
	Revision uint64     `json:"revision"`
	Objects  []Object   `json:"objects,omitempty"`
	Data     []byte     `json:"data,omitempty"`
	Error    *WireError `json:"error,omitempty"` // the command's own error
}

type readIndexResponse struct {
	Index uint64 `json:"index"`
}

// serverStats is what autopilot needs from every member.
type serverStats struct {
	LastContact time.Duration `json:"lastContact"` // since the leader was last heard; 0 on the leader
	LastTerm    uint64        `json:"lastTerm"`
	LastIndex   uint64        `json:"lastIndex"`
}

type memberAddRequest struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

type memberRemoveRequest struct {
	Name string `json:"name"`
}

func (n *Node) rpcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathPropose, n.handlePropose)
	mux.HandleFunc("POST "+pathReadIndex, n.handleReadIndex)
	mux.HandleFunc("GET "+pathStatus, n.handleStatus)
	mux.HandleFunc("GET "+pathMembers, n.handleMembers)
	mux.HandleFunc("POST "+pathMemberAdd, n.handleMemberAdd)
	mux.HandleFunc("POST "+pathMemberRemove, n.handleMemberRemove)
	return n.authorize(mux)
}

// authorize lets through requests from current members only. The TLS layer
// already refused anyone without a certificate of this cluster; this also
// refuses members that were removed.
func (n *Node) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, ok := transport.PeerNode(r)
		if !ok {
			writeError(w, fmt.Errorf("%w: no verified client certificate", ErrNotAllowed))
			return
		}
		if !n.isMember(peer) {
			n.log.Warn("refused RPC from a node that is not a member", "peer", peer, "path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, fmt.Errorf("%w: node %q is not a member of this cluster", ErrNotAllowed, peer))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (n *Node) isMember(name string) bool {
	if name == n.name {
		return true
	}
	if _, ok := n.fsm.Get(memberKey(name)); ok {
		return true
	}
	return n.inRaftConfig(name)
}

func (n *Node) inRaftConfig(name string) bool {
	servers, err := n.raftServers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if string(s.ID) == name {
			return true
		}
	}
	return false
}

func bytesReader(b []byte) io.Reader {
	if b == nil {
		return http.NoBody
	}
	return bytes.NewReader(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func httpStatus(code string) int {
	switch code {
	case CodeNotFound:
		return http.StatusNotFound
	case CodeExists, CodeConflict:
		return http.StatusConflict
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeNotAllowed:
		return http.StatusForbidden
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeUnavailable, CodeIndeterminate:
		return http.StatusServiceUnavailable
	case codeNotLeader:
		return http.StatusMisdirectedRequest
	default:
		return http.StatusInternalServerError
	}
}

func writeError(w http.ResponseWriter, err error) {
	we := ToWire(err)
	if errors.Is(err, errNotLeader) {
		we.Code = codeNotLeader
	}
	writeJSON(w, httpStatus(we.Code), errorBody{Error: we})
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeBodyLimit(w, r, v, maxRPCBody)
}

func decodeBodyLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: request body over %d bytes", ErrTooLarge, mbe.Limit)
		}
		return fmt.Errorf("%w: request body: %v", ErrInvalid, err)
	}
	return nil
}

func (n *Node) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	index, err := n.readIndex(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, readIndexResponse{Index: index})
}

func (n *Node) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.localStats())
}

func (n *Node) localStats() serverStats {
	s := serverStats{LastIndex: n.raft.LastIndex()}
	if n.raft.State() != raft.Leader {
		if lc := n.raft.LastContact(); lc.IsZero() {
			s.LastContact = -1
		} else {
			s.LastContact = time.Since(lc)
		}
	}
	s.LastTerm, _ = strconv.ParseUint(n.raft.Stats()["last_log_term"], 10, 64)
	return s
}

func (n *Node) handleMembers(w http.ResponseWriter, r *http.Request) {
	ms, err := n.membersAsLeader()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

func (n *Node) handleMemberAdd(w http.ResponseWriter, r *http.Request) {
	var req memberAddRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	// A node adds itself; a member may forward that request for it.
	if peer, _ := transport.PeerNode(r); peer != req.Name && !n.inRaftConfig(peer) {
		writeError(w, fmt.Errorf("%w: %q may not add %q", ErrNotAllowed, peer, req.Name))
		return
	}
	if err := n.addMember(r.Context(), req.Name, req.Address); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (n *Node) handleMemberRemove(w http.ResponseWriter, r *http.Request) {
	var req memberRemoveRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := n.RemoveMember(r.Context(), req.Name); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// call sends one RPC to the member at addr. A transport error is returned
// as is (see notSent); an error answer is decoded (errNotLeader, or an
// error with its store sentinel).
func (n *Node) call(ctx context.Context, method, addr, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, peerURL(addr, path), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.rpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeResponse(resp, path, out)
}

func decodeResponse(resp *http.Response, path string, out any) error {
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&eb); err != nil || eb.Error == nil {
			return fmt.Errorf("%s: HTTP %s", path, resp.Status)
		}
		if eb.Error.Code == codeNotLeader {
			return fmt.Errorf("%w: %s", errNotLeader, eb.Error.Message)
		}
		return eb.Error.Err()
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s: decode answer: %w", path, err)
	}
	return nil
}

func (n *Node) remoteReadIndex(ctx context.Context, addr string) (uint64, error) {
	var resp readIndexResponse
	if err := n.call(ctx, http.MethodPost, addr, pathReadIndex, struct{}{}, &resp); err != nil {
		return 0, err
	}
	return resp.Index, nil
}
