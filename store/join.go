package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/raft"

	"github.com/weftnet/weft/store/pki"
	"github.com/weftnet/weft/store/transport"
)

// Joining (SPEC §3), in two steps:
//
//  1. On the join ALPN (no client certificate; the joiner pins the CA by
//     the fingerprint in its token, so nothing is sent to an impostor):
//     GET /v1/join/nonce, then POST /v1/join with the node name, a CSR for
//     a key that never leaves the joiner, and HMAC(token secret, nonce ‖
//     hash(name, CSR)). The member checks the proof, records the node as
//     admitted (_Member/<name>, through the leader) and returns the signed
//     certificate, the CA and the members' addresses.
//  2. The joiner starts raft with that certificate and, over mutual TLS,
//     asks to be added (POST /v1/members/add): the leader adds it as a
//     non-voter; autopilot promotes it when voters are missing. The same
//     call updates a known member's address after it moved.
const (
	pathJoinNonce = "/v1/join/nonce"
	pathJoin      = "/v1/join"
)

type nonceResponse struct {
	Nonce []byte `json:"nonce"`
}

type joinRequest struct {
	Name     string `json:"name"`
	CSR      []byte `json:"csr"` // DER
	Nonce    []byte `json:"nonce"`
	Proof    []byte `json:"proof"`
	NonVoter bool   `json:"nonVoter,omitempty"`
}

type joinResponse struct {
	Cert    []byte   `json:"cert"` // PEM
	CA      []byte   `json:"ca"`   // PEM
	Members []string `json:"members"`
}

// proofMessage binds the proof to the nonce, the name and the CSR, so a
// proof cannot be reused for another request.
func proofMessage(nonce []byte, name string, csr []byte) []byte {
	h := sha256.New()
	h.Write([]byte("weft-join\x00"))
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(csr)
	return append(append([]byte(nil), nonce...), h.Sum(nil)...)
}

func (n *Node) joinHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathJoinNonce, func(w http.ResponseWriter, r *http.Request) {
		nonce, err := n.nonces.issue(time.Now())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, nonceResponse{Nonce: nonce})
	})
	mux.HandleFunc("POST "+pathJoin, n.handleJoin)
	return mux
}

func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, fmt.Errorf("%w: join request: %v", ErrInvalid, err))
		return
	}
	resp, err := n.admit(r.Context(), req)
	if err != nil {
		n.log.Warn("join refused", "name", req.Name, "remote", r.RemoteAddr, "error", err)
		writeError(w, err)
		return
	}
	n.log.Info("admitted a new node", "name", req.Name, "remote", r.RemoteAddr, "nonVoter", req.NonVoter)
	writeJSON(w, http.StatusOK, resp)
}

// admit checks a join request and, if it proves the token, records the
// node and signs its certificate. Nothing changes when it fails.
func (n *Node) admit(ctx context.Context, req joinRequest) (*joinResponse, error) {
	if err := n.nonces.check(req.Nonce, time.Now()); err != nil {
		return nil, err
	}
	sec, ok, err := n.clusterSecrets()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: this member has not received the cluster secrets yet", ErrNoLeader)
	}
	tok, ca, err := sec.token()
	if err != nil {
		return nil, err
	}
	if !tok.VerifyProof(proofMessage(req.Nonce, req.Name, req.CSR), req.Proof) {
		return nil, fmt.Errorf("%w: wrong join token", ErrNotAllowed)
	}
	if err := pki.ValidateNodeName(req.Name); err != nil {
		return nil, fmt.Errorf("%w: node name: %v", ErrInvalid, err)
	}
	members, err := n.raftServers()
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, s := range members {
		if string(s.ID) == req.Name {
			return nil, fmt.Errorf("%w: a member named %q is already in the cluster: remove it first", ErrExists, req.Name)
		}
		addrs = append(addrs, string(s.Address))
	}
	cert, err := ca.SignNode(req.CSR, req.Name, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	rec, _ := json.Marshal(memberRecord{NonVoter: req.NonVoter, Admitted: time.Now().UTC()})
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := n.txn(ctx, []Op{{Type: OpPut, Key: memberKey(req.Name), Value: rec}}); err != nil {
		return nil, fmt.Errorf("record the new member: %w", err)
	}
	return &joinResponse{Cert: cert, CA: sec.CACert, Members: addrs}, nil
}

