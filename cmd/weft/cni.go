package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/cni"
	"github.com/weftnet/weft/internal/version"
)

// runCNIPlugin serves one CNI call: a runtime execs the binary (as
// <bin-dir>/weft, the plugin type) with CNI_COMMAND in its environment and
// the network configuration on stdin. The result or the CNI error JSON goes
// to stdout; the plugin's log to stderr.
func runCNIPlugin() int {
	p := &cni.Plugin{
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		About:  fmt.Sprintf("weft CNI plugin %s", version.Version),
	}
	return p.Main()
}

func newInstallCNICommand() *cobra.Command {
	var opts cni.InstallOptions
	cmd := &cobra.Command{
		Use:   "install-cni",
		Short: "Install this binary as a CNI plugin and write a conflist for it",
		Long: `Install this binary as the CNI plugin "weft" (<bin-dir>/weft) and write the network
configuration list <conf-dir>/10-<network-name>.conflist, which points the plugin at the
agent's socket (--socket). The portmap plugin is chained when it is in the bin dir.
Both files are written atomically and only when they change.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			socket, err := c.Flags().GetString("socket")
			if err != nil {
				return err
			}
			opts.Socket = socket
			if opts.Binary, err = os.Executable(); err != nil {
				return fmt.Errorf("finding this binary: %w", err)
			}
			rep, err := cni.Install(opts)
			if err != nil {
				return err
			}
			w := c.OutOrStdout()
			fmt.Fprintf(w, "%s %s\n", changed(rep.PluginChanged, "installed", "unchanged"), rep.Plugin)
			fmt.Fprintf(w, "%s %s (network %q, socket %s", changed(rep.ConflistChanged, "wrote", "unchanged"), rep.Conflist, opts.NetworkName, opts.Socket)
			if rep.Portmap {
				fmt.Fprint(w, ", with portmap")
			}
			fmt.Fprintln(w, ")")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.BinDir, "bin-dir", cni.DefaultBinDir, "directory the container runtime looks for CNI plugins in")
	f.StringVar(&opts.ConfDir, "conf-dir", cni.DefaultConfDir, "directory the container runtime reads network configurations from")
	f.StringVar(&opts.NetworkName, "network-name", cni.DefaultNetworkName, "name of the CNI network")
	return cmd
}

func changed(c bool, yes, no string) string {
	if c {
		return yes
	}
	return no
}
