package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

const (
	clusterA = "0195f7a4-0000-7000-8000-000000000001"
	clusterB = "0195f7a4-0000-7000-8000-000000000002"
	nodeA    = "0195f7a4-1111-7000-8000-000000000001"
	nodeB    = "0195f7a4-1111-7000-8000-000000000002"
	hierA    = "0195f7a4-3333-7000-8000-000000000001"
	tokenA   = "0195f7a4-4444-7000-8000-000000000001"
)

// clusterJSON is a Cluster as the server sends it.
func clusterJSON(id, name string) string {
	return `{"id":"` + id + `","name":"` + name + `","description":"","timing_profile":"lan",` +
		`"timing":{"heartbeat_ms":250,"lease_ttl_ms":1000,"server_grace_ms":250,"path_heartbeat_ms":200,` +
		`"path_dead_after":3,"quick_check_interval_ms":500,"deep_check_interval_ms":5000},` +
		`"switchback_default":"intelligent","fencing":"self","version":1,` +
		`"created_at":"2026-11-26T06:00:00Z","updated_at":"2026-11-26T06:00:00Z"}`
}

// seenRequest is what the fake server recorded of one request.
type seenRequest struct {
	method string
	path   string
	query  url.Values
	header http.Header
	body   []byte
}

// fakeAPI is a small stand-in for backstopd: routes answer canned bodies and
// every request is recorded.
type fakeAPI struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []seenRequest
}

func newFakeAPI(t *testing.T, routes map[string]http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, `{"type":"about:blank","title":"Not Found","status":404,"detail":"no route `+r.Method+` `+r.URL.Path+`"}`)
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, seenRequest{r.Method, r.URL.Path, r.URL.Query(), r.Header.Clone(), body})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.reqs...)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func writeProblem(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

type result struct {
	stdout, stderr string
	code           int
}

// invoke runs backstopctl against server with BACKSTOP_TOKEN=secret-token.
func invoke(t *testing.T, server, stdin string, args ...string) result {
	t.Helper()
	env := map[string]string{envServer: server, envToken: "secret-token"}
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb, func(k string) string { return env[k] })
	return result{out.String(), errb.String(), code}
}

func TestListFollowsNextCursor(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/clusters": func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Query().Get("cursor") {
			case "":
				writeJSON(w, 200, `{"items":[`+clusterJSON(clusterA, "mail")+`],"next_cursor":"page-2"}`)
			case "page-2":
				writeJSON(w, 200, `{"items":[`+clusterJSON(clusterB, "web")+`]}`)
			default:
				writeProblem(w, 400, `{"type":"about:blank","title":"Bad Request","status":400}`)
			}
		},
	})

	res := invoke(t, f.srv.URL, "", "clusters", "list")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("got %d requests, want 2", len(reqs))
	}
	if reqs[0].query.Has("cursor") || reqs[1].query.Get("cursor") != "page-2" {
		t.Errorf("cursors sent: %q then %q", reqs[0].query.Get("cursor"), reqs[1].query.Get("cursor"))
	}
	if got := reqs[0].header.Get("Authorization"); got != "Bearer secret-token" {
		t.Errorf("Authorization = %q", got)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") ||
		!strings.Contains(lines[1], clusterA) || !strings.Contains(lines[1], "mail") ||
		!strings.Contains(lines[2], clusterB) || !strings.Contains(lines[2], "web") {
		t.Errorf("table:\n%s", res.stdout)
	}

	// With -o json both pages come out as one list.
	res = invoke(t, f.srv.URL, "", "-o", "json", "clusters", "list")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	var doc struct {
		Items      []map[string]any `json:"items"`
		NextCursor *string          `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil {
		t.Fatalf("json output: %v\n%s", err, res.stdout)
	}
	if len(doc.Items) != 2 || doc.Items[0]["name"] != "mail" || doc.Items[1]["name"] != "web" || doc.NextCursor != nil {
		t.Errorf("json output:\n%s", res.stdout)
	}
}

func TestListLimitStopsAndShowsCursor(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/tokens": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"items":[{"id":"`+tokenA+`","name":"nagios","role":"viewer","prefix":"bsk_4Z","created_at":"2026-11-26T06:00:00Z"}],"next_cursor":"more"}`)
		},
	})
	res := invoke(t, f.srv.URL, "", "tokens", "list", "--limit", "1")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].query.Get("limit") != "1" {
		t.Fatalf("requests: %+v", reqs)
	}
	if !strings.Contains(res.stdout, "nagios") || !strings.Contains(res.stderr, "--cursor more") {
		t.Errorf("stdout %q stderr %q", res.stdout, res.stderr)
	}

	res = invoke(t, f.srv.URL, "", "tokens", "list", "--limit", "1", "--cursor", "more", "-o", "json")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	if reqs := f.requests(); reqs[1].query.Get("cursor") != "more" {
		t.Errorf("cursor sent %q", reqs[1].query.Get("cursor"))
	}
	if !strings.Contains(res.stdout, `"next_cursor": "more"`) {
		t.Errorf("json output lacks next_cursor:\n%s", res.stdout)
	}
}

