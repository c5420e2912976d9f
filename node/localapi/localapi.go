// Package localapi is the protocol of the agent's local control socket:
// HTTP/1.1 with JSON bodies over a unix socket. The agent serves it; the
// CLI and the CNI plugin are its clients.
package localapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"unicode/utf8"
)

// Error codes carried in error bodies; they map to HTTP statuses.
const (
	CodeInvalid     = "invalid"
	CodeNotFound    = "not_found"
	CodeExists      = "exists"
	CodeConflict    = "conflict"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
	CodeForbidden   = "forbidden"
	CodeTooLarge    = "too_large"
)

// MaxBodyBytes bounds every request body the agent reads (SPEC: requests
// over 1 MiB are refused).
const MaxBodyBytes = 1 << 20

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Error is an error with a code, as returned by the agent.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// HTTPStatus maps a code to an HTTP status.
func HTTPStatus(code string) int {
	switch code {
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeExists, CodeConflict:
		return http.StatusConflict
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeForbidden:
		return http.StatusForbidden
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	default:
		return http.StatusInternalServerError
	}
}

// WriteJSON writes v as the JSON response body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// MaxErrorBytes bounds the message of an error response: an error that
// quotes a huge input must still reach the caller as one readable line
// (the client reads at most maxErrorBodyBytes of an error body).
const MaxErrorBytes = 4 << 10

// maxErrorBodyBytes is how much of an error response the client reads.
const maxErrorBodyBytes = 64 << 10

// WriteError writes err as an ErrorBody. Errors that are not *Error become
// internal errors. A message over MaxErrorBytes is cut, saying so.
func WriteError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	WriteJSON(w, HTTPStatus(e.Code), ErrorBody{Error: cutMessage(e.Message, MaxErrorBytes), Code: e.Code})
}

// cutMessage shortens msg to about max bytes, on a character boundary.
func cutMessage(msg string, max int) string {
	if len(msg) <= max {
		return msg
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (message cut, %d bytes in all)", msg[:cut], len(msg))
}

// ReadJSON decodes a request body of at most MaxBodyBytes into v, strictly.
func ReadJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Errorf(CodeTooLarge, "request body exceeds %d bytes", MaxBodyBytes)
		}
		return Errorf(CodeInvalid, "bad request body: %v", err)
	}
	return nil
}
