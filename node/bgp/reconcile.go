package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/node/calc"
)

// startBGP starts gobgp's BGP instance with c's global settings.
func (s *Speaker) startBGP(ctx context.Context, c *calc.BGPConfig) error {
	g := &api.Global{Asn: c.AS, RouterId: c.RouterID.String(), ListenPort: int32(c.ListenPort)}
	for _, a := range c.ListenAddrs {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		return fmt.Errorf("AS %d, router ID %s, port %d: %w", c.AS, c.RouterID, c.ListenPort, err)
	}
	s.global = &calc.BGPConfig{AS: c.AS, RouterID: c.RouterID, ListenPort: c.ListenPort, ListenAddrs: slices.Clone(c.ListenAddrs)}
	s.policy = nil
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	s.log.Info("BGP speaker started", "as", c.AS, "router_id", c.RouterID, "port", c.ListenPort)
	return nil
}

// stopBGP stops gobgp's BGP instance (BGP turned off, or its global
// settings changed): every session ends with a Cease and its routes go.
func (s *Speaker) stopBGP(ctx context.Context) {
	if s.global == nil {
		return
	}
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
		s.log.Warn("stopping the BGP speaker", "err", err)
	}
	s.log.Info("BGP speaker stopped", "as", s.global.AS)
	s.global, s.policy = nil, nil
	clear(s.applied)
	clear(s.paths)
	s.mu.Lock()
	s.running = false
	s.advertised = nil
	clear(s.learned)
	s.stateChanged()
	s.mu.Unlock()
}

func (s *Speaker) reconcilePolicy(ctx context.Context, c *calc.BGPConfig) {
	p := newExportPolicy(c)
	if s.policy != nil && s.policy.equal(p) {
		return
	}
	if err := p.apply(ctx, s.srv); err != nil {
		s.log.Error("BGP export policy", "err", err)
		return
	}
	s.log.Debug("BGP export policy set", "policy", p.String())
	first := s.policy == nil
	s.policy = &p
	if first {
		return
	}
	// Re-evaluate what every session was sent.
	for a := range s.applied {
		err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: a.String(), Soft: true, Direction: api.ResetPeerRequest_OUT})
		if err != nil {
			s.log.Debug("soft reset after an export policy change", "peer", a, "err", err)
		}
	}
}

// reconcilePeers adds, changes and removes sessions.
func (s *Speaker) reconcilePeers(ctx context.Context, c *calc.BGPConfig) {
	want := make(map[netip.Addr]calc.BGPPeerConfig, len(c.Peers))
	for _, p := range c.Peers {
		if _, dup := want[p.Address]; !dup {
			want[p.Address] = p
		}
	}
	now := s.cfg.Now()
	s.mu.Lock()
	changed := false
	for a, p := range s.peers {
		if _, ok := want[a]; !ok {
			changed = changed || p.dead
			delete(s.peers, a)
		}
	}
	for a, pc := range want {
		if p, ok := s.peers[a]; ok {
			p.cfg = pc
		} else {
			s.peers[a] = &peerRuntime{cfg: pc, added: now, since: now, state: api.PeerState_UNKNOWN}
		}
	}
	if changed {
		s.stateChanged()
	}
	restarting := s.cfg.Restarting && s.syncing
	s.mu.Unlock()

	for a := range s.applied {
		if _, ok := want[a]; !ok {
			s.deletePeer(ctx, a)
			s.log.Info("BGP session removed", "peer", a)
		}
	}
	for a, pc := range want {
		pw, err := s.password(pc.Password)
		s.mu.Lock()
		rt := s.peers[a]
		if err != nil {
			rt.configErr = err.Error()
		} else {
			rt.configErr = ""
		}
		paused := !rt.pausedUntil.IsZero()
		s.mu.Unlock()
		cur, ok := s.applied[a]
		if err != nil {
			if ok {
				s.deletePeer(ctx, a)
			}
			continue
		}
		if ok && sameSession(cur.cfg, pc) && cur.password == pw && cur.rrCluster == c.RRClusterID {
			cur.cfg = pc // what only the status shows (type, sources) changes in place
			s.applied[a] = cur
			continue
		}
		if ok {
			s.deletePeer(ctx, a)
		}
		ap := toAPIPeer(pc, c.RRClusterID, pw, restarting, s.cfg.SyncTimeout)
		ap.Conf.AdminDown = paused
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: ap}); err != nil {
			s.setLastErr(a, "configuring the session: "+err.Error())
			s.log.Warn("BGP session could not be configured", "peer", a, "err", err)
			continue
		}
		s.applied[a] = appliedPeer{cfg: pc, password: pw, rrCluster: c.RRClusterID}
		verb := "added"
		if ok {
			verb = "changed"
		}
		s.log.Info("BGP session "+verb, "peer", netip.AddrPortFrom(a, pc.Port), "as", pc.AS, "type", string(pc.Type),
			"passive", pc.Passive, "graceful_restart_restarting", restarting)
	}
}