func TestListRefusesRepeatedCursor(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/audit": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"items":[{"id":1,"at":"2026-11-26T06:00:00Z","actor":"token:a","action":"cluster.create","target_type":"cluster","target_id":"x","details":{}}],"next_cursor":"same"}`)
		},
	})
	res := invoke(t, f.srv.URL, "", "audit")
	if res.code != 1 || !strings.Contains(res.stderr, "twice") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestProblemRendering(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"POST /v1/clusters/{id}/hierarchies": func(w http.ResponseWriter, r *http.Request) {
			writeProblem(w, 422, `{"type":"https://backstop.dev/problems/invalid","title":"Unprocessable Entity","status":422,`+
				`"detail":"priorities[1].priority: priority 1 is used twice",`+
				`"request_id":"req-1",`+
				`"errors":[{"location":"/priorities/1/priority","message":"priority 1 is used twice"},`+
				`{"location":"/resources/0/params/address","message":"not an IP address with prefix length (CIDR)"}]}`)
		},
	})
	res := invoke(t, f.srv.URL, `{"name":"web"}`, "hierarchies", "create", clusterA, "-f", "-")
	if res.code != 1 {
		t.Errorf("exit %d, want 1", res.code)
	}
	// The detail restates the first field error: each is printed once.
	want := "error: 422 Unprocessable Entity\n" +
		"  /priorities/1/priority: priority 1 is used twice\n" +
		"  /resources/0/params/address: not an IP address with prefix length (CIDR)\n" +
		"request id: req-1\n"
	if res.stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", res.stderr, want)
	}
	if res.stdout != "" {
		t.Errorf("stdout %q, want nothing", res.stdout)
	}
}

func TestProblemWithoutDetail(t *testing.T) {
	f := newFakeAPI(t, nil) // every route answers the 404 problem
	res := invoke(t, f.srv.URL, "", "--token", "", "nodes", "get", clusterA, nodeA)
	if res.code != 1 || !strings.HasPrefix(res.stderr, "error: 404 Not Found: no route GET /v1/clusters/") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	// An explicitly empty --token beats the environment.
	if got := f.requests()[0].header.Get("Authorization"); got != "" {
		t.Errorf("Authorization = %q, want none", got)
	}
}

