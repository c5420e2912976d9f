package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// defaultExecTimeout bounds every command the test bed runs for a test, so
// that a wedged command fails the test instead of hanging it until the go
// test timeout (which would skip all cleanup).
const defaultExecTimeout = 60 * time.Second

// run executes argv and returns its standard output. On failure the error
// names the command and carries its standard error, so that a test failure
// explains itself.
func run(ctx context.Context, stdin string, argv ...string) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("run: empty command")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultExecTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(lastLines(stdout.String(), 5))
		}
		if msg != "" {
			return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
		}
		return stdout.String(), fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return stdout.String(), nil
}

// ip runs one `ip` command in the root namespace (used only for
// `ip netns add/del`, which manage names under /run/netns).
func ip(args ...string) error {
	_, err := run(context.Background(), "", append([]string{"ip"}, args...)...)
	return err
}

// ipBatch runs `ip` commands, one per line, inside network namespace ns. One
// process per namespace keeps site creation fast; ip stops at the first
// failing line and names it.
func ipBatch(ns string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	_, err := run(context.Background(), strings.Join(lines, "\n")+"\n", "ip", "-n", ns, "-batch", "-")
	if err != nil {
		return fmt.Errorf("in netns %s: %w", ns, err)
	}
	return nil
}

// lastLines returns at most n trailing lines of s.
func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
