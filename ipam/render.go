package ipam

import (
	"fmt"
	"io"
	"math/big"
	"strings"
	"text/tabwriter"
	"time"
)

// Table is rows of cells under headers, for the CLI's table printer.
type Table struct {
	Headers []string
	Rows    [][]string
}

// Tables returns the report as calicoctl's tables: usage (GROUPING | CIDR
// | IPS TOTAL | IPS IN USE | IPS RESERVED | IPS FREE), borrowed addresses
// (IP | BORROWING-NODE | BLOCK | BLOCK OWNER | TYPE | ALLOCATED-TO) or the
// configuration (PROPERTY | VALUE). The --ip detail is text: WriteText.
func (r *ShowReport) Tables() []Table {
	var out []Table
	if r.Configuration != nil {
		t := Table{Headers: []string{"PROPERTY", "VALUE"}}
		for _, c := range r.Configuration {
			t.Rows = append(t.Rows, []string{c.Property, c.Value})
		}
		return append(out, t)
	}
	if r.IP != nil {
		return nil
	}
	t := Table{Headers: []string{"GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE"}}
	for _, row := range r.Rows {
		inUse := big.NewInt(row.InUse)
		t.Rows = append(t.Rows, []string{row.Grouping, row.CIDR, row.Total.String(),
			percent(inUse, row.Total), percent(row.Reserved, row.Total), percent(row.Free, row.Total)})
	}
	out = append(out, t)
	if r.Borrowed != nil {
		b := Table{Headers: []string{"IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"}}
		for _, x := range r.Borrowed {
			b.Rows = append(b.Rows, []string{x.IP, x.BorrowingNode, x.Block, x.BlockOwner, x.Type, x.AllocatedTo})
		}
		out = append(out, b)
	}
	return out
}

// WriteText prints the report as the CLI shows it.
func (r *ShowReport) WriteText(w io.Writer) error {
	if d := r.IP; d != nil {
		return d.writeText(w)
	}
	for i, t := range r.Tables() {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := t.write(w); err != nil {
			return err
		}
	}
	return nil
}

func (t Table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.Headers, "\t"))
	for _, row := range t.Rows {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func (d *IPDetail) writeText(w io.Writer) error {
	var b strings.Builder
	switch d.State {
	case "allocated":
		fmt.Fprintf(&b, "IP %s is in use\n", d.IP)
	case "outside every pool":
		fmt.Fprintf(&b, "IP %s is not in any IP pool\n", d.IP)
	default:
		fmt.Fprintf(&b, "IP %s is not assigned (%s)\n", d.IP, d.State)
	}
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "  %s: %s\n", k, v)
		}
	}
	line("pool", d.Pool)
	line("block", d.Block)
	line("block owner", d.BlockOwner)
	line("reserved by", d.Reservation)
	if d.ReleasedAt != nil {
		line("released at", d.ReleasedAt.Format(time.RFC3339))
	}
	if a := d.Attributes; a != nil {
		b.WriteString("Attributes:\n")
		line("handle", a.Handle)
		line("node", a.Node)
		line("namespace", a.Namespace)
		line("workload", a.Workload)
		line("workloadEndpoint", a.WorkloadEndpoint)
		line("type", a.Type)
		if !a.Timestamp.IsZero() {
			line("timestamp", a.Timestamp.Format(time.RFC3339))
		}
		line("sequenceNumber", fmt.Sprint(d.SequenceNumber))
	}
	for _, u := range d.UsedBy {
		line("used by", u)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteText prints the check as calicoctl ipam check does, ending with
// "Check complete; found N problems".
func (r *CheckReport) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("Checking IPAM for inconsistencies...\n\n")
	fmt.Fprintf(&b, "Found %d IPAM blocks, %d allocations, %d handles; %d addresses in use by workloads and node tunnels.\n",
		r.Blocks, r.Allocations, r.Handles, r.InUse)
	if len(r.TopNodes) > 0 {
		b.WriteString("Nodes with the most allocations:\n")
		for _, n := range r.TopNodes {
			fmt.Fprintf(&b, "  %s: %d\n", n.Node, n.Allocations)
		}
	}
	if len(r.Problems) > 0 {
		b.WriteString("\nProblems:\n")
		for _, p := range r.Problems {
			var ids []string
			for _, kv := range [][2]string{{"ip", p.IP}, {"handle", p.Handle}, {"block", p.Block}, {"node", p.Node}} {
				if kv[1] != "" {
					ids = append(ids, kv[0]+" "+kv[1])
				}
			}
			fmt.Fprintf(&b, "  [%s] %s: %s\n", p.Kind, strings.Join(ids, ", "), p.Detail)
		}
	}
	b.WriteString("\n" + r.Summary() + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}
