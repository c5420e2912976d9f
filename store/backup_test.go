package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSnapshotSaveAndDisasterRecovery(t *testing.T) {
	c := newCluster(t, 3)
	c.start("n1", "n2", "n3")
	for i := 0; i < 100; i++ {
		mustPut(t, c.running()[i%3], Key{Kind: "WorkloadEndpoint", Namespace: "ns", Name: fmt.Sprint(i)}, fmt.Sprint(i))
	}
	last := mustPut(t, c.leader(), Key{Kind: "IPPool", Name: "last"}, "x")

	// A consistent backup from a follower holds every acknowledged write.
	var consistent bytes.Buffer
	info, err := c.followers()[0].SaveSnapshot(ctxTimeout(t, 10*time.Second), &consistent)
	if err != nil || !info.Consistent || info.Revision < last.Revision {
		t.Fatalf("backup: %+v, %v (last write at %d)", info, err, last.Revision)
	}
	want, _ := dumpNode(c.leader())

	// Quorum lost: two nodes die. The survivor still backs up its state.
	survivor := c.followers()[0]
	for _, n := range c.running() {
		if n != survivor {
			c.kill(n.name)
		}
	}
	var local bytes.Buffer
	info, err = survivor.SaveSnapshot(ctxTimeout(t, 2*time.Second), &local)
	if err != nil || info.Consistent || info.Revision < last.Revision {
		t.Fatalf("backup without quorum: %+v, %v", info, err)
	}
	c.kill(survivor.name)

	// Rebuild a one-node cluster from the backup on a fresh machine.
	file := filepath.Join(t.TempDir(), "backup.snap")
	if err := os.WriteFile(file, local.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := newCluster(t, 3)
	cfg := c2.config("r1")
	cfg.Join = nil
	// An applied-index record of the old history (a raft directory whose
	// wal/ and snapshots/ were moved away, not the record): restore drops
	// it, or it would hold the new history to an index it never had.
	if err := os.MkdirAll(raftDir(cfg.DataDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(raftDir(cfg.DataDir), appliedFileName), encodeApplied(info.Revision+1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RestoreSnapshot(cfg.DataDir, file, "r1", cfg.Advertise); err != nil {
		t.Fatal(err)
	}
	r1 := c2.open(cfg)
	if r1.MinRevision() != 0 {
		t.Errorf("MinRevision %d after a restore: the old history's record was kept", r1.MinRevision())
	}
	got, rev := dumpNode(r1)
	if rev < info.Revision {
		t.Fatalf("restored revision %d < backup %d", rev, info.Revision)
	}
	for k, o := range want {
		if g, ok := got[k]; !ok || string(g.Value) != string(o.Value) || g.Revision != o.Revision || g.UID != o.UID {
			t.Fatalf("%v differs after restore: %+v vs %+v", k, g, o)
		}
	}
	tok, err := r1.TokenString()
	if err != nil || tok != c.token {
		t.Fatalf("token after restore: %v (same CA and token expected)", err)
	}
	after := mustPut(t, r1, Key{Kind: "IPPool", Name: "after-restore"}, "y")
	if after.Revision <= info.Revision {
		t.Errorf("revision went back: %d after a backup at %d", after.Revision, info.Revision)
	}
	// Others join the restored cluster with the old token, from empty dirs.
	c2.token = c.token
	c2.join("r2")
	c2.join("r3")
	c2.waitVoters(3, "r1", "r2", "r3")
	c2.waitConverged()
	mustPut(t, c2.node("r3"), Key{Kind: "IPPool", Name: "from-r3"}, "z")

	// Restore refuses to overwrite state, and damaged files.
	if err := RestoreSnapshot(cfg.DataDir, file, "r1", cfg.Advertise); err == nil || !strings.Contains(err.Error(), "already holds raft state") {
		t.Errorf("restore over existing state: %v", err)
	}
	damaged := filepath.Join(t.TempDir(), "damaged.snap")
	b := consistent.Bytes()
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(damaged, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RestoreSnapshot(t.TempDir(), damaged, "r9", "127.0.0.1:1"); !errors.Is(err, ErrBadSnapshot) {
		t.Errorf("restore of a damaged file: %v", err)
	}
}
