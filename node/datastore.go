package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/bgpsvc"
	"github.com/weftnet/weft/node/cluster"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/node/policysvc"
	nodewg "github.com/weftnet/weft/node/wireguard"
	"github.com/weftnet/weft/node/workloads"
	"github.com/weftnet/weft/store"
)

// registry builds the store's command and validator registry: identical
// on every node of a cluster. Each subsystem with store commands registers
// them here.
func (a *Agent) registry() store.Registry {
	var reg store.Registry
	cluster.Register(&reg)
	bgpsvc.Register(&reg)
	workloads.Register(&reg)
	nodewg.Register(&reg)
	ipam.Register(&reg, a.log.With("component", "ipam"))
	policysvc.Register(&reg)
	return reg
}

// openStore starts the datastore: bootstrap, join or resume (SPEC §3).
func (a *Agent) openStore(ctx context.Context) (*store.Node, error) {
	c := a.cfg
	token := ""
	if c.Cluster.TokenFile != "" {
		b, err := os.ReadFile(c.Cluster.TokenFile)
		if err != nil && !(errors.Is(err, os.ErrNotExist) && len(c.Cluster.Join) == 0) {
			return nil, fmt.Errorf("cluster.token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	advertise := a.cfg.AdvertiseAddrPort()
	if !advertise.IsValid() {
		port := c.Cluster.ListenAddrPort().Port()
		addr := a.addr4
		if !addr.IsValid() {
			addr = a.addr6
		}
		advertise = netip.AddrPortFrom(addr, port)
	}
	return store.Open(ctx, store.Config{
		NodeName:  c.Node.Name,
		DataDir:   c.Node.DataDir,
		Listen:    c.Cluster.Listen,
		Advertise: advertise.String(),
		Join:      c.Cluster.Join,
		Token:     token,
		Voters:    c.Cluster.Voters,
		Registry:  a.registry(),
		Logger:    a.log.With("component", "datastore"),
		Metrics:   a.reg,
	})
}

// datastoreHealth reports the store as a health component: ready when the
// local replica is in sync with the leader.
func (a *Agent) datastoreHealth() localapi.ComponentStatus {
	st := a.store
	cs := localapi.ComponentStatus{Name: "datastore", State: localapi.StateRunning, Live: true}
	if err := st.Err(); err != nil {
		cs.State, cs.Live, cs.Detail = localapi.StateFailed, false, err.Error()
		return cs
	}
	leader, _ := st.Leader()
	switch {
	// Without a leader (cut off from the quorum, or during an election)
	// the replica cannot know it is current, whatever it applied before.
	case leader == "":
		cs.Detail = "no leader (waiting for quorum); serving local reads"
	case st.InSync():
		cs.Ready = true
		cs.Detail = "in sync, leader " + leader
	default:
		cs.Detail = "catching up with leader " + leader
	}
	return cs
}

// self is how this node describes itself in its Node resource.
func (a *Agent) self() cluster.Self {
	s := cluster.Self{Name: a.cfg.Node.Name, Labels: a.cfg.Node.Labels}
	if a.addr4.IsValid() {
		s.Address4 = netip.PrefixFrom(a.addr4, a.underlay4.Bits())
	}
	if a.addr6.IsValid() {
		s.Address6 = netip.PrefixFrom(a.addr6, a.underlay6.Bits())
	}
	return s
}
