package server_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/openapi/envelope"
)

type enrolled struct {
	NodeID      string `json:"node_id"`
	ClusterID   string `json:"cluster_id"`
	Credential  string `json:"credential"`
	SigningKeys []struct {
		KeyID       string `json:"key_id"`
		PublicKey   []byte `json:"public_key"`
		Fingerprint string `json:"fingerprint"`
		EndorsedBy  string `json:"endorsed_by"`
		Endorsement []byte `json:"endorsement"`
	} `json:"signing_keys"`
}

func (e *env) agentDo(credential, method, path string, body any) (*http.Response, []byte) {
	e.t.Helper()
	// do() sets the admin token; the agent's credential replaces it.
	return e.do(method, path, body, "Authorization", "Bearer "+credential)
}

func (e *env) enroll(token string) enrolled {
	e.t.Helper()
	pub, _, _ := ed25519.GenerateKey(nil)
	resp, b := e.do("POST", "/agent/v1/enroll", map[string]any{
		"enrollment_token": token, "public_key": base64.StdEncoding.EncodeToString(pub),
		"facts": map[string]any{"hostname": "mx", "os": "linux", "arch": "amd64", "agent_version": "test"},
	}, "Authorization", "")
	if resp.StatusCode != 201 {
		e.t.Fatalf("enroll: %d %s", resp.StatusCode, b)
	}
	var out enrolled
	if err := json.Unmarshal(b, &out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// addCluster creates a cluster (timing profile "" for the default) and
// returns its id.
func (e *env) addCluster(name, profile string) string {
	e.t.Helper()
	body := map[string]any{"name": name}
	if profile != "" {
		body["timing_profile"] = profile
	}
	resp, b := e.do("POST", "/v1/clusters", body)
	if resp.StatusCode != 201 {
		e.t.Fatalf("cluster %s: %d %s", name, resp.StatusCode, b)
	}
	var c struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		e.t.Fatal(err)
	}
	return c.ID
}

// addNode creates a node in cluster cid and returns its id and its
// enrollment token.
func (e *env) addNode(cid, name string) (id, token string) {
	e.t.Helper()
	resp, b := e.do("POST", "/v1/clusters/"+cid+"/nodes", map[string]any{"name": name})
	if resp.StatusCode != 201 {
		e.t.Fatalf("node %s: %d %s", name, resp.StatusCode, b)
	}
	var n struct {
		ID    string `json:"id"`
		Token string `json:"enrollment_token"`
	}
	if err := json.Unmarshal(b, &n); err != nil {
		e.t.Fatal(err)
	}
	return n.ID, n.Token
}

// The agent side of a manual placement, spoken over HTTP the way an agent
// does: enroll with the token's key fingerprint, long-poll, verify the
// signed command, report the result; the operation and the placement
// follow. A second node is refused while the first runs it, a reused
// token is refused, and a rejection is visible with its reason.
func TestAgentPlacementFlow(t *testing.T) {
	e := newEnv(t, 1)
	cid, _ := clusterWithNodes(e, 0)
	var tokens, nodes []string
	for _, name := range []string{"mx1", "mx2"} {
		id, token := e.addNode(cid, name)
		tokens, nodes = append(tokens, token), append(nodes, id)
	}
	resp, b := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", mailSpec("mail", nodes))
	if resp.StatusCode != 201 {
		t.Fatalf("hierarchy: %d %s", resp.StatusCode, b)
	}
	var h struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &h)

	a1 := e.enroll(tokens[0])
	_, fp, _ := strings.Cut(tokens[0], ".")
	if len(a1.SigningKeys) != 1 || a1.SigningKeys[0].Fingerprint != fp || envelope.Fingerprint(a1.SigningKeys[0].PublicKey) != fp {
		t.Fatalf("token fingerprint %q does not match the enrollment's keys %+v", fp, a1.SigningKeys)
	}
	if resp, _ := e.do("POST", "/agent/v1/enroll", map[string]any{
		"enrollment_token": tokens[0], "public_key": base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"facts": map[string]any{"hostname": "mx", "os": "linux", "arch": "amd64", "agent_version": "test"},
	}, "Authorization", ""); resp.StatusCode != 401 {
		t.Fatalf("reused enrollment token: %d, want 401", resp.StatusCode)
	}
	a2 := e.enroll(tokens[1])
	if resp, b := e.agentDo(a1.Credential, "POST", "/agent/v1/heartbeat", map[string]any{"config_version": 0}); resp.StatusCode != 200 || !strings.Contains(string(b), `"lease_ttl_ms":1000`) {
		t.Fatalf("heartbeat: %d %s", resp.StatusCode, b)
	}

	// A long poll started before the command is queued returns with it.
	type polled struct {
		Commands []struct {
			CommandID string `json:"command_id"`
			Payload   []byte `json:"payload"`
			KeyID     string `json:"key_id"`
			Signature []byte `json:"signature"`
		} `json:"commands"`
	}
	got := make(chan polled, 1)
	waiting := make(chan struct{}, 1)
	e.srv.OnPollWaiting(func(nodeID string) {
		if nodeID == a1.NodeID {
			select {
			case waiting <- struct{}{}:
			default:
			}
		}
	})
	const pollWait = 20 * time.Second
	start := time.Now()
	go func() {
		_, b := e.agentDo(a1.Credential, "GET", fmt.Sprintf("/agent/v1/commands?wait=%d", pollWait.Milliseconds()), nil)
		var p polled
		_ = json.Unmarshal(b, &p)
		got <- p
	}()
	// This test is about waking a waiting poll: queue the command once
	// the poll has looked, found nothing and waits.
	select {
	case <-waiting:
	case <-time.After(pollWait):
		t.Fatal("the long poll never started waiting")
	}
	resp, b = e.do("POST", "/v1/clusters/"+cid+"/hierarchies/"+h.ID+"/in-service", map[string]any{"node_id": nodes[0]})
	if resp.StatusCode != 202 {
		t.Fatalf("in-service: %d %s", resp.StatusCode, b)
	}
	opPath := resp.Header.Get("Location")
	p := <-got
	// A poll its timer ended took at least pollWait, and its last look
	// would find the command too: only the time tells it was not woken.
	if len(p.Commands) != 1 || time.Since(start) >= pollWait {
		t.Fatalf("long poll returned %d commands after %s; it was not woken", len(p.Commands), time.Since(start))
	}
	keys := map[string]ed25519.PublicKey{a1.SigningKeys[0].KeyID: a1.SigningKeys[0].PublicKey}
	v := &envelope.Verifier{ClusterID: a1.ClusterID, NodeID: a1.NodeID, Keys: keys}
	c := p.Commands[0]
	cmd, err := v.Verify(envelope.Envelope{Payload: c.Payload, KeyID: c.KeyID, Signature: c.Signature})
	if err != nil {
		t.Fatalf("verify the delivered command: %v", err)
	}
	if cmd.Action != envelope.BringInService || cmd.Epoch != 1 || len(cmd.Resources) != 3 || cmd.Resources[0].Name != "vip" {
		t.Fatalf("command = %+v", cmd)
	}
	// The other agent cannot use it: it is addressed to node 1.
	v2 := &envelope.Verifier{ClusterID: a2.ClusterID, NodeID: a2.NodeID, Keys: keys}
	if _, err := v2.Verify(envelope.Envelope{Payload: c.Payload, KeyID: c.KeyID, Signature: c.Signature}); envelope.ReasonOf(err) != envelope.ReasonWrongNode {
		t.Fatalf("node 2 verifying node 1's command: %v", err)
	}
	if resp, b := e.do("POST", "/v1/clusters/"+cid+"/hierarchies/"+h.ID+"/in-service", map[string]any{"node_id": nodes[1]}); resp.StatusCode != 409 {
		t.Fatalf("in-service on a second node: %d %s, want 409", resp.StatusCode, b)
	}
	if resp, b := e.agentDo(a1.Credential, "POST", "/agent/v1/commands/"+c.CommandID+"/result", map[string]any{
		"status": "succeeded", "steps": []map[string]any{{"resource": "vip", "action": "start", "ok": true, "duration_ms": 3}},
	}); resp.StatusCode != 204 {
		t.Fatalf("result: %d %s", resp.StatusCode, b)
	}
	_, b = e.do("GET", opPath, nil)
	if !strings.Contains(string(b), `"state":"succeeded"`) || !strings.Contains(string(b), `"resource":"vip"`) {
		t.Fatalf("operation after success: %s", b)
	}
	_, b = e.do("GET", "/v1/clusters/"+cid+"/hierarchies/"+h.ID, nil)
	if !strings.Contains(string(b), `"state":"in_service"`) || !strings.Contains(string(b), `"node_id":"`+nodes[0]+`"`) {
		t.Fatalf("placement after success: %s", b)
	}

	// Out of service; the agent rejects it as stale (as if it had seen a
	// newer epoch): the reason shows on the command, the placement fails.
	resp, b = e.do("POST", "/v1/clusters/"+cid+"/hierarchies/"+h.ID+"/out-of-service", nil)
	if resp.StatusCode != 202 {
		t.Fatalf("out-of-service: %d %s", resp.StatusCode, b)
	}
	_, b = e.agentDo(a1.Credential, "GET", "/agent/v1/commands?wait=0", nil)
	var p2 polled
	_ = json.Unmarshal(b, &p2)
	if len(p2.Commands) != 1 {
		t.Fatalf("second poll: %s", b)
	}
	if resp, b := e.agentDo(a1.Credential, "POST", "/agent/v1/commands/"+p2.Commands[0].CommandID+"/result", map[string]any{
		"status": "rejected", "reason": "stale_epoch", "detail": "test",
	}); resp.StatusCode != 204 {
		t.Fatalf("rejection: %d %s", resp.StatusCode, b)
	}
	_, b = e.do("GET", "/v1/clusters/"+cid+"/commands?node_id="+nodes[0], nil)
	if !strings.Contains(string(b), `"rejection_reason":"stale_epoch"`) || !strings.Contains(string(b), `"status":"rejected"`) {
		t.Fatalf("commands after a rejection: %s", b)
	}
	if resp, _ := e.agentDo(a2.Credential, "POST", "/agent/v1/commands/"+p2.Commands[0].CommandID+"/result", map[string]any{"status": "succeeded"}); resp.StatusCode != 404 {
		t.Fatalf("result for another node's command: %d, want 404", resp.StatusCode)
	}

	// Rotation: the new key reaches agents endorsed by the old one.
	if resp, b := e.do("POST", "/v1/signing-keys/rotate", nil); resp.StatusCode != 201 {
		t.Fatalf("rotate: %d %s", resp.StatusCode, b)
	}
	_, b = e.agentDo(a1.Credential, "GET", "/agent/v1/config", nil)
	var cfg enrolled
	_ = json.Unmarshal(b, &cfg)
	if len(cfg.SigningKeys) != 2 {
		t.Fatalf("config keys after rotation: %s", b)
	}
	nk := cfg.SigningKeys[1]
	if nk.EndorsedBy != a1.SigningKeys[0].KeyID || !ed25519.Verify(a1.SigningKeys[0].PublicKey, envelope.EndorsementBytes(nk.KeyID, nk.PublicKey), nk.Endorsement) {
		t.Fatalf("rotated key %+v is not endorsed by the enrolled key", nk)
	}
	if resp, _ := e.agentDo("bsa_bogus", "GET", "/agent/v1/config", nil); resp.StatusCode != 401 {
		t.Fatalf("config with a bogus credential: %d", resp.StatusCode)
	}
	if resp, _ := e.agentDo(adminSecret, "GET", "/agent/v1/config", nil); resp.StatusCode != 401 {
		t.Fatalf("config with an API token instead of an agent credential: %d", resp.StatusCode)
	}
}

