package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/localapi"
)

func newIPAMCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ipam", Short: "IP address management: pools, blocks, allocations"}

	var (
		blocks, borrowed, configuration bool
		ip                              string
	)
	show := &cobra.Command{
		Use:   "show",
		Short: "Pool and block usage, borrowed addresses, one address, or the IPAM configuration",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := g.checkOutput("table", "wide", "json", "yaml"); err != nil {
				return err
			}
			rep, err := g.client().IPAMShow(c.Context(), localapi.IPAMShowOptions{Blocks: blocks, Borrowed: borrowed, Configuration: configuration, IP: ip})
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, rep)
			}
			return rep.WriteText(c.OutOrStdout())
		},
	}
	show.Flags().BoolVar(&blocks, "show-blocks", false, "also show each block")
	show.Flags().BoolVar(&borrowed, "show-borrowed", false, "list addresses borrowed from other nodes' blocks")
	show.Flags().BoolVar(&configuration, "show-configuration", false, "show the IPAM configuration")
	show.Flags().StringVar(&ip, "ip", "", "show who holds one address")
	cmd.AddCommand(show)

	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Cross-check allocations against workloads and nodes: leaks, doubles, strays",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			rep, err := g.client().IPAMCheck(c.Context())
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, rep)
			}
			return rep.WriteText(c.OutOrStdout())
		},
	})

	var (
		releaseIP    string
		releaseForce bool
	)
	release := &cobra.Command{
		Use:   "release --ip ADDR",
		Short: "Release one leaked address",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if releaseIP == "" {
				return fmt.Errorf("ipam release needs --ip ADDR")
			}
			resp, err := g.client().IPAMRelease(c.Context(), ipam.ReleaseRequest{IP: releaseIP, Force: releaseForce})
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, resp)
			}
			for _, r := range resp.Released {
				fmt.Fprintf(c.OutOrStdout(), "Released %s (handle %s, block %s)\n", r.IP, r.Handle, r.Block)
			}
			return nil
		},
	}
	release.Flags().StringVar(&releaseIP, "ip", "", "the address to release")
	release.Flags().BoolVar(&releaseForce, "force", false, "release the address even if a workload or a node's tunnel still uses it")
	cmd.AddCommand(release)

	var strict string
	configure := &cobra.Command{
		Use:   "configure --strictaffinity=true|false",
		Short: "Change the IPAM configuration",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var req ipam.ConfigureRequest
			if strict == "" {
				return fmt.Errorf("ipam configure needs --strictaffinity=true|false")
			}
			v, err := strconv.ParseBool(strict)
			if err != nil {
				return fmt.Errorf("--strictaffinity: %q is not true or false", strict)
			}
			req.StrictAffinity = &v
			resp, err := g.client().IPAMConfigure(c.Context(), req)
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, resp)
			}
			fmt.Fprintf(c.OutOrStdout(), "Successfully set StrictAffinity to: %t\n", resp.Spec.StrictAffinity)
			return nil
		},
	}
	configure.Flags().StringVar(&strict, "strictaffinity", "", "true|false: forbid borrowing addresses from other nodes' blocks")
	cmd.AddCommand(configure)
	return cmd
}
