package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/localapi"
)

// readInput reads -f FILE or -f - (stdin), refusing more than the agent
// would accept.
func readInput(c *cobra.Command, file string) ([]byte, error) {
	if file == "" {
		return nil, fmt.Errorf("%s needs -f FILE (or -f - for standard input)", c.CommandPath())
	}
	var r io.Reader
	if file == "-" {
		r = c.InOrStdin()
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, localapi.MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	// The limit applies to the request as sent: the documents inside a
	// JSON string, where newlines and quotes take two bytes.
	if enc, _ := json.Marshal(string(data)); len(enc)+64 > localapi.MaxBodyBytes {
		return nil, fmt.Errorf("%s is too large: the request would exceed the %d-byte limit", file, localapi.MaxBodyBytes)
	}
	return data, nil
}

func newWriteCommand(g *globals, mode, short string) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   mode + " -f FILE",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			data, err := readInput(c, file)
			if err != nil {
				return err
			}
			// Decode locally first: a malformed file fails fast with the
			// same message the agent would give, without a round trip.
			if _, err := api.Decode(data); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			resp, err := g.client().Write(c.Context(), localapi.WriteRequest{Mode: mode, Data: string(data)})
			if err != nil {
				return err
			}
			// Done, but not everything asked for can be honoured: say so
			// on stderr, whatever the output format.
			for _, w := range resp.Warnings {
				fmt.Fprintln(c.ErrOrStderr(), "Warning:", w)
			}
			return printWriteResults(c, g, mode, resp.Results)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "file with resources (YAML or JSON; - for standard input)")
	return cmd
}

// printWriteResults prints calicoctl's summary ("Successfully applied 2
// 'IPPool' resource(s)") or the results as JSON/YAML.
func printWriteResults(c *cobra.Command, g *globals, verb string, rs []localapi.ResourceResult) error {
	if g.output == "json" || g.output == "yaml" {
		return printStructured(c.OutOrStdout(), g.output, rs)
	}
	counts := map[string]int{}
	var kinds []string
	for _, r := range rs {
		if counts[r.Kind] == 0 {
			kinds = append(kinds, r.Kind)
		}
		counts[r.Kind]++
	}
	past := map[string]string{"apply": "applied", "create": "created", "replace": "replaced", "delete": "deleted"}[verb]
	for _, k := range kinds {
		fmt.Fprintf(c.OutOrStdout(), "Successfully %s %d '%s' resource(s)\n", past, counts[k], k)
	}
	return nil
}

