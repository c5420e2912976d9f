package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/node/localapi"
)

// Status is the speaker's state for `weft node status`.
func (s *Speaker) Status(ctx context.Context) localapi.BGPStatus {
	counts := s.prefixCounts(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := localapi.BGPStatus{State: "starting", Syncing: s.syncing, Peers: []localapi.BGPPeerStatus{}}
	if s.desired == nil {
		return st
	}
	st.ASNumber, st.RouterID = s.desired.AS, s.desired.RouterID.String()
	if s.running {
		st.State = "running"
	}
	for a, p := range s.peers {
		ps := localapi.BGPPeerStatus{
			PeerAddress: a.String(), Port: int(p.cfg.Port), Family: "IPv4", PeerType: string(p.cfg.Type),
			Since: p.since, ASNumber: p.cfg.AS, Node: p.cfg.Node,
		}
		if !a.Is4() {
			ps.Family = "IPv6"
		}
		c := counts[a]
		ps.PrefixesReceived, ps.PrefixesAdvertised = c.received, c.advertised
		ps.State, ps.Info = p.stateInfo()
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(x, y localapi.BGPPeerStatus) int {
		return netip.MustParseAddr(x.PeerAddress).Compare(netip.MustParseAddr(y.PeerAddress))
	})
	return st
}

// stateInfo is the STATE and INFO columns.
func (p *peerRuntime) stateInfo() (string, string) {
	switch {
	case p.configErr != "":
		return "down", "Idle " + p.configErr
	case !p.pausedUntil.IsZero():
		return "down", "Idle " + p.lastErr
	case p.state == api.PeerState_ESTABLISHED:
		return "up", "Established"
	}
	info := sessionState(p.state)
	if p.state == api.PeerState_UNKNOWN {
		info = "Idle"
	}
	if p.dead {
		info += " (peer dead)"
	}
	if p.lastErr != "" {
		info += " " + p.lastErr
	}
	return "start", info
}

type prefixCount struct{ received, advertised uint64 }

// prefixCounts asks gobgp how many prefixes each session received and
// was sent.
func (s *Speaker) prefixCounts(ctx context.Context) map[netip.Addr]prefixCount {
	out := map[netip.Addr]prefixCount{}
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if !running {
		return out
	}
	_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.State == nil {
			return
		}
		a, err := netip.ParseAddr(p.State.NeighborAddress)
		if err != nil {
			return
		}
		var c prefixCount
		for _, af := range p.AfiSafis {
			if af.State == nil {
				continue
			}
			c.received += af.State.Received
			adv := af.State.Advertised
			// gobgp counts the End-of-RIB marker it sends a graceful-
			// restart peer as a path.
			if gr := af.MpGracefulRestart; adv > 0 && gr != nil && gr.State != nil && gr.State.Received {
				adv--
			}
			c.advertised += adv
		}
		out[a.Unmap()] = c
	})
	return out
}

// Routes lists the BGP table: every path of every prefix, best first.
func (s *Speaker) Routes(ctx context.Context) ([]localapi.BGPRoute, error) {
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	out := []localapi.BGPRoute{}
	if !running {
		return out, nil
	}
	now := s.cfg.Now()
	for _, fam := range []*api.Family{familyV4, familyV6} {
		err := s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam, SortType: api.ListPathRequest_PREFIX}, func(d *api.Destination) {
			for _, p := range d.Paths {
				r := localapi.BGPRoute{Prefix: d.Prefix, Best: p.Best, Stale: p.Stale}
				if a, err := netip.ParseAddr(p.NeighborIp); err == nil && a.IsValid() && !a.IsUnspecified() {
					r.FromPeer = a.Unmap().String()
				}
				if lr, ok := learnedFrom(p); ok || lr.Prefix.IsValid() {
					r.NextHop = nextHopOf(p)
				}
				r.ASPath = asPathOf(p)
				if p.Age != nil {
					r.AgeSeconds = now.Sub(p.Age.AsTime()).Seconds()
				}
				out = append(out, r)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("list the BGP table: %w", err)
		}
	}
	return out, nil
}

