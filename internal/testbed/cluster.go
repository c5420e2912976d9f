package testbed

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/weftnet/weft/node/localapi"
)

// TokenFile is the join token the first host's agent wrote when it
// bootstrapped the cluster.
func (s *Site) TokenFile() string {
	return filepath.Join(s.hosts[0].DataDir(), "token")
}

// StartCluster forms one weft cluster of the site's hosts (built with
// Options.NoStart): the first host bootstraps, the others join through it
// with its token, all at once; it returns when every agent is ready.
func (s *Site) StartCluster(ctx context.Context) error {
	first := s.hosts[0]
	if err := first.StartAgent(); err != nil {
		return err
	}
	if err := first.WaitReady(ctx); err != nil {
		return err
	}
	return s.Join(ctx, s.hosts[1:]...)
}

// Join starts the agents of hosts, joining the cluster of the first host
// with its token, and waits until they are all ready.
func (s *Site) Join(ctx context.Context, hosts ...*Host) error {
	for _, h := range hosts {
		h.SetJoin(s.TokenFile(), s.hosts[0])
		if err := h.StartAgent(); err != nil {
			return err
		}
	}
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.WaitReady(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// WaitVoters waits until the cluster, as h's agent reports it, has voters
// healthy voting members (the leader included): joiners start as
// non-voters and are promoted once stable, and a test that kills a leader
// needs every member voting.
func (s *Site) WaitVoters(ctx context.Context, h *Host, voters int) error {
	c := localapi.NewClient(h.Socket())
	var last string
	for {
		ms, err := c.Members(ctx)
		n := 0
		for _, m := range ms.Members {
			if (m.Role == "leader" || m.Role == "voter") && m.Healthy {
				n++
			}
		}
		if err == nil && n == voters {
			return nil
		}
		last = fmt.Sprintf("%d healthy voters of %d members (%v)", n, len(ms.Members), err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d healthy voters: %s: %w", voters, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