// sameSession reports whether two session configurations make the same
// gobgp peer: a change of what only the status shows (the peer type, the
// BGPPeers asking for it, the node it is) must not reset the session.
func sameSession(a, b calc.BGPPeerConfig) bool {
	a.Type, a.Sources, a.Node = b.Type, b.Sources, b.Node
	return a.Equal(b)
}

func (s *Speaker) deletePeer(ctx context.Context, a netip.Addr) {
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
		s.log.Debug("deleting a BGP session", "peer", a, "err", err)
	}
	delete(s.applied, a)
}

// password reads a session's password (none: "").
func (s *Speaker) password(ref calc.SecretRef) (string, error) {
	if ref.IsZero() {
		return "", nil
	}
	pw, err := s.cfg.Secret(ref)
	if err != nil {
		return "", fmt.Errorf("password %s/%s: %w", ref.Name, ref.Key, err)
	}
	return pw, nil
}

func (s *Speaker) setLastErr(a netip.Addr, msg string) {
	s.mu.Lock()
	if p := s.peers[a]; p != nil {
		p.lastErr = msg
	}
	s.mu.Unlock()
}

// handle acts on what gobgp's log said about a peer.
func (s *Speaker) handle(ctx context.Context, ev peerEvent) {
	s.mu.Lock()
	p := s.peers[ev.peer]
	if p == nil {
		s.mu.Unlock()
		return
	}
	now := s.cfg.Now()
	var readd, pause bool
	switch ev.kind {
	case evHoldTimerExpired, evRestartTimerExpired:
		p.lastErr = ev.text
		if !p.dead {
			p.dead = true
			s.stateChanged()
		}
		readd = ev.kind == evHoldTimerExpired
	case evPrefixLimit:
		p.lastErr = fmt.Sprintf("sent more than its limit of %d prefixes: shut down until %s", p.cfg.MaxPrefixes, now.Add(s.cfg.PrefixLimitPause).Format(time.TimeOnly))
		pause = p.pausedUntil.IsZero()
		p.pausedUntil = now.Add(s.cfg.PrefixLimitPause)
	default:
		if p.state != api.PeerState_ESTABLISHED {
			p.lastErr = ev.text
		}
	}
	limit := p.cfg.MaxPrefixes
	s.mu.Unlock()

	switch {
	case readd:
		s.log.Warn("BGP peer went silent (hold timer expired): its routes are dropped now, not kept for a graceful restart",
			"peer", ev.peer)
		if _, ok := s.applied[ev.peer]; ok {
			s.deletePeer(ctx, ev.peer) // re-added by reconcilePeers on the next step
		}
	case ev.kind == evRestartTimerExpired:
		s.log.Warn("BGP peer did not come back within its graceful-restart time: its routes are dropped", "peer", ev.peer)
	case pause:
		s.log.Warn("BGP peer sent more prefixes than its limit: session shut down, its routes dropped; the other sessions are not affected",
			"peer", ev.peer, "max_prefixes", limit, "retry_in", s.cfg.PrefixLimitPause)
		// Deleted (which drops its routes: the session may have ended as
		// a closed connection, which graceful restart would keep), then
		// re-added shut down by reconcilePeers until the pause ends.
		if _, ok := s.applied[ev.peer]; ok {
			s.deletePeer(ctx, ev.peer)
		}
	}
	if readd || pause {
		s.wake()
	}
}

// expire ends prefix-limit pauses and declares dead the peers that never
// came up within their restart time.
func (s *Speaker) expire(ctx context.Context) {
	now := s.cfg.Now()
	var enable []netip.Addr
	s.mu.Lock()
	for a, p := range s.peers {
		if !p.pausedUntil.IsZero() && !now.Before(p.pausedUntil) {
			p.pausedUntil = time.Time{}
			enable = append(enable, a)
		}
		if !p.everUp && !p.dead && p.configErr == "" && now.Sub(p.added) > p.cfg.RestartTime {
			p.dead = true
			s.stateChanged()
			s.log.Warn("BGP peer has not come up within its graceful-restart time: taken for dead", "peer", a)
		}
	}
	s.mu.Unlock()
	for _, a := range enable {
		if _, ok := s.applied[a]; !ok {
			continue
		}
		if err := s.srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: a.String()}); err != nil {
			s.log.Debug("re-enabling a BGP session", "peer", a, "err", err)
		}
		s.log.Info("BGP session re-enabled after its prefix-limit pause", "peer", a)
	}
}

