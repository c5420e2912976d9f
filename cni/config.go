package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/node/localapi"
)

// PluginType is the plugin's "type" in a network configuration: the name
// runtimes look for in their plugin directories.
const PluginType = "weft"

// DefaultNamespace is the workload namespace when neither CNI_ARGS nor the
// network configuration names one.
const DefaultNamespace = "default"

// Capability names weft accepts in "capabilities" (and so in
// "runtimeConfig"): "ips" (static addresses) and "portMappings" (host
// ports, recorded on the workload's endpoint; the portmap plugin chained
// after weft programs them).
const (
	capabilityIPs          = "ips"
	capabilityPortMappings = "portMappings"
)

// PortMapping is one entry of runtimeConfig.portMappings.
type PortMapping struct {
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// NetConf is the weft plugin's section of a network configuration, after
// validation.
type NetConf struct {
	CNIVersion string
	Name       string // network name
	Type       string

	// Socket is the agent's local API socket ("socket").
	Socket string
	// Namespace is the workload namespace unless CNI_ARGS has
	// K8S_POD_NAMESPACE ("namespace").
	Namespace string
	// Pools restricts automatic assignment to these IP pools ("pools").
	Pools []string
	// Labels go on every workload of this network ("labels").
	Labels map[string]string
	// LogLevel is the level of the plugin's own log on stderr ("log_level").
	LogLevel slog.Level
	// DNS is copied into the result ("dns").
	DNS types.DNS

	// RuntimeIPs are runtimeConfig.ips (capability "ips"); ArgsIPs and
	// ArgsLabels are args.cni.ips and args.cni.labels (CNI conventions).
	RuntimeIPs []string
	ArgsIPs    []string
	ArgsLabels map[string]string
	// PortMappings are runtimeConfig.portMappings (capability
	// "portMappings"); ArgsPorts are args.cni.ports, the named ports
	// ([{"name": "http", "protocol": "tcp", "port": 8080}]).
	PortMappings []PortMapping
	ArgsPorts    []localapi.WorkloadPort

	// PrevResult is the previous result (CHECK and DEL; ADD only when weft
	// is wrongly chained after another plugin), converted to 1.x.
	PrevResult *types100.Result
}

// confKeys lists every key weft accepts in its section. Anything else is
// an error that names the key: a setting that is silently ignored is worse
// than one that is refused (SPEC §8).
func confKeys() []string {
	return []string{
		// Standard keys (CNI spec), set by the operator or injected by the runtime.
		"cniVersion", "name", "type", "capabilities", "runtimeConfig", "args", "prevResult", "dns", "ipam",
		// weft's own.
		"socket", "namespace", "pools", "labels", "log_level",
	}
}

// ParseNetConf decodes and validates the network configuration a runtime
// passes on stdin. Errors are *types.Error with the CNI code that fits.
func ParseNetConf(data []byte) (*NetConf, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("network configuration is not a JSON object: %v", err), "")
	}
	if unknown := unknownKeys(raw, confKeys()); len(unknown) > 0 {
		return nil, types.NewError(types.ErrUnsupportedField,
			fmt.Sprintf("network configuration: unknown key %q in the weft plugin's section (known: %s)", unknown[0], strings.Join(confKeys(), ", ")), "")
	}
	c := &NetConf{Socket: localapi.DefaultSocket, LogLevel: slog.LevelWarn}
	var logLevel string
	var ipam map[string]json.RawMessage
	var caps map[string]bool
	var runtimeConfig map[string]json.RawMessage
	var args struct {
		CNI struct {
			IPs    []string `json:"ips"`
			Labels []struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			} `json:"labels"`
			Ports []localapi.WorkloadPort `json:"ports"`
		} `json:"cni"`
	}
	var prev json.RawMessage
	fields := []struct {
		key, want string
		into      any
	}{
		{"cniVersion", "a version string", &c.CNIVersion},
		{"name", "a string", &c.Name},
		{"type", "a string", &c.Type},
		{"socket", "a path", &c.Socket},
		{"namespace", "a string", &c.Namespace},
		{"pools", "a list of IP pool names", &c.Pools},
		{"labels", "an object of string labels", &c.Labels},
		{"log_level", "one of debug, info, warn, error", &logLevel},
		{"dns", "a CNI dns object", &c.DNS},
		{"ipam", "an object", &ipam},
		{"capabilities", "an object of booleans", &caps},
		{"runtimeConfig", "an object", &runtimeConfig},
		{"args", "an object", &args},
		{"prevResult", "a CNI result", &prev},
	}
	for _, f := range fields {
		v, ok := raw[f.key]
		if !ok || string(v) == "null" {
			continue
		}
		if err := json.Unmarshal(v, f.into); err != nil {
			return nil, invalidConf("key %q: want %s (%v)", f.key, f.want, err)
		}
	}

	if len(ipam) > 0 {
		return nil, types.NewError(types.ErrUnsupportedField,
			`network configuration: key "ipam" is not supported: weft assigns addresses from its own IP pools (remove "ipam"; use "pools" to choose pools)`, "")
	}
	for _, k := range sortedKeys(caps) {
		if k != capabilityIPs && k != capabilityPortMappings {
			return nil, types.NewError(types.ErrUnsupportedField,
				fmt.Sprintf("network configuration: capability %q is not supported by weft (supported: %q, %q)", k, capabilityIPs, capabilityPortMappings), "")
		}
	}
	for _, k := range sortedKeys(runtimeConfig) {
		switch k {
		case capabilityIPs:
			if err := json.Unmarshal(runtimeConfig[k], &c.RuntimeIPs); err != nil {
				return nil, invalidConf("runtimeConfig.ips: want a list of addresses (%v)", err)
			}
		case capabilityPortMappings:
			if err := json.Unmarshal(runtimeConfig[k], &c.PortMappings); err != nil {
				return nil, invalidConf("runtimeConfig.portMappings: want a list of {hostPort, containerPort, protocol} (%v)", err)
			}
		default:
			return nil, types.NewError(types.ErrUnsupportedField,
				fmt.Sprintf("network configuration: runtimeConfig key %q is not supported by weft (supported: %q, %q)", k, capabilityIPs, capabilityPortMappings), "")
		}
	}
	c.ArgsIPs = args.CNI.IPs
	c.ArgsPorts = args.CNI.Ports
	for _, l := range args.CNI.Labels {
		if c.ArgsLabels == nil {
			c.ArgsLabels = map[string]string{}
		}
		c.ArgsLabels[l.Key] = l.Value
	}

	if !filepath.IsAbs(c.Socket) {
		return nil, invalidConf("key \"socket\": %q is not an absolute path", c.Socket)
	}
	for i, p := range c.Pools {
		if strings.TrimSpace(p) == "" {
			return nil, invalidConf("key \"pools\": entry %d is empty", i)
		}
	}
	if logLevel != "" {
		lv, err := parseLogLevel(logLevel)
		if err != nil {
			return nil, invalidConf("key \"log_level\": %v", err)
		}
		c.LogLevel = lv
	}
	if len(prev) > 0 {
		r, err := parsePrevResult(c.CNIVersion, prev)
		if err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("network configuration: key \"prevResult\": %v", err), "")
		}
		c.PrevResult = r
	}
	return c, nil
}

func invalidConf(format string, args ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, "network configuration: "+fmt.Sprintf(format, args...), "")
}

// parsePrevResult decodes a previous result of the configuration's version
// and converts it to the 1.x form weft compares against.
func parsePrevResult(confVersion string, data []byte) (*types100.Result, error) {
	r, err := version.NewResult(confVersion, data)
	if err != nil {
		return nil, err
	}
	return types100.NewResultFromResult(r)
}

func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

// unknownKeys returns the keys of m that are not in known, sorted.
func unknownKeys[V any](m map[string]V, known []string) []string {
	var out []string
	for k := range m {
		if !slices.Contains(known, k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// compactJSON is for log lines: the configuration on one line.
func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}