func TestUnauthorizedWithoutTokenHints(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/clusters": func(w http.ResponseWriter, r *http.Request) {
			writeProblem(w, 401, `{"type":"about:blank","title":"Unauthorized","status":401}`)
		},
	})
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--server", f.srv.URL, "clusters", "list"}, strings.NewReader(""), &out, &errb,
		func(string) string { return "" })
	if code != 1 || !strings.HasPrefix(errb.String(), "error: 401 Unauthorized\n") || !strings.Contains(errb.String(), envToken) {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func TestNonProblemErrorAnswer(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/clusters/{id}": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html>\n<h1>upstream down</h1></html>")
		},
	})
	res := invoke(t, f.srv.URL, "", "clusters", "get", clusterA)
	if res.code != 1 || res.stderr != "error: 502 Bad Gateway: <html> <h1>upstream down</h1></html>\n" {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestCreateSendsIdempotencyKey(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"POST /v1/clusters": func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Idempotency-Key") == "replayed" {
				w.Header().Set("Idempotent-Replayed", "true")
			}
			w.Header().Set("ETag", `"1"`)
			writeJSON(w, 201, clusterJSON(clusterA, "mail"))
		},
	})
	for range 2 {
		if res := invoke(t, f.srv.URL, "", "clusters", "create", "--name", "mail", "--timing-profile", "fast"); res.code != 0 {
			t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
		}
	}
	res := invoke(t, f.srv.URL, "", "clusters", "create", "--name", "mail", "--idempotency-key", "replayed")
	if res.code != 0 || !strings.Contains(res.stderr, "replayed") {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	reqs := f.requests()
	k1, k2 := reqs[0].header.Get("Idempotency-Key"), reqs[1].header.Get("Idempotency-Key")
	if _, err := uuid.Parse(k1); err != nil {
		t.Errorf("generated key %q is not a UUID", k1)
	}
	if k1 == k2 {
		t.Errorf("two invocations sent the same key %q", k1)
	}
	if got := reqs[2].header.Get("Idempotency-Key"); got != "replayed" {
		t.Errorf("--idempotency-key sent %q", got)
	}
	var body map[string]any
	if err := json.Unmarshal(reqs[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if len(body) != 2 || body["name"] != "mail" || body["timing_profile"] != "fast" {
		t.Errorf("body %s: want only the given fields", reqs[0].body)
	}
	if !strings.Contains(res.stdout, `"1"`) { // the ETag, for --if-match
		t.Errorf("stdout lacks the ETag:\n%s", res.stdout)
	}
}

func TestEveryCreateSendsIdempotencyKey(t *testing.T) {
	created := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 201, body) }
	}
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"POST /v1/clusters/{id}/nodes": created(`{"id":"` + nodeA + `","cluster_id":"` + clusterA + `","name":"mx1","description":"","state":"pending","version":1,` +
			`"created_at":"2026-11-26T06:00:00Z","updated_at":"2026-11-26T06:00:00Z","enrollment_token":"bse_SECRET","enrollment_expires_at":"2026-11-27T06:00:00Z"}`),
		"POST /v1/clusters/{id}/paths": created(`{"forward":{"id":"` + nodeA + `","cluster_id":"` + clusterA + `","link_id":"` + nodeA + `","reverse_id":"` + nodeB +
			`","local_node_id":"` + nodeA + `","local_address":"198.18.1.11","remote_node_id":"` + nodeB + `","remote_address":"198.18.1.12","priority":2,"created_at":"2026-11-26T06:00:00Z"},` +
			`"reverse":{"id":"` + nodeB + `","cluster_id":"` + clusterA + `","link_id":"` + nodeA + `","reverse_id":"` + nodeA +
			`","local_node_id":"` + nodeB + `","local_address":"198.18.1.12","remote_node_id":"` + nodeA + `","remote_address":"198.18.1.11","priority":2,"created_at":"2026-11-26T06:00:00Z"}}`),
		"POST /v1/clusters/{id}/hierarchies": created(`{"id":"` + hierA + `","cluster_id":"` + clusterA + `","name":"web","description":"","exclusivity_group":"","switchback":"intelligent",` +
			`"resources":[{"name":"vip","kind":"ip","params":{"address":"198.18.1.60/24","interface":"eth0"},"depends_on":[],` +
			`"quick_check":{"interval_ms":500,"timeout_ms":250},"deep_check":{"interval_ms":5000,"timeout_ms":2500},"local_recovery":{"max_restarts":3,"window_s":300}}],` +
			`"priorities":[{"node_id":"` + nodeA + `","priority":1}],"version":1,"created_at":"2026-11-26T06:00:00Z","updated_at":"2026-11-26T06:00:00Z"}`),
		"POST /v1/tokens": created(`{"id":"` + tokenA + `","name":"nagios","role":"viewer","prefix":"bsk_4Z","created_at":"2026-11-26T06:00:00Z","secret":"bsk_SECRET"}`),
	})
	spec := `{"name":"web","resources":[{"name":"vip","kind":"ip","params":{"address":"198.18.1.60/24","interface":"eth0"}}],` +
		`"priorities":[{"node_id":"` + nodeA + `","priority":1}]}`

	cases := []struct {
		args       []string
		wantBody   string
		wantStdout []string
	}{
		{[]string{"nodes", "create", clusterA, "--name", "mx1"}, `{"name":"mx1"}`, []string{"bse_SECRET", "will not be shown again"}},
		{[]string{"paths", "create", clusterA, "--a", nodeA + "=198.18.1.11", "--b", nodeB + "=198.18.1.12", "--priority", "2"},
			`{"a":{"address":"198.18.1.11","node_id":"` + nodeA + `"},"b":{"address":"198.18.1.12","node_id":"` + nodeB + `"},"priority":2}`,
			[]string{"198.18.1.11", "198.18.1.12"}},
		{[]string{"hierarchies", "create", clusterA, "-f", "-"}, spec, []string{"vip", "eth0", "500ms/250ms"}},
		{[]string{"tokens", "create", "--name", "nagios", "--role", "viewer"}, `{"name":"nagios","role":"viewer"}`, []string{"bsk_SECRET", "will not be shown again"}},
	}
	for i, c := range cases {
		res := invoke(t, f.srv.URL, spec, c.args...)
		if res.code != 0 {
			t.Errorf("%v: exit %d, stderr %q", c.args, res.code, res.stderr)
			continue
		}
		req := f.requests()[i]
		if _, err := uuid.Parse(req.header.Get("Idempotency-Key")); err != nil {
			t.Errorf("%v: Idempotency-Key %q", c.args, req.header.Get("Idempotency-Key"))
		}
		if req.header.Get("Content-Type") != "application/json" {
			t.Errorf("%v: Content-Type %q", c.args, req.header.Get("Content-Type"))
		}
		if !jsonEqual(t, req.body, []byte(c.wantBody)) {
			t.Errorf("%v: body %s, want %s", c.args, req.body, c.wantBody)
		}
		for _, s := range c.wantStdout {
			if !strings.Contains(res.stdout, s) {
				t.Errorf("%v: stdout lacks %q:\n%s", c.args, s, res.stdout)
			}
		}
	}
	// The spec file goes out byte for byte.
	if got := string(f.requests()[2].body); got != spec {
		t.Errorf("hierarchy body %q, want the file as it is", got)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		return false
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("bad wanted JSON %s: %v", b, err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

func TestCreateFailureHintsRetryKey(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"POST /v1/tokens": func(w http.ResponseWriter, r *http.Request) {
			writeProblem(w, 503, `{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"database unreachable"}`)
		},
	})
	res := invoke(t, f.srv.URL, "", "tokens", "create", "--name", "n", "--role", "admin", "--idempotency-key", "k-42")
	if res.code != 1 || !strings.Contains(res.stderr, "error: 503 Service Unavailable: database unreachable\n") ||
		!strings.Contains(res.stderr, "--idempotency-key k-42") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestJSONOutputIsRawAPIJSON(t *testing.T) {
	// A field this client does not know must survive: the output is the
	// server's JSON, not a re-encoding of the client's structs.
	body := `{"id":"` + clusterA + `","name":"mail","future_field":{"b":1,"a":[true]},"version":7}`
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/clusters/{id}": func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, body) },
	})
	res := invoke(t, f.srv.URL, "", "clusters", "get", clusterA, "-o", "json")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	var want bytes.Buffer
	if err := json.Indent(&want, []byte(body), "", "  "); err != nil {
		t.Fatal(err)
	}
	want.WriteByte('\n')
	if res.stdout != want.String() {
		t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, want.String())
	}
	if got := f.requests()[0].path; got != "/v1/clusters/"+clusterA {
		t.Errorf("path %q", got)
	}
}

