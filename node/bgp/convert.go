package bgp

import (
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftnet/weft/node/calc"
)

// Session timers gobgp applies before and between sessions: a peer that
// is back is reconnected within about 2 s (gobgp's defaults are 30 s idle
// hold and 120 s between attempts).
const (
	connectRetry = 1 // seconds, gobgp's minimum
	idleHold     = 1
)

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

func familyOf(a netip.Addr) *api.Family {
	if a.Is4() {
		return familyV4
	}
	return familyV6
}

func seconds(d time.Duration) uint64 { return uint64(d / time.Second) }

// toAPIPeer is the gobgp form of a session. restarting sets the
// graceful-restart capability's Restart State and Forwarding bits (this
// agent restarted, its kernel kept forwarding); deferral bounds how long
// gobgp holds its own updates back meanwhile.
func toAPIPeer(p calc.BGPPeerConfig, rrCluster netip.Addr, password string, restarting bool, deferral time.Duration) *api.Peer {
	fam := familyOf(p.Address)
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.AS,
			LocalAsn:        p.LocalAS,
			AuthPassword:    password,
			AllowOwnAsn:     uint32(p.AllowOwnAS),
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: connectRetry, IdleHoldTimeAfterReset: idleHold,
			HoldTime: seconds(p.HoldTime), KeepaliveInterval: seconds(p.Keepalive),
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port), PassiveMode: p.Passive},
		GracefulRestart: &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(p.RestartTime / time.Second),
			DeferralTime:    uint32(deferral / time.Second),
			LocalRestarting: restarting,
		},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: fam, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
			PrefixLimits:      &api.PrefixLimit{Family: fam, MaxPrefixes: p.MaxPrefixes, ShutdownThresholdPct: 80},
		}},
	}
	if p.SourceAddr.IsValid() {
		ap.Transport.LocalAddress = p.SourceAddr.String()
	}
	if p.RRClient {
		ap.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: rrCluster.String()}
	}
	if p.TTLSecurity > 0 {
		ap.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: uint32(256 - int(p.TTLSecurity))}
	} else if p.Multihop {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	return ap
}

// toAPIPath is the gobgp form of an originated path (withdraw: a
// withdrawal of it).
func toAPIPath(p calc.BGPPath) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Prefix.Addr().String(), PrefixLen: uint32(p.Prefix.Bits())})
	if err != nil {
		return nil, err
	}
	attrs := []proto.Message{&api.OriginAttribute{Origin: 0}} // IGP
	fam := familyOf(p.Prefix.Addr())
	if p.Prefix.Addr().Is4() {
		attrs = append(attrs, &api.NextHopAttribute{NextHop: p.NextHop.String()})
	} else {
		attrs = append(attrs, &api.MpReachNLRIAttribute{Family: fam, NextHops: []string{p.NextHop.String()}, Nlris: []*anypb.Any{nlri}})
	}
	if len(p.Communities) > 0 {
		attrs = append(attrs, &api.CommunitiesAttribute{Communities: p.Communities})
	}
	if len(p.LargeCommunities) > 0 {
		lc := &api.LargeCommunitiesAttribute{}
		for _, c := range p.LargeCommunities {
			lc.Communities = append(lc.Communities, &api.LargeCommunity{GlobalAdmin: c[0], LocalData1: c[1], LocalData2: c[2]})
		}
		attrs = append(attrs, lc)
	}
	pattrs := make([]*anypb.Any, 0, len(attrs))
	for _, a := range attrs {
		x, err := anypb.New(a)
		if err != nil {
			return nil, err
		}
		pattrs = append(pattrs, x)
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: pattrs}, nil
}

// learnedFrom reads a best path gobgp reports: its prefix, next hop and
// the neighbour it came from. ok is false for paths this node originates
// and for paths it cannot read.
func learnedFrom(p *api.Path) (calc.LearnedRoute, bool) {
	prefix, ok := pathPrefix(p)
	if !ok {
		return calc.LearnedRoute{}, false
	}
	peer, err := netip.ParseAddr(p.NeighborIp)
	if err != nil || !peer.IsValid() || peer.IsUnspecified() {
		return calc.LearnedRoute{Prefix: prefix}, false // our own
	}
	lr := calc.LearnedRoute{Prefix: prefix, Peer: peer.Unmap()}
	for _, a := range p.Pattrs {
		switch {
		case a.MessageIs(&api.NextHopAttribute{}):
			var nh api.NextHopAttribute
			if a.UnmarshalTo(&nh) == nil {
				lr.NextHop, _ = netip.ParseAddr(nh.NextHop)
			}
		case a.MessageIs(&api.MpReachNLRIAttribute{}):
			var mp api.MpReachNLRIAttribute
			if a.UnmarshalTo(&mp) == nil && len(mp.NextHops) > 0 {
				// The first next hop is the global address (a second one
				// is link-local).
				lr.NextHop, _ = netip.ParseAddr(mp.NextHops[0])
			}
		}
	}
	lr.NextHop = lr.NextHop.Unmap()
	return lr, true
}

// pathPrefix is the unicast prefix of a path.
func pathPrefix(p *api.Path) (netip.Prefix, bool) {
	if p.Nlri == nil {
		return netip.Prefix{}, false
	}
	var n api.IPAddressPrefix
	if err := p.Nlri.UnmarshalTo(&n); err != nil {
		return netip.Prefix{}, false
	}
	a, err := netip.ParseAddr(n.Prefix)
	if err != nil {
		return netip.Prefix{}, false
	}
	pfx, err := a.Unmap().Prefix(int(n.PrefixLen))
	if err != nil {
		return netip.Prefix{}, false
	}
	return pfx, true
}

// sessionState names a gobgp session state as BIRD and calicoctl do.
func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "Idle"
	case api.PeerState_CONNECT:
		return "Connect"
	case api.PeerState_ACTIVE:
		return "Active"
	case api.PeerState_OPENSENT:
		return "OpenSent"
	case api.PeerState_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_ESTABLISHED:
		return "Established"
	}
	return fmt.Sprintf("Unknown(%d)", s)
}
