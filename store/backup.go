package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/weftnet/weft/store/pki"
)

// SnapshotInfo describes a backup written by SaveSnapshot.
type SnapshotInfo struct {
	// Revision is the store revision the backup holds.
	Revision uint64 `json:"revision"`
	// Consistent is true when the leader confirmed that the backup holds
	// every write acknowledged before the call. Without a quorum it is
	// false: the backup is this replica's state (the best there is after
	// losing quorum).
	Consistent bool `json:"consistent"`
}

// SaveSnapshot writes a consistent backup of the whole state to w (the
// format RestoreSnapshot and raft snapshots share, with a checksum). With
// no leader reachable within 5 s (or half of ctx's time) it backs up the
// local state instead and says so in SnapshotInfo.
func (n *Node) SaveSnapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	var info SnapshotInfo
	wait := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2) // leave time for the local fallback
	}
	cctx, cancel := context.WithTimeout(ctx, wait)
	_, err := n.ConsistentRevision(cctx)
	cancel()
	switch {
	case err == nil:
		info.Consistent = true
	case errors.Is(err, ErrNoLeader) && ctx.Err() == nil:
		n.log.Warn("no quorum: backing up this replica's local state", "error", err)
	default:
		return info, err
	}
	rev, err := n.fsm.Backup(w)
	if err != nil {
		return info, fmt.Errorf("write snapshot: %w", err)
	}
	info.Revision = rev
	return info, nil
}

// RestoreSnapshot rebuilds a data directory, offline, from a backup written
// by SaveSnapshot (or a raft snapshot's state.bin): the node becomes the
// single voter of a cluster holding the backup's data and the same CA and
// join token, which other nodes join as usual (from empty data dirs). It is
// the disaster recovery after losing quorum; see docs/datastore.md.
//
// dataDir must not hold raft state. The node keeps its identity if it has
// one from the backup's CA under nodeName, otherwise it gets a new
// certificate from that CA.
func RestoreSnapshot(dataDir, file, nodeName, advertise string) error {
	if err := pki.ValidateNodeName(nodeName); err != nil {
		return fmt.Errorf("restore: node name: %w", err)
	}
	if host, port, err := net.SplitHostPort(advertise); err != nil || host == "" || port == "" || port == "0" {
		return fmt.Errorf("restore: advertise address %q is not host:port", advertise)
	}
	rd := raftDir(dataDir)
	if fileExists(dirJoin(rd, raftWALName)) || fileExists(dirJoin(rd, "snapshots")) {
		return fmt.Errorf("restore: %s already holds raft state: move it away first (keep it until the restored cluster works)", rd)
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()

	var sec clusterSecrets
	found := false
	rev, err := decodeSnapshot(f, func(o Object) error {
		if o.Key == clusterSecretsKey() {
			found = true
			return json.Unmarshal(o.Value, &sec)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore: %s: %w", file, err)
	}
	if !found {
		return fmt.Errorf("restore: %s is not a weft cluster backup (no cluster secrets in it)", file)
	}
	tok, ca, err := sec.token()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}

	if err := os.MkdirAll(rd, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// A record left from the old state would hold the new one to an index
	// of another history.
	if err := os.Remove(dirJoin(rd, appliedFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore: %w", err)
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	id, err := pki.LoadIdentity(pki.Dir(dataDir))
	if err != nil || id.Name() != nodeName || id.CAFingerprint() != ca.Fingerprint() {
		if id, err = issueIdentity(ca, nodeName); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if err := id.Save(pki.Dir(dataDir)); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := pki.SaveToken(tokenPath(dataDir), tok); err != nil {
		return fmt.Errorf("restore: %w", err)
	}

	// The backup becomes the raft snapshot of a one-voter cluster; raft
	// restores it on start and new entries continue after its index, so
	// revisions never go back.
	snaps, err := raft.NewFileSnapshotStoreWithLogger(rd, 2, hclog.NewNullLogger())
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(advertise))
	defer trans.Close()
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(nodeName), Address: raft.ServerAddress(advertise)}}}
	index := max(rev, 1)
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, conf, index, trans)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := io.Copy(sink, f); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("restore: write raft snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("restore: write raft snapshot: %w", err)
	}
	logs, err := openWAL(rd, slog.New(slog.DiscardHandler))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer logs.Close()
	if err := logs.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}
