package calc

import "github.com/weftnet/weft/api"

// loopSettings is the resolver of the apply loop's own settings
// (dataplane.LoopSettings): FelixConfiguration's routeRefreshInterval is
// the period of the full resync, logSeverityScreen the dataplane's log
// level. It also reports a stored FelixConfiguration that the API would
// refuse today (one written before weft refused some of its fields): the
// fields weft applies still take effect, the others never did.
type loopSettings struct{ env Env }

func newLoopSettings(env Env) Resolver { return &loopSettings{env: env} }

func (r *loopSettings) Name() string    { return "loop-settings" }
func (r *loopSettings) Kinds() []string { return []string{api.KindFelixConfiguration} }
func (r *loopSettings) OnUpdate(Update) {}

func (r *loopSettings) Contribute(out *Output) {
	topo := r.env.Topology
	for _, name := range sortedKeys(topo.FelixConfigs) {
		if err := api.Validate(topo.FelixConfigs[name]); err != nil {
			out.problem("%v (stored before weft refused it: only the fields weft applies take effect)", err)
		}
	}
	s := &out.Desired.Loop
	if d := topo.Felix.RouteRefreshInterval; d != nil {
		if d.Duration >= api.MinRouteRefreshInterval && d.Duration <= api.MaxRouteRefreshInterval {
			s.ResyncPeriod = d.Duration
		}
	}
	s.LogLevel = logLevel(topo.Felix.LogSeverityScreen)
}

// logLevel maps Felix's severities to slog's level names ("" for unset or
// unknown).
func logLevel(severity string) string {
	switch severity {
	case "Trace", "Debug":
		return "debug"
	case "Info":
		return "info"
	case "Warning":
		return "warn"
	case "Error", "Fatal":
		return "error"
	}
	return ""
}
