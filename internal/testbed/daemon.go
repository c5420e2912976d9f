package testbed

import "os/exec"

// Launch starts cmd inside the namespace (a host's: in its mount namespace
// too), for a daemon beside the agents: BIRD or FRR as the site's router in
// Site.Router. The process dies with the test process (Pdeathsig) and
// Site.Close kills it at the latest (every process inside a site namespace
// is); stop it earlier through cmd.Process. The caller waits for it
// (cmd.Wait) to reap it.
func (n *Netns) Launch(cmd *exec.Cmd) error { return n.ns.Launch(cmd) }
