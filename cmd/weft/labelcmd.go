package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/node/localapi"
)

func newLabelCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "label",
		Short: "Change the labels of a workload, a namespace or a node (kubectl's semantics: k=v sets, k- removes)",
	}
	var (
		namespace string
		overwrite bool
	)
	workload := &cobra.Command{
		Use:   "workload NAME k=v... k-...",
		Short: "Label a workload: takes effect in place (it keeps its veth and addresses)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return runLabel(c, g, "workload", namespace, args[0], args[1:], overwrite)
		},
	}
	workload.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	workload.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing the value of an existing label")
	ns := &cobra.Command{
		Use:   "namespace NS k=v... k-...",
		Short: "Label a namespace (the labels of its profile kns.<NS>; namespaceSelectors match them)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return runLabel(c, g, "namespace", "", args[0], args[1:], overwrite)
		},
	}
	ns.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing the value of an existing label")
	node := &cobra.Command{
		Use:   "node NAME k=v... k-...",
		Short: "Label a node (nodeSelector, peerSelector, pools' nodeSelector); takes effect at once",
		Long: `Label a node: k=v sets a label (an existing one only with --overwrite), k- removes one.
The labels of a node's [node] labels in its TOML are applied again at its every start and win
for their keys; labels on other keys stay across restarts (docs/bgp.md).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return runLabel(c, g, "node", "", args[0], args[1:], overwrite)
		},
	}
	node.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing the value of an existing label")
	cmd.AddCommand(workload, ns, node)
	return cmd
}

// runLabel parses kubectl-style arguments (k=v sets, k- removes) and asks
// the agent.
func runLabel(c *cobra.Command, g *globals, kind, namespace, name string, args []string, overwrite bool) error {
	req := localapi.LabelRequest{Kind: kind, Namespace: namespace, Name: name, Set: map[string]string{}, Overwrite: overwrite}
	for _, a := range args {
		if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			if k == "" {
				return fmt.Errorf("%q: want key=value or key-", a)
			}
			req.Remove = append(req.Remove, k)
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q: want key=value or key-", a)
		}
		if _, dup := req.Set[k]; dup {
			return fmt.Errorf("label %q given twice", k)
		}
		req.Set[k] = v
	}
	resp, err := g.client().Label(c.Context(), req)
	if err != nil {
		return err
	}
	if g.output == "json" || g.output == "yaml" {
		return printStructured(c.OutOrStdout(), g.output, resp)
	}
	w := c.OutOrStdout()
	for _, n := range resp.Notes {
		fmt.Fprintln(c.ErrOrStderr(), n)
	}
	what := kind + "/" + name
	if kind == "workload" && namespace != "" {
		what = kind + "/" + namespace + "/" + name
	}
	if !resp.Changed {
		fmt.Fprintf(w, "%s not labeled\n", what)
		return nil
	}
	keys := make([]string, 0, len(resp.Labels))
	for k := range resp.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pairs := make([]string, len(keys))
	for i, k := range keys {
		pairs[i] = k + "=" + resp.Labels[k]
	}
	fmt.Fprintf(w, "%s labeled (%s)\n", what, strings.Join(pairs, ","))
	return nil
}
