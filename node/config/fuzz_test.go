package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse: Parse never panics, every error is an *Error whose first line
// names a problem, and whatever parses survives the Effective round trip.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/bad/*.toml")
	seeds = append(seeds, examplePath)
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("[[network.pool]]\nname = \"a\"\ncidr = \"fd00::/64\"\nblock_size = 120\n"))
	f.Add([]byte("node.labels = { \"a\\u0041/b\" = \"c\" }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse(data, "fuzz.toml", defaults("fuzzhost"))
		if err != nil {
			if e, ok := err.(*Error); !ok || len(e.Errors) == 0 {
				t.Fatalf("error %T without problems: %v", err, err)
			}
			return
		}
		out, err := c.Effective()
		if err != nil {
			t.Fatalf("Effective: %v", err)
		}
		back, err := parse(out, "effective.toml", defaults("fuzzhost"))
		if err != nil {
			t.Fatalf("Effective output does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip differs:\n%+v\n%+v", back, c)
		}
	})
}
