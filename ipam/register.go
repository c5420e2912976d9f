package ipam

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/weftnet/weft/store"
)

// Command names, as registered in the store.
const (
	CmdAssign        = "ipam.assign"
	CmdRelease       = "ipam.release"
	CmdReleaseHandle = "ipam.releaseHandle"
	CmdReleaseHost   = "ipam.releaseHost"
	CmdReclaimEmpty  = "ipam.reclaimEmpty"
	CmdGC            = "ipam.gc"
	CmdConfigure     = "ipam.configure"
	CmdDeletePool    = "ipam.deletePool"
)

// Register adds the IPAM commands and validators to a store registry
// (creating its maps if needed). The log receives notable events (block
// claims, reclaims, GC releases); handlers never log per allocation above
// debug level.
func Register(reg *store.Registry, log *slog.Logger) {
	register(reg, log, newBlockCache())
}

// register is Register with a chosen block cache (nil: none), so that
// tests can run a replica without one.
func register(reg *store.Registry, log *slog.Logger, cache *blockCache) {
	if reg.Commands == nil {
		reg.Commands = map[string]store.CommandHandler{}
	}
	if reg.Validators == nil {
		reg.Validators = map[string][]store.Validator{}
	}
	for name, h := range commands(log, cache) {
		reg.Commands[name] = h
	}
	for kind, vs := range validators(cache) {
		reg.Validators[kind] = append(reg.Validators[kind], vs...)
	}
}

// Commands returns the IPAM command handlers by name. Each decodes its
// JSON request (AssignRequest, ReleaseRequest, ...) and returns its JSON
// response (AssignResponse, ReleaseResponse, ...). Prefer Register, which
// also lets the validators share the handlers' block cache.
func Commands(log *slog.Logger) map[string]store.CommandHandler {
	return commands(log, newBlockCache())
}

func commands(log *slog.Logger, cache *blockCache) map[string]store.CommandHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return map[string]store.CommandHandler{
		CmdAssign:        handler(log, cache, CmdAssign, (*session).assign),
		CmdRelease:       handler(log, cache, CmdRelease, (*session).release),
		CmdReleaseHandle: handler(log, cache, CmdReleaseHandle, (*session).releaseHandle),
		CmdReleaseHost:   handler(log, cache, CmdReleaseHost, (*session).releaseHost),
		CmdReclaimEmpty:  handler(log, cache, CmdReclaimEmpty, (*session).reclaimEmpty),
		CmdGC:            handler(log, cache, CmdGC, (*session).gc),
		CmdConfigure:     handler(log, cache, CmdConfigure, (*session).configure),
		CmdDeletePool:    handler(log, cache, CmdDeletePool, (*session).deletePool),
	}
}

// handler adapts a typed session method to a store.CommandHandler.
func handler[Req, Resp any](log *slog.Logger, cache *blockCache, name string, run func(*session, Req) (Resp, error)) store.CommandHandler {
	log = log.With("command", name)
	return func(tx store.Tx, payload []byte) ([]byte, error) {
		var req Req
		if err := json.Unmarshal(payload, &req); err != nil {
			return nil, newError(ErrBadRequest, store.ErrInvalid, "%s: decode request: %v", name, err)
		}
		resp, err := run(newSession(tx, log, cache), req)
		if err != nil {
			return nil, err
		}
		out, err := json.Marshal(resp)
		if err != nil {
			return nil, fmt.Errorf("%s: encode response: %w", name, err)
		}
		return out, nil
	}
}
