package main

import (
	"fmt"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/ipam"
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
			q := url.Values{}
			q.Set("blocks", strconv.FormatBool(blocks))
			q.Set("borrowed", strconv.FormatBool(borrowed))
			q.Set("configuration", strconv.FormatBool(configuration))
			if ip != "" {
				q.Set("ip", ip)
			}
			var rep ipam.ShowReport
			if err := g.client().Do(c.Context(), "GET", "/v1/ipam/show?"+q.Encode(), nil, &rep); err != nil {
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
			var rep ipam.CheckReport
			if err := g.client().Do(c.Context(), "GET", "/v1/ipam/check", nil, &rep); err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, rep)
			}
			return rep.WriteText(c.OutOrStdout())
		},
	})

	var releaseIP string
	release := &cobra.Command{
		Use:   "release --ip ADDR",
		Short: "Release one leaked address",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if releaseIP == "" {
				return fmt.Errorf("ipam release needs --ip ADDR")
			}
			var resp ipam.ReleaseResponse
			if err := g.client().Do(c.Context(), "POST", "/v1/ipam/release", ipam.ReleaseRequest{IP: releaseIP}, &resp); err != nil {
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
			var resp ipam.ConfigureResponse
			if err := g.client().Do(c.Context(), "POST", "/v1/ipam/configure", req, &resp); err != nil {
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
