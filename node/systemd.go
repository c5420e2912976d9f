package node

import (
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks sd_notify to systemd. Outside systemd (no NOTIFY_SOCKET)
// every call is a cheap no-op.
type notifier struct {
	log *slog.Logger
}

func (n notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Debug("sd_notify failed", "state", state, "err", err)
	}
}

func (n notifier) ready(status string)  { n.send(daemon.SdNotifyReady + "\nSTATUS=" + status) }
func (n notifier) status(status string) { n.send("STATUS=" + status) }
func (n notifier) stopping()            { n.send(daemon.SdNotifyStopping) }
func (n notifier) watchdog()            { n.send(daemon.SdNotifyWatchdog) }

// watchdogInterval is how often to ping systemd's watchdog: half of
// WatchdogSec, or 0 when the watchdog is not enabled for this process.
func watchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}
