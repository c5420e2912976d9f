package main

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/node/localapi"
)

func newBGPCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "bgp", Short: "This node's BGP speaker"}
	cmd.AddCommand(&cobra.Command{
		Use:   "routes",
		Short: "The BGP table: prefix, next hop, from peer, age, best, stale (like `birdc show route`)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := g.checkOutput("table", "wide", "json", "yaml"); err != nil {
				return err
			}
			resp, err := g.client().BGPRoutes(c.Context())
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, resp)
			}
			headers := []string{"PREFIX", "NEXT HOP", "FROM PEER", "AGE", "BEST", "STALE"}
			if g.output == "wide" {
				headers = append(headers, "AS PATH")
			}
			t := newTable(c.OutOrStdout(), headers...)
			for _, r := range resp.Routes {
				from := r.FromPeer
				if from == "" {
					from = "local"
				}
				row := []string{r.Prefix, orDash(r.NextHop), from, shortAge(time.Duration(r.AgeSeconds * float64(time.Second))), yesNo(r.Best), yesNo(r.Stale)}
				if g.output == "wide" {
					row = append(row, orDash(r.ASPath))
				}
				t.row(row...)
			}
			return t.flush()
		},
	})
	return cmd
}

// printBGPStatus prints calicoctl's `node status` tables (calico.md §6.5).
func printBGPStatus(w io.Writer, st *localapi.BGPStatus) {
	if st.State == localapi.StateDisabled {
		fmt.Fprintln(w, "BGP is disabled on this node (bgp.enabled = false).")
		return
	}
	line := fmt.Sprintf("BGP speaker: %s, AS %d, router ID %s", st.State, st.ASNumber, st.RouterID)
	if st.Syncing {
		line += " (graceful restart: waiting for the peers' routes)"
	}
	fmt.Fprintln(w, line)
	for _, fam := range []string{"IPv4", "IPv6"} {
		fmt.Fprintf(w, "\n%s BGP status\n", fam)
		var rows [][]string
		for _, p := range st.Peers {
			if p.Family != fam {
				continue
			}
			rows = append(rows, []string{peerAddress(p), p.PeerType, p.State, since(p.Since), p.Info})
		}
		if len(rows) == 0 {
			fmt.Fprintf(w, "No %s peers found.\n", fam)
			continue
		}
		boxTable(w, []string{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"}, rows)
	}
}

// peerAddress is the IP, with the port when it is not 179.
func peerAddress(p localapi.BGPPeerStatus) string {
	if p.Port == 0 || p.Port == 179 {
		return p.PeerAddress
	}
	return net.JoinHostPort(p.PeerAddress, strconv.Itoa(p.Port))
}

// since is calicoctl's SINCE: the time today, the date otherwise.
func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	t = t.Local()
	if y, m, d := t.Date(); y == time.Now().Year() && m == time.Now().Month() && d == time.Now().Day() {
		return t.Format(time.TimeOnly)
	}
	return t.Format(time.DateOnly)
}

// boxTable prints a table framed like calicoctl's (tablewriter's default):
// headers centred, cells left-aligned.
func boxTable(w io.Writer, headers []string, rows [][]string) {
	widths := make([]int, len(headers))
	for i, h := range headers {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	sep := "+"
	for _, wd := range widths {
		sep += strings.Repeat("-", wd+2) + "+"
	}
	fmt.Fprintln(w, sep)
	line := "|"
	for i, h := range headers {
		pad := widths[i] - len(h)
		line += " " + strings.Repeat(" ", pad/2) + h + strings.Repeat(" ", pad-pad/2) + " |"
	}
	fmt.Fprintln(w, line)
	fmt.Fprintln(w, sep)
	for _, r := range rows {
		line := "|"
		for i, c := range r {
			line += " " + c + strings.Repeat(" ", widths[i]-len(c)) + " |"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, sep)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortAge renders an age as birdc does roughly: 42s, 5m12s, 3h04m, 2d.
func shortAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
