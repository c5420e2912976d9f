package store

// This file is the contract between the store and its users (node, ipam,
// the CLI through node's local API). Keep it stable; extend rather than
// change.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Key names one object. Kind is the resource kind as written in YAML
// ("IPPool", "WorkloadEndpoint") or an internal kind ("IPAMBlock").
// Namespace is empty for cluster-scoped kinds.
type Key struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func (k Key) String() string {
	if k.Namespace == "" {
		return k.Kind + "/" + k.Name
	}
	return k.Kind + "/" + k.Namespace + "/" + k.Name
}

// Object is one stored object. Value is opaque to the store (the api and
// ipam packages put JSON in it).
type Object struct {
	Key
	// UID is assigned by the store when the object is created (deterministic
	// on every replica: derived from the raft index and the key).
	UID string `json:"uid"`
	// Revision is the raft index of the last change to this object.
	Revision uint64 `json:"revision"`
	// CreateRevision is the raft index at which it was created.
	CreateRevision uint64 `json:"createRevision"`
	// Created is the leader's clock when the object was created.
	Created time.Time `json:"created"`
	Value   []byte    `json:"value"`
}

// OpType is what an Op does.
type OpType string

const (
	// OpCreate fails with ErrExists if the key exists.
	OpCreate OpType = "create"
	// OpUpdate fails with ErrNotFound if the key does not exist, and with
	// ErrConflict if Revision is set and differs from the stored revision.
	OpUpdate OpType = "update"
	// OpPut creates or updates; Revision, if set, must match (0 matches
	// "any", including absent).
	OpPut OpType = "put"
	// OpDelete fails with ErrNotFound if absent and ErrConflict if Revision
	// is set and differs.
	OpDelete OpType = "delete"
)

// Op is one change inside a transaction.
type Op struct {
	Type     OpType `json:"type"`
	Key      Key    `json:"key"`
	Value    []byte `json:"value,omitempty"`
	Revision uint64 `json:"revision,omitempty"` // expected current revision; 0 = unchecked
}

// TxnResult reports the outcome of a committed transaction.
type TxnResult struct {
	// Revision is the raft index at which the transaction committed.
	Revision uint64 `json:"revision"`
	// Objects are the objects as written, in the order of the ops (for a
	// delete, the object as it was before deletion).
	Objects []Object `json:"objects"`
}

// EventType is the kind of change a watch event reports.
type EventType string

const (
	EventPut    EventType = "PUT"
	EventDelete EventType = "DELETE"
	// EventSync marks the end of an initial listing: everything before it
	// is the state at Revision, everything after is a change.
	EventSync EventType = "SYNC"
	// EventReset tells the watcher that the requested revision is no
	// longer available (history trimmed or a snapshot was restored): it
	// must drop what it has; a full listing follows, then EventSync.
	EventReset EventType = "RESET"
)

// Event is one change.
type Event struct {
	Type     EventType `json:"type"`
	Revision uint64    `json:"revision"`
	Object   Object    `json:"object"` // for EventDelete: the last value, Revision = deletion index
}

// WatchFilter narrows a watch. Empty fields match everything.
type WatchFilter struct {
	Kinds     []string `json:"kinds,omitempty"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name,omitempty"`
}

// Tx is the view a command handler gets inside the raft apply. Everything
// it does is applied atomically or not at all; handlers must be
// deterministic (no clocks, no randomness, no I/O: use Now()).
type Tx interface {
	Get(k Key) (Object, bool)
	// List returns the objects of a kind (and namespace if non-empty),
	// sorted by namespace then name.
	List(kind, namespace string) []Object
	// Put creates or replaces an object; it runs the kind's validators.
	Put(k Key, value []byte) (Object, error)
	// Delete removes an object; ErrNotFound if absent.
	Delete(k Key) error
	// Now is the leader's clock when the command was proposed: identical
	// on every replica.
	Now() time.Time
	// Index is the raft index of the command being applied.
	Index() uint64
}

// CommandHandler applies one registered command type inside the FSM. It
// returns a result (JSON, handed back to the proposer) or an error, in
// which case nothing it did is kept.
type CommandHandler func(tx Tx, payload []byte) (result []byte, err error)

// Validator guards an invariant for a kind inside the FSM: it is called for
// every put (old may be nil) and delete (new is nil) of that kind, from any
// command, and a non-nil error aborts the whole command.
type Validator func(tx Tx, old, new *Object) error

// Registry is what the store's users register before the store starts. It
// must be identical on every node of a cluster.
type Registry struct {
	Commands   map[string]CommandHandler
	Validators map[string][]Validator // by kind
}

// Store is the local handle on the replicated datastore.
type Store interface {
	// Get reads from the local replica.
	Get(k Key) (Object, bool)
	// List reads from the local replica; it also returns the revision the
	// listing is consistent with.
	List(kind, namespace string) ([]Object, uint64)
	// ConsistentRevision waits until the local replica has applied
	// everything the leader had committed when it was called
	// (linearizable reads: call it, then Get/List locally).
	ConsistentRevision(ctx context.Context) (uint64, error)
	// Txn commits ops atomically (forwarded to the leader when needed).
	Txn(ctx context.Context, ops []Op) (TxnResult, error)
	// Command runs a registered command (forwarded to the leader when
	// needed) and returns its result.
	Command(ctx context.Context, name string, payload []byte) ([]byte, error)
	// Watch streams events after fromRevision (0: an initial listing of
	// the current state, then EventSync, then changes). The channel is
	// closed when ctx ends or the watcher falls too far behind (the caller
	// resumes from the last revision it saw).
	Watch(ctx context.Context, fromRevision uint64, f WatchFilter) (<-chan Event, error)
	// Revision is the last applied raft index on this replica.
	Revision() uint64
}

// Errors returned by the store. Use errors.Is; they are wrapped with the key.
var (
	ErrNotFound   = errors.New("not found")
	ErrExists     = errors.New("already exists")
	ErrConflict   = errors.New("revision conflict")
	ErrNoLeader   = errors.New("no leader: the cluster has no quorum")
	ErrTooLarge   = errors.New("request too large")
	ErrNotAllowed = errors.New("not allowed")
	ErrInvalid    = errors.New("invalid")
)

// KeyError wraps a sentinel error with the key it concerns.
type KeyError struct {
	Key Key
	Err error
}

func (e *KeyError) Error() string { return fmt.Sprintf("%s: %v", e.Key, e.Err) }
func (e *KeyError) Unwrap() error { return e.Err }
