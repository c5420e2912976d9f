package ipam

import (
	"errors"
	"fmt"
)

// Errors the commands return, for errors.Is. Each command error also wraps
// the matching store sentinel (store.ErrInvalid, ErrNotFound, ErrExists,
// ErrConflict) so the local API can map it to its error code.
var (
	// ErrExhausted: no free address for the request ("pool exhausted").
	ErrExhausted = errors.New("pool exhausted")
	// ErrBlockLimit: the node holds maxBlocksPerHost blocks, all full.
	ErrBlockLimit = errors.New("block limit reached")
	// ErrNoPool: no pool may serve the request, or the address is in none.
	ErrNoPool = errors.New("no usable IP pool")
	// ErrAllocated: the requested address is held by another handle.
	ErrAllocated = errors.New("address already allocated")
	// ErrReserved: the requested address is reserved by an IPReservation.
	ErrReserved = errors.New("address reserved")
	// ErrCoolingDown: the requested address was released recently.
	ErrCoolingDown = errors.New("address cooling down")
	// ErrNotAllocated: a release named an address nobody holds.
	ErrNotAllocated = errors.New("address not allocated")
	// ErrUnknownHandle: a release named a handle that holds nothing.
	ErrUnknownHandle = errors.New("unknown handle")
	// ErrHandleMismatch: the address belongs to another handle.
	ErrHandleMismatch = errors.New("handle mismatch")
	// ErrSequence: the address was reallocated since the caller saw it.
	ErrSequence = errors.New("sequence number mismatch")
	// ErrInUse: a release named an address a workload or tunnel uses.
	ErrInUse = errors.New("address in use")
	// ErrStrictAffinity: the address is in another node's block.
	ErrStrictAffinity = errors.New("strict affinity")
	// ErrPoolInUse: a pool delete found addresses in use.
	ErrPoolInUse = errors.New("pool in use")
	// ErrBadRequest: the request itself is malformed.
	ErrBadRequest = errors.New("bad request")
	// ErrInvariant: a write would break an IPAM invariant (validators).
	ErrInvariant = errors.New("IPAM invariant")
)

// Error is a command failure: a readable message plus the ipam and store
// sentinels it wraps.
type Error struct {
	msg  string
	kind error
	code error
}

func newError(kind, code error, format string, args ...any) *Error {
	return &Error{msg: fmt.Sprintf(format, args...), kind: kind, code: code}
}

func (e *Error) Error() string   { return e.msg }
func (e *Error) Unwrap() []error { return []error{e.kind, e.code} }
