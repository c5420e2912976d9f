package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newNodeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "This node's state",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show this node: components, datastore role, BGP sessions, WireGuard peers",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := g.checkOutput("table", "wide", "json", "yaml"); err != nil {
				return err
			}
			st, err := g.client().Status(c.Context())
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, st)
			}
			w := c.OutOrStdout()
			ready := "not ready"
			if st.Ready {
				ready = "ready"
			}
			addr := st.Address
			if st.AddressV6 != "" {
				addr += " " + st.AddressV6
			}
			fmt.Fprintf(w, "Node:     %s (%s)\n", st.Name, ready)
			fmt.Fprintf(w, "Address:  %s\n", addr)
			fmt.Fprintf(w, "Version:  %s (commit %s)\n", st.Version, st.Commit)
			if d := st.Datastore; d != nil {
				leader := d.Leader
				if leader == "" {
					leader = "none (no quorum)"
				}
				sync := "in sync"
				if !d.InSync {
					sync = "not in sync"
				}
				fmt.Fprintf(w, "Datastore: %s, leader %s, revision %d, %s\n", d.Role, leader, d.Revision, sync)
			}
			if p := st.Policy; p != nil {
				sync := "in sync"
				if !p.InSync {
					sync = "NOT in sync"
					if p.LastError != "" {
						sync += " (" + p.LastError + ")"
					}
				}
				fmt.Fprintf(w, "Policy:   %s, %s: %d chains, %d rules, %d sets, %d set members\n", p.Backend, sync, p.Chains, p.Rules, p.Sets, p.SetMembers)
			}
			fmt.Fprintf(w, "Uptime:   %s\n\n", time.Since(st.Started).Truncate(time.Second))
			t := newTable(w, "COMPONENT", "STATE", "LIVE", "READY", "DETAIL")
			for _, cs := range st.Components {
				t.row(cs.Name, cs.State, fmt.Sprint(cs.Live), fmt.Sprint(cs.Ready), cs.Detail)
			}
			if err := t.flush(); err != nil {
				return err
			}
			if len(st.Problems) > 0 {
				fmt.Fprintf(w, "\nLeft out of this node's dataplane (%d):\n", len(st.Problems))
				for _, p := range st.Problems {
					fmt.Fprintf(w, "  %s\n", p)
				}
			}
			if st.BGP != nil {
				fmt.Fprintln(w)
				printBGPStatus(w, st.BGP)
			}
			if st.WireGuard != nil {
				return printWireGuard(w, st.WireGuard, g.output == "wide")
			}
			return nil
		},
	})
	return cmd
}
