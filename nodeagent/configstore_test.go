package nodeagent

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/nodeagent/kit"
	"github.com/backstop-ha/backstop/openapi/client"
)

// The agent's ConfigStore tells the control plane's refusals (409: the
// node does not hold the hierarchy) from an unreachable control plane
// (connection refused, 5xx): only the latter is kit.ErrUnreachable,
// which on_unreachable proceed starts through. A refusal must fail the
// bring-up, never start with stale files.
func TestConfigStoreClassifiesErrors(t *testing.T) {
	status := http.StatusConflict
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch status {
		case http.StatusNoContent:
			w.WriteHeader(status)
		default:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"type":"https://backstop.dev/problems/conflict","title":"Conflict","status":409,"detail":"node n2 does not hold hierarchy \"mail\""}`))
		}
	}))
	defer srv.Close()
	api, err := newAPIClient([]string{srv.URL}, func(string) (client.HttpRequestDoer, error) { return srv.Client(), nil }, "test", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cs := &configStore{api: api, hid: uuid.New(), resource: "config"}

	_, err = cs.Newest(t.Context())
	if err == nil || errors.Is(err, kit.ErrUnreachable) || !strings.Contains(err.Error(), "does not hold") {
		t.Fatalf("409: %v; want the refusal with its detail, not unreachable", err)
	}
	if _, _, err := cs.Upload(t.Context(), "x", nil); err == nil || errors.Is(err, kit.ErrUnreachable) {
		t.Fatalf("409 upload: %v", err)
	}
	status = http.StatusServiceUnavailable
	if _, err := cs.Newest(t.Context()); !errors.Is(err, kit.ErrUnreachable) {
		t.Fatalf("503: %v; want unreachable", err)
	}
	status = http.StatusNoContent
	if v, err := cs.Newest(t.Context()); err != nil || v != nil {
		t.Fatalf("204: %v %v; want no version", v, err)
	}
	srv.Close()
	if _, err := cs.Newest(t.Context()); !errors.Is(err, kit.ErrUnreachable) {
		t.Fatalf("connection refused: %v; want unreachable", err)
	}
	if err := cs.Installed(t.Context(), 1, "x", "control_plane", ""); !errors.Is(err, kit.ErrUnreachable) {
		t.Fatalf("report with the server gone: %v", err)
	}
}
