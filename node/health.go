package node

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"text/tabwriter"

	"github.com/weftnet/weft/node/localapi"
)

// health aggregates the liveness and readiness of the agent's components.
// The agent is live when every component is live, and ready when every
// component is ready.
type health struct {
	mu         sync.Mutex
	components map[string]localapi.ComponentStatus
	// probes compute a component's state when asked (e.g. the datastore's
	// in-sync state), instead of being pushed.
	probes map[string]func() localapi.ComponentStatus
}

func newHealth() *health {
	return &health{components: map[string]localapi.ComponentStatus{}, probes: map[string]func() localapi.ComponentStatus{}}
}

// probe registers a component whose state is computed on every report.
func (h *health) probe(name string, f func() localapi.ComponentStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.components, name)
	h.probes[name] = f
}

// set records a component's state.
func (h *health) set(c localapi.ComponentStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.probes, c.Name)
	h.components[c.Name] = c
}

// report returns every component sorted by name, and the overall verdicts.
func (h *health) report() (cs []localapi.ComponentStatus, live, ready bool) {
	h.mu.Lock()
	for _, c := range h.components {
		cs = append(cs, c)
	}
	probes := make([]func() localapi.ComponentStatus, 0, len(h.probes))
	for _, p := range h.probes {
		probes = append(probes, p)
	}
	h.mu.Unlock()
	// Probes run outside the lock: they may take their own locks.
	for _, p := range probes {
		cs = append(cs, p())
	}
	live, ready = true, len(cs) > 0
	for _, c := range cs {
		live = live && c.Live
		ready = ready && c.Ready
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	return cs, live, ready
}

// writeTable prints the component table the health endpoints return, in the
// style of Felix's health report.
func writeTable(w io.Writer, cs []localapi.ComponentStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tSTATE\tLIVE\tREADY\tDETAIL")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%t\t%t\t%s\n", c.Name, c.State, c.Live, c.Ready, c.Detail)
	}
	_ = tw.Flush()
}
