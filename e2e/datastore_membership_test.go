package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/node/localapi"
)

// TestDatastoreNonVoterPromotion: with cluster.voters = 3 (the default),
// hosts 2 and 3 join as voters and hosts 4 and 5 as non-voters. A voter is
// stopped and `weft cluster remove` removes it: a healthy non-voter is
// promoted (with production autopilot timing) so the cluster has three
// voters again, the removed node's Node resource is gone, and writes work
// from every remaining node.
func TestDatastoreNonVoterPromotion(t *testing.T) {
	c := newDatastoreCluster(t, 3, testbed.Options{Hosts: 5})
	h1, h4, h5 := c.hosts[0], c.hosts[3], c.hosts[4]
	c.join(h4, h5)
	voters, nonvoters := names(c.hosts[:3]...), names(h4, h5)
	for _, h := range c.hosts {
		c.waitMembers(h, 30*time.Second, wantMembers{voters: voters, nonvoters: nonvoters})
	}

	// The token is only shown on voters.
	if r := c.weft(h4, "", "token", "show"); r.code == 0 {
		t.Errorf("weft token show on a non-voter printed the token: %s", r)
	} else {
		checkOneLineError(t, r, "voter")
	}

	// Stop a voter that does not lead, then remove it from the leader's
	// side.
	resp := c.waitMembers(h1, 30*time.Second, wantMembers{voters: voters, nonvoters: nonvoters})
	leader := c.leader(resp)
	var gone *testbed.Host
	for _, h := range c.hosts[:3] {
		if h != leader {
			gone = h
			break
		}
	}
	if err := gone.StopAgent(); err != nil {
		t.Fatal(err)
	}
	var rest []*testbed.Host
	for _, h := range c.hosts {
		if h != gone {
			rest = append(rest, h)
		}
	}
	from := rest[len(rest)-1] // a non-voter runs the removal: forwarded to the leader
	start := time.Now()
	r := c.weft(from, "", "cluster", "remove", gone.Name())
	if r.code != 0 || !strings.Contains(r.stdout, "Removed node "+gone.Name()) {
		t.Fatalf("%s: %s", from.Name(), r)
	}
	var promoted localMembers
	c.waitFor(60*time.Second, "a non-voter to be promoted", func() error {
		resp, r := c.members(leader)
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		promoted = localMembers(resp.Members)
		if promoted.has(gone.Name()) {
			return fmt.Errorf("%s is still a member: %+v", gone.Name(), resp.Members)
		}
		if v := promoted.withRole("leader", "voter"); len(v) != 3 {
			return fmt.Errorf("voters %v, want 3: %+v", v, resp.Members)
		}
		return nil
	})
	t.Logf("voters %v, non-voters %v %s after `weft cluster remove %s`",
		promoted.withRole("leader", "voter"), promoted.withRole("nonvoter"), time.Since(start).Round(time.Millisecond), gone.Name())
	newVoters := promoted.withRole("leader", "voter")
	newNonVoters := promoted.withRole("nonvoter")
	if len(newNonVoters) != 1 || (newNonVoters[0] != h4.Name() && newNonVoters[0] != h5.Name()) {
		t.Fatalf("non-voters after the promotion: %v, want one of h4, h5", newNonVoters)
	}
	for _, h := range rest {
		c.waitMembers(h, 30*time.Second, wantMembers{voters: newVoters, nonvoters: newNonVoters})
	}
	for _, h := range rest {
		c.waitGone(h, "nodes", gone.Name(), 20*time.Second)
	}
	for _, h := range rest {
		c.mustApply(h, globalNetworkSet("after-"+h.Name(), "192.0.2.1/32"))
	}
	for _, h := range rest {
		for _, w := range rest {
			c.waitObject(h, "globalnetworksets", "after-"+w.Name(), 20*time.Second)
		}
	}
	// Removing it again: it is not a member any more.
	if r := c.weft(leader, "", "cluster", "remove", gone.Name()); r.code == 0 {
		t.Errorf("removing %s twice succeeded: %s", gone.Name(), r)
	} else {
		checkOneLineError(t, r, gone.Name())
	}
	// The removed node comes back with its old data dir: the others refuse
	// its votes (raft pre-vote) and nothing changes; it is not ready.
	logStart := len(gone.Logs())
	if err := gone.StartAgent(); err != nil {
		t.Fatal(err)
	}
	c.waitFor(30*time.Second, "the removed node's election attempts to be refused", func() error {
		if !strings.Contains(gone.Logs()[logStart:], "pre-vote campaign failed") {
			return fmt.Errorf("log ends:\n%s", lastLogLines(gone, 5))
		}
		return nil
	})
	for _, h := range rest {
		c.waitMembers(h, 30*time.Second, wantMembers{voters: newVoters, nonvoters: newNonVoters, leader: leader.Name()})
	}
	if code, _, err := readyz(gone); err != nil || code == 200 {
		t.Errorf("the removed node's /readyz: %d, %v; want 503", code, err)
	}
	if err := gone.StopAgent(); err != nil {
		t.Error(err)
	}
	stopAll(t, rest)
}

