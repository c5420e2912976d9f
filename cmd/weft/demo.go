package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/internal/demo"
)

func newDemoCommand() *cobra.Command {
	var (
		keep, wireguard bool
		underlay, pool  string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build a 3-node cluster in network namespaces on this machine, with workloads, and walk through it",
		Long: `Build a 3-node weft cluster in network namespaces on this one machine and walk through it:
an underlay namespace (` + demo.SiteNetns + `) with a bridge, three hosts (` + demo.NetnsPrefix + `h1..h3) each
running the agent, two workloads per host; then the cluster members, IPAM, the routes weft
programmed, and a ping between every pair of workloads. Without --keep everything is removed at
the end (also on Ctrl-C or failure); with --keep it stays running, with instructions, until
` + "`weft demo down`" + `. Needs root. Nothing is created outside the demo's own namespaces and ` + demo.StateDir + `.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts := demo.Options{Keep: keep, WireGuard: wireguard, Out: c.OutOrStdout()}
			var err error
			if opts.Underlay, err = netip.ParsePrefix(underlay); err != nil {
				return fmt.Errorf("--underlay: %w", err)
			}
			if opts.Pool, err = netip.ParsePrefix(pool); err != nil {
				return fmt.Errorf("--pool: %w", err)
			}
			if opts.Exe, err = os.Executable(); err != nil {
				return fmt.Errorf("find the weft binary: %w", err)
			}
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err = demo.Run(ctx, opts)
			if errors.Is(err, demo.ErrInterrupted) {
				return errors.New("demo interrupted; everything it built was removed")
			}
			if err != nil {
				return fmt.Errorf("demo: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&wireguard, "wireguard", false, "run the cluster with WireGuard: show a host's device (wg show) and capture the underlay during the pings (it must carry WireGuard only)")
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the cluster running and print how to explore it (remove it with: weft demo down)")
	cmd.Flags().StringVar(&underlay, "underlay", demo.DefaultUnderlay.String(), "the hosts' underlay subnet (IPv4, /28 or larger)")
	cmd.Flags().StringVar(&pool, "pool", demo.DefaultPool.String(), "the workloads' IP pool (IPv4, /24 or larger)")

	cmd.AddCommand(&cobra.Command{
		Use:   "down",
		Short: "Remove everything a kept (or interrupted) demo left: agents, namespaces, " + demo.StateDir,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := demo.Down(c.OutOrStdout()); err != nil {
				return fmt.Errorf("demo down: %w", err)
			}
			return nil
		},
	})
	return cmd
}
