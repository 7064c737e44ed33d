package server_test

import (
	"context"
	"encoding/json"
	"mime"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop/server/notify"
)

// gateSeed is one request of the fuzz corpus; "{c}", "{n}" and "{h}" in
// path stand for a cluster, one of its nodes and one of its hierarchies.
type gateSeed struct {
	method                  string
	path                    string
	key, ifMatch, mediaType string
	body                    string
}

// gateSeeds mirror the kinds of request of the e2e bad-request table
// (e2e/api_test.go, TestBadRequests) on this package's in-process server,
// plus a few good ones, so that mutations start from both sides.
var gateSeeds = []gateSeed{
	{"POST", "/v1/clusters", "", "", "application/json", `{"name": "x",`},
	{"POST", "/v1/clusters", "", "", "application/json", ``},
	{"POST", "/v1/clusters", "", "", "application/json", `{"name": 5}`},
	{"POST", "/v1/clusters", "", "", "application/json", `{"name": "t"} {"name": "x"}`},
	{"POST", "/v1/clusters", "", "", "application/json", `[{"name": "x"}]`},
	{"POST", "/v1/clusters", "", "", "application/json", `{"name": "x", "bogus": 1}`},
	{"POST", "/v1/clusters", "", "", "application/json", `{"name": "x", "timing_profile": "custom"}`},
	{"POST", "/v1/clusters", "", "", "application/json", `{"name": "nul", "description": "a\u0000b"}`},
	{"POST", "/v1/clusters", "", "", "application/json", `{"name": "fuzz-ok"}`},
	{"POST", "/v1/clusters", "", "", "text/plain", `name=x`},
	{"POST", "/v1/clusters", "\xff\xfe-probe", "", "application/json", `{"name": "raw-key"}`},
	{"POST", "/v1/clusters", strings.Repeat("k", 300), "", "application/json", `{"name": "long-key"}`},
	{"POST", "/v1/clusters", "fuzz-key", "", "application/json", `{"name": "keyed"}`},
	{"PATCH", "/v1/clusters/{c}", "", `"7"`, "application/json", `{"description": "stale"}`},
	{"PATCH", "/v1/clusters/{c}", "", `W/"1"`, "application/json", `{"description": "weak"}`},
	{"PATCH", "/v1/clusters/{c}", "", "", "application/json", `{}`},
	{"DELETE", "/v1/clusters/{c}", "", `"7"`, "", ``},
	{"DELETE", "/v1/clusters/{c}", "", "", "application/json", `{}`},
	{"GET", "/v1/clusters?limit=1&limit=2", "", "", "", ``},
	{"GET", "/v1/clusters?cursor=%%%garbage", "", "", "", ``},
	{"GET", "/v1/clusters?cursor=not-a-cursor!", "", "", "", ``},
	{"GET", "/v1/clusters?%FF=1", "", "", "", ``},
	{"GET", "/v1/clusters?name=%00", "", "", "", ``},
	{"GET", "/v1/clusters/%00", "", "", "", ``},
	{"GET", "/v1/clusters/not-a-uuid", "", "", "", ``},
	{"GET", "/v1/clusters/{c}/events?type=%FF%FE", "", "", "", ``},
	{"GET", "/v1/clusters/{c}/events?type=%C0%80", "", "", "", ``},
	{"GET", "/v1/clusters/{c}/events/stream?type=a%00", "", "", "", ``},
	{"GET", "/v1/audit?since=yesterday&order=sideways", "", "", "", ``},
	{"POST", "/v1/clusters/{c}/nodes", "", "", "application/json", `{"name": ""}`},
	{"POST", "/v1/clusters/{c}/paths", "", "", "application/json", `{"a": {"node_id": "{n}", "address": "198.18.1.999"}, "b": {"node_id": "{n}", "address": "fe80::1%eth0"}}`},
	{"POST", "/v1/clusters/{c}/hierarchies", "", "", "application/json",
		`{"name": "bad", "resources": [{"name": "a", "kind": "command", "params": {"check": "true"}, "depends_on": ["a"]}], "priorities": [{"node_id": "{n}", "priority": 1}]}`},
	{"PUT", "/v1/clusters/{c}/hierarchies/{h}", "", `"1"`, "application/json", `{"name": "web", "resources": [], "priorities": []}`},
	{"POST", "/v1/clusters/{c}/simulate", strings.Repeat("k", 8000), "", "application/json", `{}`},
	{"PUT", "/v1/clusters/{c}/nodes/{n}/maintenance?wait=true&timeout_s=601", "", "", "", ``},
	{"POST", "/v1/webhooks", "", "", "application/json", `{"url": "ftp://x"}`},
	{"POST", "/v1/tokens", "", "", "application/json", `{"name": "x", "role": "root"}`},
	{"DELETE", "/v1/tokens/bootstrap", "", "", "", ``},
	{"PUT", "/v1/clusters", "", "", "application/json", `{"name": "x"}`},
	{"GET", "/v1/nope", "", "", "", ``},
}

