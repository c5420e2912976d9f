package conformance

import (
	"bytes"
	"slices"
	"testing"
	"text/template"

	"github.com/weftnet/weft/api"
)

// Funcs are template functions with made-up addresses, for checking the
// table without a cluster.
func fakeFuncs() template.FuncMap {
	return template.FuncMap{
		"ip": func(string) string { return "10.244.1.1" }, "ip6": func(string) string { return "fd00::1" },
		"cidr": func(string) string { return "10.244.1.1/32" }, "cidr6": func(string) string { return "fd00::1/128" },
		"hostip": func(string) string { return "192.168.1.2" }, "hostcidr": func(string) string { return "192.168.1.2/32" },
		"iface": func(string) string { return "eth0" },
	}
}

// The table itself: enough scenarios, every feature covered, every
// resource valid, every probe well formed.
func TestTable(t *testing.T) {
	if len(Scenarios) < 25 {
		t.Fatalf("%d scenarios, want at least 25", len(Scenarios))
	}
	covered := map[string]bool{}
	names := map[string]bool{}
	workloads := map[string]bool{}
	for _, w := range Workloads {
		workloads[w.Ref()] = true
	}
	for _, sc := range Scenarios {
		if names[sc.Name] {
			t.Errorf("scenario %q twice", sc.Name)
		}
		names[sc.Name] = true
		for _, f := range sc.Covers {
			if !slices.Contains(Features, f) {
				t.Errorf("%s: unknown feature %q", sc.Name, f)
			}
			covered[f] = true
		}
		for i, st := range sc.Steps {
			for _, doc := range []string{st.Apply, st.Delete} {
				if doc == "" {
					continue
				}
				tpl, err := template.New("").Funcs(fakeFuncs()).Parse(doc)
				if err != nil {
					t.Errorf("%s step %d: %v", sc.Name, i, err)
					continue
				}
				var b bytes.Buffer
				if err := tpl.Execute(&b, nil); err != nil {
					t.Errorf("%s step %d: %v", sc.Name, i, err)
					continue
				}
				rs, err := api.Decode(b.Bytes())
				if err != nil {
					t.Errorf("%s step %d: %v", sc.Name, i, err)
					continue
				}
				for _, r := range rs {
					api.Default(r)
					if err := api.Validate(r); err != nil {
						t.Errorf("%s step %d: %v", sc.Name, i, err)
					}
				}
			}
			if len(st.Probes) == 0 {
				t.Errorf("%s step %d: no probes", sc.Name, i)
			}
			for _, p := range st.Probes {
				for _, end := range []string{p.From, p.To} {
					if !workloads[end] && !slices.Contains([]string{"host:h1", "host:h2", "host:h3"}, end) {
						t.Errorf("%s: probe end %q is not in the world", sc.Name, end)
					}
				}
				if !slices.Contains([]string{"tcp", "tcp6", "udp", "udp6", "ping", "ping6"}, p.Proto) || (p.Port == 0) != (p.Proto == "ping" || p.Proto == "ping6") {
					t.Errorf("%s: bad probe %+v", sc.Name, p)
				}
			}
		}
	}
	for _, f := range Features {
		if !covered[f] {
			t.Errorf("feature %q is covered by no scenario", f)
		}
	}
}