// reconcilePaths announces the desired paths whose route is in the kernel
// and withdraws the others.
func (s *Speaker) reconcilePaths(ctx context.Context, c *calc.BGPConfig, report *dataplane.Report) {
	if report != s.indexed {
		s.indexed, s.inKernel = report, map[dataplane.RouteKey]bool{}
		if report != nil && report.Applied != nil {
			for _, r := range report.Applied.Routes {
				if _, failed := report.RouteProblems[r.Key()]; !failed {
					s.inKernel[r.Key()] = true
				}
			}
		}
	}
	want := make(map[netip.Prefix]calc.BGPPath, len(c.Paths))
	for _, p := range c.Paths {
		if s.inKernel[p.Needs] {
			want[p.Prefix] = p
		}
	}
	changed := false
	for pfx, cur := range s.paths {
		if _, ok := want[pfx]; ok {
			continue
		}
		ap, err := toAPIPath(cur)
		if err == nil {
			err = s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: ap.Family, Path: ap})
		}
		if err != nil {
			s.log.Warn("withdrawing a prefix; retrying", "prefix", pfx, "err", err)
			continue
		}
		delete(s.paths, pfx)
		changed = true
		s.log.Debug("prefix withdrawn", "prefix", pfx)
	}
	for pfx, p := range want {
		if cur, ok := s.paths[pfx]; ok && cur.Equal(p) {
			continue
		}
		ap, err := toAPIPath(p)
		if err == nil {
			_, err = s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: ap})
		}
		if err != nil {
			s.log.Warn("announcing a prefix; retrying", "prefix", pfx, "err", err)
			continue
		}
		s.paths[pfx] = p
		changed = true
		s.log.Debug("prefix announced", "prefix", pfx, "next_hop", p.NextHop)
	}
	if !changed {
		return
	}
	adv := make([]netip.Prefix, 0, len(s.paths))
	for pfx := range s.paths {
		adv = append(adv, pfx)
	}
	slices.SortFunc(adv, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	s.mu.Lock()
	s.advertised = adv
	s.stateChanged()
	s.mu.Unlock()
}

// checkSync ends the graceful-restart wait once every session is back and
// sent End-of-RIB (plus SyncGrace), or SyncTimeout ran out.
func (s *Speaker) checkSync(ctx context.Context) {
	s.mu.Lock()
	syncing := s.syncing
	s.mu.Unlock()
	if !syncing {
		return
	}
	now := s.cfg.Now()
	reason := ""
	switch {
	case now.Sub(s.start) >= s.cfg.SyncTimeout:
		reason = "the wait ran out"
	case s.allSynced(ctx):
		if s.synced.IsZero() {
			s.synced = now
		}
		if now.Sub(s.synced) >= s.cfg.SyncGrace {
			reason = "every peer is back and sent its routes"
		}
	default:
		s.synced = time.Time{}
	}
	if reason == "" {
		return
	}
	s.mu.Lock()
	s.syncing = false
	s.stateChanged()
	n := len(s.learned)
	s.mu.Unlock()
	s.log.Info("graceful restart done: learned routes not relearned are removed now", "why", reason,
		"learned", n, "took", now.Sub(s.start).Round(time.Millisecond))
}

// allSynced reports whether every configured session is established and
// has sent End-of-RIB for each family that does graceful restart.
func (s *Speaker) allSynced(ctx context.Context) bool {
	if len(s.applied) == 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.desired != nil && len(s.peers) == 0
	}
	up := map[string]bool{}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State == nil || p.State.SessionState != api.PeerState_ESTABLISHED {
			return
		}
		for _, af := range p.AfiSafis {
			if gr := af.MpGracefulRestart; gr != nil && gr.State != nil && gr.State.Received && !gr.State.EndOfRibReceived {
				return
			}
		}
		up[p.State.NeighborAddress] = true
	})
	if err != nil {
		return false
	}
	for a := range s.applied {
		if !up[a.String()] {
			return false
		}
	}
	return true
}
