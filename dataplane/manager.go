package dataplane

import "context"

// Phase is one half of an apply pass.
type Phase uint8

const (
	// PhaseUpdate creates and changes what is desired. The loop runs it on
	// every manager in the order given to [NewLoop], so what a later
	// manager needs (a device, a neighbour) exists before it is used.
	PhaseUpdate Phase = iota
	// PhaseRemove deletes what is no longer desired. The loop runs it in
	// reverse order, so routes go before the neighbours they use and
	// neighbours before their device.
	PhaseRemove
)

func (p Phase) String() string {
	if p == PhaseRemove {
		return "remove"
	}
	return "update"
}

// Manager drives one kernel subsystem toward its part of [Desired].
//
// The split is Set + Apply rather than per-item callbacks: the calculation
// emits whole states, so a manager only ever needs the latest one. Set is
// cheap (no I/O: it records the state and lets Apply find the differences
// against the manager's cached kernel view); Apply does the I/O. A manager
// keeps items that failed pending, applies every item it can, and returns
// the failures joined. All methods are called from the loop goroutine only.
type Manager interface {
	// Name labels the manager in logs and metrics.
	Name() string
	// Set records the new desired state. The manager must not modify d and
	// may keep references into it.
	Set(d *Desired)
	// QueueResync makes the next Apply re-read the kernel before diffing,
	// so drift (something deleted or changed behind weft's back) is
	// repaired. The first Apply of a new manager always resyncs: that is
	// how existing state is adopted after a restart.
	QueueResync()
	// Apply programs the pending differences of one phase.
	Apply(ctx context.Context, phase Phase) error
}

// Watcher is implemented by managers that notice kernel changes sooner
// than the periodic resync (e.g. a deleted device, via a netlink
// subscription).
type Watcher interface {
	// Watch runs until ctx ends or the subscription fails, calling kick
	// whenever the kernel state the manager owns may have been changed by
	// someone else. The manager records what needs a fresh look (it is
	// the only one who knows) before kicking; the kick only makes the loop
	// run a pass soon. When Watch fails, events may have been lost: the
	// manager must arrange to resync on its next Apply. The loop restarts
	// Watch after an error, with backoff.
	Watch(ctx context.Context, kick func()) error
}

// WriteCounter is implemented by managers that count the kernel changes
// they make (exported as a metric, and used by tests to prove a re-apply
// changes nothing).
type WriteCounter interface {
	KernelWrites() uint64
}
