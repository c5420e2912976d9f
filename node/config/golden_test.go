package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.golden from the current errors")

// TestBadConfigs parses every testdata/bad/*.toml, each holding exactly one
// kind of mistake, and compares the one-line error with its .golden file.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("only %d bad configs under testdata/bad", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".toml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := parse(data, filepath.Base(file), defaults("testhost"))
			if err == nil {
				t.Fatalf("parsed without error: %+v", cfg)
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error is %T, not *Error: %v", err, err)
			}
			if len(cerr.Errors) != 1 {
				t.Errorf("want exactly one problem per bad file, got %d: %v", len(cerr.Errors), cerr.Errors)
			}
			for _, fe := range cerr.Errors {
				if fe.Line == 0 {
					t.Errorf("problem without a line: %v", fe)
				}
			}
			got := err.Error()
			if strings.Contains(got, "\n") {
				t.Errorf("error spans several lines: %q", got)
			}
			golden := strings.TrimSuffix(file, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != strings.TrimSuffix(string(want), "\n") {
				t.Errorf("error:\n got  %s\n want %s", got, want)
			}
		})
	}
}
