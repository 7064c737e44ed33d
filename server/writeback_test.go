package server_test

import (
	"encoding/json"
	"testing"
)

// TestHierarchyReadWrittenBack proves a hierarchy read with GET can be
// PUT back as it is (its read-only fields ignored) and comes back the
// same but for its version and update time; an edit of the read is
// applied.
func TestHierarchyReadWrittenBack(t *testing.T) {
	e := newEnv(t, 1)
	cid, nodes := clusterWithNodes(e, 2)
	resp, b := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", map[string]any{"name": "web",
		"resources":  []any{map[string]any{"name": "probe", "kind": "command", "params": map[string]any{"check": "true"}}},
		"priorities": []any{map[string]any{"node_id": nodes[0], "priority": 1}, map[string]any{"node_id": nodes[1], "priority": 2}}})
	var created struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != 201 || json.Unmarshal(b, &created) != nil {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	path := "/v1/clusters/" + cid + "/hierarchies/" + created.ID
	resp, read := e.do("GET", path, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %d %s", resp.StatusCode, read)
	}
	var body map[string]any
	if err := json.Unmarshal(read, &body); err != nil {
		t.Fatal(err)
	}
	resp, b = e.do("PUT", path, body, "If-Match", resp.Header.Get("ETag"))
	if resp.StatusCode != 200 {
		t.Fatalf("PUT of the GET body: %d %s", resp.StatusCode, b)
	}
	var before, after map[string]any
	_ = json.Unmarshal(read, &before)
	_ = json.Unmarshal(b, &after)
	if after["version"].(float64) != before["version"].(float64)+1 {
		t.Errorf("version %v after %v", after["version"], before["version"])
	}
	for _, k := range []string{"version", "updated_at"} {
		delete(before, k)
		delete(after, k)
	}
	bj, _ := json.Marshal(before)
	aj, _ := json.Marshal(after)
	if string(bj) != string(aj) {
		t.Errorf("written back unchanged, it reads differently:\nbefore %s\n after %s", bj, aj)
	}

	// An edit of the read is applied; the stale ETag of the first read is refused.
	body["description"] = "edited after a read"
	if resp, b := e.do("PUT", path, body, "If-Match", `"1"`); resp.StatusCode != 412 {
		t.Errorf("PUT with the first read's ETag: %d %s, want 412", resp.StatusCode, b)
	}
	resp, b = e.do("PUT", path, body)
	var edited struct {
		Description string `json:"description"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &edited) != nil || edited.Description != "edited after a read" {
		t.Errorf("PUT of an edited read: %d %s", resp.StatusCode, b)
	}
}
