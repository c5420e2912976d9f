package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/node/localapi"
)

// Args are the CNI_ARGS weft understands. Unknown keys are an error unless
// IgnoreUnknown=1 (the library's rule; kubelet and podman send it). The
// field names are the keys, fixed by the CNI conventions.
type Args struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
	// IP is the CNI_ARGS convention for requesting addresses:
	// IP=10.244.3.7 or IP=10.244.3.7/32,fd00::7 (a prefix length is ignored).
	IP types.UnmarshallableString
}

// ParseArgs decodes CNI_ARGS ("K=V;K2=V2").
func ParseArgs(s string) (*Args, error) {
	a := &Args{}
	if err := types.LoadArgs(s, a); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: %v", err), "")
	}
	return a, nil
}

// maxNameLen is the longest workload name derived from a container ID: a
// DNS-1123 label.
const maxNameLen = 63

// WorkloadName derives a workload name from a container ID: the ID itself
// when it is already a DNS-1123 label of at most 63 characters; otherwise
// its lower-cased, sanitised first characters and 8 hex digits of its
// SHA-256, so that IDs differing only in case, in characters a label cannot
// hold, or after the cut still get different names. A typical 64-hex-digit
// container ID becomes its first 54 digits, "-" and the hash.
func WorkloadName(containerID string) string {
	if isDNSLabel(containerID) {
		return containerID
	}
	sum := sha256.Sum256([]byte(containerID))
	suffix := hex.EncodeToString(sum[:4])
	var b strings.Builder
	for _, r := range strings.ToLower(containerID) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	base := b.String()
	if max := maxNameLen - 1 - len(suffix); len(base) > max {
		base = base[:max]
	}
	base = strings.Trim(base, "-")
	if base == "" {
		return "cni-" + suffix
	}
	return base + "-" + suffix
}

// isDNSLabel reports whether s matches [a-z0-9]([-a-z0-9]*[a-z0-9])? and
// has at most 63 characters.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > maxNameLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// identity is who a CNI call is about: the workload's name and namespace.
type identity struct {
	Name, Namespace string
}

// identify chooses the workload's name and namespace: K8S_POD_NAME and
// K8S_POD_NAMESPACE from CNI_ARGS when present (so workloads started by a
// Kubernetes-style runtime carry their pod's names), else a name derived
// from the container ID and the network configuration's namespace, else
// "default".
func identify(cmd *skel.CmdArgs, conf *NetConf, args *Args) identity {
	id := identity{Name: string(args.K8S_POD_NAME), Namespace: string(args.K8S_POD_NAMESPACE)}
	if id.Name == "" {
		id.Name = WorkloadName(cmd.ContainerID)
	}
	if id.Namespace == "" {
		id.Namespace = conf.Namespace
	}
	if id.Namespace == "" {
		id.Namespace = DefaultNamespace
	}
	return id
}

// BuildAddRequest turns an ADD call into the agent's request.
func BuildAddRequest(cmd *skel.CmdArgs, conf *NetConf, args *Args) (*localapi.WorkloadAddRequest, error) {
	ips, err := requestedIPs(conf, args)
	if err != nil {
		return nil, err
	}
	id := identify(cmd, conf, args)
	var labels map[string]string
	if len(conf.Labels)+len(conf.ArgsLabels) > 0 {
		labels = maps.Clone(conf.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, conf.ArgsLabels) // the runtime's per-container labels win
	}
	return &localapi.WorkloadAddRequest{
		Name:         id.Name,
		Namespace:    id.Namespace,
		NetNS:        cmd.Netns,
		Interface:    cmd.IfName,
		Labels:       labels,
		IPs:          ips,
		Pools:        conf.Pools,
		Orchestrator: localapi.OrchestratorCNI,
		ContainerID:  cmd.ContainerID,
		Ports:        requestedPorts(conf),
	}, nil
}

// requestedPorts are the named ports (args.cni.ports) and the host port
// mappings (runtimeConfig.portMappings) to record on the endpoint; the
// agent validates them with the endpoint.
func requestedPorts(conf *NetConf) []localapi.WorkloadPort {
	out := append([]localapi.WorkloadPort(nil), conf.ArgsPorts...)
	for _, m := range conf.PortMappings {
		proto := strings.ToUpper(m.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		out = append(out, localapi.WorkloadPort{Protocol: proto, Port: m.ContainerPort, HostPort: m.HostPort, HostIP: m.HostIP})
	}
	return out
}

// BuildRef names the workload of a DEL or CHECK call.
func BuildRef(cmd *skel.CmdArgs, conf *NetConf, args *Args) *localapi.WorkloadRef {
	id := identify(cmd, conf, args)
	return &localapi.WorkloadRef{
		Name:        id.Name,
		Namespace:   id.Namespace,
		NetNS:       cmd.Netns,
		Interface:   cmd.IfName,
		ContainerID: cmd.ContainerID,
	}
}

// requestedIPs returns the specific addresses asked for, from the first
// source that has any: runtimeConfig.ips (capability "ips"), args.cni.ips,
// CNI_ARGS IP (the conventions say args win over CNI_ARGS). A prefix length
// is accepted and dropped: a workload always gets a /32 or /128. At most one
// address per family.
func requestedIPs(conf *NetConf, args *Args) ([]string, error) {
	var src string
	var raw []string
	switch {
	case len(conf.RuntimeIPs) > 0:
		src, raw = "runtimeConfig.ips", conf.RuntimeIPs
	case len(conf.ArgsIPs) > 0:
		src, raw = "args.cni.ips", conf.ArgsIPs
	case args.IP != "":
		src, raw = "CNI_ARGS IP", strings.Split(string(args.IP), ",")
	default:
		return nil, nil
	}
	var out []string
	var have4, have6 bool
	for _, s := range raw {
		s = strings.TrimSpace(s)
		addr, err := parseAddrOrPrefix(s)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("%s: %q is not an IP address", src, s), "")
		}
		have := &have4
		if addr.Is6() {
			have = &have6
		}
		if *have {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("%s: at most one IPv4 and one IPv6 address, got %q", src, raw), "")
		}
		*have = true
		out = append(out, addr.String())
	}
	return out, nil
}

func parseAddrOrPrefix(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, err
		}
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("zoned address")
	}
	return a.Unmap(), nil
}