func TestJSONOutputKeepsStdoutClean(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"POST /v1/tokens": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 201, `{"id":"`+tokenA+`","name":"n","role":"admin","prefix":"bsk_4Z","created_at":"2026-11-26T06:00:00Z","secret":"bsk_S"}`)
		},
		"DELETE /v1/tokens/{id}": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) },
	})
	res := invoke(t, f.srv.URL, "", "-o", "json", "tokens", "create", "--name", "n", "--role", "admin")
	if res.code != 0 || !json.Valid([]byte(res.stdout)) || !strings.Contains(res.stderr, "will not be shown again") {
		t.Errorf("exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	res = invoke(t, f.srv.URL, "", "-o", "json", "tokens", "delete", tokenA, "--yes")
	if res.code != 0 || res.stdout != "" {
		t.Errorf("delete: exit %d, stdout %q", res.code, res.stdout)
	}
	res = invoke(t, f.srv.URL, "yes\n", "tokens", "delete", tokenA)
	if res.code != 0 || res.stdout != "token "+tokenA+" revoked\n" {
		t.Errorf("delete: exit %d, stdout %q", res.code, res.stdout)
	}
}

func TestIfMatchAndPatch(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"PATCH /v1/clusters/{id}": func(w http.ResponseWriter, r *http.Request) {
			writeProblem(w, 412, `{"type":"about:blank","title":"Precondition Failed","status":412}`)
		},
		"DELETE /v1/clusters/{id}/nodes/{node}": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) },
	})
	res := invoke(t, f.srv.URL, "", "clusters", "update", clusterA, "--switchback", "automatic", "--description", "", "--if-match", "3")
	if res.code != 1 || !strings.Contains(res.stderr, "412 Precondition Failed") || !strings.Contains(res.stderr, "hint:") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	res = invoke(t, f.srv.URL, "", "nodes", "delete", clusterA, nodeA, "--if-match", `"9"`, "--yes")
	if res.code != 0 {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	reqs := f.requests()
	if got := reqs[0].header.Get("If-Match"); got != `"3"` {
		t.Errorf("If-Match %q, want \"3\"", got)
	}
	if !jsonEqual(t, reqs[0].body, []byte(`{"switchback_default":"automatic","description":""}`)) {
		t.Errorf("patch body %s", reqs[0].body)
	}
	if got := reqs[1].header.Get("If-Match"); got != `"9"` {
		t.Errorf("If-Match %q, want \"9\"", got)
	}
}

func TestNetworkErrorNamesServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more

	res := invoke(t, addr, "", "clusters", "list")
	if res.code != 1 || !strings.HasPrefix(res.stderr, "error: cannot reach server "+addr+": ") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	res = invoke(t, addr, "", "clusters", "create", "--name", "x", "--idempotency-key", "k1")
	if res.code != 1 || !strings.Contains(res.stderr, "--idempotency-key k1") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestTimeoutNamesServer(t *testing.T) {
	release := make(chan struct{})
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/audit": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
	})
	defer close(release)
	res := invoke(t, f.srv.URL, "", "audit", "--timeout", "50ms")
	if res.code != 1 || !strings.Contains(res.stderr, "server "+f.srv.URL+": no answer within 50ms") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	f := newFakeAPI(t, nil)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"clusters", "get"}, "missing argument CLUSTER"},
		{[]string{"clusters", "get", clusterA, "extra"}, `unexpected argument "extra"`},
		{[]string{"clusters", "create"}, `required flag(s) "name" not set`},
		{[]string{"clusters", "create", "--name", "x", "--fencing", "maybe"}, "must be one of self, none"},
		{[]string{"clusters", "update", clusterA}, "nothing to update"},
		{[]string{"clusters", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"nodes", "update", clusterA, nodeA}, "nothing to update"},
		{[]string{"paths", "create", clusterA, "--a", nodeA, "--b", nodeB + "=10.0.0.2"}, "want NODE_ID=ADDRESS"},
		{[]string{"tokens", "create", "--name", "n", "--role", "root"}, "must be one of viewer, operator, admin"},
		{[]string{"audit", "--limit", "-1"}, "--limit must not be negative"},
		{[]string{"audit", "--timeout", "soon"}, `invalid argument "soon"`},
		{[]string{"-o", "xml", "audit"}, `output format "xml"`},
		{[]string{"--server", "localhost:8080", "audit"}, "not an http:// or https:// URL"},
		{[]string{"--bogus-flag", "audit"}, "unknown flag: --bogus-flag"},
		{[]string{"clusters", "create", "--name", "x", "--idempotency-key", ""}, "1 to 255 characters"},
	}
	for _, c := range cases {
		res := invoke(t, f.srv.URL, "", c.args...)
		if res.code != 2 || !strings.Contains(res.stderr, c.want) || !strings.Contains(res.stderr, "--help' for usage") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, res.code, res.stderr, c.want)
		}
	}
	if reqs := f.requests(); len(reqs) != 0 {
		t.Errorf("usage errors sent %d requests", len(reqs))
	}
}

