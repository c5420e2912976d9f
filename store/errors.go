package store

import (
	"errors"
	"fmt"
)

// ErrIndeterminate is returned when a write was handed to the leader but its
// outcome is unknown (the connection or the leadership was lost before the
// answer): it may or may not have been applied. The caller should read the
// state before retrying a non-idempotent write.
var ErrIndeterminate = errors.New("outcome unknown: the write may or may not have been applied")

// Error codes: how store errors cross the wire (node-to-node RPC, the local
// API) and keep their sentinel. ErrorCode maps an error to its code and
// ErrorFromCode back.
const (
	CodeNotFound      = "not_found"
	CodeExists        = "exists"
	CodeConflict      = "conflict"
	CodeInvalid       = "invalid"
	CodeNotAllowed    = "not_allowed"
	CodeTooLarge      = "too_large"
	CodeUnavailable   = "unavailable" // ErrNoLeader
	CodeIndeterminate = "indeterminate"
	CodeInternal      = "internal"
)

var codeSentinels = []struct {
	code string
	err  error
}{
	{CodeNotFound, ErrNotFound},
	{CodeExists, ErrExists},
	{CodeConflict, ErrConflict},
	{CodeInvalid, ErrInvalid},
	{CodeNotAllowed, ErrNotAllowed},
	{CodeTooLarge, ErrTooLarge},
	{CodeUnavailable, ErrNoLeader},
	{CodeUnavailable, ErrNotInSync}, // ErrorFromCode gives ErrNoLeader: the first of the code
	{CodeIndeterminate, ErrIndeterminate},
}

// ErrorCode returns the code of the first store sentinel err wraps, or
// CodeInternal.
func ErrorCode(err error) string {
	for _, s := range codeSentinels {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return CodeInternal
}

// codedError is an error received over the wire: its message as the sender
// printed it, unwrapping to the sentinel of its code.
type codedError struct {
	msg      string
	sentinel error
}

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Unwrap() error { return e.sentinel }

// ErrorFromCode rebuilds an error from its code and message: errors.Is works
// with the sentinel of the code, and Error() returns msg unchanged.
func ErrorFromCode(code, msg string) error {
	for _, s := range codeSentinels {
		if s.code == code {
			return &codedError{msg: msg, sentinel: s.err}
		}
	}
	return errors.New(msg)
}

// WireError is the JSON form of an error on the node-to-node API. A
// *KeyError keeps its key.
type WireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Key     *Key   `json:"key,omitempty"`
}

// ToWire encodes err (nil for nil).
func ToWire(err error) *WireError {
	if err == nil {
		return nil
	}
	w := &WireError{Code: ErrorCode(err), Message: err.Error()}
	var ke *KeyError
	if errors.As(err, &ke) && ke.Err != nil && err.Error() == ke.Error() {
		k := ke.Key
		w.Key = &k
		w.Message = ke.Err.Error()
	}
	return w
}

// Err decodes the error (nil for nil).
func (w *WireError) Err() error {
	if w == nil {
		return nil
	}
	err := ErrorFromCode(w.Code, w.Message)
	if w.Key != nil {
		return &KeyError{Key: *w.Key, Err: err}
	}
	return err
}

func (w *WireError) String() string { return fmt.Sprintf("%s: %s", w.Code, w.Message) }
