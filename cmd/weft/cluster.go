package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/node/config"
	"github.com/weftnet/weft/node/localapi"
)

func newClusterCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Datastore membership"}
	cmd.AddCommand(&cobra.Command{
		Use:   "members",
		Short: "List the raft members: name, address, role, health, last contact",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := g.checkOutput("table", "wide", "json", "yaml"); err != nil {
				return err
			}
			resp, err := g.client().Members(c.Context())
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, resp)
			}
			t := newTable(c.OutOrStdout(), "NAME", "ADDRESS", "ROLE", "HEALTH", "LAST CONTACT")
			for _, m := range resp.Members {
				health := "healthy"
				if !m.Healthy {
					health = "unhealthy"
				}
				last := "-"
				switch {
				case m.LastContactSeconds < 0:
					last, health = "unknown", "unknown"
				case m.Role != "leader":
					last = (time.Duration(m.LastContactSeconds * float64(time.Second))).Round(time.Millisecond).String()
				}
				t.row(m.Name, m.Address, m.Role, health, last)
			}
			if err := t.flush(); err != nil {
				return err
			}
			if resp.Warning != "" {
				fmt.Fprintln(c.ErrOrStderr(), "warning: "+resp.Warning)
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "remove NODE",
		Short: "Remove a dead node from the cluster and release what it held (IPAM, endpoints, BGP peers)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			resp, err := g.client().RemoveMember(c.Context(), args[0])
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, resp)
			}
			fmt.Fprintf(c.OutOrStdout(), "Removed node %s (raft member removed: %t, %d resources deleted)\n", args[0], resp.RemovedFromRaft, len(resp.Deleted))
			return nil
		},
	})
	return cmd
}

func newTokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "The cluster's join token"}
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Print the join token (root only, on a voter)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			resp, err := g.client().Token(c.Context())
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, resp)
			}
			_, err = fmt.Fprintln(c.OutOrStdout(), resp.Token)
			return err
		},
	})
	return cmd
}

func newSnapshotCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Back up and restore the datastore"}
	cmd.AddCommand(&cobra.Command{
		Use:   "save FILE",
		Short: "Write a consistent backup of the datastore to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			resp, err := g.client().Snapshot(c.Context())
			if err != nil {
				return err
			}
			body := resp.Body
			defer body.Close()
			dir := filepath.Dir(args[0])
			tmp, err := os.CreateTemp(dir, ".weft-snapshot-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			n, err := io.Copy(tmp, body)
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			rev := resp.Trailer.Get(localapi.TrailerSnapshotRevision)
			if err == nil && rev == "" {
				// The agent writes the trailer only after a complete backup.
				err = errors.New("the backup stream ended early")
			}
			if err != nil {
				return fmt.Errorf("writing the snapshot: %w (the agent may have failed: see its log)", err)
			}
			if err := os.Chmod(tmp.Name(), 0o600); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Saved snapshot to %s (%s bytes, revision %s)\n", args[0], strconv.FormatInt(n, 10), rev)
			if resp.Trailer.Get(localapi.TrailerSnapshotConsistent) != "true" {
				fmt.Fprintln(c.ErrOrStderr(), "warning: no leader confirmed it: the backup is this node's local state (Consistent: false)")
			} else {
				fmt.Fprintln(c.OutOrStdout(), "Consistent: true")
			}
			return nil
		},
	})
	var cfgPath string
	restore := &cobra.Command{
		Use:   "restore FILE",
		Short: "Rebuild this node's data directory as a new single-node cluster from a backup (agent stopped)",
		Long: `Rebuild this node's data directory as a new single-node cluster from a backup that
other nodes can then join: the recovery after losing quorum. Stop the agent and move
the old data directory's raft/ away first. See docs/datastore.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := node.RestoreSnapshot(cfg, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Restored %s into %s; start the agent, then join the other nodes with the same token\n", args[0], cfg.Node.DataDir)
			return nil
		},
	}
	restore.Flags().StringVarP(&cfgPath, "config", "c", DefaultConfigPath, "the agent's TOML configuration (data_dir, node name, address)")
	cmd.AddCommand(restore)
	return cmd
}
