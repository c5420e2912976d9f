// Package apierr maps the errors of the store and IPAM onto the local
// API's error codes, keeping their messages: one place for every service
// of the local API.
package apierr

import (
	"context"
	"errors"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node/localapi"
	"github.com/weftnet/weft/store"
)

// FromStore maps store errors onto local API error codes, keeping the
// message. Errors that already are *localapi.Error pass unchanged.
func FromStore(err error) error {
	var le *localapi.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &le):
		return err
	case errors.Is(err, store.ErrNotFound):
		return &localapi.Error{Code: localapi.CodeNotFound, Message: err.Error()}
	case errors.Is(err, store.ErrExists):
		return &localapi.Error{Code: localapi.CodeExists, Message: err.Error()}
	case errors.Is(err, store.ErrConflict):
		return &localapi.Error{Code: localapi.CodeConflict, Message: err.Error() + " (the resource changed since it was read; get it again and retry)"}
	case errors.Is(err, store.ErrNoLeader), errors.Is(err, store.ErrNotInSync):
		return &localapi.Error{Code: localapi.CodeUnavailable, Message: err.Error()}
	case errors.Is(err, store.ErrIndeterminate):
		// The leader went away mid-write: a transient failure the caller
		// retries (idempotent writes, e.g. an IPAM assign with the same
		// handle) or checks, not a bad request.
		return &localapi.Error{Code: localapi.CodeUnavailable, Message: err.Error()}
	case errors.Is(err, store.ErrTooLarge):
		return &localapi.Error{Code: localapi.CodeTooLarge, Message: err.Error()}
	case errors.Is(err, store.ErrInvalid):
		return &localapi.Error{Code: localapi.CodeInvalid, Message: err.Error()}
	case errors.Is(err, store.ErrNotAllowed):
		return &localapi.Error{Code: localapi.CodeForbidden, Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &localapi.Error{Code: localapi.CodeUnavailable, Message: "the datastore did not answer in time (no quorum?)"}
	}
	return err
}

// FromIPAM maps IPAM and store errors onto local API errors.
func FromIPAM(err error) error {
	// IPAM's conflicts (pool exhausted, address taken, handle mismatch)
	// explain themselves; FromStore's advice for revision conflicts ("get
	// it again and retry") would mislead.
	if errors.Is(err, store.ErrConflict) {
		return &localapi.Error{Code: localapi.CodeConflict, Message: err.Error()}
	}
	if e := FromStore(err); e != err {
		return e
	}
	var ie *ipam.Error
	if errors.As(err, &ie) {
		return &localapi.Error{Code: localapi.CodeInvalid, Message: err.Error()}
	}
	return err
}

// ReadReady refuses a local read while the replica may hold less than this
// node had (just restarted, not yet in sync): never an incomplete answer
// presented as the truth (store.Node.ReadReady).
func ReadReady(st any) error {
	if r, ok := st.(interface{ ReadReady() error }); ok {
		return FromStore(r.ReadReady())
	}
	return nil
}
