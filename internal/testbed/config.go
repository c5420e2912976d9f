package testbed

import (
	"bytes"
	"fmt"
	"net"

	"github.com/BurntSushi/toml"
)

// Ports the generated agent configuration uses on each host's underlay
// address. Every host has its own namespace, so they never clash.
const (
	ClusterPort = 7700
	MetricsPort = 9091
)

// tomlDoc is a TOML document as nested maps, the form in which generated and
// test-supplied configuration are merged.
type tomlDoc = map[string]any

// parseTOML decodes a TOML fragment; what names the fragment in errors.
func parseTOML(what, src string) (tomlDoc, error) {
	doc := tomlDoc{}
	if src == "" {
		return doc, nil
	}
	if _, err := toml.Decode(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return doc, nil
}

// mergeTOML copies src into dst: tables merge key by key, anything else
// (values, arrays, arrays of tables) replaces what dst had.
func mergeTOML(dst, src tomlDoc) {
	for k, v := range src {
		sv, srcIsTable := v.(map[string]any)
		dv, dstIsTable := dst[k].(map[string]any)
		if srcIsTable && dstIsTable {
			mergeTOML(dv, sv)
			continue
		}
		if srcIsTable {
			cp := tomlDoc{}
			mergeTOML(cp, sv)
			dst[k] = cp
			continue
		}
		dst[k] = v
	}
}

func encodeTOML(doc tomlDoc) ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// lookupString returns doc[table][key] when it is a string.
func lookupString(doc tomlDoc, table, key string) (string, bool) {
	t, ok := doc[table].(map[string]any)
	if !ok {
		return "", false
	}
	s, ok := t[key].(string)
	return s, ok
}

// baseConfig is the configuration every host's agent starts from (SPEC §2):
// it pins every address to the host's underlay and every path into the
// host's directory.
func baseConfig(h *Host) tomlDoc {
	address := h.addr
	if h.addr6 != "" {
		address += "," + h.addr6
	}
	cluster := net.JoinHostPort(h.addr, fmt.Sprint(ClusterPort))
	return tomlDoc{
		"node": tomlDoc{
			"name":     h.name,
			"address":  address,
			"data_dir": h.dataDir,
		},
		"cluster": tomlDoc{
			"listen":    cluster,
			"advertise": cluster,
		},
		"api": tomlDoc{
			"socket": h.socket,
		},
		"metrics": tomlDoc{
			"listen": net.JoinHostPort(h.addr, fmt.Sprint(MetricsPort)),
		},
		"log": tomlDoc{
			"level": "debug",
		},
	}
}
