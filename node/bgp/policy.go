package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/weftnet/weft/node/calc"
)

// exportPolicy is what this node passes on to which peer (calico.md §6.3,
// and the rule that no other node's blocks go to an eBGP peer, or
// a router would keep a dead node's block through the survivors):
//
//  1. next-hop self / unchanged for the sessions whose BGPPeer asks;
//  2. paths this node originates go to every peer;
//  3. nothing else goes to an eBGP peer;
//  4. routes inside the pools go on (a route reflector reflecting its
//     clients' blocks and borrowed addresses);
//  5. everything else stays here (a router's routes are not passed on).
//
// gobgp applies one global export policy to every peer; its neighbour
// conditions match the peer a path is sent to.
type exportPolicy struct {
	ebgp, nhSelf, nhKeep []string // neighbour prefixes (address/32, /128)
	pools4, pools6       []string // pool CIDRs
}

func newExportPolicy(c *calc.BGPConfig) exportPolicy {
	var p exportPolicy
	for _, peer := range c.Peers {
		n := netip.PrefixFrom(peer.Address, peer.Address.BitLen()).String()
		if peer.EBGP(c.AS) {
			p.ebgp = append(p.ebgp, n)
		}
		switch peer.NextHop {
		case calc.NextHopSelf:
			p.nhSelf = append(p.nhSelf, n)
		case calc.NextHopKeep:
			p.nhKeep = append(p.nhKeep, n)
		}
	}
	for _, pool := range c.ExportPrefixes {
		if pool.Addr().Is4() {
			p.pools4 = append(p.pools4, pool.String())
		} else {
			p.pools6 = append(p.pools6, pool.String())
		}
	}
	return p
}

func (p exportPolicy) equal(o exportPolicy) bool {
	return slices.Equal(p.ebgp, o.ebgp) && slices.Equal(p.nhSelf, o.nhSelf) && slices.Equal(p.nhKeep, o.nhKeep) &&
		slices.Equal(p.pools4, o.pools4) && slices.Equal(p.pools6, o.pools6)
}

const exportPolicyName = "weft-export"

// apply installs the policy and assigns it to the global RIB's export.
// Empty sets get a placeholder that matches nothing, so the policy's
// shape never changes.
func (p exportPolicy) apply(ctx context.Context, s interface {
	SetPolicies(context.Context, *api.SetPoliciesRequest) error
	SetPolicyAssignment(context.Context, *api.SetPolicyAssignmentRequest) error
}) error {
	orNone := func(l []string, none string) []string {
		if len(l) == 0 {
			return []string{none}
		}
		return l
	}
	neighbors := func(name string, l []string) *api.DefinedSet {
		return &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: name, List: orNone(l, "0.0.0.0/32")}
	}
	prefixes := func(name string, l []string, bits uint32, none string) *api.DefinedSet {
		ds := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: name}
		for _, c := range orNone(l, none) {
			pfx := netip.MustParsePrefix(c)
			ds.Prefixes = append(ds.Prefixes, &api.Prefix{IpPrefix: c, MaskLengthMin: uint32(pfx.Bits()), MaskLengthMax: bits})
		}
		return ds
	}
	sets := []*api.DefinedSet{
		neighbors("weft-ebgp", p.ebgp), neighbors("weft-nh-self", p.nhSelf), neighbors("weft-nh-keep", p.nhKeep),
		prefixes("weft-pools4", p.pools4, 32, "0.0.0.0/32"), prefixes("weft-pools6", p.pools6, 128, "::/128"),
	}
	match := func(name string) *api.MatchSet { return &api.MatchSet{Type: api.MatchSet_ANY, Name: name} }
	statements := []*api.Statement{
		{Name: "nh-self", Conditions: &api.Conditions{NeighborSet: match("weft-nh-self")},
			Actions: &api.Actions{RouteAction: api.RouteAction_NONE, Nexthop: &api.NexthopAction{Self: true}}},
		{Name: "nh-keep", Conditions: &api.Conditions{NeighborSet: match("weft-nh-keep")},
			Actions: &api.Actions{RouteAction: api.RouteAction_NONE, Nexthop: &api.NexthopAction{Unchanged: true}}},
		{Name: "local", Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT}},
		{Name: "not-to-ebgp", Conditions: &api.Conditions{NeighborSet: match("weft-ebgp")},
			Actions: &api.Actions{RouteAction: api.RouteAction_REJECT}},
		{Name: "pools4", Conditions: &api.Conditions{PrefixSet: match("weft-pools4")},
			Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT}},
		{Name: "pools6", Conditions: &api.Conditions{PrefixSet: match("weft-pools6")},
			Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT}},
	}
	for _, st := range statements {
		st.Name = exportPolicyName + "-" + st.Name
	}
	pol := &api.Policy{Name: exportPolicyName, Statements: statements}
	if err := s.SetPolicies(ctx, &api.SetPoliciesRequest{DefinedSets: sets, Policies: []*api.Policy{pol}}); err != nil {
		return fmt.Errorf("set the export policy: %w", err)
	}
	err := s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_EXPORT, Policies: []*api.Policy{{Name: exportPolicyName}},
		DefaultAction: api.RouteAction_REJECT,
	}})
	if err != nil {
		return fmt.Errorf("assign the export policy: %w", err)
	}
	return nil
}

func (p exportPolicy) String() string {
	return fmt.Sprintf("ebgp=%s nh-self=%s nh-keep=%s pools=%s", strings.Join(p.ebgp, ","), strings.Join(p.nhSelf, ","),
		strings.Join(p.nhKeep, ","), strings.Join(append(slices.Clone(p.pools4), p.pools6...), ","))
}