func nextHopOf(p *api.Path) string {
	for _, a := range p.Pattrs {
		switch {
		case a.MessageIs(&api.NextHopAttribute{}):
			var nh api.NextHopAttribute
			if a.UnmarshalTo(&nh) == nil {
				return nh.NextHop
			}
		case a.MessageIs(&api.MpReachNLRIAttribute{}):
			var mp api.MpReachNLRIAttribute
			if a.UnmarshalTo(&mp) == nil && len(mp.NextHops) > 0 {
				return mp.NextHops[0]
			}
		}
	}
	return ""
}

func asPathOf(p *api.Path) string {
	for _, a := range p.Pattrs {
		if !a.MessageIs(&api.AsPathAttribute{}) {
			continue
		}
		var ap api.AsPathAttribute
		if a.UnmarshalTo(&ap) != nil {
			return ""
		}
		var parts []string
		for _, seg := range ap.Segments {
			for _, n := range seg.Numbers {
				parts = append(parts, strconv.FormatUint(uint64(n), 10))
			}
		}
		return strings.Join(parts, " ")
	}
	return ""
}

// metrics is the speaker's Prometheus collector: it reads the state when
// scraped (SPEC §7: bgp_peer_up{peer=...}).
type metrics struct {
	s                             *Speaker
	up, received, advertised      *prometheus.Desc
	flaps, learned, syncing, dead *prometheus.Desc
}

func (s *Speaker) register() error {
	if s.cfg.Registerer == nil {
		return nil
	}
	m := &metrics{
		s:          s,
		up:         prometheus.NewDesc("bgp_peer_up", "1 while the BGP session to the peer is established, 0 otherwise; one series per session (mesh peers included).", []string{"peer", "type"}, nil),
		received:   prometheus.NewDesc("weft_bgp_prefixes_received", "Prefixes the peer sent and this node holds.", []string{"peer"}, nil),
		advertised: prometheus.NewDesc("weft_bgp_prefixes_advertised", "Prefixes this node sent the peer.", []string{"peer"}, nil),
		flaps:      prometheus.NewDesc("weft_bgp_session_flaps_total", "Times the established session to the peer went down.", []string{"peer"}, nil),
		learned:    prometheus.NewDesc("weft_bgp_learned_routes", "Best paths learned from peers.", nil, nil),
		syncing:    prometheus.NewDesc("weft_bgp_graceful_restart_syncing", "1 while this restarted agent waits for its peers' routes (the kernel keeps its learned routes).", nil, nil),
		dead:       prometheus.NewDesc("weft_bgp_dead_peers", "Peers that went silent (hold timer expired) and have not come back.", nil, nil),
	}
	if err := s.cfg.Registerer.Register(m); err != nil {
		return fmt.Errorf("register BGP metrics: %w", err)
	}
	return nil
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.up, m.received, m.advertised, m.flaps, m.learned, m.syncing, m.dead} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.s
	counts := s.prefixCounts(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	dead := 0
	for a, p := range s.peers {
		peer := a.String()
		up := 0.0
		if p.state == api.PeerState_ESTABLISHED && p.configErr == "" {
			up = 1
		}
		if p.dead {
			dead++
		}
		ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, up, peer, string(p.cfg.Type))
		ch <- prometheus.MustNewConstMetric(m.received, prometheus.GaugeValue, float64(counts[a].received), peer)
		ch <- prometheus.MustNewConstMetric(m.advertised, prometheus.GaugeValue, float64(counts[a].advertised), peer)
		ch <- prometheus.MustNewConstMetric(m.flaps, prometheus.CounterValue, float64(p.flaps), peer)
	}
	ch <- prometheus.MustNewConstMetric(m.learned, prometheus.GaugeValue, float64(len(s.learned)))
	sync := 0.0
	if s.syncing {
		sync = 1
	}
	ch <- prometheus.MustNewConstMetric(m.syncing, prometheus.GaugeValue, sync)
	ch <- prometheus.MustNewConstMetric(m.dead, prometheus.GaugeValue, float64(dead))
}
