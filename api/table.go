package api

import (
	"strconv"
	"strings"
)

// Columns are the headings of `weft get KIND -o table|wide`, following
// calicoctl's (calicoctl/resourcemgr/*.go). Namespaced kinds start with
// NAMESPACE.
func Columns(kind string, wide bool) []string {
	var cols []string
	switch kind {
	case KindIPPool:
		cols = pick(wide, []string{"NAME", "CIDR", "SELECTOR"},
			[]string{"NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"})
	case KindIPReservation:
		cols = pick(wide, []string{"NAME"}, []string{"NAME", "CIDRS"})
	case KindIPAMConfiguration:
		cols = pick(wide, []string{"NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"},
			[]string{"NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"})
	case KindNode:
		cols = pick(wide, []string{"NAME", "WIREGUARDKEY"}, []string{"NAME", "ASN", "IPV4", "IPV6", "WIREGUARDKEY"})
	case KindWorkloadEndpoint:
		cols = pick(wide, []string{"WORKLOAD", "NODE", "NETWORKS", "INTERFACE"},
			[]string{"NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"})
	case KindHostEndpoint:
		cols = pick(wide, []string{"NAME", "NODE"}, []string{"NAME", "NODE", "INTERFACE", "IPS", "PROFILES"})
	case KindNetworkPolicy, KindGlobalNetworkPolicy:
		cols = pick(wide, []string{"NAME", "TIER"}, []string{"NAME", "TIER", "ORDER", "SELECTOR"})
	case KindNetworkSet, KindGlobalNetworkSet:
		cols = pick(wide, []string{"NAME"}, []string{"NAME", "NETS"})
	case KindProfile:
		cols = pick(wide, []string{"NAME"}, []string{"NAME", "LABELS"})
	case KindTier:
		cols = pick(wide, []string{"NAME", "ORDER"}, []string{"NAME", "ORDER", "DEFAULTACTION"})
	case KindBGPConfiguration:
		cols = []string{"NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"}
	case KindBGPPeer:
		cols = []string{"NAME", "PEERIP", "NODE", "ASN"}
	default:
		cols = []string{"NAME"}
	}
	if IsNamespaced(kind) {
		cols = append([]string{"NAMESPACE"}, cols...)
	}
	return cols
}

func pick(wide bool, narrow, w []string) []string {
	if wide {
		return w
	}
	return narrow
}

// Row is one line of the table for r, matching Columns(r.Kind(), wide).
func Row(r Resource, wide bool) []string {
	cols := Columns(r.Kind(), wide)
	row := make([]string, len(cols))
	for i, c := range cols {
		row[i] = cell(r, c)
	}
	return row
}

// maxCellWidth truncates long lists, like calicoctl's joinAndTruncate.
const maxCellWidth = 80

func joinTruncate(items []string) string {
	s := strings.Join(items, ",")
	if len(s) > maxCellWidth {
		s = s[:maxCellWidth-3] + "..."
	}
	return s
}

func formatOrder(o *float64) string {
	if o == nil {
		return ""
	}
	return strconv.FormatFloat(*o, 'f', -1, 64)
}

