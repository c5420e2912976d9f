package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/localapi"
)

// ipamBaseTOML is merged into every host of the IPAM tests: BGP plays no
// part in address management, and leaving it off keeps three agents on a
// two-core machine light.
const ipamBaseTOML = "[bgp]\nenabled = false\n"

// ipamCluster builds one cluster of n hosts: h1 bootstraps (seeding the
// default pool 10.244.0.0/16 with /26 blocks), the others join through it
// with its token. extraTOML goes to every host.
func ipamCluster(t *testing.T, n int, extraTOML string) (*testbed.Site, []*testbed.Host) {
	t.Helper()
	site := testbed.New(t, testbed.Options{
		Hosts: n, NoStart: true, ExtraTOML: ipamBaseTOML + extraTOML,
		ReadyTimeout: 90 * time.Second, ExpectTimeout: 40 * time.Second,
	})
	hosts := site.Hosts()
	ctx := context.Background()
	if err := site.StartCluster(ctx); err != nil {
		t.Fatal(err)
	}
	// Every node has registered itself (its Node object is what makes its
	// blocks "alive" for ipam check).
	ipamWaitFor(t, 60*time.Second, "every node registered", func() error {
		var nodes struct {
			Items []json.RawMessage `json:"items"`
		}
		resp, err := ipamClient(hosts[0]).List(ctx, "Node", localapi.ListOptions{Consistent: true})
		if err != nil {
			return err
		}
		nodes.Items = resp.Items
		if len(nodes.Items) != n {
			return fmt.Errorf("%d Node objects, want %d", len(nodes.Items), n)
		}
		return nil
	})
	// Joiners start as non-voters and are promoted once stable (autopilot):
	// a test that kills the leader needs every member voting and healthy.
	vctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := site.WaitVoters(vctx, hosts[0], n); err != nil {
		t.Fatal(err)
	}
	return site, hosts
}

func ipamClient(h *testbed.Host) *localapi.Client { return localapi.NewClient(h.Socket()) }

// ipamWaitFor polls cond every 100 ms until it returns nil, failing the test
// with the last error after timeout.
func ipamWaitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ipamAssign asks h's agent for addresses (POST /v1/ipam/assign).
func ipamAssign(ctx context.Context, h *testbed.Host, req ipam.AssignRequest) (ipam.AssignResponse, error) {
	return ipamClient(h).IPAMAssign(ctx, req)
}

// ipamRetryable reports the failures a client retries with the same
// handle: the agent or the cluster was unavailable (no leader, outcome of
// a write unknown because the leader died), or the agent's socket was
// gone or cut (the agent itself was killed). Anything else is an answer.
func ipamRetryable(err error) bool {
	var le *localapi.Error
	if errors.As(err, &le) {
		return le.Code == localapi.CodeUnavailable
	}
	return err != nil
}

// ipamSync makes h's replica catch up with the leader: ipam check reads
// linearizably, and ipam show answers from the local replica after it.
func ipamSync(ctx context.Context, h *testbed.Host) error {
	_, err := ipamClient(h).IPAMCheck(ctx)
	return err
}

// ipamIP is `weft ipam show --ip ADDR -o json`'s report, through the same
// local API call the CLI makes, once h's replica has caught up.
func ipamIP(ctx context.Context, h *testbed.Host, ip string) (*ipam.IPDetail, error) {
	if err := ipamSync(ctx, h); err != nil {
		return nil, err
	}
	return ipamIPLocal(ctx, h, ip)
}

// ipamIPLocal is ipamIP answered from h's replica as it is.
func ipamIPLocal(ctx context.Context, h *testbed.Host, ip string) (*ipam.IPDetail, error) {
	rep, err := ipamClient(h).IPAMShow(ctx, localapi.IPAMShowOptions{IP: ip})
	if err != nil {
		return nil, err
	}
	if rep.IP == nil {
		return nil, fmt.Errorf("ipam show --ip %s: no ip in the answer", ip)
	}
	return rep.IP, nil
}

