package calc

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/store"
)

// # Local inputs
//
// Not every input of the calculation is in the store: what this node
// observes of itself (its interfaces and their MTUs, whether its kernel can
// create IP-in-IP devices; later the routes its BGP speaker learns) enters
// the calculation through the dispatcher as well, so that the one desired
// state stays the one truth and every decision about the dataplane is taken
// here, purely. A local input is a keyed value like a store object: its
// kind starts with [LocalKindPrefix], a resolver that reads it lists the
// kind in Kinds() and receives its changes in OnUpdate; the Topology keeps
// the latest value of each (read with [Topology.Local]); a nil value is a
// deletion; a store RESET leaves local inputs alone. The producer runs in
// the node (an observer goroutine) and hands values to
// calcrun.Runner.SetLocal, which applies them on the calculation's
// goroutine and publishes a new state.

// LocalKindPrefix starts the kind of every local input; store kinds never
// do.
const LocalKindPrefix = "local:"

// The local inputs of weft today.
const (
	// LocalKindLinks: the node's interfaces as dataplane.Link values
	// ([]dataplane.Link, name ""), for the underlay MTU
	// (FelixConfiguration mtuIfacePattern applies here).
	LocalKindLinks = LocalKindPrefix + "Links"
	// LocalKindIPIP: whether the kernel can create IP-in-IP devices
	// ([Support], name "").
	LocalKindIPIP = LocalKindPrefix + "IPIPSupport"
)

// IsLocalKind reports whether kind names a local input.
func IsLocalKind(kind string) bool { return strings.HasPrefix(kind, LocalKindPrefix) }

// LocalInput is one local input; Value nil deletes it.
type LocalInput struct {
	Kind, Name string
	Value      any
}

// Key is the input's key.
func (in LocalInput) Key() store.Key { return store.Key{Kind: in.Kind, Name: in.Name} }

// Support says whether this node can do something its kernel may lack.
type Support struct {
	Available bool
	Reason    string
}

// OnLocal takes one local input. An input of a kind that is not local, or
// of a known kind with a value of the wrong type, is refused with an error
// (a wiring bug) and changes nothing.
func (d *Dispatcher) OnLocal(in LocalInput) error {
	if !IsLocalKind(in.Kind) {
		return fmt.Errorf("local input %s: kind does not start with %q", in.Key(), LocalKindPrefix)
	}
	if in.Value != nil {
		ok := true
		switch in.Kind {
		case LocalKindLinks:
			_, ok = in.Value.([]dataplane.Link)
		case LocalKindIPIP:
			_, ok = in.Value.(Support)
		}
		if !ok {
			return fmt.Errorf("local input %s: unexpected value %T", in.Key(), in.Value)
		}
	}
	k := in.Key()
	if in.Value == nil {
		delete(d.topo.local, k)
	} else {
		d.topo.local[k] = in.Value
	}
	d.notify(Update{Key: k, Value: in.Value})
	return nil
}

// Local returns the value of a local input, if set.
func (t *Topology) Local(kind, name string) (any, bool) {
	v, ok := t.local[store.Key{Kind: kind, Name: name}]
	return v, ok
}

// IPIPSupport says whether this node's kernel can create IP-in-IP devices
// (the local input; assumed until the node says otherwise).
func (t *Topology) IPIPSupport() Support {
	if v, ok := t.Local(LocalKindIPIP, ""); ok {
		return v.(Support)
	}
	return Support{Available: true, Reason: "not probed"}
}

// UnderlayMTU is the underlay MTU this node's workloads and tunnels derive
// theirs from: chosen among the observed links (the local input) as
// FelixConfiguration's mtuIfacePattern says ([dataplane.SelectUnderlay]),
// else fallback (the MTU detected at start; 0 = unknown). problem is set
// when the pattern or the links could not be used.
func (t *Topology) UnderlayMTU(fallback int) (mtu int, problem string) {
	v, ok := t.Local(LocalKindLinks, "")
	if !ok {
		return fallback, ""
	}
	var re *regexp.Regexp
	if p := t.Felix.MTUIfacePattern; p != "" {
		var err error
		if re, err = regexp.Compile(p); err != nil {
			problem = fmt.Sprintf("FelixConfiguration mtuIfacePattern %q: %v: using weft's default detection", p, err)
			re = nil
		}
	}
	u, err := dataplane.SelectUnderlay(v.([]dataplane.Link), re)
	if err != nil {
		return fallback, fmt.Sprintf("underlay MTU: %v; keeping %d", err, fallback)
	}
	return u.MTU, problem
}
