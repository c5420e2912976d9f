package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/localapi"
)

// ipamPoolYAML is an IPPool manifest.
func ipamPoolYAML(name, cidr string, blockSize int, extra string) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: %s
spec:
  cidr: %s
  blockSize: %d
%s`, name, cidr, blockSize, extra)
}

// ipamPoolNames lists the IP pools `weft get ippool --consistent -o json`
// shows (name=cidr, marked when disabled), sorted.
func ipamPoolNames(t *testing.T, h *testbed.Host) []string {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				CIDR     string `json:"cidr"`
				Disabled bool   `json:"disabled"`
			} `json:"spec"`
		} `json:"items"`
	}
	ipamWeftJSON(t, h, &list, "get", "ippool", "--consistent")
	var names []string
	for _, p := range list.Items {
		n := p.Metadata.Name + "=" + p.Spec.CIDR
		if p.Spec.Disabled {
			n += "(disabled)"
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TestIPAMSmallPoolExhaustion: a /28 pool with /30 blocks, applied with
// `weft apply`, gives exactly its 16 addresses to three nodes allocating
// concurrently (own blocks first, then borrowing), then a clear "pool
// exhausted" error on every node, through the local API and through
// `weft workload add`. A released address is handed out again.
func TestIPAMSmallPoolExhaustion(t *testing.T) {
	site, hosts := ipamCluster(t, 3, "")
	h1 := hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const cidr = "10.250.0.0/28"
	manifest := ipamManifest(t, h1, "tiny.yaml", ipamPoolYAML("tiny", cidr, 30, "  nodeSelector: all()\n"))
	if out, err := h1.Weft("apply", "-f", manifest); err != nil {
		t.Fatalf("weft apply: %v\n%s", err, out)
	}

	type got struct {
		node, handle string
		a            ipam.Assignment
	}
	var (
		mu    sync.Mutex
		all   []got
		final = map[string]error{}
	)
	assign := func(h *testbed.Host, i int) error {
		handle := fmt.Sprintf("tiny.%s.%d", h.Name(), i)
		resp, err := ipamAssign(ctx, h, ipam.AssignRequest{Handle: handle, Num4: 1, Pools: []string{"tiny"}})
		if err != nil {
			return err
		}
		if len(resp.Addresses) != 1 {
			return fmt.Errorf("%s: answer %+v", handle, resp)
		}
		mu.Lock()
		all = append(all, got{h.Name(), handle, resp.Addresses[0]})
		mu.Unlock()
		return nil
	}
	// Each node first takes one address: it claims a block of its own.
	for _, h := range hosts {
		if err := assign(h, 0); err != nil {
			t.Fatalf("%s: first allocation from tiny: %v", h.Name(), err)
		}
	}
	for _, g := range all {
		if g.a.Borrowed {
			t.Errorf("%s: first allocation %s borrowed from %s; want a block of its own", g.node, g.a.IP, g.a.Block)
		}
	}
	// Then all three allocate concurrently until refused.
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; ; i++ {
				if err := assign(h, i); err != nil {
					mu.Lock()
					final[h.Name()] = err
					mu.Unlock()
					return
				}
				if i > 20 {
					mu.Lock()
					final[h.Name()] = errors.New("more than 20 addresses from a 16-address pool")
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()

	ips := map[string]string{}
	perNode := map[string]int{}
	borrowed := 0
	for _, g := range all {
		if prev, ok := ips[g.a.IP]; ok {
			t.Errorf("%s handed out to %s and %s", g.a.IP, prev, g.handle)
		}
		ips[g.a.IP] = g.handle
		perNode[g.node]++
		if g.a.Borrowed {
			borrowed++
		}
		if p := netip.MustParsePrefix(g.a.Block); p.Bits() != 30 || !netip.MustParsePrefix(cidr).Contains(p.Addr()) || g.a.Pool != "tiny" {
			t.Errorf("%s: %s in block %s of pool %q, want a /30 of tiny", g.handle, g.a.IP, g.a.Block, g.a.Pool)
		}
	}
	t.Logf("allocations per node %v, %d borrowed", perNode, borrowed)
	want := ipamPrefixAddrs(netip.MustParsePrefix(cidr))
	var gotIPs []string
	for ip := range ips {
		gotIPs = append(gotIPs, ip)
	}
	ipamSortAddrs(gotIPs)
	if !slices.Equal(gotIPs, want) {
		t.Fatalf("tiny handed out %d addresses %v, want exactly the 16 of %s", len(gotIPs), gotIPs, cidr)
	}
	for _, h := range hosts {
		err := final[h.Name()]
		var le *localapi.Error
		if !errors.As(err, &le) || !strings.HasPrefix(le.Message, "pool exhausted") || le.Code != localapi.CodeConflict ||
			strings.Contains(le.Message, "get it again and retry") {
			t.Errorf("%s after the pool ran out: %v (%+v), want a conflict starting \"pool exhausted\"", h.Name(), err, le)
		} else {
			t.Logf("%s: %s", h.Name(), le.Message)
		}
	}

	// The CLI: `weft workload add --pool tiny` fails with the same clear
	// error and leaves no workload behind.
	wl := site.AddWorkload(hosts[1], "tinywl")
	out, err := hosts[1].Weft("workload", "add", "tinywl", "--netns", wl.Path(), "--pool", "tiny")
	if err == nil || !strings.Contains(err.Error(), "pool exhausted") {
		t.Errorf("weft workload add --pool tiny on an exhausted pool: %v\n%s", err, out)
	}
	if list, err := ipamClient(hosts[1]).ListWorkloads(ctx, "", true); err != nil || len(list.Items) != 0 {
		t.Errorf("workloads after a refused add: %+v, %v", list.Items, err)
	}

	// Usage: the pool is full, in four /30 blocks; show --show-borrowed
	// lists exactly the addresses acknowledged as borrowed.
	show := ipamShow(t, h1, "--show-blocks")
	blocks := 0
	for _, r := range show.Rows {
		switch {
		case r.Grouping == "IP Pool" && r.Pool == "tiny":
			if r.Total.Int64() != 16 || r.InUse != 16 || r.Free.Int64() != 0 {
				t.Errorf("tiny: total %v in use %d free %v, want 16/16/0", r.Total, r.InUse, r.Free)
			}
		case r.Grouping == "Block" && r.Pool == "tiny":
			blocks++
			if r.InUse != 4 || r.Node == "" {
				t.Errorf("block %s: %d in use, owner %q; want 4 and a node", r.CIDR, r.InUse, r.Node)
			}
		}
	}
	if blocks != 4 {
		t.Errorf("tiny has %d blocks, want 4 /30s", blocks)
	}
	nBorrowed := 0
	for _, b := range ipamShow(t, hosts[2], "--show-borrowed").Borrowed {
		if netip.MustParsePrefix(cidr).Contains(netip.MustParseAddr(b.IP)) {
			nBorrowed++
			if b.BorrowingNode == b.BlockOwner {
				t.Errorf("borrowed row %+v: borrowing node owns the block", b)
			}
		}
	}
	if nBorrowed != borrowed {
		t.Errorf("ipam show --show-borrowed lists %d addresses of tiny, %d were acknowledged as borrowed", nBorrowed, borrowed)
	}

	// A released address is free again: another node gets exactly it.
	victim := all[0]
	if _, err := hosts[0].Weft("ipam", "release", "--ip", victim.a.IP); err != nil {
		t.Fatalf("weft ipam release --ip %s: %v", victim.a.IP, err)
	}
	resp, err := ipamAssign(ctx, hosts[2], ipam.AssignRequest{Handle: "tiny.again", Num4: 1, Pools: []string{"tiny"}})
	if err != nil || len(resp.Addresses) != 1 || resp.Addresses[0].IP != victim.a.IP {
		t.Errorf("allocation after releasing %s: %+v, %v; want that address", victim.a.IP, resp, err)
	}
	if _, err := ipamAssign(ctx, hosts[1], ipam.AssignRequest{Handle: "tiny.more", Num4: 1, Pools: []string{"tiny"}}); err == nil || !strings.Contains(err.Error(), "pool exhausted") {
		t.Errorf("allocation from the full pool again: %v, want pool exhausted", err)
	}
	// Only the test's own (unattached) allocations are reported.
	if rep := ipamCheck(t, h1); ipamProblemKinds(rep)[ipam.ProblemLeaked] != 16 || len(rep.Problems) != 16 {
		t.Errorf("ipam check: %v, want exactly the 16 unattached allocations reported as leaked", ipamProblemKinds(rep))
	}
}

// ipamSortAddrs sorts address strings numerically.
func ipamSortAddrs(s []string) {
	sort.Slice(s, func(i, j int) bool {
		return netip.MustParseAddr(s[i]).Less(netip.MustParseAddr(s[j]))
	})
}

// ipamState is what a refused request must leave unchanged: the pools,
// and the allocations and handles ipam check counts.
type ipamState struct {
	pools                []string
	allocations, handles int
}

func ipamReadState(t *testing.T, h *testbed.Host) ipamState {
	t.Helper()
	rep := ipamCheck(t, h)
	return ipamState{pools: ipamPoolNames(t, h), allocations: rep.Allocations, handles: rep.Handles}
}

// ipamExpectRefused runs a weft command that must fail with stderr containing
// every one of wants, and checks that nothing changed.
func ipamExpectRefused(t *testing.T, h *testbed.Host, before ipamState, wants []string, args ...string) {
	t.Helper()
	out, err := h.Weft(args...)
	if err == nil {
		t.Errorf("weft %s succeeded (%q); want an error mentioning %q", strings.Join(args, " "), out, wants)
	} else {
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("weft %s: %v\nwant the error to mention %q", strings.Join(args, " "), err, w)
			}
		}
		t.Logf("weft %s: refused: %s", strings.Join(args, " "), ipamErrLine(err.Error()))
	}
	if after := ipamReadState(t, h); !slices.Equal(after.pools, before.pools) || after.allocations != before.allocations || after.handles != before.handles {
		t.Errorf("weft %s changed the IPAM state: %+v, before %+v", strings.Join(args, " "), after, before)
	}
}

// ipamErrLine is the error message proper, without the command line the test
// bed prefixes.
func ipamErrLine(s string) string {
	if i := strings.Index(s, "exit status 1: "); i >= 0 {
		return s[i+len("exit status 1: "):]
	}
	return s
}

// TestIPAMBadInput: invalid or overlapping pools, a requested address
// outside every pool or already taken, releases of unknown addresses and
// handles, and the delete of a pool still in use are refused with clear
// errors and change nothing; `weft delete ippool NAME --force` then works.
func TestIPAMBadInput(t *testing.T) {
	site, hosts := ipamCluster(t, 2, "")
	h1, h2 := hosts[0], hosts[1]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	before := ipamReadState(t, h1)
	if !slices.Equal(before.pools, []string{"default-ipv4=10.244.0.0/16"}) {
		t.Fatalf("pools at start: %v, want the seeded default-ipv4", before.pools)
	}

	// Invalid and overlapping pools.
	for _, c := range []struct {
		name, yaml string
		wants      []string
	}{
		{"unmasked", ipamPoolYAML("unmasked", "10.251.0.1/24", 26, ""), []string{"10.251.0.1/24"}},
		{"blocksize", ipamPoolYAML("blocksize", "10.251.0.0/24", 33, ""), []string{"blockSize"}},
		{"linklocal", ipamPoolYAML("linklocal", "169.254.0.0/16", 26, ""), []string{"link-local"}},
		{"overlap", ipamPoolYAML("overlap", "10.244.128.0/20", 26, ""), []string{"overlap", "default-ipv4"}},
		{"supernet", ipamPoolYAML("supernet", "10.0.0.0/8", 26, ""), []string{"overlap", "default-ipv4"}},
		{"encaps", ipamPoolYAML("encaps", "10.251.0.0/24", 26, "  ipipMode: Always\n  vxlanMode: Always\n"), []string{"IPIP", "VXLAN"}},
		// One bad document refuses the whole file: the good pool before it
		// is not created either.
		{"twodocs", ipamPoolYAML("good", "10.253.0.0/24", 26, "") + "---\n" + ipamPoolYAML("bad", "10.244.0.0/24", 26, ""), []string{"overlap"}},
	} {
		f := ipamManifest(t, h1, c.name+".yaml", c.yaml)
		ipamExpectRefused(t, h1, before, c.wants, "apply", "-f", f)
	}
	// cidr is immutable.
	f := ipamManifest(t, h1, "keep.yaml", ipamPoolYAML("keep", "10.254.0.0/24", 26, ""))
	if out, err := h1.Weft("apply", "-f", f); err != nil {
		t.Fatalf("weft apply keep: %v\n%s", err, out)
	}
	before = ipamReadState(t, h1)
	f = ipamManifest(t, h1, "keep2.yaml", ipamPoolYAML("keep", "10.254.1.0/24", 26, ""))
	ipamExpectRefused(t, h2, before, []string{"cidr"}, "apply", "-f", f)

	// Requested addresses: outside every pool, already taken.
	wa := site.AddWorkload(h1, "wa")
	out, err := h1.Weft("workload", "add", "wa", "--netns", wa.Path())
	if err != nil {
		t.Fatalf("weft workload add wa: %v", err)
	}
	ipA := firstIPv4(out)
	before = ipamReadState(t, h1)
	wb := site.AddWorkload(h2, "wb")
	ipamExpectRefused(t, h2, before, []string{"192.0.2.10", "outside every IP pool"}, "workload", "add", "wb", "--netns", wb.Path(), "--ip", "192.0.2.10")
	ipamExpectRefused(t, h2, before, []string{ipA, "already allocated"}, "workload", "add", "wb", "--netns", wb.Path(), "--ip", ipA)
	if list, err := ipamClient(h2).ListWorkloads(ctx, "", true); err != nil || len(list.Items) != 0 {
		t.Errorf("workloads on h2 after refused adds: %+v, %v", list.Items, err)
	}
	if out, err := wb.Exec("ip", "-o", "link", "show", "dev", "eth0"); err == nil {
		t.Errorf("refused workload wb has an eth0: %s", out)
	}
	if d, err := ipamIP(ctx, h2, ipA); err != nil || d.State != "allocated" || d.Attributes == nil || !strings.Contains(d.Attributes.Handle, "wa") {
		t.Errorf("%s after the refused add: %+v, %v; want still held by wa", ipA, d, err)
	}

	// Releases of what nobody holds.
	ipamExpectRefused(t, h1, before, []string{"10.244.250.250", "not allocated"}, "ipam", "release", "--ip", "10.244.250.250")
	ipamExpectRefused(t, h1, before, []string{"192.0.2.77"}, "ipam", "release", "--ip", "192.0.2.77")
	ipamExpectRefused(t, h1, before, []string{"not-an-ip", "invalid IP address"}, "ipam", "release", "--ip", "not-an-ip")
	_, err = ipamClient(h2).IPAMReleaseHandle(ctx, "no-such-handle")
	var le *localapi.Error
	if !errors.As(err, &le) || le.Code != localapi.CodeNotFound || !strings.Contains(le.Message, "no-such-handle") {
		t.Errorf("release of an unknown handle: %v, want not_found naming it", err)
	}
	// An address held by someone else is not released by naming another
	// handle (Calico's protection).
	_, err = ipamClient(h2).IPAMRelease(ctx, ipam.ReleaseRequest{IP: ipA, Handle: "someone-else"})
	if !errors.As(err, &le) || le.Code != localapi.CodeConflict {
		t.Errorf("release of %s under another handle: %v, want a conflict", ipA, err)
	}
	if after := ipamReadState(t, h1); !slices.Equal(after.pools, before.pools) || after.allocations != before.allocations || after.handles != before.handles {
		t.Errorf("refused releases changed the IPAM state: %+v, before %+v", after, before)
	}

	// A pool with addresses in use is not deleted (it is disabled, so it
	// drains); --force deletes it and releases them.
	f = ipamManifest(t, h1, "busy.yaml", ipamPoolYAML("busy", "10.252.0.0/24", 28, ""))
	if out, err := h1.Weft("apply", "-f", f); err != nil {
		t.Fatalf("weft apply busy: %v\n%s", err, out)
	}
	busy, err := ipamAssign(ctx, h2, ipam.AssignRequest{Handle: "busy.1", Num4: 1, Pools: []string{"busy"}})
	if err != nil || len(busy.Addresses) != 1 {
		t.Fatalf("allocation from busy: %+v, %v", busy, err)
	}
	busyIP := busy.Addresses[0].IP
	out, err = h1.Weft("delete", "ippool", "busy")
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("weft delete ippool busy with %s allocated: %v\n%s; want a refusal saying it is in use", busyIP, err, out)
	} else {
		t.Logf("weft delete ippool busy: refused: %s", ipamErrLine(err.Error()))
	}
	if d, err := ipamIP(ctx, h1, busyIP); err != nil || d.State != "allocated" || d.Pool != "busy" {
		t.Errorf("%s after the refused delete: %+v, %v; want still allocated in busy", busyIP, d, err)
	}
	// A refused delete changes nothing: the pool stays enabled and keeps
	// allocating (a disabled only pool would fail every workload add).
	if names := ipamPoolNames(t, h1); !slices.Contains(names, "busy=10.252.0.0/24") {
		t.Errorf("pools after the refused delete: %v, want busy kept as it was (enabled)", names)
	}
	if _, err := ipamAssign(ctx, h1, ipam.AssignRequest{Handle: "busy.2", Num4: 1, Pools: []string{"busy"}}); err != nil {
		t.Errorf("allocation from busy after the refused delete: %v, want it to work", err)
	}
	if out, err := h2.Weft("delete", "ippool", "busy", "--force"); err != nil {
		t.Fatalf("weft delete ippool busy --force: %v\n%s", err, out)
	}
	if names := ipamPoolNames(t, h1); slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "busy=") }) {
		t.Errorf("pools after delete --force: %v", names)
	}
	if d, err := ipamIP(ctx, h1, busyIP); err != nil || d.State != "outside every pool" {
		t.Errorf("%s after delete --force: %+v, %v; want outside every pool", busyIP, d, err)
	}
	// An unused pool goes without --force.
	if out, err := h1.Weft("delete", "ippool", "keep"); err != nil {
		t.Errorf("weft delete ippool keep (unused): %v\n%s", err, out)
	}
	if names := ipamPoolNames(t, h2); !slices.Equal(names, []string{"default-ipv4=10.244.0.0/16"}) {
		t.Errorf("pools at the end: %v", names)
	}
	// Nothing dangling: the workload's address is used, and nothing else
	// is allocated but the tunnel addresses.
	if rep := ipamCheck(t, h2); len(rep.Problems) != 0 {
		t.Errorf("ipam check at the end: %+v", rep.Problems)
	}
	if _, err := h1.Weft("workload", "del", "wa"); err != nil {
		t.Errorf("weft workload del wa: %v", err)
	}
}
