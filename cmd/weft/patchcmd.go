package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

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

func newLabelCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "label",
		Short: "Add, change or remove labels (kubectl's semantics)",
	}
	var overwrite bool
	node := &cobra.Command{
		Use:   "node NAME KEY=VALUE... KEY-...",
		Short: "Label a node (nodeSelector, peerSelector, pools' nodeSelector); takes effect at once",
		Long: `Label a node: KEY=VALUE sets a label (an existing one only with --overwrite), KEY- removes one.
The labels of a node's [node] labels in its TOML are applied again at its every start and win
for their keys; labels on other keys stay across restarts (docs/bgp.md).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if err := g.checkOutput("table", "json", "yaml"); err != nil {
				return err
			}
			return labelResource(c, g, api.KindNode, "", args[0], args[1:], overwrite)
		},
	}
	node.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing the value of an existing label")
	cmd.AddCommand(node)
	return cmd
}

// labelResource applies kubectl label's semantics as a merge patch pinned
// to the version read: a concurrent change fails the call rather than
// being overwritten.
func labelResource(c *cobra.Command, g *globals, kind, namespace, name string, changes []string, overwrite bool) error {
	set := map[string]string{}
	var remove []string
	for _, ch := range changes {
		if k, ok := strings.CutSuffix(ch, "-"); ok && !strings.Contains(ch, "=") {
			remove = append(remove, k)
			continue
		}
		k, v, ok := strings.Cut(ch, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q: want KEY=VALUE or KEY-", ch)
		}
		set[k] = v
	}
	list, err := g.client().List(c.Context(), kind, localapi.ListOptions{Namespace: namespace, Name: name, Consistent: true})
	if err != nil {
		return err
	}
	if len(list.Items) != 1 {
		return fmt.Errorf("%s %q not found", kind, name)
	}
	var cur struct {
		Metadata api.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(list.Items[0], &cur); err != nil {
		return err
	}
	labels := map[string]any{}
	var keys []string
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := set[k]
		if old, ok := cur.Metadata.Labels[k]; ok && old != v && !overwrite {
			return fmt.Errorf("%s %q already has label %s=%s: use --overwrite to change it", kind, name, k, old)
		}
		labels[k] = v
	}
	for _, k := range remove {
		if _, ok := cur.Metadata.Labels[k]; !ok {
			fmt.Fprintf(c.ErrOrStderr(), "label %q not found on %s %q\n", k, kind, name)
			continue
		}
		labels[k] = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels, "resourceVersion": cur.Metadata.ResourceVersion}})
	resp, err := g.client().Patch(c.Context(), localapi.PatchRequest{Kind: kind, Namespace: namespace, Name: name, Patch: patch})
	if err != nil {
		return err
	}
	if g.output == "json" || g.output == "yaml" {
		return printStructured(c.OutOrStdout(), g.output, resp.Results)
	}
	verb := "labeled"
	if len(resp.Results) > 0 && resp.Results[0].Action == "unchanged" {
		verb = "not labeled (no change)"
	}
	fmt.Fprintf(c.OutOrStdout(), "%s/%s %s\n", strings.ToLower(kind), name, verb)
	return nil
}
