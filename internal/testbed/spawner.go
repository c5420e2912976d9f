package testbed

import (
	"errors"
	"os/exec"
	"runtime"
	"syscall"
)

// spawner starts the site's long-lived processes (agents and mount namespace
// holders) from one OS thread that lives exactly as long as the site.
//
// They are started with Pdeathsig=SIGKILL so that they die with the test
// process even when it is killed outright. Linux sends that signal when the
// *thread* that forked the child exits, and Go ends threads (for example
// those a goroutine left locked, as after an unrestorable setns), so a child
// forked from an arbitrary thread could be killed at a random moment
// (golang/go#27505). Forking from a thread locked for the site's lifetime
// avoids that; when the site closes the thread ends, which kills whatever
// escaped cleanup.
type spawner struct {
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

func newSpawner() *spawner {
	sp := &spawner{reqs: make(chan spawnReq)}
	go func() {
		// Never unlocked: the thread ends with this goroutine.
		runtime.LockOSThread()
		for r := range sp.reqs {
			r.errc <- r.cmd.Start()
		}
	}()
	return sp
}

// start starts cmd on the spawner's thread with Pdeathsig set.
func (sp *spawner) start(cmd *exec.Cmd) (err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	errc := make(chan error, 1)
	defer func() {
		if recover() != nil {
			err = errors.New("testbed: site is closed")
		}
	}()
	sp.reqs <- spawnReq{cmd: cmd, errc: errc}
	return <-errc
}

// stop ends the spawner's thread.
func (sp *spawner) stop() { close(sp.reqs) }