// An agent announcing its restart over HTTP: restart_hold_ms above the
// lease TTL comes back as lease_ttl_ms with a node.restarting event; a
// value outside the contract's bounds is a validation problem.
func TestAgentRestartHold(t *testing.T) {
	e := newEnv(t, 1)
	cid, _ := clusterWithNodes(e, 0)
	_, token := e.addNode(cid, "mx1")
	en := e.enroll(token)
	beat := func(body map[string]any) (int, map[string]any) {
		resp, b := e.agentDo(en.Credential, "POST", "/agent/v1/heartbeat", body)
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	if code, ack := beat(map[string]any{"config_version": 0}); code != 200 || ack["lease_ttl_ms"] != float64(1000) {
		t.Fatalf("heartbeat: %d %v", code, ack)
	}
	if code, ack := beat(map[string]any{"config_version": 0, "restart_hold_ms": 20000}); code != 200 || ack["lease_ttl_ms"] != float64(20000) {
		t.Fatalf("heartbeat with a restart hold: %d %v; want lease_ttl_ms 20000", code, ack)
	}
	_, b := e.do("GET", "/v1/clusters/"+cid+"/events?type=node.restarting", nil)
	if !strings.Contains(string(b), "node mx1's agent is restarting; its hierarchies stay in place for up to 20000 ms") {
		t.Fatalf("events: %s", b)
	}
	for _, bad := range []int{-1, 120001} {
		if code, p := beat(map[string]any{"config_version": 0, "restart_hold_ms": bad}); code != 400 {
			t.Errorf("restart_hold_ms %d: %d %v, want 400", bad, code, p)
		}
	}
}

// TestEnrollmentChangesNoAgentConfiguration: enrolling a node changes
// nothing any agent's configuration holds (the node was a peer, with its
// paths and priorities, from its creation), so it leaves the cluster's
// configuration version alone; bumping it made every running agent of
// the cluster fetch its whole configuration at each enrollment,
// quadratic in the cluster's size during a mass enrollment (issue 10).
// A change agents must apply, such as a new node, still raises it.
func TestEnrollmentChangesNoAgentConfiguration(t *testing.T) {
	e := newEnv(t, 1)
	cid, _ := clusterWithNodes(e, 0)
	var tokens, nodes []string
	newNode := func(name string) {
		id, token := e.addNode(cid, name)
		tokens, nodes = append(tokens, token), append(nodes, id)
	}
	for _, name := range []string{"mx1", "mx2", "mx3"} {
		newNode(name)
	}
	if resp, b := e.do("POST", "/v1/clusters/"+cid+"/paths", map[string]any{
		"a": map[string]any{"node_id": nodes[0], "address": "198.18.3.1"},
		"b": map[string]any{"node_id": nodes[1], "address": "198.18.3.2"},
	}); resp.StatusCode != 201 {
		t.Fatalf("path: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", mailSpec("mail", nodes[:2])); resp.StatusCode != 201 {
		t.Fatalf("hierarchy: %d %s", resp.StatusCode, b)
	}
	a1 := e.enroll(tokens[0])
	config := func() (string, float64) {
		t.Helper()
		resp, b := e.agentDo(a1.Credential, "GET", "/agent/v1/config", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("config: %d %s", resp.StatusCode, b)
		}
		var c struct {
			Version float64 `json:"version"`
		}
		_ = json.Unmarshal(b, &c)
		return string(b), c.Version
	}
	ackVersion := func() float64 {
		t.Helper()
		resp, b := e.agentDo(a1.Credential, "POST", "/agent/v1/heartbeat", map[string]any{"config_version": 0})
		if resp.StatusCode != 200 {
			t.Fatalf("heartbeat: %d %s", resp.StatusCode, b)
		}
		var ack struct {
			ConfigVersion float64 `json:"config_version"`
		}
		_ = json.Unmarshal(b, &ack)
		return ack.ConfigVersion
	}
	before, v := config()
	if got := ackVersion(); got != v {
		t.Fatalf("heartbeat announces configuration %v, the configuration is %v", got, v)
	}
	e.enroll(tokens[1]) // a peer with a path and a priority
	e.enroll(tokens[2]) // a peer with neither
	after, v2 := config()
	if after != before {
		t.Fatalf("enrolling the peers changed mx1's configuration:\nbefore %s\nafter  %s", before, after)
	}
	if got := ackVersion(); got != v {
		t.Fatalf("after enrolling peers the heartbeat announces configuration %v, want %v unchanged (mx1 would fetch it again for nothing)", got, v)
	}
	if v2 != v {
		t.Fatalf("configuration version %v, want %v", v2, v)
	}
	newNode("mx4")
	if got := ackVersion(); got <= v {
		t.Fatalf("a new peer left the configuration version at %v: mx1 would not learn of it", got)
	}
	if now, _ := config(); !strings.Contains(now, nodes[3]) {
		t.Fatalf("mx1's configuration does not name the new peer: %s", now)
	}
}

// TestHeartbeatFastLane: over HTTP, the heartbeats agents send are served
// by the fast lane and renew the lease (first through the full
// transaction that stores the report, then through grouped renewals),
// and what the lane hands over is answered exactly as before: fences
// through the general path, bad bodies with the contract's problem, a
// wrong content type 415, a body too large 413. The lane changes the cost
// of a heartbeat, never its answer or the lease it grants.
func TestHeartbeatFastLane(t *testing.T) {
	e := newEnv(t, 1)
	cid, _ := clusterWithNodes(e, 0)
	_, token := e.addNode(cid, "mx1")
	en := e.enroll(token)
	send := func(contentType, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "POST", e.url+"/agent/v1/heartbeat", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+en.Credential)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	counter := func(lane, store string) int {
		t.Helper()
		_, m := e.do("GET", "/metrics", nil)
		re := regexp.MustCompile(`(?m)^backstop_agent_heartbeats_total\{lane="` + lane + `",store="` + store + `"\} (\d+)$`)
		if mm := re.FindStringSubmatch(string(m)); mm != nil {
			v, _ := strconv.Atoi(mm[1])
			return v
		}
		return 0
	}
	good := `{"config_version":0,"paths":[],"hierarchies":[],"resources":[],"instance":"i1"}`
	for i := range 3 {
		if code, body := send("application/json", good); code != 200 || !strings.Contains(body, `"lease_ttl_ms":1000`) {
			t.Fatalf("heartbeat %d: %d %s", i, code, body)
		}
	}
	if got := counter("fast", "recorded") + counter("fast", "renewed"); got != 3 {
		t.Errorf("fast lane served %d of 3 good heartbeats", got)
	}
	if counter("fast", "renewed") < 1 {
		t.Error("no heartbeat renewed its lease through the grouped renewal")
	}
	if _, m := e.do("GET", "/metrics", nil); !regexp.MustCompile(`backstop_http_requests_total\{code="200",method="POST",route="/agent/v1/heartbeat"\} [3-9]`).Match(m) {
		t.Error("heartbeats served by the fast lane are not counted under their route in backstop_http_requests_total")
	}
	fence := `{"config_version":0,"fences":[{"at":"2026-11-26T06:00:00Z","reason":"lease expired","hierarchies":[]}]}`
	if code, body := send("application/json", fence); code != 200 {
		t.Fatalf("heartbeat with a fence report: %d %s", code, body)
	}
	if counter("general", "recorded") != 1 {
		t.Error("the heartbeat with a fence report did not take the general path")
	}
	for _, c := range []struct {
		contentType, body string
		code              int
		detail            string
	}{
		{"application/json", `{"config_version":0,"bogus":1}`, 400, "/bogus"},
		{"application/json", `{"Config_Version":0}`, 400, "config_version"},
		{"application/json", `{"config_version":null}`, 400, "/config_version"},
		{"application/json", `{"config_version":0,"restart_hold_ms":120001}`, 400, "/restart_hold_ms"},
		{"application/json", `{"config_version":0} {"config_version":1}`, 400, "unexpected data after the JSON value"},
		{"application/json", `{"config_version":0,"instance":"a\u0000b"}`, 400, "/instance"},
		{"text/plain", good, 415, "send application/json"},
		{"application/json", `{"config_version":0,"instance":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "request body exceeds"},
	} {
		code, body := send(c.contentType, c.body)
		if code != c.code || !strings.Contains(body, c.detail) || !strings.Contains(body, `"status":`) {
			t.Errorf("%s %.60q: %d %.300s; want %d with %q", c.contentType, c.body, code, body, c.code, c.detail)
		}
	}
}