func (n *Node) raftServers() ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	return f.Configuration().Servers, nil
}

type joinResult struct {
	identity  *pki.Identity
	addresses []string // members' addresses, from the member that admitted us
}

// requestCertificate runs join step 1 against the configured members until
// one admits this node; a refusal (wrong token, name taken) ends it.
func (n *Node) requestCertificate(ctx context.Context) (*joinResult, error) {
	if n.cfg.Token == "" {
		return nil, fmt.Errorf("joining %v needs the cluster's join token", n.cfg.Join)
	}
	tok, err := pki.ParseToken(n.cfg.Token)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.NewNodeKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(keyPEM, n.name)
	if err != nil {
		return nil, err
	}
	client := transport.NewJoinClient(tok.CAFingerprint)
	defer client.CloseIdleConnections()
	for {
		var errs []error
		rejected := 0
		for _, addr := range n.cfg.Join {
			resp, err := n.joinVia(ctx, client, addr, tok, csr)
			if err == nil {
				return n.saveJoinedIdentity(resp, keyPEM, tok)
			}
			switch {
			case errors.Is(err, ErrNotAllowed), errors.Is(err, ErrExists), errors.Is(err, ErrInvalid):
				return nil, fmt.Errorf("join refused by %s: %w", addr, err)
			case errors.Is(err, pki.ErrPeerRejected):
				rejected++
			}
			n.log.Warn("join attempt failed", "member", addr, "error", err)
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		}
		if rejected == len(n.cfg.Join) {
			return nil, fmt.Errorf("no listed member presents the cluster CA pinned by the join token (wrong token or wrong addresses): %w", errors.Join(errs...))
		}
		if !sleepCtx(ctx, n.cfg.Tuning.RetryInterval) {
			return nil, fmt.Errorf("join: no member admitted this node before the deadline: %w", errors.Join(errs...))
		}
	}
}

