package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/backstop-ha/backstop/e2e/testkit"
)

// A token scoped to one cluster sees and changes that cluster only:
// another cluster answers 404 with the very problem an unknown one gets
// (its existence does not leak), lists show only the scope, operations
// spanning every cluster are 403 (a scoped admin cannot mint itself an
// unscoped token), and a scope naming no cluster is refused.
func TestScopedToken(t *testing.T) {
	e := newEnv(t, 1)
	mine, theirs := e.addCluster("mine", ""), e.addCluster("theirs", "")
	resp, b := e.do("POST", "/v1/tokens", map[string]any{"name": "team-a", "role": "admin", "clusters": []string{mine}})
	if resp.StatusCode != 201 {
		t.Fatalf("create scoped token: %d %s", resp.StatusCode, b)
	}
	var tok struct {
		Secret   string
		Clusters []string
	}
	json.Unmarshal(b, &tok)
	if len(tok.Clusters) != 1 || tok.Clusters[0] != mine {
		t.Fatalf("token clusters %v, want [%s]", tok.Clusters, mine)
	}
	as := func(method, path string, body any) (int, string) {
		resp, b := testkit.Request(t, nil, method, e.url+path, tok.Secret, body)
		return resp.StatusCode, string(b)
	}

	if code, b := as("GET", "/v1/clusters", nil); code != 200 || !strings.Contains(b, mine) || strings.Contains(b, theirs) {
		t.Fatalf("list: %d %s; want only %s", code, b, mine)
	}
	if code, b := as("GET", "/v1/clusters/"+mine, nil); code != 200 {
		t.Fatalf("own cluster: %d %s", code, b)
	}
	if code, b := as("POST", "/v1/clusters/"+mine+"/nodes", map[string]any{"name": "n1"}); code != 201 {
		t.Fatalf("create node in own cluster: %d %s", code, b)
	}
	unknown := "0195f7a4-1111-7000-8000-00000000dead"
	for _, path := range []string{"/v1/clusters/" + theirs, "/v1/clusters/" + theirs + "/nodes", "/v1/clusters/" + theirs + "/events"} {
		code, got := as("GET", path, nil)
		_, want := as("GET", strings.Replace(path, theirs, unknown, 1), nil)
		if code != 404 {
			t.Fatalf("GET %s (out of scope): %d %s; want 404", path, code, got)
		}
		norm := func(s string) string {
			var p map[string]any
			json.Unmarshal([]byte(s), &p)
			delete(p, "request_id")
			delete(p, "instance")
			out, _ := json.Marshal(p)
			return strings.ReplaceAll(strings.ReplaceAll(string(out), theirs, "X"), unknown, "X")
		}
		if norm(got) != norm(want) {
			t.Fatalf("out-of-scope answer differs from an unknown cluster's:\n%s\n%s", got, want)
		}
	}
	if code, b := as("DELETE", "/v1/clusters/"+theirs, nil); code != 404 {
		t.Fatalf("delete out-of-scope cluster: %d %s", code, b)
	}
	for _, c := range []struct{ method, path string }{{"POST", "/v1/tokens"}, {"GET", "/v1/tokens"}, {"GET", "/v1/audit"}, {"POST", "/v1/clusters"}} {
		var body any
		if c.method == "POST" {
			body = map[string]any{"name": "x", "role": "admin"}
		}
		if code, b := as(c.method, c.path, body); code != 403 || !strings.Contains(b, "scoped") {
			t.Fatalf("%s %s with a scoped token: %d %s; want 403", c.method, c.path, code, b)
		}
	}
	if code, b := as("GET", "/v1/control-plane", nil); code != 200 {
		t.Fatalf("control plane: %d %s", code, b)
	}
	if resp, b := e.do("POST", "/v1/tokens", map[string]any{"name": "bad", "role": "viewer", "clusters": []string{unknown}}); resp.StatusCode != 422 || !strings.Contains(string(b), "/clusters/0") {
		t.Fatalf("scope of an unknown cluster: %d %s; want 422 naming /clusters/0", resp.StatusCode, b)
	}
	// The unscoped admin still sees both.
	if _, b := e.do("GET", "/v1/clusters", nil); !strings.Contains(string(b), theirs) || !strings.Contains(string(b), mine) {
		t.Fatalf("admin list: %s", b)
	}
}
