package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
)

func newWireGuardCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wireguard",
		Short: "This node's WireGuard: key rotation, the userspace device process",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate-key",
		Short: "Rotate this node's WireGuard key without losing traffic",
		Long: `Rotate this node's WireGuard key: a new key is made, this node's device switches to it,
then it is published and every other node switches its peer. Traffic is delayed for as long
as the other nodes take to learn the key, never dropped. The command answers when the new
key is published and current.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := g.checkOutput("table", "json", "yaml"); err != nil {
				return err
			}
			resp, err := g.client().RotateWireGuardKey(c.Context())
			if err != nil {
				return err
			}
			if g.output != "table" {
				return printStructured(c.OutOrStdout(), g.output, resp)
			}
			fmt.Fprintf(c.OutOrStdout(), "rotated: %s -> %s\n", resp.PreviousPublicKey, resp.PublicKey)
			return nil
		},
	})
	var iface, path string
	device := &cobra.Command{
		Use:   "device",
		Short: "Run the userspace WireGuard device process (started by the agent or by weft-wireguard.service)",
		Long: `Run the userspace WireGuard device (wireguard-go) for one interface, with its UAPI socket in
/var/run/wireguard: the agent starts it when the kernel has no WireGuard, and configures it
over the socket. It outlives agent restarts and upgrades, which is what keeps them hitless.
With --config (the weft-wireguard systemd unit) it reads wireguard.enabled and
wireguard.interface, and exits at once when WireGuard is off or the kernel has it.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var cfg *config.Config
			if path != "" {
				var err error
				if cfg, err = config.Load(path); err != nil {
					return err
				}
			}
			signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log, err := newLogger(os.Stderr, config.Log{Level: "info", Format: "text"})
			if cfg != nil {
				log, err = newLogger(os.Stderr, cfg.Log)
			}
			if err != nil {
				return err
			}
			ready := func() { _, _ = daemon.SdNotify(false, daemon.SdNotifyReady) }
			return node.RunWireGuardDevice(ctx, cfg, iface, log, ready)
		},
	}
	device.Flags().StringVar(&iface, "interface", "", "the device's interface name")
	device.Flags().StringVarP(&path, "config", "c", "", "the agent's TOML configuration (for the systemd unit)")
	cmd.AddCommand(device)
	return cmd
}

// printWireGuard writes the WireGuard part of `weft node status`.
func printWireGuard(w io.Writer, st *localapi.WireGuardStatus, wide bool) error {
	kind := st.Kind
	switch {
	case kind == "":
		kind = "none"
	case st.DevicePID != 0:
		kind += fmt.Sprintf(", device process %d", st.DevicePID)
		if st.DeviceBinaryReplaced {
			kind += " (runs a replaced binary: restart weft-wireguard to update it; that interrupts traffic briefly)"
		}
	}
	fmt.Fprintf(w, "\nWireGuard: %s (%s), port %d, MTU %d, key %s\n", st.Interface, kind, st.ListenPort, st.MTU, st.PublicKey)
	if st.Problem != "" {
		fmt.Fprintf(w, "  problem: %s\n", st.Problem)
	}
	if len(st.Blocked) > 0 {
		fmt.Fprintf(w, "  not reached (wireguard.require, no usable key): %s\n", strings.Join(st.Blocked, ", "))
	}
	cols := []string{"PEER NODE", "ENDPOINT", "ALLOWED IPS", "LATEST HANDSHAKE", "TRANSFER (RX/TX)"}
	if wide {
		cols = append(cols, "PUBLIC KEY")
	}
	t := newTable(w, cols...)
	for _, p := range st.Peers {
		hs := "never"
		if !p.LatestHandshake.IsZero() {
			hs = time.Since(p.LatestHandshake).Truncate(time.Second).String() + " ago"
		}
		ips := strings.Join(p.AllowedIPs, ",")
		if !wide && len(ips) > 60 {
			ips = ips[:57] + "..."
		}
		row := []string{orDash(p.Node), orDash(p.Endpoint), ips, hs, fmt.Sprintf("%s / %s", bytesString(p.ReceiveBytes), bytesString(p.TransmitBytes))}
		if wide {
			row = append(row, p.PublicKey)
		}
		t.row(row...)
	}
	return t.flush()
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
