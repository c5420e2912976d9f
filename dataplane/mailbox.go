package dataplane

import "github.com/weftnet/weft/internal/latest"

// Mailbox carries desired states from the calculation to the loop and
// keeps only the latest: a slow apply never makes the calculation wait and
// never applies a state that is already stale. Send replaces any pending
// state (the caller must not modify it afterwards); C is the channel to
// hand to [Loop.Run].
type Mailbox = latest.Box[Desired]

// NewMailbox returns an empty mailbox.
func NewMailbox() *Mailbox { return latest.New[Desired]() }