func TestHierarchySpecFileErrors(t *testing.T) {
	f := newFakeAPI(t, nil)
	res := invoke(t, f.srv.URL, "", "hierarchies", "create", clusterA, "-f", "/nonexistent/spec.json")
	if res.code != 1 || !strings.Contains(res.stderr, "/nonexistent/spec.json") {
		t.Errorf("missing file: exit %d, stderr %q", res.code, res.stderr)
	}
	res = invoke(t, f.srv.URL, "[1,2]", "hierarchies", "replace", clusterA, hierA, "-f", "-")
	if res.code != 1 || !strings.Contains(res.stderr, "standard input: not a JSON object") {
		t.Errorf("bad JSON: exit %d, stderr %q", res.code, res.stderr)
	}
	if reqs := f.requests(); len(reqs) != 0 {
		t.Errorf("bad files sent %d requests", len(reqs))
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"clusters"}, {"nodes", "create", "--help"}} {
		res := invoke(t, "http://127.0.0.1:1", "", args...)
		if res.code != 0 || !strings.Contains(res.stdout, "Usage:") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, res.code, res.stdout, res.stderr)
		}
	}
}

// A create that got no answer leaves its key pending: the same command run
// again sends the same key (the server then replays instead of creating a
// second object); once answered, the next create gets a new key.
func TestRetriedCreateReusesKey(t *testing.T) {
	var mu sync.Mutex
	slow := true
	release := make(chan struct{})
	defer close(release)
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"POST /v1/clusters": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			s := slow
			mu.Unlock()
			if s {
				select { // answer too late: the client gives up
				case <-release:
				case <-r.Context().Done():
				}
				return
			}
			writeJSON(w, 201, clusterJSON(clusterA, "mail"))
		},
	})
	env := map[string]string{envServer: f.srv.URL, envToken: "secret-token", "XDG_CACHE_HOME": t.TempDir()}
	runIt := func(args ...string) result {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, strings.NewReader(""), &out, &errb, func(k string) string { return env[k] })
		return result{out.String(), errb.String(), code}
	}
	r := runIt("clusters", "create", "--name", "mail", "--timeout", "100ms")
	if r.code != 1 || !strings.Contains(r.stderr, "run the same command again") {
		t.Fatalf("timed out create: exit %d, stderr %q", r.code, r.stderr)
	}
	mu.Lock()
	slow = false
	mu.Unlock()
	r = runIt("clusters", "create", "--name", "mail")
	if r.code != 0 || !strings.Contains(r.stderr, "retrying it with its idempotency key") {
		t.Fatalf("retry: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runIt("clusters", "create", "--name", "mail")
	if r.code != 0 || strings.Contains(r.stderr, "retrying") {
		t.Fatalf("third: exit %d, stderr %q", r.code, r.stderr)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests", len(reqs))
	}
	k1, k2, k3 := reqs[0].header.Get("Idempotency-Key"), reqs[1].header.Get("Idempotency-Key"), reqs[2].header.Get("Idempotency-Key")
	if k1 == "" || k1 != k2 || k3 == k1 {
		t.Errorf("keys %q %q %q: want the first two equal and the third new", k1, k2, k3)
	}
	// Another body is another request: it never takes a pending key.
	mu.Lock()
	slow = true
	mu.Unlock()
	runIt("clusters", "create", "--name", "web", "--timeout", "100ms")
	mu.Lock()
	slow = false
	mu.Unlock()
	runIt("clusters", "create", "--name", "mail")
	reqs = f.requests()
	if a, b := reqs[3].header.Get("Idempotency-Key"), reqs[4].header.Get("Idempotency-Key"); a == b {
		t.Errorf("a different request reused key %q", a)
	}
}

func TestYAMLOutputKeepsOrder(t *testing.T) {
	body := `{"id":"` + clusterA + `","name":"mail","timing":{"heartbeat_ms":250,"lease_ttl_ms":1000},"tags":["a","b"],"version":7}`
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/clusters/{id}": func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, body) },
	})
	res := invoke(t, f.srv.URL, "", "clusters", "get", clusterA, "-o", "yaml")
	want := "id: " + clusterA + "\nname: mail\ntiming:\n  heartbeat_ms: 250\n  lease_ttl_ms: 1000\ntags:\n  - a\n  - b\nversion: 7\n"
	if res.code != 0 || res.stdout != want {
		t.Errorf("exit %d, stdout:\n%s\nwant:\n%s", res.code, res.stdout, want)
	}
}