// FuzzGate sends arbitrary requests through the whole HTTP stack (gate,
// validation, handlers, real PostgreSQL) and checks what the API promises
// for anything a client sends: never a 5xx; every error an RFC 9457
// problem+json whose status is the HTTP status; and a refused request
// writes nothing (every mutation writes an audit record in its
// transaction, so the audit trail must not grow). Without -fuzz it runs
// the seeds as a normal test.
func FuzzGate(f *testing.F) {
	e := newDeliveryEnv(f, notify.Config{}) // wired as backstopd is
	cid, nodes := clusterWithNodes(e, 2)
	resp, b := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", map[string]any{"name": "web",
		"resources":  []any{map[string]any{"name": "probe", "kind": "command", "params": map[string]any{"check": "true"}}},
		"priorities": []any{map[string]any{"node_id": nodes[0], "priority": 1}}})
	var h struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != 201 || json.Unmarshal(b, &h) != nil {
		f.Fatalf("create hierarchy: %d %s", resp.StatusCode, b)
	}
	fill := strings.NewReplacer("{c}", cid, "{n}", nodes[0], "{h}", h.ID)
	for _, s := range gateSeeds {
		f.Add(s.method, fill.Replace(s.path), s.key, s.ifMatch, s.mediaType, []byte(fill.Replace(s.body)))
	}
	conn, err := pgx.Connect(context.Background(), e.dbURL)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close(context.Background()) })
	lastAudit := func(t *testing.T) int64 {
		var id int64
		if err := conn.QueryRow(context.Background(), `SELECT coalesce(max(id), 0) FROM audit_log`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}

	f.Fuzz(func(t *testing.T, method, target, key, ifMatch, mediaType string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(u.Path, "/") || u.Host != "" || !validMethod(method) {
			return // not a request a client can send
		}
		// The stream and long waits end with the request's context.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, method, "/", strings.NewReader(string(body)))
		req.URL, req.RequestURI = u, target
		req.Header.Set("Authorization", "Bearer "+adminSecret)
		for k, v := range map[string]string{"Idempotency-Key": key, "If-Match": ifMatch, "Content-Type": mediaType} {
			if v != "" {
				req.Header[k] = []string{v} // as sent: raw bytes included
			}
		}
		before := lastAudit(t)
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		status := w.Code
		if status >= 500 {
			t.Fatalf("%s %q: %d: %s", method, target, status, w.Body.Bytes())
		}
		if status < 400 {
			return
		}
		if mt, _, err := mime.ParseMediaType(w.Header().Get("Content-Type")); err != nil || mt != "application/problem+json" {
			t.Fatalf("%s %q: %d with Content-Type %q", method, target, status, w.Header().Get("Content-Type"))
		}
		var p struct {
			Type   string `json:"type"`
			Title  string `json:"title"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Type == "" || p.Title == "" || p.Status != status {
			t.Fatalf("%s %q: %d: not a problem of that status: %s", method, target, status, w.Body.Bytes())
		}
		if after := lastAudit(t); after != before {
			t.Fatalf("%s %q: refused with %d but wrote audit records %d..%d", method, target, status, before+1, after)
		}
	})
}

// validMethod reports whether m is an HTTP token a client could send.
func validMethod(m string) bool {
	if m == "" || len(m) > 16 {
		return false
	}
	for _, c := range m {
		if c < '!' || c > '~' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c) {
			return false
		}
	}
	return true
}
