package cni

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseNetConf(t *testing.T) {
	tests := []struct {
		name     string
		conf     string
		wantCode uint   // 0 = valid
		wantMsg  string // part of the error message
		check    func(t *testing.T, c *NetConf)
	}{
		{name: "minimal: defaults", conf: `{"cniVersion":"1.0.0","name":"weft","type":"weft"}`,
			check: func(t *testing.T, c *NetConf) {
				if c.Socket != "/run/weft/weft.sock" || c.Namespace != "" || c.LogLevel != slog.LevelWarn || c.PrevResult != nil {
					t.Errorf("defaults: %+v", c)
				}
			}},
		{name: "every weft key", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","socket":"/run/x.sock",
			"namespace":"shop","pools":["a","b"],"labels":{"app":"till"},"log_level":"debug",
			"dns":{"nameservers":["10.0.0.53"]},"ipam":{},"capabilities":{"ips":true},
			"runtimeConfig":{"ips":["10.244.1.9/24"]},
			"args":{"cni":{"ips":["10.244.1.8"],"labels":[{"key":"env","value":"prod"}]},"other":{"x":1}}}`,
			check: func(t *testing.T, c *NetConf) {
				want := &NetConf{CNIVersion: "1.0.0", Name: "n", Type: "weft", Socket: "/run/x.sock", Namespace: "shop",
					Pools: []string{"a", "b"}, Labels: map[string]string{"app": "till"}, LogLevel: slog.LevelDebug,
					DNS: types.DNS{Nameservers: []string{"10.0.0.53"}}, RuntimeIPs: []string{"10.244.1.9/24"},
					ArgsIPs: []string{"10.244.1.8"}, ArgsLabels: map[string]string{"env": "prod"}}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got  %+v\nwant %+v", c, want)
				}
			}},
		{name: "prevResult 1.0.0", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","prevResult":{"cniVersion":"1.0.0",
			"interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"10.244.0.5/32","interface":0}]}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.PrevResult == nil || len(c.PrevResult.IPs) != 1 || c.PrevResult.IPs[0].Address.String() != "10.244.0.5/32" {
					t.Errorf("prevResult: %+v", c.PrevResult)
				}
			}},
		{name: "prevResult 0.4.0 is converted", conf: `{"cniVersion":"0.4.0","name":"n","type":"weft","prevResult":{"cniVersion":"0.4.0",
			"interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"version":"4","address":"10.244.0.5/32","interface":0}]}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.PrevResult == nil || len(c.PrevResult.IPs) != 1 || len(c.PrevResult.Interfaces) != 1 {
					t.Errorf("prevResult: %+v", c.PrevResult)
				}
			}},
		{name: "not JSON", conf: `{"name":`, wantCode: types.ErrDecodingFailure, wantMsg: "not a JSON object"},
		{name: "unknown key is named", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","sokcet":"/x"}`,
			wantCode: types.ErrUnsupportedField, wantMsg: `unknown key "sokcet"`},
		{name: "ipam is refused", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"type":"host-local"}}`,
			wantCode: types.ErrUnsupportedField, wantMsg: `key "ipam" is not supported`},
		{name: "unknown capability", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","capabilities":{"bandwidth":true}}`,
			wantCode: types.ErrUnsupportedField, wantMsg: `capability "bandwidth"`},
		{name: "named ports and port mappings", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","capabilities":{"portMappings":true},
			"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},
			"args":{"cni":{"ports":[{"name":"http","protocol":"TCP","port":80}]}}}`,
			check: func(t *testing.T, c *NetConf) {
				if len(c.PortMappings) != 1 || c.PortMappings[0].HostPort != 8080 || len(c.ArgsPorts) != 1 || c.ArgsPorts[0].Name != "http" {
					t.Errorf("ports: %+v %+v", c.PortMappings, c.ArgsPorts)
				}
				got := requestedPorts(c)
				if len(got) != 2 || got[0].Name != "http" || got[1].HostPort != 8080 || got[1].Port != 80 || got[1].Protocol != "TCP" {
					t.Errorf("requested ports: %+v", got)
				}
			}},
		{name: "unknown runtimeConfig key", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","runtimeConfig":{"mac":"aa:bb:cc:dd:ee:ff"}}`,
			wantCode: types.ErrUnsupportedField, wantMsg: `runtimeConfig key "mac"`},
		{name: "pools of the wrong type", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","pools":"default-ipv4"}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: `key "pools": want a list of IP pool names`},
		{name: "empty pool name", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","pools":["a",""]}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: `key "pools": entry 1 is empty`},
		{name: "labels of the wrong type", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","labels":{"a":1}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: `key "labels"`},
		{name: "relative socket", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","socket":"weft.sock"}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: `key "socket": "weft.sock" is not an absolute path`},
		{name: "bad log level", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","log_level":"loud"}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: `key "log_level": "loud"`},
		{name: "bad runtimeConfig.ips", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","runtimeConfig":{"ips":"10.0.0.1"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: "runtimeConfig.ips"},
		{name: "bad prevResult", conf: `{"cniVersion":"1.0.0","name":"n","type":"weft","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}}`,
			wantCode: types.ErrDecodingFailure, wantMsg: `key "prevResult"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseNetConf([]byte(tt.conf))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tt.check(t, c)
				return
			}
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want a *types.Error", err, err)
			}
			if e.Code != tt.wantCode || !strings.Contains(e.Msg, tt.wantMsg) {
				t.Fatalf("error code %d %q, want code %d containing %q", e.Code, e.Msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
}
