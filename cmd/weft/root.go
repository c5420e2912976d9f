package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/node/localapi"
)

// globals are the persistent flags every command shares.
type globals struct {
	socket string
	output string
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "weft",
		Short: "weft turns a handful of machines into one networked cluster",
		Long: `weft turns a handful of bare-metal or edge machines into one networked cluster,
without Kubernetes and without an API server: a replicated datastore, Calico-style IPAM
and policy, BGP, VXLAN and WireGuard, in one binary run by systemd.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	defSocket := localapi.DefaultSocket
	if s := os.Getenv("WEFT_SOCKET"); s != "" {
		defSocket = s
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", defSocket, "the agent's local API socket (env WEFT_SOCKET)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table|wide|json|yaml")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "wide", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w (see `%s --help`)", c.CommandPath(), err, c.CommandPath())
	})

	root.AddCommand(
		newVersionCommand(g),
		newAgentCommand(),
		newConfigCommand(g),
		newNodeCommand(g),
		newWriteCommand(g, "apply", "Create or update resources from YAML/JSON (one or many documents, or a List)"),
		newWriteCommand(g, "create", "Create resources; fails if one already exists"),
		newWriteCommand(g, "replace", "Replace resources; fails if one does not exist"),
		newGetCommand(g),
		newDeleteCommand(g),
		newInstallCNICommand(),
		newClusterCommand(g),
		newTokenCommand(g),
		newSnapshotCommand(g),
		newIPAMCommand(g),
		newWorkloadCommand(g),
		newLabelCommand(g),
		newPolicyCommand(g),
		newBGPCommand(g),
		newPatchCommand(g),
		newWireGuardCommand(g),
		newDemoCommand(),
	)
	return root
}

// client returns a local API client for the configured socket.
func (g *globals) client() *localapi.Client { return localapi.NewClient(g.socket) }

// checkOutput validates -o against the formats a command supports.
func (g *globals) checkOutput(allowed ...string) error {
	for _, a := range allowed {
		if g.output == a {
			return nil
		}
	}
	return fmt.Errorf("unsupported output format %q (want one of %v)", g.output, allowed)
}
