package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
)

// An agent stopped (SIGTERM) while workload adds are in flight stops in
// order: the local API first stops taking calls and lets the ones in flight
// finish, then the background work, then the datastore and the dataplane.
// So every add either completed (and is all there after a restart: its
// endpoint, its addresses, its veth) or failed and left nothing behind.
func TestWorkloadsAddsDuringShutdownAreWholeOrNothing(t *testing.T) {
	site := wlStartCluster(t, testbed.Options{Hosts: 1})
	h := site.Hosts()[0]
	const n = 12
	paths := make([]string, n)
	for i := range paths {
		paths[i] = site.AddWorkload(h, fmt.Sprintf("s%d", i)).Path()
	}
	var (
		mu      sync.Mutex
		added   []string
		started sync.WaitGroup
		done    sync.WaitGroup
	)
	started.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			started.Done()
			name := fmt.Sprintf("s%d", i)
			if _, err := wlWeftAdd(h, name, paths[i]); err == nil {
				mu.Lock()
				added = append(added, name)
				mu.Unlock()
			}
		}()
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond) // let some adds reach the agent before the SIGTERM
	if err := h.StopAgent(); err != nil {
		t.Fatalf("stopping the agent with adds in flight: %v", err)
	}
	done.Wait()
	sort.Strings(added)
	t.Logf("%d of %d adds completed before the agent stopped: %v", len(added), n, added)

	if err := h.StartAgent(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, w := range wlWorkloadList(t, h) {
		listed = append(listed, w.Name)
		if l, err := wlLinkNamed(h.Netns(), w.HostIface); err != nil || l == nil {
			t.Errorf("workload %s is recorded but its veth %s is missing (%v)", w.Name, w.HostIface, err)
		}
	}
	sort.Strings(listed)
	if fmt.Sprint(listed) != fmt.Sprint(added) {
		t.Errorf("after the restart the agent lists %v; the adds that answered success were %v", listed, added)
	}
	// Nothing half-made: every allocation belongs to a workload or the
	// node's tunnel, and IPAM finds no problem.
	rep := wlIpamCheck(t, h)
	if len(rep.Problems) != 0 || rep.Allocations != rep.InUse {
		t.Errorf("ipam check after the restart: %d allocations, %d in use, problems %s", rep.Allocations, rep.InUse, rep.Problems)
	}
}
