package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/node/config"
)

// DefaultConfigPath is where the packaged unit looks for the config.
const DefaultConfigPath = "/etc/weft/weft.toml"

func newAgentCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent (the systemd service)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			log, err := newLogger(os.Stderr, cfg.Log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// A failure is reported once, by main, as the one stderr line.
			return node.New(cfg, log).Run(ctx)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", DefaultConfigPath, "the agent's TOML configuration file")
	return cmd
}

// newLogger builds the agent's slog logger from log.level and log.format.
func newLogger(w io.Writer, c config.Log) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format: unknown format %q", c.Format)
}
