package backstop

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound is returned when the object named by a request does not exist
// (or belongs to another cluster than the one in the path).
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a change contradicts the current state: a
// duplicate name, or removing something still in use.
var ErrConflict = errors.New("conflict")

// ErrInvalid is returned when input breaks a domain rule. Errors wrapping it
// are usually a *ValidationError naming the offending fields.
var ErrInvalid = errors.New("invalid")

// ErrPreconditionFailed is returned when an If-Match version is stale: the
// caller must re-read and retry.
var ErrPreconditionFailed = errors.New("precondition failed")

// ErrLimit is returned when a change would exceed a hard limit, such as the
// 64 nodes of a cluster.
var ErrLimit = errors.New("limit exceeded")

// ErrUnauthenticated is returned when a request carries no valid credential.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrForbidden is returned when the credential's role is too low.
var ErrForbidden = errors.New("forbidden")

// ErrBusy is returned when concurrent work kept a change from completing
// now: PostgreSQL aborted its transaction to break a deadlock or a
// serialization conflict, again on every retry. Nothing was changed; the
// caller may try again shortly.
var ErrBusy = errors.New("busy")

// FieldError names one offending field by its JSON pointer into the request
// body (for example "/resources/2/params/address").
type FieldError struct {
	Location string
	Message  string
}

// ValidationError lists every offending field of one request. It wraps
// ErrInvalid.
type ValidationError struct {
	Fields []FieldError
}

// Invalid returns a *ValidationError for one field.
func Invalid(location, format string, args ...any) *ValidationError {
	return &ValidationError{Fields: []FieldError{{Location: location, Message: fmt.Sprintf(format, args...)}}}
}

// Add records one more offending field.
func (e *ValidationError) Add(location, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Location: location, Message: fmt.Sprintf(format, args...)})
}

// Err returns e, or nil when it lists no field, so that callers can collect
// failures and return them in one go.
func (e *ValidationError) Err() error {
	if e == nil || len(e.Fields) == 0 {
		return nil
	}
	return e
}

// Error lists the fields as "location: message; ...".
func (e *ValidationError) Error() string {
	parts := make([]string, 0, len(e.Fields))
	for _, f := range e.Fields {
		parts = append(parts, f.Location+": "+f.Message)
	}
	return strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// ErrStaleTerm is returned when a leader acts with a term that is no
// longer current: another replica leads now.
var ErrStaleTerm = fmt.Errorf("%w: leadership moved to another replica", ErrConflict)