// ipamWeftJSON runs a weft command with -o json on h and decodes its output.
func ipamWeftJSON(t *testing.T, h *testbed.Host, out any, args ...string) {
	t.Helper()
	s, err := h.Weft(append(args, "-o", "json")...)
	if err != nil {
		t.Fatalf("weft %s: %v", strings.Join(args, " "), err)
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		t.Fatalf("weft %s -o json printed %q: %v", strings.Join(args, " "), s, err)
	}
}

// ipamCheck runs `weft ipam check -o json` (a linearizable read: the agent
// first catches up with the leader).
func ipamCheck(t *testing.T, h *testbed.Host) ipam.CheckReport {
	t.Helper()
	var rep ipam.CheckReport
	ipamWeftJSON(t, h, &rep, "ipam", "check")
	return rep
}

// ipamShow runs `weft ipam show [flags] -o json` once h's replica has
// caught up.
func ipamShow(t *testing.T, h *testbed.Host, flags ...string) ipam.ShowReport {
	t.Helper()
	if err := ipamSync(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	var rep ipam.ShowReport
	ipamWeftJSON(t, h, &rep, append([]string{"ipam", "show"}, flags...)...)
	return rep
}

// ipamProblemKinds counts a check report's problems by kind.
func ipamProblemKinds(rep ipam.CheckReport) map[string]int {
	m := map[string]int{}
	for _, p := range rep.Problems {
		m[p.Kind]++
	}
	return m
}

// ipamLeader asks h which member leads the datastore.
func ipamLeader(ctx context.Context, h *testbed.Host) (string, error) {
	ms, err := ipamClient(h).Members(ctx)
	if err != nil {
		return "", err
	}
	for _, m := range ms.Members {
		if m.Role == "leader" {
			return m.Name, nil
		}
	}
	return "", fmt.Errorf("no leader among %+v", ms.Members)
}

// ipamAck is one acknowledged allocation of the cluster test.
type ipamAck struct {
	handle, node string
	addr         ipam.Assignment
	attempts     int
	at           time.Time
}

// TestIPAMClusterConcurrentAllocationWithLeaderKill: three nodes allocate
// 300 addresses each, concurrently, through their local API, while the
// datastore leader is killed with SIGKILL and restarted. Clients retry
// unavailable answers and cut connections with the same handle, which is
// what makes a retry safe (the same handle gets the same address). Then:
// every acknowledged allocation exists with its handle and attributes, no
// address is held twice, every node's addresses come from its own blocks
// (no borrowing was needed in a /16), the blocks are packed, and `weft
// ipam check` is clean.
func TestIPAMClusterConcurrentAllocationWithLeaderKill(t *testing.T) {
	const (
		perNode = 300
		workers = 6 // concurrent clients per node
	)
	_, hosts := ipamCluster(t, 3, "")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	var (
		mu       sync.Mutex
		acks     []ipamAck
		failures []string
		done     atomic.Int64
		retries  atomic.Int64
	)
	var wg sync.WaitGroup
	start := time.Now()
	for _, h := range hosts {
		jobs := make(chan int, perNode)
		for i := range perNode {
			jobs <- i
		}
		close(jobs)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					handle := fmt.Sprintf("ipam-e2e.%s.%03d", h.Name(), i)
					// No WorkloadEndpoint reference: the GC cannot judge
					// these allocations and leaves them alone (docs/ipam.md).
					req := ipam.AssignRequest{Handle: handle, Num4: 1, Attrs: ipam.Attributes{
						Node: h.Name(), Namespace: "ipam-e2e", Workload: handle, Type: ipam.TypeWorkload,
					}}
					for attempt := 1; ; attempt++ {
						resp, err := ipamAssign(ctx, h, req)
						if err == nil {
							mu.Lock()
							if len(resp.Addresses) != 1 || resp.Handle != handle {
								failures = append(failures, fmt.Sprintf("%s: answer %+v, want one address", handle, resp))
							} else {
								acks = append(acks, ipamAck{handle: handle, node: h.Name(), addr: resp.Addresses[0], attempts: attempt, at: time.Now()})
							}
							mu.Unlock()
							done.Add(1)
							break
						}
						if !ipamRetryable(err) || ctx.Err() != nil {
							mu.Lock()
							failures = append(failures, fmt.Sprintf("%s (attempt %d): %v", handle, attempt, err))
							mu.Unlock()
							done.Add(1)
							break
						}
						retries.Add(1)
						time.Sleep(50 * time.Millisecond)
					}
				}
			}()
		}
	}

	// Kill the leader once a third of the work is acknowledged.
	ipamWaitFor(t, 2*time.Minute, "a third of the allocations acknowledged", func() error {
		if n := done.Load(); n < 3*perNode/3 {
			return fmt.Errorf("%d done", n)
		}
		return nil
	})
	leaderName, err := ipamLeader(ctx, hosts[0])
	if err != nil {
		t.Fatal(err)
	}
	var leader *testbed.Host
	var survivors []*testbed.Host
	for _, h := range hosts {
		if h.Name() == leaderName {
			leader = h
		} else {
			survivors = append(survivors, h)
		}
	}
	killedAt := time.Now()
	doneAtKill := done.Load()
	if err := leader.Kill9(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed leader %s after %d of %d allocations (%s)", leaderName, doneAtKill, 3*perNode, killedAt.Sub(start).Round(time.Millisecond))
	// The survivors elect a new leader and keep allocating without it.
	ipamWaitFor(t, 60*time.Second, "a new leader among the survivors", func() error {
		l, err := ipamLeader(ctx, survivors[0])
		if err != nil {
			return err
		}
		if l == leaderName {
			return fmt.Errorf("leader is still %s", l)
		}
		return nil
	})
	ipamWaitFor(t, 60*time.Second, "survivors allocating without the old leader", func() error {
		mu.Lock()
		defer mu.Unlock()
		n, left := 0, 0
		for _, a := range acks {
			if a.node != leaderName && a.at.After(killedAt) {
				n++
			}
		}
		for _, a := range acks {
			if a.node != leaderName {
				left++
			}
		}
		if n >= 10 || left == 2*perNode {
			return nil
		}
		return fmt.Errorf("%d survivor allocations since the kill", n)
	})
	if err := leader.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := leader.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, f := range failures {
		t.Error(f)
	}
	if t.Failed() {
		t.FailNow()
	}
	maxAttempts := 0
	for _, a := range acks {
		maxAttempts = max(maxAttempts, a.attempts)
	}
	t.Logf("%d allocations in %s with %d retries (at most %d attempts for one)", len(acks), elapsed.Round(time.Millisecond), retries.Load(), maxAttempts)
	if len(acks) != 3*perNode {
		t.Fatalf("%d acknowledged allocations, want %d", len(acks), 3*perNode)
	}

	// No address was handed out twice.
	byIP := map[string]ipamAck{}
	for _, a := range acks {
		if prev, ok := byIP[a.addr.IP]; ok {
			t.Errorf("address %s acknowledged to %s and to %s", a.addr.IP, prev.handle, a.handle)
		}
		byIP[a.addr.IP] = a
		if a.addr.Family != 4 || a.addr.Pool != "default-ipv4" || a.addr.HostCIDR != a.addr.IP+"/32" {
			t.Errorf("%s: assignment %+v, want an IPv4 /32 of default-ipv4", a.handle, a.addr)
		}
		// A /16 has 1024 blocks: no node ever needed to borrow.
		if a.addr.Borrowed {
			t.Errorf("%s on %s: %s borrowed from block %s", a.handle, a.node, a.addr.IP, a.addr.Block)
		}
	}

	// Every replica has caught up (ipam check reads linearizably) and
	// reports the same allocations.
	before := ipamCheck(t, hosts[0])
	for _, h := range hosts[1:] {
		if rep := ipamCheck(t, h); rep.Allocations != before.Allocations || rep.Blocks != before.Blocks {
			t.Errorf("%s: check sees %d allocations in %d blocks, %s sees %d in %d", h.Name(), rep.Allocations, rep.Blocks, hosts[0].Name(), before.Allocations, before.Blocks)
		}
	}

	// Every acknowledged allocation exists, with its handle and attributes,
	// in a block of its own node — asked of every replica in turn.
	var checkWG sync.WaitGroup
	var cmu sync.Mutex
	var bad []string
	sem := make(chan struct{}, 8)
	for i, a := range acks {
		checkWG.Add(1)
		sem <- struct{}{}
		go func() {
			defer checkWG.Done()
			defer func() { <-sem }()
			h := hosts[i%len(hosts)]
			d, err := ipamIPLocal(ctx, h, a.addr.IP) // every replica synced by ipamCheck above
			var problem string
			switch {
			case err != nil:
				problem = err.Error()
			case d.State != "allocated" || d.Attributes == nil:
				problem = fmt.Sprintf("state %q", d.State)
			case d.Attributes.Handle != a.handle || d.Attributes.Node != a.node || d.Attributes.Type != ipam.TypeWorkload ||
				d.Attributes.Namespace != "ipam-e2e" || d.Attributes.Workload != a.handle:
				problem = fmt.Sprintf("attributes %+v", *d.Attributes)
			case d.Block != a.addr.Block || d.BlockOwner != a.node:
				problem = fmt.Sprintf("in block %s of %q, acknowledged in %s; want the node's own block", d.Block, d.BlockOwner, a.addr.Block)
			case d.SequenceNumber != a.addr.SequenceNumber:
				problem = fmt.Sprintf("sequence number %d, acknowledged %d", d.SequenceNumber, a.addr.SequenceNumber)
			}
			if problem != "" {
				cmu.Lock()
				bad = append(bad, fmt.Sprintf("%s (%s, %s) seen by %s: %s", a.addr.IP, a.handle, a.node, h.Name(), problem))
				cmu.Unlock()
			}
		}()
	}
	checkWG.Wait()
	// The CLI reports the same, for a sample.
	for i := 0; i < len(acks); i += 150 {
		a := acks[i]
		var cli struct {
			IP ipam.IPDetail `json:"ip"`
		}
		ipamWeftJSON(t, hosts[(i+1)%len(hosts)], &cli, "ipam", "show", "--ip", a.addr.IP)
		if cli.IP.State != "allocated" || cli.IP.Attributes == nil || cli.IP.Attributes.Handle != a.handle || cli.IP.BlockOwner != a.node {
			bad = append(bad, fmt.Sprintf("weft ipam show --ip %s -o json: %+v; want allocated to %s in a block of %s", a.addr.IP, cli.IP, a.handle, a.node))
		}
	}
	sort.Strings(bad)
	for i, b := range bad {
		if i == 20 {
			t.Errorf("... and %d more", len(bad)-20)
			break
		}
		t.Error(b)
	}
	bad = nil

	// Blocks: each node's are affine to it and packed (a new block is
	// claimed only when the node's blocks are full); nothing is borrowed.
	show := ipamShow(t, hosts[0], "--show-blocks")
	perNodeBlocks := map[string]int{}
	var blockInUse int64
	for _, r := range show.Rows {
		if r.Grouping == "Block" {
			perNodeBlocks[r.Node]++
			blockInUse += r.InUse
		}
	}
	if blockInUse != int64(before.Allocations) {
		t.Errorf("blocks show %d addresses in use, check counts %d allocations", blockInUse, before.Allocations)
	}
	for _, nc := range before.TopNodes {
		if want := (nc.Allocations + 63) / 64; perNodeBlocks[nc.Node] != want {
			t.Errorf("node %s holds %d blocks for %d addresses, want %d /26 blocks", nc.Node, perNodeBlocks[nc.Node], nc.Allocations, want)
		}
	}
	if b := ipamShow(t, hosts[1], "--show-borrowed"); len(b.Borrowed) != 0 {
		t.Errorf("ipam show --show-borrowed: %+v, want none", b.Borrowed)
	}

	// The same handle asked again gets the same address and writes nothing.
	var again atomic.Int64
	var idemWG sync.WaitGroup
	for i, a := range acks {
		if i%10 != 0 {
			continue
		}
		idemWG.Add(1)
		sem <- struct{}{}
		go func() {
			defer idemWG.Done()
			defer func() { <-sem }()
			h := ipamHostNamed(hosts, a.node)
			resp, err := ipamAssign(ctx, h, ipam.AssignRequest{Handle: a.handle, Num4: 1, Attrs: ipam.Attributes{Node: a.node, Namespace: "ipam-e2e", Workload: a.handle}})
			if err != nil || len(resp.Addresses) != 1 || resp.Addresses[0].IP != a.addr.IP {
				cmu.Lock()
				bad = append(bad, fmt.Sprintf("%s asked again: %+v, %v; first answer %s", a.handle, resp, err, a.addr.IP))
				cmu.Unlock()
				return
			}
			again.Add(1)
		}()
	}
	idemWG.Wait()

	// ipam check: the test's allocations are "leaked" by Calico's
	// definition — no WorkloadEndpoint or node tunnel uses them, as
	// nothing was attached — and they must be exactly that: one leaked
	// problem per acknowledged allocation and no other problem of any
	// kind. Releasing them must then leave a clean report.
	rep := ipamCheck(t, hosts[2])
	if rep.Allocations != before.Allocations {
		t.Errorf("asking %d handles again changed the allocations from %d to %d", again.Load(), before.Allocations, rep.Allocations)
	}
	leakedHandles := map[string]bool{}
	for _, p := range rep.Problems {
		if p.Kind != ipam.ProblemLeaked {
			t.Errorf("ipam check problem: %+v", p)
			continue
		}
		if a, ok := byIP[p.IP]; !ok || a.handle != p.Handle {
			t.Errorf("ipam check reports a leak the test did not make: %+v", p)
		}
		leakedHandles[p.Handle] = true
	}
	if len(leakedHandles) != len(acks) || len(rep.Problems) != len(acks) {
		t.Errorf("ipam check: %d problems on %d handles, want exactly one leak per allocation (%d): %v", len(rep.Problems), len(leakedHandles), len(acks), ipamProblemKinds(rep))
	}

	var relWG sync.WaitGroup
	for i, a := range acks {
		relWG.Add(1)
		sem <- struct{}{}
		go func() {
			defer relWG.Done()
			defer func() { <-sem }()
			resp, err := ipamClient(hosts[i%len(hosts)]).IPAMReleaseHandle(ctx, a.handle)
			if err != nil || len(resp.Released) != 1 || resp.Released[0].IP != a.addr.IP {
				cmu.Lock()
				bad = append(bad, fmt.Sprintf("release %s: %+v, %v", a.handle, resp, err))
				cmu.Unlock()
			}
		}()
	}
	relWG.Wait()
	for _, b := range bad {
		t.Error(b)
	}
	out, err := hosts[0].Weft("ipam", "check")
	if err != nil || !strings.Contains(out, "Check complete; found 0 problems") {
		t.Errorf("weft ipam check after releasing everything: %v\n%s", err, out)
	}
	if rep := ipamCheck(t, hosts[1]); rep.Allocations != before.Allocations-len(acks) || len(rep.Problems) != 0 {
		t.Errorf("after release: %d allocations (want %d), problems %+v", rep.Allocations, before.Allocations-len(acks), rep.Problems)
	}
}

func ipamHostNamed(hosts []*testbed.Host, name string) *testbed.Host {
	for _, h := range hosts {
		if h.Name() == name {
			return h
		}
	}
	return nil
}

// ipamManifest writes a YAML manifest into the site's directory (visible
// in every host's mount namespace) and returns its path.
func ipamManifest(t *testing.T, h *testbed.Host, name, yaml string) string {
	t.Helper()
	p := filepath.Join(h.Dir(), name)
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ipamPrefixAddrs lists every address of p.
func ipamPrefixAddrs(p netip.Prefix) []string {
	var out []string
	for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
		out = append(out, a.String())
	}
	return out
}
