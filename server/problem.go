package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/api"
)

// problemBase prefixes every problem type URI; the slug names the kind.
const problemBase = "https://backstop.dev/problems/"

// problem is an RFC 9457 problem detail (the contract's Problem schema).
type problem = api.Problem

// errOverloaded refuses work the server cannot take now (503 with
// Retry-After): shedding load early keeps what is admitted fast.
var errOverloaded = errors.New("the control plane is overloaded; retry shortly")

// retryAfter is the Retry-After of an overloaded answer, in seconds.
const retryAfter = "1"

// statusFor maps a domain error to its HTTP status and problem slug. It is
// the one place where errors become statuses (headscale's mapError).
func statusFor(err error) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, backstop.ErrNotFound):
		return http.StatusNotFound, "not-found"
	case errors.Is(err, backstop.ErrPreconditionFailed):
		return http.StatusPreconditionFailed, "precondition-failed"
	case errors.Is(err, backstop.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, backstop.ErrInvalid):
		return http.StatusUnprocessableEntity, "invalid"
	case errors.Is(err, backstop.ErrLimit):
		return http.StatusUnprocessableEntity, "limit-exceeded"
	case errors.Is(err, backstop.ErrUnauthenticated):
		return http.StatusUnauthorized, "unauthenticated"
	case errors.Is(err, backstop.ErrForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "body-too-large"
	case errors.Is(err, errOverloaded):
		return http.StatusServiceUnavailable, "overloaded"
	case errors.Is(err, backstop.ErrBusy), lostLockRace(err):
		return http.StatusServiceUnavailable, "busy"
	case errors.Is(err, errNoDeliverer):
		return http.StatusServiceUnavailable, "unavailable"
	default:
		return http.StatusInternalServerError, "internal"
	}
}

// lostLockRace reports a driver error PostgreSQL raised to break a
// deadlock (40P01) or a serialization conflict (40001) that reached here
// without the store turning it into backstop.ErrBusy: it passes, and is
// no server fault. The driver's error is recognised by its SQLState
// method, so that this package stays free of the driver.
func lostLockRace(err error) bool {
	var st interface{ SQLState() string }
	if !errors.As(err, &st) {
		return false
	}
	code := st.SQLState()
	return code == "40P01" || code == "40001"
}

// writeProblem writes an RFC 9457 body. 4xx are logged at Debug, 5xx at
// Error, both with the request id.
func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, status int, slug, detail string, fields []backstop.FieldError) {
	p := problem{
		Type:   problemBase + slug,
		Title:  http.StatusText(status),
		Status: status,
	}
	if detail != "" {
		p.Detail = &detail
	}
	inst := instance(r)
	p.Instance = &inst
	if id := requestIDFrom(r.Context()); id != "" {
		p.RequestId = &id
	}
	if len(fields) > 0 {
		errs := make([]api.FieldError, len(fields))
		for i, f := range fields {
			errs[i] = api.FieldError{Location: f.Location, Message: f.Message}
		}
		p.Errors = &errs
	}
	level := slog.LevelDebug
	if status >= 500 && status != http.StatusServiceUnavailable { // 503s are shed load: counted in metrics, not logged one by one
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed", "status", status, "detail", detail, "request_id", requestIDFrom(r.Context()), "path", r.URL.Path)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Del("ETag")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

// writeError writes err as a problem. Unknown errors become a 500 whose
// detail is a fixed string; the real error only goes to the log.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && errors.Is(err, r.Context().Err()) {
		// The client went away (an agent's long poll ended by its own
		// deadline or shutdown): nobody reads this answer, and it is no
		// server error. 499 is nginx's "client closed request".
		s.log.DebugContext(r.Context(), "client went away", "path", r.URL.Path, "request_id", requestIDFrom(r.Context()))
		w.WriteHeader(499)
		return
	}
	status, slug := statusFor(err)
	if status == http.StatusServiceUnavailable && lostLockRace(err) && !errors.Is(err, backstop.ErrBusy) {
		// The driver's text names SQL internals; say what it means.
		err = fmt.Errorf("%w: the database aborted the change to resolve a conflict with concurrent work; nothing was changed, retry shortly", backstop.ErrBusy)
	}
	if status == http.StatusInternalServerError {
		s.log.ErrorContext(r.Context(), "internal error", "err", err, "request_id", requestIDFrom(r.Context()), "path", r.URL.Path)
		s.writeProblem(w, r, status, slug, "internal error; the request id identifies it in the server log", nil)
		return
	}
	var ve *backstop.ValidationError
	if errors.As(err, &ve) {
		s.writeProblem(w, r, status, slug, ve.Error(), ve.Fields)
		return
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="backstop"`)
	}
	if status == http.StatusServiceUnavailable && !errors.Is(err, errNoDeliverer) {
		// Shed load and lost lock races pass in a moment; a missing
		// deliverer does not.
		w.Header().Set("Retry-After", retryAfter)
	}
	s.writeProblem(w, r, status, slug, detailOf(err), nil)
}

// detailOf renders a domain error for clients: "not found: cluster X" reads
// better as "cluster X not found".
func detailOf(err error) string {
	msg := err.Error()
	if errors.Is(err, backstop.ErrNotFound) {
		if rest, ok := strings.CutSuffix(msg, ": "+backstop.ErrNotFound.Error()); ok {
			return rest + " not found"
		}
	}
	// The problem's type and title already say which sentinel it was.
	for _, s := range sentinels {
		if rest, ok := strings.CutPrefix(msg, s.Error()+": "); ok {
			return rest
		}
	}
	return msg
}

var sentinels = []error{
	backstop.ErrConflict, backstop.ErrInvalid, backstop.ErrPreconditionFailed,
	backstop.ErrLimit, backstop.ErrUnauthenticated, backstop.ErrForbidden, backstop.ErrBusy,
}

// badRequest answers a request the generated code could not decode
// (parameter binding, JSON body): every generated default error handler is
// replaced by this one, so no error is ever sent as text/plain.
func (s *Server) badRequest(w http.ResponseWriter, r *http.Request, err error) {
	s.writeProblem(w, r, http.StatusBadRequest, "bad-request", err.Error(), nil)
}
