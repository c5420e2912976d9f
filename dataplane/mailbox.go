package dataplane

import "sync"

// Mailbox carries desired states from the calculation to the loop and
// keeps only the latest: a channel of size one whose pending value a new
// Send replaces, so a slow apply never makes the calculation wait and never
// applies a state that is already stale.
type Mailbox struct {
	mu sync.Mutex
	ch chan Desired
}

// NewMailbox returns an empty mailbox.
func NewMailbox() *Mailbox {
	return &Mailbox{ch: make(chan Desired, 1)}
}

// Send replaces any pending state with d. It never blocks. The caller must
// not modify d afterwards.
func (m *Mailbox) Send(d Desired) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.ch:
	default:
	}
	m.ch <- d
}

// C is the channel to hand to [Loop.Run].
func (m *Mailbox) C() <-chan Desired { return m.ch }
