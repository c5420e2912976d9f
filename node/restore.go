package node

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/node/calcrun"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/store"
)

// RestoreSnapshot rebuilds this node's data directory as a new
// single-node cluster from a backup (`weft snapshot restore`): the disaster
// recovery after quorum loss (docs/datastore.md). The agent must be
// stopped: the data directory lock is taken for the duration.
func RestoreSnapshot(cfg *config.Config, file string) error {
	lock, err := lockDataDir(cfg.Node.DataDir)
	if err != nil {
		return fmt.Errorf("%w (stop the agent before restoring)", err)
	}
	defer lock.release()
	advertise := cfg.AdvertiseAddrPort()
	if !advertise.IsValid() {
		addr, err := autodetectAddress()
		if err != nil {
			return err
		}
		advertise = netip.AddrPortFrom(addr, cfg.Cluster.ListenAddrPort().Port())
	}
	if err := store.RestoreSnapshot(cfg.Node.DataDir, file, cfg.Node.Name, advertise.String()); err != nil {
		return err
	}
	// The restored cluster starts a new history: the dataplane's mark of
	// the last revision it applied belongs to the old one.
	return calcrun.RemoveMark(cfg.Node.DataDir)
}