// localMembers is a membership listing with lookups.
type localMembers []localapi.Member

func (ms localMembers) has(name string) bool {
	for _, m := range ms {
		if m.Name == name {
			return true
		}
	}
	return false
}

func (ms localMembers) withRole(roles ...string) []string {
	var out []string
	for _, m := range ms {
		for _, r := range roles {
			if m.Role == r {
				out = append(out, m.Name)
			}
		}
	}
	return out
}

// TestDatastoreReaddress: a node restarted with a new underlay address (its
// TOML changed, as after a new DHCP lease) rejoins as itself: same name,
// same data, still a voter, now listed at the new address and healthy; its
// Node resource carries the new address; writes flow both ways. Identity is
// the name and certificate, not the address.
func TestDatastoreReaddress(t *testing.T) {
	c := newDatastoreCluster(t, 3, testbed.Options{})
	h1, h3 := c.hosts[0], c.hosts[2]
	all := names(c.hosts...)
	c.waitMembers(h1, 30*time.Second, wantMembers{voters: all})
	c.mustApply(h3, globalNetworkSet("before", "192.0.2.1/32"))
	oldAddr := h3.Address()

	if err := h3.StopAgent(); err != nil {
		t.Fatal(err)
	}
	c.mustApply(h1, globalNetworkSet("while-away", "192.0.2.2/32"))
	newAddr := c.site.Subnet().Addr().As4()
	newAddr[3] = 77
	if err := h3.SetAddress(netip.AddrFrom4(newAddr).String()); err != nil {
		t.Fatal(err)
	}
	if cfg, err := h3.Config(); err != nil || strings.Contains(cfg, oldAddr) || !strings.Contains(cfg, h3.Address()) {
		t.Fatalf("h3's next config still names %s (or not %s): %v\n%s", oldAddr, h3.Address(), err, cfg)
	}
	if err := h3.StartAgent(); err != nil {
		t.Fatal(err)
	}
	c.waitReady(h3)
	if logs := h3.Logs(); !strings.Contains(logs[strings.LastIndex(logs, "=== testbed"):], "mode=resume") {
		t.Errorf("h3 did not resume from its data dir after the address change")
	}
	for _, h := range c.hosts {
		resp := c.waitMembers(h, 30*time.Second, wantMembers{voters: all})
		for _, m := range resp.Members {
			if m.Name == h3.Name() && m.Address != h3.ClusterAddress() {
				t.Errorf("%s lists h3 at %s, want %s", h.Name(), m.Address, h3.ClusterAddress())
			}
		}
	}
	c.waitObject(h3, "globalnetworksets", "while-away", 20*time.Second)
	c.mustApply(h3, globalNetworkSet("after", "192.0.2.3/32"))
	for _, h := range c.hosts {
		c.waitObject(h, "globalnetworksets", "after", 20*time.Second)
	}
	c.mustApply(h1, globalNetworkSet("after-h1", "192.0.2.4/32"))
	c.waitObject(h3, "globalnetworksets", "after-h1", 20*time.Second)
	// The Node resource follows the address.
	c.waitFor(20*time.Second, "h3's Node resource to carry its new address", func() error {
		got := c.getObject(h1, "nodes", h3.Name())
		if !strings.Contains(got, `"`+h3.Address()+`/`) || strings.Contains(got, `"`+oldAddr+`/`) {
			return fmt.Errorf("node h3: %s", got)
		}
		return nil
	})
	stopAll(t, c.hosts)
}
