package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/localapi"
)

// ipamMustAssign allocates one IPv4 address for handle on h.
func ipamMustAssign(t *testing.T, h *testbed.Host, handle string, req ipam.AssignRequest) ipam.Assignment {
	t.Helper()
	req.Handle, req.Num4 = handle, 1
	resp, err := ipamAssign(context.Background(), h, req)
	if err != nil || len(resp.Addresses) != 1 {
		t.Fatalf("%s: assign %s: %+v, %v", h.Name(), handle, resp, err)
	}
	return resp.Addresses[0]
}

// ipamMustRelease releases every address of handle through h.
func ipamMustRelease(t *testing.T, h *testbed.Host, handle string) {
	t.Helper()
	if _, err := ipamClient(h).IPAMReleaseHandle(context.Background(), handle); err != nil {
		t.Fatalf("release %s: %v", handle, err)
	}
}

// ipamIPState is what `weft ipam show --ip` reports about ip, asked of h once
// its replica has caught up.
func ipamIPState(t *testing.T, h *testbed.Host, ip string) *ipam.IPDetail {
	t.Helper()
	d, err := ipamIP(context.Background(), h, ip)
	if err != nil {
		t.Fatalf("ipam show --ip %s on %s: %v", ip, h.Name(), err)
	}
	return d
}

// ipamBlockOwners maps each block of `weft ipam show --show-blocks` to its
// node ("" when no node claims it).
func ipamBlockOwners(t *testing.T, h *testbed.Host) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, r := range ipamShow(t, h, "--show-blocks").Rows {
		if r.Grouping == "Block" {
			m[r.CIDR] = r.Node
		}
	}
	return m
}

// ipamMetric reads one unlabelled sample from h's /metrics, fetched from
// the site router over the underlay.
func ipamMetric(t *testing.T, site *testbed.Site, h *testbed.Host, name string) float64 {
	t.Helper()
	resp, err := site.Router().HTTPClient(5 * time.Second).Get("http://" + h.Address() + ":9091/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", h.Name(), err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s of %s: %q", name, h.Name(), v)
			}
			return f
		}
	}
	t.Fatalf("metric %s missing from %s's /metrics", name, h.Name())
	return 0
}