func (n *Node) joinVia(ctx context.Context, client *http.Client, addr string, tok pki.Token, csr []byte) (*joinResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	do := func(method, path string, in, out any) error {
		var body []byte
		if in != nil {
			var err error
			if body, err = json.Marshal(in); err != nil {
				return err
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, peerURL(addr, path), bytesReader(body))
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return decodeResponse(resp, path, out)
	}
	// A nonce the member no longer accepts (it restarted, or the join was
	// slow) is refused with ErrConflict: start over with a new one.
	var err error
	for range joinNonceAttempts {
		var nr nonceResponse
		if err = do(http.MethodGet, pathJoinNonce, nil, &nr); err != nil {
			return nil, err
		}
		req := joinRequest{
			Name:     n.name,
			CSR:      csr,
			Nonce:    nr.Nonce,
			Proof:    tok.Proof(proofMessage(nr.Nonce, n.name, csr)),
			NonVoter: n.cfg.NonVoter,
		}
		var jr joinResponse
		if err = do(http.MethodPost, pathJoin, req, &jr); err == nil {
			return &jr, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
		n.log.Debug("join nonce refused; asking for a new one", "member", addr, "error", err)
	}
	return nil, err
}

// joinNonceAttempts bounds how many nonces one join attempt goes through.
const joinNonceAttempts = 3

func (n *Node) saveJoinedIdentity(resp *joinResponse, keyPEM []byte, tok pki.Token) (*joinResult, error) {
	id, err := pki.NewIdentity(resp.Cert, keyPEM, resp.CA)
	if err != nil {
		return nil, fmt.Errorf("certificate from the cluster: %w", err)
	}
	if id.CAFingerprint() != tok.CAFingerprint || id.Name() != n.name {
		return nil, fmt.Errorf("the cluster returned a certificate for %q from another CA", id.Name())
	}
	if err := id.Save(pki.Dir(n.cfg.DataDir)); err != nil {
		return nil, err
	}
	return &joinResult{identity: id, addresses: resp.Members}, nil
}

// membershipWarnEvery spaces out the warnings of a node whose membership
// cannot be confirmed: one per attempt would flood the log.
const membershipWarnEvery = 10 * time.Second

// ensureMembership makes sure the raft configuration lists this node at its
// advertise address, asking the leader (through any reachable member) to
// add it or update its address. The local configuration is not trusted: a
// node removed while it was down still lists itself. It returns once the
// leader accepted, or with an error the node cannot get past by waiting:
// ErrNotAllowed if the cluster removed this node, ErrConflict if another
// member is listed at this node's address. Failed rounds are logged (at
// most every membershipWarnEvery) so that a node stuck here says why.
func (n *Node) ensureMembership(ctx context.Context, hints []string) error {
	warn := rateLimit{every: membershipWarnEvery}
	for attempt := 1; ; attempt++ {
		targets := n.membershipTargets(hints)
		if n.raft.State() == raft.Leader || (len(targets) == 0 && n.listedAtOwnAddress()) {
			return nil // the leader fixes its own address (fixOwnAddress)
		}
		var errs []error
		foreign := 0
		for _, addr := range targets {
			err := n.call(ctx, http.MethodPost, addr, pathMemberAdd, memberAddRequest{Name: n.name, Address: n.advertise}, nil)
			if err == nil {
				n.log.Info("membership confirmed by the leader", "via", addr, "address", n.advertise)
				return nil
			}
			if errors.Is(err, ErrNotAllowed) {
				return fmt.Errorf("the cluster refuses this node (%w): if it was removed, wipe %s and join again", err, n.cfg.DataDir)
			}
			if errors.Is(err, ErrConflict) {
				return fmt.Errorf("this node's address %s is that of another member (%w): give this node another address, or remove that member first if it is gone for good", n.advertise, err)
			}
			if errors.Is(err, pki.ErrPeerRejected) {
				foreign++
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		}
		// Every member answered with a certificate of another CA: this data
		// dir belongs to another cluster. Waiting would never help.
		if len(targets) > 0 && foreign == len(targets) {
			return fmt.Errorf("no listed member belongs to this node's cluster (they present another cluster's CA): is %s the data dir of another cluster? %w", n.cfg.DataDir, errors.Join(errs...))
		}
		if len(targets) == 0 {
			errs = append(errs, errors.New("no member to ask: no leader known and no other member listed or given to join"))
		}
		if warn.allow(time.Now()) {
			n.log.Warn("could not confirm this node's raft membership yet; retrying", "address", n.advertise, "attempt", attempt, "error", errors.Join(errs...))
		}
		if !sleepCtx(ctx, n.cfg.Tuning.RetryInterval) {
			return fmt.Errorf("could not reach the leader to add this node: %w", errors.Join(errs...))
		}
	}
}

// rateLimit lets one event through per interval.
type rateLimit struct {
	every time.Duration
	last  time.Time
}

// allow reports whether an event at now may go through, and if so counts it.
func (r *rateLimit) allow(now time.Time) bool {
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		return false
	}
	r.last = now
	return true
}

func (n *Node) listedAtOwnAddress() bool {
	servers, err := n.raftServers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if string(s.ID) == n.name {
			return string(s.Address) == n.advertise
		}
	}
	return false
}

// membershipTargets lists members to ask: the known leader first, then the
// raft configuration, then the hints; never this node.
func (n *Node) membershipTargets(hints []string) []string {
	seen := map[string]bool{n.advertise: true}
	var out []string
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	if addr, id := n.raft.LeaderWithID(); string(id) != n.name {
		add(string(addr))
	}
	if servers, err := n.raftServers(); err == nil {
		for _, s := range servers {
			if string(s.ID) != n.name {
				add(string(s.Address))
			}
		}
	}
	for _, h := range hints {
		add(h)
	}
	return out
}

// addMember adds (or updates the address of) a member, through the leader.
func (n *Node) addMember(ctx context.Context, name, addr string) error {
	return n.onLeader(ctx, "add member", true,
		func(ctx context.Context) error { return n.addMemberAsLeader(name, addr) },
		func(ctx context.Context, leader string) error {
			return n.call(ctx, http.MethodPost, leader, pathMemberAdd, memberAddRequest{Name: name, Address: addr}, nil)
		})
}

func (n *Node) addMemberAsLeader(name, addr string) error {
	if n.raft.State() != raft.Leader {
		return errNotLeader
	}
	if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" || port == "0" {
		return fmt.Errorf("%w: member address %q is not host:port", ErrInvalid, addr)
	}
	servers, err := n.raftServers()
	if err != nil {
		return err
	}
	var self *raft.Server
	for i, s := range servers {
		switch {
		case string(s.ID) == name:
			self = &servers[i]
		case string(s.Address) == addr:
			return fmt.Errorf("%w: address %s is used by member %q", ErrConflict, addr, s.ID)
		}
	}
	id, a := raft.ServerID(name), raft.ServerAddress(addr)
	var f raft.IndexFuture
	switch {
	case self != nil && self.Address == a:
		return nil
	case self != nil && self.Suffrage == raft.Voter:
		n.log.Info("updating a member's address", "member", name, "from", string(self.Address), "to", addr)
		f = n.raft.AddVoter(id, a, 0, 10*time.Second)
	case self != nil:
		n.log.Info("updating a member's address", "member", name, "from", string(self.Address), "to", addr)
		f = n.raft.AddNonvoter(id, a, 0, 10*time.Second)
	default:
		if _, ok := n.fsm.Get(memberKey(name)); !ok {
			return fmt.Errorf("%w: node %q was never admitted or has been removed", ErrNotAllowed, name)
		}
		n.log.Info("adding a member as non-voter", "member", name, "address", addr)
		f = n.raft.AddNonvoter(id, a, 0, 10*time.Second)
	}
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("%w: %v", errNotLeader, err)
		}
		return fmt.Errorf("raft membership change: %w", err)
	}
	return nil
}

