package server_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop/server/notify"
)

// TestIdempotentReplayHidesSecrets proves that a secret shown once (an API
// token, a webhook signing secret, a node's enrollment token) is shown
// only by the first answer: the Idempotency-Key replay carries the field
// empty, and the stored replay holds no copy of it.
func TestIdempotentReplayHidesSecrets(t *testing.T) {
	e := newDeliveryEnv(t, notify.Config{})
	resp, b := e.do("POST", "/v1/clusters", map[string]any{"name": "sec"})
	if resp.StatusCode != 201 {
		t.Fatalf("create cluster: %d %s", resp.StatusCode, b)
	}
	var c struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, path, field string
		body              map[string]any
	}{
		{"token", "/v1/tokens", "secret", map[string]any{"name": "ci", "role": "viewer"}},
		{"webhook", "/v1/webhooks", "secret", map[string]any{"name": "hook", "url": "https://hooks.example.com/x"}},
		{"node", "/v1/clusters/" + c.ID + "/nodes", "enrollment_token", map[string]any{"name": "n1"}},
	}
	var secrets [][]byte
	for _, tc := range cases {
		key := "replay-" + tc.name
		first, fb := e.do("POST", tc.path, tc.body, "Idempotency-Key", key)
		if first.StatusCode != 201 {
			t.Fatalf("%s: first answer %d %s", tc.name, first.StatusCode, fb)
		}
		second, sb := e.do("POST", tc.path, tc.body, "Idempotency-Key", key)
		if second.StatusCode != 201 || second.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("%s: second answer %d (replayed %q) %s", tc.name, second.StatusCode, second.Header.Get("Idempotent-Replayed"), sb)
		}
		var f, s map[string]any
		if err := json.Unmarshal(fb, &f); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(sb, &s); err != nil {
			t.Fatal(err)
		}
		secret, _ := f[tc.field].(string)
		if len(secret) < 16 {
			t.Fatalf("%s: first answer's %s is %q, want the secret", tc.name, tc.field, secret)
		}
		secrets = append(secrets, []byte(secret))
		if got, ok := s[tc.field]; !ok || got != "" {
			t.Errorf("%s: replay's %s is %v, want present and empty", tc.name, tc.field, got)
		}
		if f["id"] == nil || s["id"] != f["id"] {
			t.Errorf("%s: replay names %v, first answer %v", tc.name, s["id"], f["id"])
		}
		if bytes.Contains(sb, []byte(secret)) {
			t.Errorf("%s: replay holds the secret: %s", tc.name, sb)
		}
	}

	conn, err := pgx.Connect(t.Context(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	rows, err := conn.Query(t.Context(), `SELECT key, coalesce(body, ''::bytea) FROM idempotency_keys`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var key string
		var body []byte
		if err := rows.Scan(&key, &body); err != nil {
			t.Fatal(err)
		}
		n++
		for _, s := range secrets {
			if bytes.Contains(body, s) {
				t.Errorf("stored replay of key %q holds a secret in clear", key)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n < len(cases) {
		t.Errorf("%d stored replays, want at least %d", n, len(cases))
	}
}