// TestIPAMNodeRemovalAndGC: `weft cluster remove` of a stopped node
// releases its addresses (in its own blocks, borrowed from others, its
// workload's and its tunnel's), deletes its empty blocks and affinities,
// and unclaims a block of its that still holds another node's borrowed
// address (that address survives). With leak_grace_period and gc_interval
// at 1 s, the leader's garbage collector releases an allocation whose
// WorkloadEndpoint does not exist by itself, and leaves a live workload's
// address alone.
func TestIPAMNodeRemovalAndGC(t *testing.T) {
	site, hosts := ipamCluster(t, 3, "[ipam]\ngc_interval = \"1s\"\nleak_grace_period = \"1s\"\n")
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]

	// Pool rm: two /30 blocks, b0 = .0/30 and b1 = .4/30.
	f := ipamManifest(t, h1, "rm.yaml", ipamPoolYAML("rm", "10.249.0.0/29", 30, ""))
	if out, err := h1.Weft("apply", "-f", f); err != nil {
		t.Fatalf("weft apply rm: %v\n%s", err, out)
	}
	rm := ipam.AssignRequest{Pools: []string{"rm"}}
	h3own := []ipam.Assignment{ipamMustAssign(t, h3, "rm.h3.0", rm)} // h3 claims b0
	var h1own []ipam.Assignment
	for i := range 4 { // h1 claims b1 and fills it
		h1own = append(h1own, ipamMustAssign(t, h1, fmt.Sprintf("rm.h1.%d", i), rm))
	}
	h1borrow := ipamMustAssign(t, h1, "rm.h1.borrow", rm) // from h3's b0
	// h3 fills b0.
	for i := 1; i <= 2; i++ {
		h3own = append(h3own, ipamMustAssign(t, h3, fmt.Sprintf("rm.h3.%d", i), rm))
	}
	ipamMustRelease(t, h1, "rm.h1.3")
	h3borrow := ipamMustAssign(t, h3, "rm.h3.borrow", rm) // h1's freed address in b1
	b0, b1 := "10.249.0.0/30", "10.249.0.4/30"
	for _, a := range h3own {
		if a.Block != b0 || a.Borrowed {
			t.Fatalf("h3's own allocation %+v, want in %s", a, b0)
		}
	}
	if h1borrow.Block != b0 || !h1borrow.Borrowed || h3borrow.Block != b1 || !h3borrow.Borrowed || h3borrow.IP != h1own[3].IP {
		t.Fatalf("borrowed: h1 %+v, h3 %+v; want h1 in %s and h3 in %s (at %s)", h1borrow, h3borrow, b0, b1, h1own[3].IP)
	}

	// h3 also runs a workload (default pool) and has its VXLAN tunnel
	// address.
	w3 := site.AddWorkload(h3, "w3")
	out, err := h3.Weft("workload", "add", "w3", "--netns", w3.Path())
	if err != nil {
		t.Fatalf("weft workload add w3: %v", err)
	}
	w3IP := firstIPv4(out)
	var h3node struct {
		Spec struct {
			IPv4VXLANTunnelAddr string `json:"ipv4VXLANTunnelAddr"`
		} `json:"spec"`
	}
	ipamWeftJSON(t, h1, &h3node, "get", "node", "h3")
	tunnel := h3node.Spec.IPv4VXLANTunnelAddr
	if tunnel == "" || ipamIPState(t, h1, tunnel).State != "allocated" {
		t.Fatalf("h3 has no allocated VXLAN tunnel address (%q)", tunnel)
	}
	h3Blocks := []string{}
	for cidr, owner := range ipamBlockOwners(t, h1) {
		if owner == "h3" {
			h3Blocks = append(h3Blocks, cidr)
		}
	}
	slices.Sort(h3Blocks)
	t.Logf("h3 holds blocks %v, workload %s, tunnel %s", h3Blocks, w3IP, tunnel)

	// Stop h3, then remove it from another member.
	if err := h3.StopAgent(); err != nil {
		t.Fatal(err)
	}
	var res localapi.RemoveMemberResponse
	ipamWeftJSON(t, h2, &res, "cluster", "remove", "h3")
	var rel ipam.ReleaseHostResponse
	if err := json.Unmarshal(res.IPAM, &rel); err != nil {
		t.Fatalf("cluster remove answer %s: %v", res.IPAM, err)
	}
	t.Logf("cluster remove h3: raft %t, released %d, blocks deleted %v, unclaimed %v, deleted %v",
		res.RemovedFromRaft, len(rel.Released), rel.BlocksDeleted, rel.BlocksUnclaimed, res.Deleted)
	if !res.RemovedFromRaft {
		t.Errorf("h3 was not removed from raft")
	}
	if ms, err := ipamClient(h1).Members(context.Background()); err != nil || len(ms.Members) != 2 ||
		slices.ContainsFunc(ms.Members, func(m localapi.Member) bool { return m.Name == "h3" }) {
		t.Errorf("members after removing h3: %+v, %v", ms.Members, err)
	}

	// Everything h3 held is free; what others hold is intact.
	gone := []string{w3IP, tunnel, h3borrow.IP}
	for _, a := range h3own {
		gone = append(gone, a.IP)
	}
	released := map[string]bool{}
	for _, r := range rel.Released {
		released[r.IP] = true
	}
	for _, ip := range gone {
		if !released[ip] {
			t.Errorf("%s (h3's) is not in the released list %+v", ip, rel.Released)
		}
		if d := ipamIPState(t, h1, ip); d.State == "allocated" {
			t.Errorf("%s still allocated after removing h3: %+v", ip, d)
		}
	}
	if d := ipamIPState(t, h2, h1borrow.IP); d.State != "allocated" || d.Attributes.Handle != "rm.h1.borrow" || d.BlockOwner != "" {
		t.Errorf("h1's address %s borrowed in h3's block after the removal: %+v; want still allocated, block unclaimed", h1borrow.IP, d)
	}
	for _, a := range h1own[:3] {
		if d := ipamIPState(t, h2, a.IP); d.State != "allocated" || d.BlockOwner != "h1" {
			t.Errorf("h1's %s after removing h3: %+v", a.IP, d)
		}
	}
	owners := ipamBlockOwners(t, h1)
	for cidr, owner := range owners {
		if owner == "h3" {
			t.Errorf("block %s still affine to the removed h3", cidr)
		}
	}
	for _, cidr := range h3Blocks {
		switch {
		case cidr == b0:
			if o, ok := owners[b0]; !ok || o != "" || !slices.Contains(rel.BlocksUnclaimed, b0) {
				t.Errorf("block %s (h3's, with h1's borrowed address): owner %q present %t, unclaimed %v", b0, o, ok, rel.BlocksUnclaimed)
			}
		default:
			if _, ok := owners[cidr]; ok || !slices.Contains(rel.BlocksDeleted, cidr) {
				t.Errorf("h3's block %s: still there %t, deleted %v", cidr, ok, rel.BlocksDeleted)
			}
		}
	}
	var weps struct {
		Items []json.RawMessage `json:"items"`
	}
	ipamWeftJSON(t, h1, &weps, "get", "workloadendpoint", "-A", "--consistent")
	if len(weps.Items) != 0 {
		t.Errorf("WorkloadEndpoints after removing h3: %d", len(weps.Items))
	}
	// ipam check: no dead node, no dangling affinity; the only findings
	// are the test's own unattached allocations ("leaked" by definition).
	ours := map[string]bool{"rm.h1.0": true, "rm.h1.1": true, "rm.h1.2": true, "rm.h1.borrow": true}
	rep := ipamCheck(t, h2)
	for _, p := range rep.Problems {
		if p.Kind != ipam.ProblemLeaked || !ours[p.Handle] {
			t.Errorf("ipam check after removing h3: %+v", p)
		}
	}
	// The unclaimed block goes once its last address does.
	ipamMustRelease(t, h2, "rm.h1.borrow")
	if _, ok := ipamBlockOwners(t, h1)[b0]; ok {
		t.Errorf("unclaimed block %s still exists after its last address was released", b0)
	}

	// GC: an allocation for a WorkloadEndpoint that does not exist is
	// released within a bounded time; a live workload's is not.
	w1 := site.AddWorkload(h1, "w1")
	out, err = h1.Weft("workload", "add", "w1", "--netns", w1.Path())
	if err != nil {
		t.Fatalf("weft workload add w1: %v", err)
	}
	w1IP := firstIPv4(out)
	reclaimedBefore := ipamMetric(t, site, h1, "weft_ipam_allocations_gc_reclamations_total") +
		ipamMetric(t, site, h2, "weft_ipam_allocations_gc_reclamations_total")
	ghost := ipamMustAssign(t, h2, "ghost", ipam.AssignRequest{Attrs: ipam.Attributes{
		Namespace: "default", Workload: "ghost", WorkloadEndpoint: "default/h2-weft-ghost-eth0", Type: ipam.TypeWorkload,
	}})
	start := time.Now()
	ipamWaitFor(t, 60*time.Second, "the GC releasing the leaked "+ghost.IP, func() error {
		if d := ipamIPState(t, h1, ghost.IP); d.State == "allocated" {
			return fmt.Errorf("%s still allocated to %s", ghost.IP, d.Attributes.Handle)
		}
		return nil
	})
	t.Logf("GC released %s after %s", ghost.IP, time.Since(start).Round(time.Millisecond))
	ipamWaitFor(t, 30*time.Second, "gc reclamations counted", func() error {
		n := ipamMetric(t, site, h1, "weft_ipam_allocations_gc_reclamations_total") +
			ipamMetric(t, site, h2, "weft_ipam_allocations_gc_reclamations_total")
		if n < reclaimedBefore+1 {
			return fmt.Errorf("weft_ipam_allocations_gc_reclamations_total %v, was %v", n, reclaimedBefore)
		}
		return nil
	})
	if d := ipamIPState(t, h2, w1IP); d.State != "allocated" {
		t.Errorf("live workload w1's %s after GC passes: %+v", w1IP, d)
	}
	for _, a := range h1own[:3] {
		if d := ipamIPState(t, h2, a.IP); d.State != "allocated" {
			t.Errorf("%s (no WorkloadEndpoint reference: not the GC's to judge) after GC passes: %+v", a.IP, d)
		}
	}
	if _, err := h1.Weft("workload", "del", "w1"); err != nil {
		t.Errorf("weft workload del w1: %v", err)
	}
}

