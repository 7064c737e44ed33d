package server_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop/server"
	"github.com/backstop-ha/backstop/server/notify"
)

// The fence device endpoints: the agent must be an executable of the
// fence-agents directory, option names and values cannot inject stdin
// lines, secret options are write-only (their names are shown, their
// values never: not in answers, not in the audit trail, not in the
// database), and the version is the ETag.
func TestFenceDevice(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fence_fake"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fence_notexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newDeliveryEnvWith(t, notify.Config{}, func(c *server.Config) { c.FenceAgentsDir = dir })
	cid, nodes := clusterWithNodes(e, 1)
	path := "/v1/clusters/" + cid + "/nodes/" + nodes[0] + "/fence-device"

	if resp, b := e.do("GET", path, nil); resp.StatusCode != 404 || !strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
		t.Fatalf("GET before PUT: %d %s", resp.StatusCode, b)
	}
	const secret = "hunter2-very-secret"
	good := map[string]any{"agent": "fence_fake", "params": map[string]string{"ip": "192.0.2.1", "username": "fencer", "ssl_insecure": "1"},
		"secret_params": map[string]string{"password": secret}}
	for _, c := range []struct {
		name   string
		change func(map[string]any)
		status int
		detail string
	}{
		{"missing agent", func(b map[string]any) { b["agent"] = "fence_missing" }, 422, "no fence agent fence_missing"},
		{"not executable", func(b map[string]any) { b["agent"] = "fence_notexec" }, 422, "not an executable"},
		{"path in the name", func(b map[string]any) { b["agent"] = "../bin/sh" }, 400, ""},
		{"newline in a value", func(b map[string]any) {
			b["params"] = map[string]string{"ip": "192.0.2.1\naction=on"}
		}, 422, "line break"},
		{"newline in a secret", func(b map[string]any) { b["secret_params"] = map[string]string{"password": "x\ny=1"} }, 422, "line break"},
		{"bad key", func(b map[string]any) { b["params"] = map[string]string{"IP Addr": "x"} }, 422, "option names"},
		{"action", func(b map[string]any) { b["params"] = map[string]string{"action": "on"} }, 422, "set by backstopd"},
		{"secret also plain", func(b map[string]any) { b["params"] = map[string]string{"password": "x"} }, 422, "secret option"},
		{"timeout", func(b map[string]any) { b["timeout_s"] = 0 }, 400, ""},
	} {
		body := map[string]any{}
		for k, v := range good {
			body[k] = v
		}
		c.change(body)
		resp, b := e.do("PUT", path, body)
		if resp.StatusCode != c.status || !strings.Contains(string(b), c.detail) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, resp.StatusCode, b, c.status, c.detail)
		}
	}

	resp, b := e.do("PUT", path, good)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"1"` {
		t.Fatalf("PUT: %d %s", resp.StatusCode, b)
	}
	var d struct {
		Agent   string            `json:"agent"`
		Params  map[string]string `json:"params"`
		Secrets []string          `json:"secret_params_set"`
		Timeout int               `json:"timeout_s"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Agent != "fence_fake" || d.Params["username"] != "fencer" || len(d.Secrets) != 1 ||
		d.Secrets[0] != "password" || d.Timeout != 20 {
		t.Fatalf("PUT answer: %s", b)
	}
	// Without secret_params the stored ones stay.
	resp, b = e.do("PUT", path, map[string]any{"agent": "fence_fake", "params": map[string]string{"ip": "192.0.2.2"}, "timeout_s": 5}, "If-Match", `"1"`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"secret_params_set":["password"]`) || !strings.Contains(string(b), `"timeout_s":5`) {
		t.Fatalf("PUT keeping the secrets: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("PUT", path, good, "If-Match", `"1"`); resp.StatusCode != 412 {
		t.Fatalf("stale If-Match: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", path, nil)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"2"` {
		t.Fatalf("GET: %d %s", resp.StatusCode, b)
	}
	var leaks int
	if err := e.st.Pool().QueryRow(t.Context(), `SELECT (SELECT count(*) FROM audit_log WHERE details::text LIKE '%'||$1||'%')
		+ (SELECT count(*) FROM fence_devices WHERE params::text LIKE '%'||$1||'%' OR position(convert_to($1, 'UTF8') in secret_sealed) > 0)`, secret).Scan(&leaks); err != nil {
		t.Fatal(err)
	}
	for _, where := range []string{string(b)} {
		if strings.Contains(where, secret) {
			t.Errorf("the secret is shown: %s", where)
		}
	}
	if leaks != 0 {
		t.Errorf("the secret is stored in the clear in %d places", leaks)
	}
	if resp, b := e.do("DELETE", path, nil, "If-Match", `"1"`); resp.StatusCode != 412 {
		t.Fatalf("DELETE with a stale If-Match: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("DELETE", path, nil); resp.StatusCode != 204 {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.do("GET", path, nil); resp.StatusCode != 404 {
		t.Fatalf("GET after DELETE: %d", resp.StatusCode)
	}
}
