package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/localapi"
)

func newPatchCommand(g *globals) *cobra.Command {
	var namespace, patch string
	cmd := &cobra.Command{
		Use:   "patch KIND NAME -p JSON",
		Short: "Apply a JSON merge patch to one resource (calicoctl's patch)",
		Long: `Apply a JSON merge patch (RFC 7386) to one resource, as calicoctl patch does:
  weft patch node node-1 -p '{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}'
  weft patch bgpconfiguration default -p '{"spec":{"nodeToNodeMeshEnabled":false}}'
A null removes a field. The patch is validated like any write and applies atomically to the
version read (or to the metadata.resourceVersion it names).`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if err := g.checkOutput("table", "json", "yaml"); err != nil {
				return err
			}
			if patch == "" {
				return fmt.Errorf("%s needs -p JSON", c.CommandPath())
			}
			var obj map[string]any
			if err := json.Unmarshal([]byte(patch), &obj); err != nil {
				return fmt.Errorf("-p: not a JSON object: %w", err)
			}
			info, ok := api.LookupKind(args[0])
			if !ok {
				return fmt.Errorf("unknown resource kind %q", args[0])
			}
			resp, err := g.client().Patch(c.Context(), localapi.PatchRequest{Kind: info.Kind, Namespace: namespace, Name: args[1], Patch: json.RawMessage(patch)})
			if err != nil {
				return err
			}
			return printPatchResults(c, g, resp.Results)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of a namespaced resource (default \"default\")")
	cmd.Flags().StringVarP(&patch, "patch", "p", "", "the JSON merge patch")
	return cmd
}

func printPatchResults(c *cobra.Command, g *globals, rs []localapi.ResourceResult) error {
	if g.output == "json" || g.output == "yaml" {
		return printStructured(c.OutOrStdout(), g.output, rs)
	}
	for _, r := range rs {
		if r.Action == "unchanged" {
			fmt.Fprintf(c.OutOrStdout(), "%s %q unchanged\n", r.Kind, r.Name)
			continue
		}
		fmt.Fprintf(c.OutOrStdout(), "Successfully patched 1 '%s' resource\n", r.Kind)
	}
	return nil
}
