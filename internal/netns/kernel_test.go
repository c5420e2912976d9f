package netns

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/testtier"
)

// newNamed creates a namespace with a unique name and deletes it when the
// test ends.
func newNamed(t *testing.T) (string, *Target) {
	t.Helper()
	testtier.Kernel(t)
	name := fmt.Sprintf("wnt-%d-%d", os.Getpid(), rand.IntN(1_000_000))
	if err := Create(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Delete(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	target, err := Open(PathOf(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Close() })
	return name, target
}

func TestKernelCreateListDelete(t *testing.T) {
	name, target := newNamed(t)
	if err := Create(name); err == nil {
		t.Error("creating an existing namespace succeeded")
	}
	if names, err := List("wnt-"); err != nil || !slices.Contains(names, name) {
		t.Errorf("List: %v, %v", names, err)
	}
	h, err := target.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil || lo.Attrs().OperState == netlink.OperDown || lo.Attrs().RawFlags&syscall.IFF_UP == 0 {
		t.Errorf("loopback not up: %v", err)
	}
	if err := Exists(PathOf(name)); err != nil {
		t.Error(err)
	}
	if err := Exists("/proc/self/ns/uts"); err == nil {
		t.Error("a UTS namespace passes as a network namespace")
	}
	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if err := Exists(PathOf(name)); err == nil {
		t.Errorf("%s still exists", PathOf(name))
	}
	if err := Delete(name); err != nil {
		t.Errorf("deleting twice: %v", err)
	}
}

// Do runs inside the namespace, and afterwards no thread of the process is
// left in it, however many Do calls ran at once.
func TestKernelDoLeavesNoThreadBehind(t *testing.T) {
	name, target := newNamed(t)
	ino, err := Inode(PathOf(name))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- target.Do(func() error {
				link, err := os.Readlink("/proc/thread-self/ns/net")
				if err != nil {
					return err
				}
				if got, _ := ParseNSLink(link, "net"); got != ino {
					return fmt.Errorf("inside Do the thread is in %s, want net:[%d]", link, ino)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		link, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // ended meanwhile
		}
		if got, _ := ParseNSLink(link, "net"); got == ino {
			t.Errorf("thread %s is still in the namespace", task.Name())
		}
	}
}

func output(t *testing.T, p Place, script string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command("sh", "-c", script)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := Run(p, cmd); err != nil {
		t.Fatalf("%s: %v: %s", script, err, errb.String())
	}
	return out.String()
}

// A process started in a namespace runs in it, with a /sys that shows its
// devices, in this process's working directory.
func TestKernelStartInNamespace(t *testing.T) {
	name, target := newNamed(t)
	ino, _ := Inode(PathOf(name))
	wd, _ := os.Getwd()
	got := output(t, target, "readlink /proc/self/ns/net; ls /sys/class/net; pwd")
	if want := fmt.Sprintf("net:[%d]\nlo\n%s\n", ino, wd); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A MountNS keeps its private tmpfs across processes, shows it to nobody
// else, and still sees namespaces created after it.
func TestKernelMountNS(t *testing.T) {
	name, target := newNamed(t)
	dir := filepath.Join(t.TempDir(), "private")
	m, err := NewMountNS(target, Tmpfs{Dir: dir, Source: "weft-nstest"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ino, _ := Inode(PathOf(name))
	got := output(t, m, "readlink /proc/self/ns/net; ls /sys/class/net; touch "+dir+"/mark; grep -c weft-nstest /proc/self/mountinfo")
	if want := fmt.Sprintf("net:[%d]\nlo\n1\n", ino); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "mark")); err == nil {
		t.Error("a file in the private tmpfs is visible outside")
	}
	if got := output(t, m, "ls "+dir); got != "mark\n" {
		t.Errorf("the tmpfs did not persist: %q", got)
	}
	later, _ := newNamed(t)
	if got := output(t, m, "test -e "+PathOf(later)+" && echo seen"); got != "seen\n" {
		t.Errorf("a namespace created later is not visible inside: %q", got)
	}
	self, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(self), "weft-nstest") {
		t.Error("the private tmpfs leaked into this process's mounts")
	}
}

// A Launcher's processes run where asked and die with it.
func TestKernelLauncher(t *testing.T) {
	name, target := newNamed(t)
	ino, _ := Inode(PathOf(name))
	l := NewLauncher()
	cmd := exec.Command("sleep", "60")
	if err := l.Start(target, cmd); err != nil {
		l.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	if pids := ProcessesIn(map[uint64]bool{ino: true}); !slices.Contains(pids, cmd.Process.Pid) {
		t.Errorf("ProcessesIn = %v, want %d", pids, cmd.Process.Pid)
	}
	// The launcher's next start is back in this process's namespaces.
	self, _ := os.Readlink("/proc/self/ns/net")
	var out bytes.Buffer
	probe := exec.Command("readlink", "/proc/self/ns/net")
	probe.Stdout = &out
	if err := l.Start(Current(), probe); err != nil {
		t.Fatal(err)
	}
	_ = probe.Wait()
	if strings.TrimSpace(out.String()) != self {
		t.Errorf("a start in the current namespace ran in %q, want %q", out.String(), self)
	}
	l.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the launched process outlived its launcher")
	}
	if err := l.Start(Current(), exec.Command("true")); err == nil {
		t.Error("a closed launcher started a process")
	}
}

func TestKernelKill(t *testing.T) {
	_, target := newNamed(t)
	cmd := exec.Command("sleep", "60")
	if err := Start(target, cmd); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	if err := Kill([]int{cmd.Process.Pid}, syscall.SIGTERM, time.Second); err != nil {
		t.Fatal(err)
	}
	if Alive(cmd.Process.Pid) {
		t.Error("still alive after Kill")
	}
}
