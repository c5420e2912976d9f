// Package resync tracks when a dataplane manager must re-read the kernel
// instead of trusting its cached view: queued by the apply loop (periodic
// resync) or flagged by a watcher goroutine (a kernel event showed drift).
package resync

import "sync/atomic"

// Flag is the state. Queue and Run belong to the loop goroutine; Event may
// be called from any goroutine.
type Flag struct {
	event  atomic.Bool
	queued bool
}

// Queue asks for a re-read at the next Run.
func (f *Flag) Queue() { f.queued = true }

// Event asks for a re-read from another goroutine.
func (f *Flag) Event() { f.event.Store(true) }

// Run calls read if a re-read was asked for; a failed read stays asked
// for, so the next Run tries again.
func (f *Flag) Run(read func() error) error {
	if f.event.Swap(false) {
		f.queued = true
	}
	if !f.queued {
		return nil
	}
	if err := read(); err != nil {
		return err
	}
	f.queued = false
	return nil
}
