package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop"
)

// TestUnavailableIsNever500: a change PostgreSQL kept aborting to break a
// deadlock (backstop.ErrBusy, from the store) and an endpoint this server
// cannot serve (no deliverer) are 503 with a useful detail, not 500s; a
// lost lock race also says when to retry.
func TestUnavailableIsNever500(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, c := range []struct {
		err        error
		slug       string
		retryAfter string
		detail     string
	}{
		{fmt.Errorf("%w: the database aborted the change to resolve a conflict with concurrent work (deadlock); nothing was changed, retry shortly: ERROR: deadlock detected (SQLSTATE 40P01)", backstop.ErrBusy), "busy", "1", "deadlock"},
		{errNoDeliverer, "unavailable", "", "event delivery is not configured"},
		// A driver error that skipped the store's mapping.
		{fmt.Errorf("commit: %w", sqlStateError("40P01")), "busy", "1", "conflict with concurrent work"},
		{sqlStateError("40001"), "busy", "1", "retry shortly"},
	} {
		w := httptest.NewRecorder()
		s.writeError(w, httptest.NewRequest(http.MethodDelete, "/v1/clusters/x", nil), c.err)
		body := w.Body.String()
		if w.Code != http.StatusServiceUnavailable || !strings.Contains(body, problemBase+c.slug) || !strings.Contains(body, c.detail) {
			t.Errorf("%v: %d %s, want 503 %s with detail %q", c.err, w.Code, body, c.slug, c.detail)
		}
		if got := w.Header().Get("Retry-After"); got != c.retryAfter {
			t.Errorf("%v: Retry-After %q, want %q", c.err, got, c.retryAfter)
		}
		if strings.Contains(body, `"detail":"busy`) {
			t.Errorf("detail repeats the sentinel: %s", body)
		}
	}
}

// sqlStateError stands in for the driver's error (pgconn.PgError), which
// this package recognises by its SQLState method only.
type sqlStateError string

func (e sqlStateError) Error() string    { return "ERROR: lost a lock race (SQLSTATE " + string(e) + ")" }
func (e sqlStateError) SQLState() string { return string(e) }