func newGetCommand(g *globals) *cobra.Command {
	var (
		namespace  string
		all        bool
		watch      bool
		consistent bool
	)
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List or show resources (-w keeps watching and prints changes)",
		Long:  "List or show resources. KIND is one of: " + kindNames() + " (or a singular or short name).",
		Args:  cobra.RangeArgs(1, 2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			for _, k := range api.Kinds() {
				names = append(names, k.Plural)
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := g.checkOutput("table", "wide", "json", "yaml"); err != nil {
				return err
			}
			info, ok := api.LookupKind(args[0])
			if !ok {
				if _, err := api.New(args[0]); err != nil && !strings.HasPrefix(err.Error(), "unknown kind") {
					return err
				}
				return fmt.Errorf("unknown resource kind %q (try `weft get ippools`, `nodes`, `networkpolicies`, ...)", args[0])
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			if all && namespace != "" {
				return fmt.Errorf("-n and -A cannot be used together")
			}
			if !info.Namespaced && namespace != "" {
				return fmt.Errorf("%s is not namespaced: drop -n", info.Kind)
			}
			if watch {
				return watchResources(c, g, info, namespace, name, all)
			}
			resp, err := g.client().List(c.Context(), info.Kind, localapi.ListOptions{
				Namespace:     namespace,
				AllNamespaces: all || (info.Namespaced && namespace == "" && name != ""),
				Name:          name,
				Consistent:    consistent,
			})
			if err != nil {
				return err
			}
			rs, err := decodeItems(resp.Items)
			if err != nil {
				return err
			}
			return printResources(c.OutOrStdout(), g.output, info, rs, name != "" && len(rs) == 1)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (namespaced kinds; default \"default\")")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list across all namespaces")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after listing, keep watching and print changes")
	cmd.Flags().BoolVar(&consistent, "consistent", false, "linearizable read through the leader instead of the local replica")
	return cmd
}

func decodeItems(items []json.RawMessage) ([]api.Resource, error) {
	var out []api.Resource
	for _, it := range items {
		rs, err := api.Decode(it)
		if err != nil {
			return nil, fmt.Errorf("decoding the agent's answer: %w", err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// printResources prints a listing as a table or as YAML/JSON (a single
// object when one was asked for by name, a List otherwise).
func printResources(w io.Writer, format string, info api.KindInfo, rs []api.Resource, single bool) error {
	switch format {
	case "json", "yaml":
		var b []byte
		var err error
		if single {
			b, err = api.Encode(format, rs)
		} else {
			b, err = api.EncodeList(format, info.Kind, rs)
		}
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	wide := format == "wide"
	t := newTable(w, api.Columns(info.Kind, wide)...)
	for _, r := range rs {
		t.row(api.Row(r, wide)...)
	}
	return t.flush()
}

// watchResources streams changes: a listing, then one line (table) or
// document (yaml/json) per change, until interrupted.
func watchResources(c *cobra.Command, g *globals, info api.KindInfo, namespace, name string, all bool) error {
	o := localapi.WatchOptions{Kinds: []string{info.Kind}, Name: name}
	if info.Namespaced && !all {
		o.Namespace = namespace
		if o.Namespace == "" {
			o.Namespace = api.DefaultNamespace
		}
	}
	body, err := g.client().Watch(c.Context(), o)
	if err != nil {
		return err
	}
	defer body.Close()
	w := c.OutOrStdout()
	wide := g.output == "wide"
	tableMode := g.output == "table" || wide
	if tableMode {
		fmt.Fprintln(w, strings.Join(append([]string{"EVENT"}, api.Columns(info.Kind, wide)...), "\t"))
	}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev localapi.WatchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("decoding watch event: %w", err)
		}
		switch ev.Type {
		case "SYNC":
			continue
		case "RESET":
			fmt.Fprintln(w, "# watch restarted from a fresh listing")
			continue
		}
		rs, err := api.Decode(ev.Object)
		if err != nil || len(rs) != 1 {
			continue
		}
		if tableMode {
			fmt.Fprintln(w, strings.Join(append([]string{ev.Type}, api.Row(rs[0], wide)...), "\t"))
		} else {
			if g.output == "yaml" {
				fmt.Fprintln(w, "---")
			}
			b, err := api.Encode(g.output, rs)
			if err != nil {
				return err
			}
			_, _ = w.Write(b)
		}
		if f, ok := w.(interface{ Sync() error }); ok {
			_ = f.Sync()
		}
	}
	if c.Context().Err() != nil {
		return nil // interrupted by the user
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("watch ended: %w", err)
	}
	return fmt.Errorf("watch ended by the agent (it restarted, or this watcher fell too far behind): run it again")
}

func newDeleteCommand(g *globals) *cobra.Command {
	var (
		file, namespace string
		force           bool
	)
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME | -f FILE)",
		Short: "Delete resources",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			req := localapi.DeleteRequest{Namespace: namespace, Force: force}
			switch {
			case file != "" && len(args) > 0:
				return fmt.Errorf("give either KIND NAME or -f FILE, not both")
			case file != "":
				data, err := readInput(c, file)
				if err != nil {
					return err
				}
				if _, err := api.Decode(data); err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				req.Data = string(data)
			case len(args) == 2:
				info, ok := api.LookupKind(args[0])
				if !ok {
					return fmt.Errorf("unknown resource kind %q", args[0])
				}
				req.Kind, req.Name = info.Kind, args[1]
			default:
				return fmt.Errorf("delete needs KIND NAME or -f FILE")
			}
			resp, err := g.client().Delete(c.Context(), req)
			if err != nil {
				return err
			}
			return printWriteResults(c, g, "delete", resp.Results)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "file naming the resources to delete")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (namespaced kinds; default \"default\")")
	cmd.Flags().BoolVar(&force, "force", false, "IP pools: delete even while addresses are allocated from it (releases them)")
	return cmd
}

// kindNames lists the names users may give for kinds, for help texts.
func kindNames() string {
	var names []string
	for _, k := range api.Kinds() {
		names = append(names, k.Plural)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
