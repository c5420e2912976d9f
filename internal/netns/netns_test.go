package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseNSLink(t *testing.T) {
	for _, tc := range []struct {
		link, kind string
		ino        uint64
		ok         bool
	}{
		{"net:[4026532281]", "net", 4026532281, true},
		{"mnt:[4026531841]", "mnt", 4026531841, true},
		{"mnt:[4026531841]", "net", 0, false},
		{"net:[x]", "net", 0, false},
		{"", "net", 0, false},
	} {
		ino, ok := ParseNSLink(tc.link, tc.kind)
		if ino != tc.ino || ok != tc.ok {
			t.Errorf("ParseNSLink(%q, %s) = %d, %v", tc.link, tc.kind, ino, ok)
		}
	}
}

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no `true`:", err)
	}
	if Alive(cmd.Process.Pid) {
		t.Error("an exited and reaped process is alive")
	}
}

func TestCurrentDoRunsInPlace(t *testing.T) {
	ran := false
	if err := Current().Do(func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do on the current namespace: ran %v, %v", ran, err)
	}
	want := errors.New("boom")
	if err := Current().Do(func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("error not passed through: %v", err)
	}
}

// A thread that cannot be switched back must never run anything else: it
// ends with the goroutine that ran fn. Its id disappearing from
// /proc/self/task shows the runtime ended it.
func TestThreadNotRestoredIsDiscarded(t *testing.T) {
	failing := func() (func() error, error) {
		return func() error { return errors.New("cannot switch back") }, nil
	}
	tid := offMainThread(t, failing)
	waitThreadGone(t, tid)

	// A thread whose namespaces fn changes for good (no leave) goes too.
	tid = offMainThread(t, func() (func() error, error) { return nil, nil })
	waitThreadGone(t, tid)
}

// offMainThread runs onThread with enter until fn lands on a thread other
// than the process's main one, and returns that thread's id. The main
// thread cannot end: a discarded one is parked for good instead, which
// keeps it from running anything else, so after at most one such round
// every goroutine runs on other threads. If it keeps coming back, it was
// given back to the runtime: the bug this guards against.
func offMainThread(t *testing.T, enter func() (func() error, error)) int {
	t.Helper()
	for range 10 {
		var tid int
		err := onThread(enter, func() error {
			tid = unix.Gettid()
			return nil
		})
		if _, leave := enter(); leave != nil && err == nil {
			t.Fatal("the error of switching back was lost")
		}
		if tid != os.Getpid() {
			return tid
		}
	}
	t.Fatal("onThread keeps running on the main thread: it was given back after a failed switch")
	return 0
}

func waitThreadGone(t *testing.T, tid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d still exists: it would be reused", tid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A panic in fn reaches the caller, after the thread was switched back.
func TestDoPanicReachesTheCaller(t *testing.T) {
	left := false
	defer func() {
		if p := recover(); p != "deliberate" || !left {
			t.Fatalf("recovered %v, switched back %v", p, left)
		}
	}()
	_ = onThread(func() (func() error, error) {
		return func() error { left = true; return nil }, nil
	}, func() error { panic("deliberate") })
}

func TestBadNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b"} {
		if err := Create(name); err == nil {
			t.Errorf("Create(%q) succeeded", name)
		}
	}
}

func TestStartRefusesPdeathsig(t *testing.T) {
	cmd := exec.Command("true")
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := Start(Current(), cmd); err == nil {
		t.Fatal("Start with Pdeathsig succeeded: the child would die with the throwaway thread")
	}
}