func cell(r Resource, col string) string {
	m := r.GetMeta()
	switch col {
	case "NAME":
		return m.Name
	case "NAMESPACE":
		return m.Namespace
	}
	switch r := r.(type) {
	case *IPPool:
		s := r.Spec
		switch col {
		case "CIDR":
			return s.CIDR
		case "SELECTOR":
			return s.NodeSelector
		case "NAT":
			return strconv.FormatBool(s.NATOutgoing)
		case "IPIPMODE":
			return orDefault(s.IPIPMode, EncapNever)
		case "VXLANMODE":
			return orDefault(s.VXLANMode, EncapNever)
		case "DISABLED":
			return strconv.FormatBool(s.Disabled)
		case "DISABLEBGPEXPORT":
			return strconv.FormatBool(s.DisableBGPExport)
		}
	case *IPReservation:
		if col == "CIDRS" {
			return joinTruncate(r.Spec.ReservedCIDRs)
		}
	case *IPAMConfiguration:
		s := r.Spec
		switch col {
		case "STRICTAFFINITY":
			return strconv.FormatBool(s.StrictAffinity)
		case "AUTOALLOCATEBLOCKS":
			return strconv.FormatBool(s.AutoAllocateBlocks == nil || *s.AutoAllocateBlocks)
		case "MAXBLOCKSPERHOST":
			return strconv.Itoa(int(s.MaxBlocksPerHost))
		}
	case *Node:
		if col == "WIREGUARDKEY" {
			return r.Status.WireguardPublicKey
		}
		b := r.Spec.BGP
		if b == nil {
			return ""
		}
		switch col {
		case "ASN":
			if b.ASNumber == nil {
				return "(global)"
			}
			return b.ASNumber.String()
		case "IPV4":
			return b.IPv4Address
		case "IPV6":
			return b.IPv6Address
		}
	case *WorkloadEndpoint:
		s := r.Spec
		switch col {
		case "WORKLOAD":
			return orDefault(s.Workload, s.Pod)
		case "NODE":
			return s.Node
		case "NETWORKS":
			return strings.Join(s.IPNetworks, ",")
		case "INTERFACE":
			return s.InterfaceName
		case "PROFILES":
			return strings.Join(s.Profiles, ",")
		case "NATS":
			nats := make([]string, len(s.IPNATs))
			for i, n := range s.IPNATs {
				nats[i] = n.ExternalIP + "->" + n.InternalIP
			}
			return strings.Join(nats, ",")
		}
	case *HostEndpoint:
		s := r.Spec
		switch col {
		case "NODE":
			return s.Node
		case "INTERFACE":
			return s.InterfaceName
		case "IPS":
			return strings.Join(s.ExpectedIPs, ",")
		case "PROFILES":
			return strings.Join(s.Profiles, ",")
		}
	case *NetworkPolicy:
		return policyCell(col, r.Spec.Tier, r.Spec.Order, r.Spec.Selector)
	case *GlobalNetworkPolicy:
		return policyCell(col, r.Spec.Tier, r.Spec.Order, r.Spec.Selector)
	case *NetworkSet:
		if col == "NETS" {
			return joinTruncate(r.Spec.Nets)
		}
	case *GlobalNetworkSet:
		if col == "NETS" {
			return joinTruncate(r.Spec.Nets)
		}
	case *Profile:
		if col == "LABELS" {
			var kv []string
			for _, k := range sortedKeys(r.Spec.LabelsToApply) {
				kv = append(kv, k+"="+r.Spec.LabelsToApply[k])
			}
			return strings.Join(kv, ",")
		}
	case *Tier:
		switch col {
		case "ORDER":
			return formatOrder(r.Spec.Order)
		case "DEFAULTACTION":
			return orDefault(r.Spec.DefaultAction, ActionDeny)
		}
	case *BGPConfiguration:
		s := r.Spec
		switch col {
		case "LOGSEVERITY":
			return s.LogSeverityScreen
		case "MESHENABLED":
			if s.NodeToNodeMeshEnabled == nil {
				return "-"
			}
			return strconv.FormatBool(*s.NodeToNodeMeshEnabled)
		case "ASNUMBER":
			if s.ASNumber == nil {
				return "-"
			}
			return s.ASNumber.String()
		}
	case *BGPPeer:
		s := r.Spec
		switch col {
		case "PEERIP":
			if s.PeerIP == "" {
				return s.PeerSelector
			}
			return s.PeerIP
		case "NODE":
			switch {
			case s.Node != "":
				return s.Node
			case s.NodeSelector != "":
				return s.NodeSelector
			}
			return "(global)"
		case "ASN":
			if s.ASNumber == 0 {
				return ""
			}
			return s.ASNumber.String()
		}
	}
	return ""
}

func policyCell(col, tier string, order *float64, sel string) string {
	switch col {
	case "TIER":
		return orDefault(tier, DefaultTierName)
	case "ORDER":
		return formatOrder(order)
	case "SELECTOR":
		return sel
	}
	return ""
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
