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
}

func newHealth() *health {
	return &health{components: map[string]localapi.ComponentStatus{}}
}

// set records a component's state.
func (h *health) set(c localapi.ComponentStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.components[c.Name] = c
}

// report returns every component sorted by name, and the overall verdicts.
func (h *health) report() (cs []localapi.ComponentStatus, live, ready bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	live, ready = true, len(h.components) > 0
	for _, c := range h.components {
		cs = append(cs, c)
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
