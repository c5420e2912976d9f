package api

import (
	"encoding/json"
	"testing"
	"time"
)

func TestPortJSON(t *testing.T) {
	cases := []struct {
		in, out string
		want    Port
		err     bool
	}{
		{in: `80`, out: `80`, want: SinglePort(80)},
		{in: `"80"`, out: `80`, want: SinglePort(80)},
		{in: `"1000:2000"`, out: `"1000:2000"`, want: Port{MinPort: 1000, MaxPort: 2000}},
		{in: `"5:5"`, out: `5`, want: SinglePort(5)},
		{in: `"http"`, out: `"http"`, want: NamedPort("http")},
		{in: `"80-90"`, out: `"80-90"`, want: NamedPort("80-90")}, // a name; Validate rejects it
		{in: `"2000:1000"`, err: true},
		{in: `65536`, err: true},
		{in: `"65536"`, err: true},
		{in: `"1:70000"`, err: true},
		{in: `-1`, err: true},
		{in: `""`, err: true},
		{in: `1.5`, err: true},
	}
	for _, c := range cases {
		var p Port
		err := json.Unmarshal([]byte(c.in), &p)
		if c.err {
			if err == nil {
				t.Errorf("%s: want error, got %+v", c.in, p)
			}
			continue
		}
		if err != nil || p != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.in, p, err, c.want)
			continue
		}
		out, _ := json.Marshal(p)
		if string(out) != c.out {
			t.Errorf("%s: marshals as %s, want %s", c.in, out, c.out)
		}
	}
}

func TestProtocol(t *testing.T) {
	cases := []struct {
		in, out, canonical string
		ports, icmp, icmp6 bool
		known              bool
	}{
		{`"TCP"`, `"TCP"`, "TCP", true, false, false, true},
		{`"tcp"`, `"tcp"`, "TCP", true, false, false, true},
		{`6`, `6`, "TCP", true, false, false, true},
		{`"17"`, `17`, "UDP", true, false, false, true},
		{`"sctp"`, `"sctp"`, "SCTP", true, false, false, true},
		{`"UDPLite"`, `"UDPLite"`, "UDPLite", false, false, false, true},
		{`"icmp"`, `"icmp"`, "ICMP", false, true, false, true},
		{`58`, `58`, "ICMPv6", false, false, true, true},
		{`"ICMPv6"`, `"ICMPv6"`, "ICMPv6", false, false, true, true},
		{`47`, `47`, "47", false, false, false, true},
		{`"GRE"`, `"GRE"`, "GRE", false, false, false, false},
	}
	for _, c := range cases {
		var p Protocol
		if err := json.Unmarshal([]byte(c.in), &p); err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		out, _ := json.Marshal(p)
		_, known := p.NumValue()
		if string(out) != c.out || p.Canonical() != c.canonical || p.SupportsPorts() != c.ports ||
			p.IsICMP() != c.icmp || p.IsICMPv6() != c.icmp6 || known != c.known {
			t.Errorf("%s: out %s canonical %s ports %v icmp %v/%v known %v", c.in, out, p.Canonical(), p.SupportsPorts(), p.IsICMP(), p.IsICMPv6(), known)
		}
	}
	for _, bad := range []string{`256`, `-1`, `true`} {
		var p Protocol
		if err := json.Unmarshal([]byte(bad), &p); err == nil {
			t.Errorf("%s should not decode", bad)
		}
	}
}

func TestASNumberAndDuration(t *testing.T) {
	for in, want := range map[string]ASNumber{`64512`: 64512, `"65000"`: 65000, `"1.10"`: 65546, `4294967295`: 4294967295} {
		var a ASNumber
		if err := json.Unmarshal([]byte(in), &a); err != nil || a != want {
			t.Errorf("%s: %d %v", in, a, err)
		}
		if out, _ := json.Marshal(a); string(out) != want.String() {
			t.Errorf("%s marshals as %s", in, out)
		}
	}
	for _, bad := range []string{`4294967296`, `"1.70000"`, `"x"`, `-5`} {
		var a ASNumber
		if err := json.Unmarshal([]byte(bad), &a); err == nil {
			t.Errorf("%s should not decode", bad)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"1m30s"`), &d); err != nil || d.Duration != 90*time.Second {
		t.Errorf("duration %v %v", d, err)
	}
	if out, _ := json.Marshal(d); string(out) != `"1m30s"` {
		t.Errorf("duration marshals as %s", out)
	}
	if err := json.Unmarshal([]byte(`"soon"`), &d); err == nil {
		t.Error("bad duration accepted")
	}
}
