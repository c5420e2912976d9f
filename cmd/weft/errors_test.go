package main

import (
	"strings"
	"testing"

	"github.com/weftnet/weft/cni/cnitest"
	"github.com/weftnet/weft/node/localapi"
)

func TestOneLineJoinsLines(t *testing.T) {
	for in, want := range map[string]string{
		"plain":       "plain",
		"  padded \n": "padded",
		"invalid YAML:\n  line 3: key \"kind\" already set in map\n\n  line 4: x": `invalid YAML: line 3: key "kind" already set in map; line 4: x`,
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// stderrLine runs the real binary against a fake agent and returns its one
// stderr line (failing unless there is exactly one and the exit code is 1).
func stderrLine(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, code := runWeft(t, nil, args...)
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != 1 || len(lines) != 1 {
		t.Fatalf("exit %d, stdout %q, stderr %d lines: %.500s", code, stdout, len(lines), stderr)
	}
	return lines[0]
}

// An agent error quoting a huge value reaches the user as the agent's
// message (cut, saying so), not as a bare "400 Bad Request".
func TestHugeAgentErrorIsOneClearLine(t *testing.T) {
	agent := cnitest.NewAgent(t)
	huge := strings.Repeat("b", 500_000)
	agent.Fail("POST", "/v1/workloads", localapi.Errorf(localapi.CodeInvalid, "labels: value %q must be at most 63 characters", huge))
	line := stderrLine(t, "workload", "add", "w1", "--netns", "/run/netns/none", "--socket", agent.Socket)
	if !strings.HasPrefix(line, `weft: labels: value "bbbb`) || !strings.Contains(line, "message cut") || len(line) > 5000 {
		t.Fatalf("stderr line (%d bytes): %.200s … %s", len(line), line, line[max(0, len(line)-80):])
	}
}

// A namespace that needs escaping reaches the agent intact (it used to be
// pasted into the URL, which the agent refused as a malformed request).
func TestWorkloadListEscapesTheNamespace(t *testing.T) {
	agent := cnitest.NewAgent(t)
	agent.Put(localapi.Workload{Name: "w1", Namespace: "a b&c=d", IPs: []string{"10.0.0.1/32"}})
	stdout, stderr, code := runWeft(t, nil, "workload", "list", "-n", "a b&c=d", "-o", "json", "--socket", agent.Socket)
	if code != 0 || !strings.Contains(stdout, `"name": "w1"`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
