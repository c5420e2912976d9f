package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Built-in command names. Registered commands may not use them.
const (
	// commandTxn applies a list of Op atomically (payload: JSON []Op).
	commandTxn = "txn"
	// commandNoop changes nothing. A new leader appends one right after its
	// election so that every raft index a reader may wait for is followed
	// by an entry the FSM sees (raft's own no-op entries never reach it).
	commandNoop = "noop"
)

// ReservedKindPrefix starts the kinds private to the store (cluster secrets,
// member records). Registered commands cannot touch them, and watches with
// no kind filter do not see them.
const ReservedKindPrefix = "_"

// IsReservedKind reports whether kind is private to the store.
func IsReservedKind(kind string) bool {
	return len(kind) >= len(ReservedKindPrefix) && kind[:len(ReservedKindPrefix)] == ReservedKindPrefix
}

// entryVersion is the first byte of every log entry written by this code.
// A different first byte is a log this binary cannot read.
const entryVersion byte = 1

// logEntry is the envelope of every raft log entry the store writes.
type logEntry struct {
	// Command names the handler: a built-in (commandTxn, commandNoop) or a
	// registered command.
	Command string `json:"c"`
	// Time is the leader's clock when it proposed the entry (unix ns); the
	// handlers' Tx.Now().
	Time int64 `json:"t"`
	// Ignorable lets a replica that does not know Command skip the entry
	// with a warning instead of stopping (forward-compatible additions).
	Ignorable bool `json:"i,omitempty"`
	// Payload is the command's argument.
	Payload []byte `json:"p,omitempty"`
}

// encodeEntry serialises an entry for raft.Apply.
func encodeEntry(e logEntry) ([]byte, error) {
	if e.Command == "" {
		return nil, fmt.Errorf("encode log entry: %w: empty command name", ErrInvalid)
	}
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode log entry %q: %w", e.Command, err)
	}
	out := make([]byte, 0, len(body)+1)
	out = append(out, entryVersion)
	return append(out, body...), nil
}

// ErrCorruptLog marks a log entry this binary cannot decode: the replica stops
// rather than skip it and diverge from the others.
var ErrCorruptLog = errors.New("corrupt log entry")

// decodeEntry parses a log entry written by encodeEntry.
func decodeEntry(data []byte) (logEntry, error) {
	var e logEntry
	if len(data) == 0 {
		return e, fmt.Errorf("%w: empty", ErrCorruptLog)
	}
	if data[0] != entryVersion {
		return e, fmt.Errorf("%w: unknown format version %d", ErrCorruptLog, data[0])
	}
	if err := json.Unmarshal(data[1:], &e); err != nil {
		return e, fmt.Errorf("%w: %v", ErrCorruptLog, err)
	}
	if e.Command == "" {
		return e, fmt.Errorf("%w: no command name", ErrCorruptLog)
	}
	return e, nil
}

// newEntry builds an entry stamped with now.
func newEntry(command string, payload []byte, ignorable bool, now time.Time) logEntry {
	return logEntry{Command: command, Time: now.UnixNano(), Ignorable: ignorable, Payload: payload}
}

// applyResult is what the FSM returns for each applied entry (the response
// of the raft.ApplyFuture on the node that proposed it).
type applyResult struct {
	// Revision is the raft index of the entry.
	Revision uint64
	// Objects is set by commandTxn: the objects as written, per op.
	Objects []Object
	// Data is the result of a registered command.
	Data []byte
	// Err is the command's error; nothing was changed when it is set.
	Err error
}