// createSecrets makes the new cluster's CA and token and keeps them in the
// bootstrap seed until they are replicated.
func (n *Node) createSecrets() (clusterSecrets, error) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		return clusterSecrets{}, err
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		return clusterSecrets{}, err
	}
	s := newClusterSecrets(ca, tok)
	if err := writeSeed(n.cfg.DataDir, s); err != nil {
		return clusterSecrets{}, err
	}
	return s, nil
}

// issueOwnIdentity gives the bootstrapping node its certificate and writes
// the token file.
func (n *Node) issueOwnIdentity(s clusterSecrets) (*pki.Identity, error) {
	tok, ca, err := s.token()
	if err != nil {
		return nil, err
	}
	id, err := issueIdentity(ca, n.name)
	if err != nil {
		return nil, err
	}
	if err := id.Save(pki.Dir(n.cfg.DataDir)); err != nil {
		return nil, err
	}
	if err := pki.SaveToken(tokenPath(n.cfg.DataDir), tok); err != nil {
		return nil, err
	}
	return id, nil
}

func issueIdentity(ca *pki.CA, name string) (*pki.Identity, error) {
	keyPEM, err := pki.NewNodeKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(keyPEM, name)
	if err != nil {
		return nil, err
	}
	cert, err := ca.SignNode(csr, name, time.Now())
	if err != nil {
		return nil, err
	}
	return pki.NewIdentity(cert, keyPEM, ca.CertPEM())
}

// finishBootstrap (on the leader) commits the seed's secrets to the
// replicated state and then deletes the seed.
func (n *Node) finishBootstrap(ctx context.Context) error {
	seed, ok, err := readSeed(n.cfg.DataDir)
	if err != nil || !ok {
		return err
	}
	if _, have, _ := n.clusterSecrets(); !have {
		b, err := json.Marshal(seed)
		if err != nil {
			return err
		}
		rec, _ := json.Marshal(memberRecord{Admitted: time.Now().UTC()})
		ops := []Op{
			{Type: OpCreate, Key: clusterSecretsKey(), Value: b},
			{Type: OpPut, Key: memberKey(n.name), Value: rec},
		}
		if _, err := n.txn(ctx, ops); err != nil && !errors.Is(err, ErrExists) {
			return err
		}
	}
	if err := os.Remove(seedPath(n.cfg.DataDir)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove bootstrap seed: %w", err)
	}
	n.log.Info("cluster secrets committed to the replicated state")
	return nil
}

// waitBootstrapped waits until the new cluster's secrets are committed.
func (n *Node) waitBootstrapped(ctx context.Context) error {
	for {
		// The revision is read before the state is looked at: read after,
		// it could already include the secrets and the wait would be for
		// an entry that may never come.
		rev := n.fsm.Revision()
		if _, ok, err := n.clusterSecrets(); err != nil || ok {
			return err
		}
		if err := n.fsm.WaitRevision(ctx, rev+1); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
}
