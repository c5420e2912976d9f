package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/node/localapi"
)

func newWorkloadCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "workload", Short: "Attach network namespaces as workloads"}

	var (
		req    localapi.WorkloadAddRequest
		labels []string
		ip     []string
		pool   []string
		ports  []string
	)
	add := &cobra.Command{
		Use:   "add NAME --netns PATH",
		Short: "Attach a network namespace: veth, address from IPAM, routes; prints its address(es)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			req.Name = args[0]
			req.IPs, req.Pools = ip, pool
			req.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return fmt.Errorf("--label %q: want key=value", l)
				}
				req.Labels[k] = v
			}
			req.Ports = nil
			for _, p := range ports {
				wp, err := parseNamedPort(p)
				if err != nil {
					return err
				}
				req.Ports = append(req.Ports, wp)
			}
			w, err := g.client().AddWorkload(c.Context(), req)
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, w)
			}
			for _, p := range w.IPs {
				addr, _, _ := strings.Cut(p, "/")
				fmt.Fprintln(c.OutOrStdout(), addr)
			}
			return nil
		},
	}
	add.Flags().StringVar(&req.NetNS, "netns", "", "path of the workload's network namespace (e.g. /run/netns/NAME)")
	add.Flags().StringVarP(&req.Namespace, "namespace", "n", "", "namespace (default \"default\")")
	add.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	add.Flags().StringArrayVar(&ip, "ip", nil, "a specific address (at most one IPv4 and one IPv6)")
	add.Flags().StringArrayVar(&pool, "pool", nil, "allocate from this IP pool")
	add.Flags().StringVar(&req.Interface, "iface", "eth0", "interface name inside the namespace")
	add.Flags().StringArrayVar(&ports, "port", nil, "a named port NAME:PROTO:PORT, e.g. http:tcp:8080 (repeatable; policy rules match named ports)")
	cmd.AddCommand(add)

	var delNS string
	del := &cobra.Command{
		Use:   "del NAME",
		Short: "Detach a workload and release its addresses",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			w, err := g.client().DeleteWorkload(c.Context(), localapi.WorkloadRef{Name: args[0], Namespace: delNS})
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, w)
			}
			fmt.Fprintf(c.OutOrStdout(), "Deleted workload %s/%s\n", w.Namespace, w.Name)
			return nil
		},
	}
	del.Flags().StringVarP(&delNS, "namespace", "n", "", "namespace (default \"default\")")
	cmd.AddCommand(del)

	var (
		listNS  string
		listAll bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "This node's workloads",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := g.checkOutput("table", "wide", "json", "yaml"); err != nil {
				return err
			}
			l, err := g.client().ListWorkloads(c.Context(), listNS, listAll)
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, l)
			}
			headers := []string{"NAMESPACE", "NAME", "ADDRESSES", "INTERFACE"}
			if g.output == "wide" {
				headers = append(headers, "NETNS", "ENDPOINT", "LABELS")
			}
			t := newTable(c.OutOrStdout(), headers...)
			for _, w := range l.Items {
				row := []string{w.Namespace, w.Name, strings.Join(w.IPs, ","), w.HostIface}
				if g.output == "wide" {
					var ls []string
					for k, v := range w.Labels {
						ls = append(ls, k+"="+v)
					}
					row = append(row, w.NetNS, w.Endpoint, strings.Join(ls, ","))
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	list.Flags().StringVarP(&listNS, "namespace", "n", "", "namespace (default \"default\")")
	list.Flags().BoolVarP(&listAll, "all-namespaces", "A", false, "all namespaces")
	cmd.AddCommand(list)
	return cmd
}

// parseNamedPort reads NAME:PROTO:PORT.
func parseNamedPort(s string) (localapi.WorkloadPort, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" {
		return localapi.WorkloadPort{}, fmt.Errorf("--port %q: want NAME:PROTO:PORT (e.g. http:tcp:8080)", s)
	}
	port, err := strconv.ParseUint(parts[2], 10, 16)
	if err != nil || port == 0 {
		return localapi.WorkloadPort{}, fmt.Errorf("--port %q: port must be 1-65535", s)
	}
	switch strings.ToLower(parts[1]) {
	case "tcp", "udp", "sctp":
	default:
		return localapi.WorkloadPort{}, fmt.Errorf("--port %q: protocol must be tcp, udp or sctp", s)
	}
	return localapi.WorkloadPort{Name: parts[0], Protocol: strings.ToUpper(parts[1]), Port: uint16(port)}, nil
}