func TestServerURLWithV1(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/clusters": func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"items":[]}`) },
	})
	res := invoke(t, f.srv.URL+"/v1", "", "clusters", "list")
	if res.code != 0 || !strings.Contains(res.stderr, "without /v1") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	if got := f.requests()[0].path; got != "/v1/clusters" {
		t.Errorf("path %q", got)
	}
}

// A cluster name is looked up with ?name= (one request), then the object
// by id; the full list is read only when the name is not found.
func TestNameLookupUsesNameFilter(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /v1/clusters": func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Query().Get("name") {
			case "mail":
				writeJSON(w, 200, `{"items":[`+clusterJSON(clusterA, "mail")+`]}`)
			case "":
				writeJSON(w, 200, `{"items":[`+clusterJSON(clusterA, "mail")+`]}`)
			default:
				writeJSON(w, 200, `{"items":[]}`)
			}
		},
		"GET /v1/clusters/{id}": func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, clusterJSON(clusterA, "mail")) },
	})
	res := invoke(t, f.srv.URL, "", "clusters", "get", "mail")
	reqs := f.requests()
	if res.code != 0 || len(reqs) != 2 || reqs[0].query.Get("name") != "mail" || reqs[1].path != "/v1/clusters/"+clusterA {
		t.Fatalf("exit %d, stderr %q, requests %+v", res.code, res.stderr, reqs)
	}
	res = invoke(t, f.srv.URL, "", "clusters", "get", "Mail")
	if res.code != 1 || !strings.Contains(res.stderr, `did you mean "mail"`) {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}
