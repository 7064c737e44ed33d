package server_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// TestTokenReadReissueRevoke proves GET /v1/tokens/{id} (no secret, an
// ETag), re-issue (a new secret, the old one refused at once, same id,
// name and role, a new ETag) and If-Match on revoke and re-issue (412 for
// the ETag of a secret since replaced, or a weak one; nothing changes).
func TestTokenReadReissueRevoke(t *testing.T) {
	e := newEnv(t, 1)
	type token struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Role   string `json:"role"`
		Prefix string `json:"prefix"`
		Secret string `json:"secret"`
	}
	decode := func(resp *http.Response, b []byte, want int) token {
		t.Helper()
		var tk token
		if resp.StatusCode != want || json.Unmarshal(b, &tk) != nil {
			t.Fatalf("%d, want %d: %s", resp.StatusCode, want, b)
		}
		return tk
	}
	asToken := func(secret, method, path string) int {
		resp, _ := testkit.Request(t, nil, method, e.url+path, secret, nil)
		return resp.StatusCode
	}
	resp, b := e.do("POST", "/v1/tokens", map[string]any{"name": "ci", "role": "viewer"})
	created := decode(resp, b, 201)
	path := "/v1/tokens/" + created.ID

	resp, b = e.do("GET", path, nil)
	got := decode(resp, b, 200)
	etag := resp.Header.Get("ETag")
	if got.Secret != "" || got.Name != "ci" || got.Prefix != created.Prefix || etag == "" {
		t.Fatalf("GET: %+v, ETag %q; want the token without its secret, with an ETag", got, etag)
	}
	if code := asToken(created.Secret, "GET", "/v1/clusters"); code != 200 {
		t.Fatalf("the new token reads: %d", code)
	}

	// Re-issue with the current ETag: a new secret; the old one is refused.
	resp, b = e.do("POST", path+"/reissue", nil, "If-Match", etag)
	re := decode(resp, b, 200)
	etag2 := resp.Header.Get("ETag")
	if re.ID != created.ID || re.Name != "ci" || re.Role != "viewer" || re.Secret == "" || re.Secret == created.Secret || etag2 == etag {
		t.Fatalf("re-issue: %+v, ETag %q (was %q)", re, etag2, etag)
	}
	if code := asToken(created.Secret, "GET", "/v1/clusters"); code != 401 {
		t.Errorf("the old secret after re-issue: %d, want 401", code)
	}
	if code := asToken(re.Secret, "GET", "/v1/clusters"); code != 200 {
		t.Errorf("the new secret: %d, want 200", code)
	}

	// The ETag of the replaced secret, or a weak one, changes nothing.
	for _, m := range []struct{ method, path, ifMatch string }{
		{"POST", path + "/reissue", etag}, {"DELETE", path, etag}, {"DELETE", path, "W/" + etag2},
	} {
		if resp, b := e.do(m.method, m.path, nil, "If-Match", m.ifMatch); resp.StatusCode != 412 {
			t.Errorf("%s %s with If-Match %s: %d %s, want 412", m.method, m.path, m.ifMatch, resp.StatusCode, b)
		}
	}
	if code := asToken(re.Secret, "GET", "/v1/clusters"); code != 200 {
		t.Errorf("refused requests changed the token: %d", code)
	}

	// Revoke with the current ETag.
	if resp, b := e.do("DELETE", path, nil, "If-Match", etag2); resp.StatusCode != 204 {
		t.Fatalf("revoke: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.do("GET", path, nil); resp.StatusCode != 404 {
		t.Errorf("GET a revoked token: %d, want 404", resp.StatusCode)
	}
	if code := asToken(re.Secret, "GET", "/v1/clusters"); code != 401 {
		t.Errorf("a revoked token: %d, want 401", code)
	}

	// The audit trail names the re-issue.
	resp, b = e.do("GET", "/v1/audit?limit=500", nil)
	var audit struct {
		Items []struct {
			Action   string `json:"action"`
			TargetID string `json:"target_id"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &audit); err != nil || resp.StatusCode != 200 {
		t.Fatalf("audit: %d %s", resp.StatusCode, b)
	}
	found := false
	for _, a := range audit.Items {
		found = found || a.Action == "token.reissue" && a.TargetID == created.ID
	}
	if !found {
		t.Errorf("no token.reissue audit record for %s", created.ID)
	}
}

// TestTokenRevokedElsewhereStops: the gate caches resolved API tokens
// for a second (tokenCacheTTL), so a token revoked through another
// replica (here: removed from the database behind this server's back)
// stops working here too, within that second, not at a restart.
func TestTokenRevokedElsewhereStops(t *testing.T) {
	e := newEnv(t, 1)
	resp, b := e.do("POST", "/v1/tokens", map[string]any{"name": "dashboard", "role": "operator"})
	var tk struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if resp.StatusCode != 201 || json.Unmarshal(b, &tk) != nil {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	read := func() int {
		resp, _ := testkit.Request(t, nil, "GET", e.url+"/v1/clusters", tk.Secret, nil)
		return resp.StatusCode
	}
	if code := read(); code != 200 {
		t.Fatalf("the new token reads: %d", code)
	}
	if _, err := e.st.Pool().Exec(t.Context(), `DELETE FROM api_tokens WHERE id = $1`, tk.ID); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 0, "the token revoked elsewhere is refused", func() bool { return read() == 401 })
}
