package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/node/localapi"
)

func newPolicyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "See why a packet is allowed or refused"}
	var (
		req      localapi.TraceRequest
		icmpType int
		ipv6     bool
	)
	trace := &cobra.Command{
		Use:   "trace --from W|IP --to W|IP [--proto P] [--port N]",
		Short: "Evaluate the policy model for one packet and print the tiers, policies and rule that decide it",
		Long: `Evaluate the policy model of the local replica for one packet: the egress of the source
workload (on its node), then the ingress of the destination workload or host endpoint, and print
every tier, policy and rule on the way. W is a workload name (in -n NS, or NS/NAME).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if icmpType >= 0 {
				t := uint8(icmpType)
				req.ICMPType = &t
			}
			if ipv6 {
				req.IPVersion = 6
			}
			resp, err := g.client().Trace(c.Context(), req)
			if err != nil {
				return err
			}
			if g.output == "json" || g.output == "yaml" {
				return printStructured(c.OutOrStdout(), g.output, resp)
			}
			printTrace(c, resp)
			return nil
		},
	}
	f := trace.Flags()
	f.StringVar(&req.From, "from", "", "source: a workload name or an IP address")
	f.StringVar(&req.To, "to", "", "destination: a workload name or an IP address")
	f.StringVarP(&req.Namespace, "namespace", "n", "", "namespace of the workloads named without one (default \"default\")")
	f.StringVar(&req.Protocol, "proto", "tcp", "protocol: tcp, udp, sctp, icmp, icmpv6 or a number")
	f.Uint16Var(&req.Port, "port", 0, "destination port (tcp, udp, sctp)")
	f.Uint16Var(&req.SourcePort, "source-port", 0, "source port (default an ephemeral one)")
	f.IntVar(&icmpType, "icmp-type", -1, "ICMP type (default echo request)")
	f.Uint8Var(&req.ICMPCode, "icmp-code", 0, "ICMP code")
	f.BoolVar(&ipv6, "ipv6", false, "use the workloads' IPv6 addresses")
	cmd.AddCommand(trace)
	return cmd
}

func printTrace(c *cobra.Command, t localapi.TraceResponse) {
	w := c.OutOrStdout()
	fmt.Fprintf(w, "Packet: %s\n", t.Packet)
	if len(t.Hops) == 0 {
		fmt.Fprintln(w, "No policy applies to either end (neither is a weft workload or host endpoint).")
	}
	var decider string
	for _, h := range t.Hops {
		fmt.Fprintf(w, "\n%s of %s: %s\n", strings.ToUpper(h.Direction[:1])+h.Direction[1:], h.Endpoint, strings.ToUpper(h.Verdict))
		for _, s := range h.Steps {
			where := ""
			if s.Tier != "" {
				where = "tier " + s.Tier + ": "
			}
			what := s.Policy
			if s.Rule >= 0 {
				what += fmt.Sprintf(" rule %d", s.Rule)
			}
			if what != "" {
				what += ": "
			}
			fmt.Fprintf(w, "  %s%s%s\n", where, what, s.Action)
		}
		if n := len(h.Steps); n > 0 {
			last := h.Steps[n-1]
			d := last.Action
			if last.Policy != "" {
				d = fmt.Sprintf("%s rule %d (%s)", last.Policy, last.Rule, last.Action)
				if last.Rule < 0 {
					d = fmt.Sprintf("%s (%s)", last.Policy, last.Action)
				}
			}
			decider = fmt.Sprintf("%s, at the %s of %s", d, h.Direction, h.Endpoint)
		}
	}
	fmt.Fprintf(w, "\nVerdict: %s", strings.ToUpper(t.Verdict))
	if decider != "" {
		fmt.Fprintf(w, " — %s", decider)
	}
	fmt.Fprintln(w)
}

// printPoliciesWide is `get networkpolicy|globalnetworkpolicy -o wide`:
// the wide table plus this node's packet and byte counters per policy
// and, for a policy asked for by name, per rule.
func printPoliciesWide(c *cobra.Command, g *globals, info api.KindInfo, rs []api.Resource, byName bool) error {
	counters, err := g.client().PolicyCounters(c.Context())
	if err != nil {
		fmt.Fprintf(c.ErrOrStderr(), "(no counters: %v)\n", err)
	}
	type key struct{ ns, name string }
	type sum struct{ packets, bytes uint64 }
	perPolicy := map[key]sum{}
	perRule := map[key][]localapi.RuleCounter{}
	for _, rc := range counters.Counters {
		if rc.Kind != info.Kind {
			continue
		}
		k := key{rc.Namespace, rc.Name}
		s := perPolicy[k]
		s.packets += rc.Packets
		s.bytes += rc.Bytes
		perPolicy[k] = s
		perRule[k] = append(perRule[k], rc)
	}
	w := c.OutOrStdout()
	t := newTable(w, append(api.Columns(info.Kind, true), "PACKETS", "BYTES")...)
	for _, r := range rs {
		m := r.GetMeta()
		row := api.Row(r, true)
		if s, ok := perPolicy[key{m.Namespace, m.Name}]; ok {
			row = append(row, fmt.Sprint(s.packets), fmt.Sprint(s.bytes))
		} else {
			// Not programmed on this node (it selects no local endpoint).
			row = append(row, "-", "-")
		}
		t.row(row...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if !byName || len(rs) != 1 {
		return nil
	}
	m := rs[0].GetMeta()
	rules := perRule[key{m.Namespace, m.Name}]
	if len(rules) == 0 {
		return nil
	}
	actions := ruleActions(rs[0])
	fmt.Fprintln(w)
	rt := newTable(w, "DIRECTION", "RULE", "ACTION", "PACKETS", "BYTES")
	for _, rc := range rules {
		rt.row(rc.Direction, fmt.Sprint(rc.Rule), actions[rc.Direction+fmt.Sprint(rc.Rule)], fmt.Sprint(rc.Packets), fmt.Sprint(rc.Bytes))
	}
	return rt.flush()
}

// ruleActions maps "<direction><index>" to the rule's action.
func ruleActions(r api.Resource) map[string]string {
	var in, out []api.Rule
	switch p := r.(type) {
	case *api.NetworkPolicy:
		in, out = p.Spec.Ingress, p.Spec.Egress
	case *api.GlobalNetworkPolicy:
		in, out = p.Spec.Ingress, p.Spec.Egress
	}
	m := map[string]string{}
	for i, rule := range in {
		m[fmt.Sprint("ingress", i)] = rule.Action
	}
	for i, rule := range out {
		m[fmt.Sprint("egress", i)] = rule.Action
	}
	return m
}
