// Package latest is a mailbox that keeps only the newest value: a
// producer that must never wait hands whole states to a consumer that only
// ever wants the current one.
package latest

import "sync"

// Box holds at most one pending value; Send replaces it. The zero Box is
// not usable: make one with New.
type Box[T any] struct {
	mu sync.Mutex
	ch chan T
}

// New returns an empty box.
func New[T any]() *Box[T] {
	return &Box[T]{ch: make(chan T, 1)}
}

// Send replaces any pending value with v. It never blocks.
func (b *Box[T]) Send(v T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.ch:
	default:
	}
	b.ch <- v
}

// C delivers the pending value.
func (b *Box[T]) C() <-chan T { return b.ch }