// TestIPAMWorkloadsShowConfigureRelease: `weft workload add` takes its
// address from a block of its own node; `weft ipam show` (--show-blocks,
// --ip, --show-configuration, --show-borrowed) reports it; `weft ipam
// configure --strictaffinity=true` makes a node without a block of a full
// pool fail instead of borrowing, and false lets it borrow again; `weft
// ipam release --ip` frees a leaked address; POST /v1/ipam/gc judges and
// releases by the grace period it is given; `weft workload del` frees the
// address.
func TestIPAMWorkloadsShowConfigureRelease(t *testing.T) {
	site, hosts := ipamCluster(t, 2, "")
	h1, h2 := hosts[0], hosts[1]
	ctx := context.Background()

	// Workloads get addresses from their own node's block.
	addrs := map[string]string{}
	for _, h := range hosts {
		name := "web-" + h.Name()
		wl := site.AddWorkload(h, name)
		out, err := h.Weft("workload", "add", name, "--netns", wl.Path(), "--label", "app=web")
		if err != nil {
			t.Fatalf("weft workload add %s: %v", name, err)
		}
		ip := firstIPv4(out)
		addrs[h.Name()] = ip
		d := ipamIPState(t, hosts[0], ip)
		if d.State != "allocated" || d.BlockOwner != h.Name() || d.Attributes == nil || d.Attributes.Node != h.Name() ||
			d.Attributes.Workload != name || d.Attributes.Type != ipam.TypeWorkload || len(d.UsedBy) != 1 || d.Pool != "default-ipv4" {
			t.Errorf("weft ipam show --ip %s (%s on %s): %+v", ip, name, h.Name(), d)
		}
		if eth0, err := wl.Exec("ip", "-o", "-4", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(eth0, " "+ip+"/32 ") {
			t.Errorf("%s's eth0: %q, %v; want %s/32", name, eth0, err, ip)
		}
	}
	var cliIP struct {
		IP ipam.IPDetail `json:"ip"`
	}
	ipamWeftJSON(t, h2, &cliIP, "ipam", "show", "--ip", addrs["h1"])
	if cliIP.IP.State != "allocated" || cliIP.IP.BlockOwner != "h1" {
		t.Errorf("weft ipam show --ip %s -o json: %+v", addrs["h1"], cliIP.IP)
	}
	owners := ipamBlockOwners(t, h1)
	for node, ip := range addrs {
		found := false
		for cidr, owner := range owners {
			if netip.MustParsePrefix(cidr).Contains(netip.MustParseAddr(ip)) {
				found = owner == node
			}
		}
		if !found {
			t.Errorf("%s's workload address %s is not in a block of %s: %v", node, ip, node, owners)
		}
	}
	table, err := h1.Weft("ipam", "show", "--show-blocks")
	if err != nil || !strings.Contains(table, "10.244.0.0/16") || !strings.Contains(table, "Block") {
		t.Errorf("weft ipam show --show-blocks:\n%s%v", table, err)
	}

	// Configuration: strict affinity off, then on.
	config := func() map[string]string {
		m := map[string]string{}
		for _, r := range ipamShow(t, h2, "--show-configuration").Configuration {
			m[r.Property] = r.Value
		}
		return m
	}
	if c := config(); c["StrictAffinity"] != "false" || c["AutoAllocateBlocks"] != "true" {
		t.Errorf("default configuration %v", c)
	}
	// Pool strict: two /30 blocks; h1 claims both (4 + 1 addresses),
	// leaving 3 free in its second block and no free block for h2.
	f := ipamManifest(t, h1, "strict.yaml", ipamPoolYAML("strict", "10.248.0.0/29", 30, ""))
	if out, err := h1.Weft("apply", "-f", f); err != nil {
		t.Fatalf("weft apply strict: %v\n%s", err, out)
	}
	for i := range 5 {
		if a := ipamMustAssign(t, h1, fmt.Sprintf("strict.h1.%d", i), ipam.AssignRequest{Pools: []string{"strict"}}); a.Borrowed {
			t.Fatalf("h1 borrowed %+v", a)
		}
	}
	if out, err := h1.Weft("ipam", "configure", "--strictaffinity=true"); err != nil || !strings.Contains(out, "StrictAffinity to: true") {
		t.Fatalf("weft ipam configure --strictaffinity=true: %q, %v", out, err)
	}
	if c := config(); c["StrictAffinity"] != "true" {
		t.Errorf("configuration after configure: %v", c)
	}
	before := ipamReadState(t, h2)
	ws := site.AddWorkload(h2, "borrower")
	ipamExpectRefused(t, h2, before, []string{"pool exhausted", "strictAffinity"}, "workload", "add", "borrower", "--netns", ws.Path(), "--pool", "strict")
	// A specific address in h1's block is refused to h2 too.
	ipamExpectRefused(t, h2, before, []string{"10.248.0.7"}, "workload", "add", "borrower", "--netns", ws.Path(), "--ip", "10.248.0.7")
	if _, err := h2.Weft("ipam", "configure", "--strictaffinity=false"); err != nil {
		t.Fatal(err)
	}
	out, err := h2.Weft("workload", "add", "borrower", "--netns", ws.Path(), "--pool", "strict")
	if err != nil {
		t.Fatalf("weft workload add borrower once borrowing is allowed: %v", err)
	}
	bIP := firstIPv4(out)
	borrowed := ipamShow(t, h1, "--show-borrowed").Borrowed
	if len(borrowed) != 1 || borrowed[0].IP != bIP || borrowed[0].BorrowingNode != "h2" || borrowed[0].BlockOwner != "h1" ||
		!strings.Contains(borrowed[0].AllocatedTo, "borrower") {
		t.Errorf("weft ipam show --show-borrowed: %+v; want %s borrowed by h2 from h1", borrowed, bIP)
	}
	if out, err := h2.Weft("ipam", "configure", "--strictaffinity=maybe"); err == nil {
		t.Errorf("weft ipam configure --strictaffinity=maybe succeeded: %s", out)
	}

	// weft ipam release --ip frees a leaked address (held by a handle
	// nothing uses).
	leakIP := ipamIPState(t, h1, "10.248.0.0")
	if leakIP.State != "allocated" || leakIP.Attributes.Handle != "strict.h1.0" {
		t.Fatalf("10.248.0.0: %+v", leakIP)
	}
	out, err = h2.Weft("ipam", "release", "--ip", "10.248.0.0")
	if err != nil || !strings.Contains(out, "Released 10.248.0.0") {
		t.Errorf("weft ipam release --ip 10.248.0.0: %q, %v", out, err)
	}
	if d := ipamIPState(t, h1, "10.248.0.0"); d.State != "free" {
		t.Errorf("10.248.0.0 after release: %+v", d)
	}

	// POST /v1/ipam/gc: an allocation whose WorkloadEndpoint does not
	// exist is a candidate; it is released only once it has been one for
	// the grace period given (none given: the configured 15 minutes).
	ghost := ipamMustAssign(t, h2, "ghost", ipam.AssignRequest{Attrs: ipam.Attributes{
		Namespace: "default", Workload: "ghost", WorkloadEndpoint: "default/h2-weft-ghost-eth0",
	}})
	gc := func(grace *int64) ipam.GCResponse {
		t.Helper()
		resp, err := ipamClient(h1).IPAMGC(ctx, ipam.GCRequest{GracePeriodSeconds: grace})
		if err != nil {
			t.Fatalf("POST /v1/ipam/gc: %v", err)
		}
		return resp
	}
	hour, zero := int64(3600), int64(0)
	for _, grace := range []*int64{&hour, nil} {
		resp := gc(grace)
		if resp.Candidates != 1 || !slices.Equal(resp.CandidateHandles, []string{"ghost"}) || len(resp.Reclaimed) != 0 {
			t.Errorf("gc (grace %v): %+v; want only ghost as a candidate, nothing released", grace, resp)
		}
	}
	if d := ipamIPState(t, h2, ghost.IP); d.State != "allocated" {
		t.Errorf("ghost's %s after gc within the grace period: %+v", ghost.IP, d)
	}
	resp := gc(&zero)
	if len(resp.Reclaimed) != 1 || resp.Reclaimed[0].IP != ghost.IP || resp.Reclaimed[0].Handle != "ghost" {
		t.Errorf("gc with grace 0: %+v; want ghost's %s released", resp, ghost.IP)
	}
	if d := ipamIPState(t, h2, ghost.IP); d.State != "free" {
		t.Errorf("ghost's %s after gc: %+v", ghost.IP, d)
	}
	for _, ip := range []string{addrs["h1"], addrs["h2"], bIP} {
		if d := ipamIPState(t, h2, ip); d.State != "allocated" {
			t.Errorf("workload address %s after gc: %+v", ip, d)
		}
	}

	// workload del releases the address.
	if _, err := h2.Weft("workload", "del", "borrower"); err != nil {
		t.Fatal(err)
	}
	if d := ipamIPState(t, h1, bIP); d.State != "free" {
		t.Errorf("%s after weft workload del: %+v", bIP, d)
	}
	if b := ipamShow(t, h1, "--show-borrowed").Borrowed; len(b) != 0 {
		t.Errorf("borrowed after the borrower left: %+v", b)
	}
	for i := 1; i < 5; i++ {
		ipamMustRelease(t, h1, fmt.Sprintf("strict.h1.%d", i))
	}
	for _, h := range hosts {
		if _, err := h.Weft("workload", "del", "web-"+h.Name()); err != nil {
			t.Errorf("weft workload del web-%s: %v", h.Name(), err)
		}
	}
	if out, err := h1.Weft("ipam", "check"); err != nil || !strings.Contains(out, "found 0 problems") {
		t.Errorf("weft ipam check at the end:\n%s%v", out, err)
	}
}
