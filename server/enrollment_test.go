package server_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
)

// TestReissueEnrollmentToken proves a node not enrolled yet gets a new
// enrollment token that replaces the old one (the old one is refused, the
// new one enrolls), and that a node already enrolled is refused with 409,
// so re-issuing never touches a running agent's credential.
func TestReissueEnrollmentToken(t *testing.T) {
	e := newEnv(t, 1)
	cid := e.addCluster("enr", "")
	resp, b := e.do("POST", "/v1/clusters/"+cid+"/nodes", map[string]any{"name": "n1"})
	type node struct {
		ID              string `json:"id"`
		Version         int64  `json:"version"`
		EnrollmentToken string `json:"enrollment_token"`
	}
	var n node
	if resp.StatusCode != 201 || json.Unmarshal(b, &n) != nil {
		t.Fatalf("create node: %d %s", resp.StatusCode, b)
	}
	path := "/v1/clusters/" + cid + "/nodes/" + n.ID + "/enrollment-token"
	if resp, b := e.do("POST", path, nil, "If-Match", `"99"`); resp.StatusCode != 412 {
		t.Errorf("stale If-Match: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("POST", path, nil, "If-Match", resp.Header.Get("ETag"))
	var re node
	if resp.StatusCode != 200 || json.Unmarshal(b, &re) != nil || re.EnrollmentToken == "" || re.EnrollmentToken == n.EnrollmentToken || re.Version != n.Version+1 {
		t.Fatalf("re-issue: %d %s", resp.StatusCode, b)
	}
	enroll := func(token string) *http.Response {
		pub, _, _ := ed25519.GenerateKey(nil)
		resp, _ := e.do("POST", "/agent/v1/enroll", map[string]any{
			"enrollment_token": token, "public_key": base64.StdEncoding.EncodeToString(pub),
			"facts": map[string]any{"hostname": "mx", "os": "linux", "arch": "amd64", "agent_version": "test"},
		}, "Authorization", "")
		return resp
	}
	if r := enroll(n.EnrollmentToken); r.StatusCode != 401 {
		t.Errorf("the replaced token enrolls: %d, want 401", r.StatusCode)
	}
	if r := enroll(re.EnrollmentToken); r.StatusCode != 201 {
		t.Fatalf("the new token: %d, want 201", r.StatusCode)
	}
	if resp, b := e.do("POST", path, nil); resp.StatusCode != 409 {
		t.Errorf("re-issue for an enrolled node: %d %s, want 409", resp.StatusCode, b)
	}
}
