package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/server/notify"
)

// TestWebhookSecretRotation proves a webhook's secret can be rotated
// without a receiver refusing a delivery: during the overlap every request
// carries a signature by the old and by the new secret (either verifies
// it), the webhook shows the previous secret's prefix and expiry, a
// rotation with no overlap drops the old secret at once, and the new
// secret is in the rotation's answer only.
func TestWebhookSecretRotation(t *testing.T) {
	e := newDeliveryEnv(t, notify.Config{})
	type request struct {
		h    http.Header
		body []byte
	}
	var mu sync.Mutex
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, request{r.Header.Clone(), b})
		mu.Unlock()
		w.WriteHeader(204)
	}))
	defer srv.Close()
	ping := func(id string) request {
		t.Helper()
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if resp, b := e.do("POST", "/v1/webhooks/"+id+"/ping", nil); resp.StatusCode != 200 {
			t.Fatalf("ping: %d %s", resp.StatusCode, b)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != n+1 {
			t.Fatalf("ping: receiver got %d requests, want %d", len(got), n+1)
		}
		return got[n]
	}
	type webhook struct {
		ID                      string     `json:"id"`
		Secret                  string     `json:"secret"`
		SecretPrefix            string     `json:"secret_prefix"`
		PreviousSecretPrefix    string     `json:"previous_secret_prefix"`
		PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at"`
		Version                 int64      `json:"version"`
	}
	decode := func(resp *http.Response, b []byte, want int) webhook {
		t.Helper()
		var w webhook
		if resp.StatusCode != want || json.Unmarshal(b, &w) != nil {
			t.Fatalf("%d, want %d: %s", resp.StatusCode, want, b)
		}
		return w
	}
	verifies := func(secret string, r request) bool { return verifySignature(secret, r.h, r.body) == nil }
	sigs := func(r request) int { return len(strings.Fields(r.h.Get("webhook-signature"))) }

	resp, b := e.do("POST", "/v1/webhooks", map[string]any{"url": srv.URL})
	a := decode(resp, b, 201)
	if r := ping(a.ID); !verifies(a.Secret, r) || sigs(r) != 1 {
		t.Fatalf("before rotation: signature %q, want one by the first secret", r.h.Get("webhook-signature"))
	}

	// Rotate with a one-hour overlap: both secrets sign.
	resp, b = e.do("POST", "/v1/webhooks/"+a.ID+"/rotate-secret", map[string]any{"overlap_s": 3600}, "If-Match", `"`+itoa(a.Version)+`"`)
	bw := decode(resp, b, 200)
	if !strings.HasPrefix(bw.Secret, "whsec_") || bw.Secret == a.Secret || bw.SecretPrefix != bw.Secret[:10] || bw.Version != a.Version+1 {
		t.Fatalf("rotation answer %+v, want a new secret, its prefix and the next version", bw)
	}
	if bw.PreviousSecretPrefix != a.Secret[:10] || bw.PreviousSecretExpiresAt == nil ||
		bw.PreviousSecretExpiresAt.Sub(time.Now()) < 59*time.Minute || bw.PreviousSecretExpiresAt.Sub(time.Now()) > 61*time.Minute {
		t.Errorf("rotation answer: previous %q until %v, want %q in an hour", bw.PreviousSecretPrefix, bw.PreviousSecretExpiresAt, a.Secret[:10])
	}
	r := ping(a.ID)
	if sigs(r) != 2 || !verifies(a.Secret, r) || !verifies(bw.Secret, r) {
		t.Errorf("during the overlap: signature %q, want two, one by each secret", r.h.Get("webhook-signature"))
	}
	resp, b = e.do("GET", "/v1/webhooks/"+a.ID, nil)
	if g := decode(resp, b, 200); g.Secret != "" || g.SecretPrefix != bw.SecretPrefix || g.PreviousSecretPrefix != a.Secret[:10] {
		t.Errorf("GET during the overlap: %+v", g)
	}

	// A stale If-Match changes nothing.
	if resp, b := e.do("POST", "/v1/webhooks/"+a.ID+"/rotate-secret", nil, "If-Match", `"`+itoa(a.Version)+`"`); resp.StatusCode != 412 {
		t.Errorf("rotation with a stale If-Match: %d %s", resp.StatusCode, b)
	}

	// Rotate with no overlap (a leaked secret): only the newest signs.
	resp, b = e.do("POST", "/v1/webhooks/"+a.ID+"/rotate-secret", map[string]any{"overlap_s": 0})
	c := decode(resp, b, 200)
	if c.PreviousSecretPrefix != "" || c.PreviousSecretExpiresAt != nil {
		t.Errorf("rotation without overlap still shows a previous secret: %+v", c)
	}
	r = ping(a.ID)
	if sigs(r) != 1 || !verifies(c.Secret, r) || verifies(a.Secret, r) || verifies(bw.Secret, r) {
		t.Errorf("after a rotation without overlap: signature %q, want one, by the newest secret only", r.h.Get("webhook-signature"))
	}

	// No body: the default overlap of a day; a replay shows no secret.
	resp, b = e.do("POST", "/v1/webhooks/"+a.ID+"/rotate-secret", nil, "Idempotency-Key", "rotate-once")
	d := decode(resp, b, 200)
	if d.PreviousSecretPrefix != c.Secret[:10] || d.PreviousSecretExpiresAt == nil || d.PreviousSecretExpiresAt.Sub(time.Now()) < 23*time.Hour {
		t.Errorf("rotation without a body: %+v, want the previous secret for a day", d)
	}
	resp, b = e.do("POST", "/v1/webhooks/"+a.ID+"/rotate-secret", nil, "Idempotency-Key", "rotate-once")
	if replay := decode(resp, b, 200); replay.Secret != "" || replay.SecretPrefix != d.SecretPrefix {
		t.Errorf("replayed rotation: %+v, want the same answer without the secret", replay)
	}
	if r := ping(a.ID); sigs(r) != 2 || !verifies(c.Secret, r) || !verifies(d.Secret, r) {
		t.Errorf("after the replay: signature %q, want the two secrets of the one rotation", r.h.Get("webhook-signature"))
	}
	// Out of range overlap.
	if resp, b := e.do("POST", "/v1/webhooks/"+a.ID+"/rotate-secret", map[string]any{"overlap_s": 604801}); resp.StatusCode != 400 {
		t.Errorf("overlap of more than 7 days: %d %s", resp.StatusCode, b)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
