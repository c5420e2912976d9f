package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testbed"
)

// TestDatastoreSnapshotRestore follows the disaster recovery of
// docs/datastore.md. `weft snapshot save` on a follower writes a backup
// (mode 0600). Then quorum is lost for good (two of three voters killed):
// the survivor still saves a backup of its local state, holding every
// acknowledged write. Every agent is stopped; host 1 gets a fresh data dir
// and `weft snapshot restore FILE --config ...` rebuilds it as a one-node
// cluster that, started, holds exactly the backed-up objects and the same
// join token; hosts 2 and 3, with fresh data dirs, join it with that token
// and see the objects; new writes work from every node.
func TestDatastoreSnapshotRestore(t *testing.T) {
	c := newDatastoreCluster(t, 3, testbed.Options{})
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	c.waitMembers(h1, 30*time.Second, wantMembers{voters: names(c.hosts...)})
	for i, h := range c.hosts {
		c.mustApply(h, globalNetworkSet("gns-"+h.Name(), fmt.Sprintf("192.0.2.%d/32", i+1))+"---\n"+
			ipPool("pool-"+h.Name(), fmt.Sprintf("10.%d.0.0/24", 100+i)))
	}
	token, err := os.ReadFile(c.tokenFile())
	if err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(saved, token, 0o600); err != nil {
		t.Fatal(err)
	}

	// A backup with quorum, from a follower.
	dir := t.TempDir()
	withQuorum := filepath.Join(dir, "quorum.snap")
	r := c.weft(h2, "", "snapshot", "save", withQuorum)
	if r.code != 0 || !strings.Contains(r.stdout, withQuorum) {
		t.Fatalf("h2: %s", r)
	}
	if fi, err := os.Stat(withQuorum); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("backup %s: %v, %v; want a non-empty file with mode 0600", withQuorum, fi, err)
	}
	c.mustApply(h1, globalNetworkSet("after-first-backup", "192.0.2.99/32"))
	c.waitObject(h2, "globalnetworksets", "after-first-backup", 20*time.Second)
	wantGNS := c.listNames(h2, "globalnetworksets")
	wantPools := c.listNames(h2, "ippools")
	wantNodes := c.listNames(h2, "nodes")

	// Quorum lost for good: h1 and h3 crash; h2 backs up what it has.
	for _, h := range []*testbed.Host{h1, h3} {
		if err := h.Kill9(); err != nil {
			t.Fatal(err)
		}
	}
	backup := filepath.Join(dir, "survivor.snap")
	start := time.Now()
	r = c.weft(h2, "", "snapshot", "save", backup)
	if r.code != 0 {
		t.Fatalf("h2 without quorum: %s", r)
	}
	t.Logf("backup without quorum: %s in %s", strings.TrimSpace(r.stdout), time.Since(start).Round(time.Millisecond))
	if !strings.Contains(h2.Logs(), "no quorum: backing up this replica's local state") {
		t.Errorf("h2's log does not say the backup without quorum is its local state")
	}
	if err := h2.StopAgent(); err != nil {
		t.Fatal(err)
	}

	// Restore on h1 into a fresh data dir (the old one is kept aside).
	if err := os.Rename(h1.DataDir(), h1.DataDir()+".old"); err != nil {
		t.Fatal(err)
	}
	r = c.weft(h1, "", "snapshot", "restore", backup, "--config", h1.ConfigPath())
	if r.code != 0 {
		t.Fatalf("h1: %s", r)
	}
	t.Logf("restore: %s", strings.TrimSpace(r.stdout))
	// Restoring twice into the same data dir is refused.
	if r := c.weft(h1, "", "snapshot", "restore", backup, "--config", h1.ConfigPath()); r.code == 0 {
		t.Errorf("a second restore over the restored data dir succeeded: %s", r)
	} else {
		checkOneLineError(t, r, "raft")
	}
	restoredToken, err := os.ReadFile(filepath.Join(h1.DataDir(), "token"))
	if err != nil || strings.TrimSpace(string(restoredToken)) != strings.TrimSpace(string(token)) {
		t.Errorf("token after restore %q (%v), want the cluster's token", restoredToken, err)
	}
	if err := h1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	c.waitReady(h1)
	c.waitMembers(h1, 30*time.Second, wantMembers{voters: []string{h1.Name()}})
	if got := c.listNames(h1, "globalnetworksets"); fmt.Sprint(got) != fmt.Sprint(wantGNS) {
		t.Errorf("restored globalnetworksets %v, want %v", got, wantGNS)
	}
	if got := c.listNames(h1, "ippools"); fmt.Sprint(got) != fmt.Sprint(wantPools) {
		t.Errorf("restored ippools %v, want %v", got, wantPools)
	}
	if got := c.listNames(h1, "nodes"); fmt.Sprint(got) != fmt.Sprint(wantNodes) {
		t.Errorf("restored nodes %v, want %v", got, wantNodes)
	}

	// h2 and h3 rejoin from fresh data dirs with the same token.
	for _, h := range []*testbed.Host{h2, h3} {
		if err := os.Rename(h.DataDir(), h.DataDir()+".old"); err != nil {
			t.Fatal(err)
		}
		h.SetJoin(saved, h1)
		if err := h.StartAgent(); err != nil {
			t.Fatal(err)
		}
	}
	c.waitReady(h2, h3)
	for _, h := range c.hosts {
		c.waitMembers(h, 30*time.Second, wantMembers{voters: names(c.hosts...)})
		if got := c.listNames(h, "globalnetworksets"); fmt.Sprint(got) != fmt.Sprint(wantGNS) {
			t.Errorf("%s: globalnetworksets %v, want %v", h.Name(), got, wantGNS)
		}
	}
	for _, h := range c.hosts {
		c.mustApply(h, globalNetworkSet("restored-"+h.Name(), "192.0.2.50/32"))
	}
	for _, h := range c.hosts {
		for _, w := range c.hosts {
			c.waitObject(h, "globalnetworksets", "restored-"+w.Name(), 20*time.Second)
		}
	}
	stopAll(t, c.hosts)
}
