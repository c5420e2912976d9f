package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/internal/version"
)

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			info := version.Get()
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, info)
			}
			if err := g.checkOutput("table", "wide"); err != nil {
				return err
			}
			_, err := fmt.Fprintf(c.OutOrStdout(), "weft %s (commit %s, %s, %s)\n", info.Version, info.Commit, info.GoVersion, info.Platform)
			return err
		},
	}
}
