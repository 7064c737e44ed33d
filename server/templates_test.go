package server_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestTemplatesAPI: templates are listed and read; a hierarchy created
// from one is an ordinary hierarchy (read back, then patched); bad
// parameters are 422 problems naming /parameters/NAME, an unknown template
// is 404, a stale version 422.
func TestTemplatesAPI(t *testing.T) {
	e := newEnv(t, 1)
	resp, b := e.do("GET", "/v1/templates", nil)
	var list struct {
		Items []struct {
			Name       string           `json:"name"`
			Version    int              `json:"version"`
			Parameters []map[string]any `json:"parameters"`
			Hierarchy  map[string]any   `json:"hierarchy"`
		} `json:"items"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &list) != nil || len(list.Items) != 3 {
		t.Fatalf("GET /v1/templates: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("GET", "/v1/templates/nginx", nil); resp.StatusCode != 200 || !strings.Contains(string(b), `"{{vip}}/{{prefix_length}}"`) {
		t.Fatalf("GET /v1/templates/nginx: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("GET", "/v1/templates/exchange", nil); resp.StatusCode != 404 || !strings.Contains(string(b), "mail") {
		t.Fatalf("unknown template: %d %s", resp.StatusCode, b)
	}

	cid, nodes := clusterWithNodes(e, 2)
	prios := []map[string]any{{"node_id": nodes[0], "priority": 1}, {"node_id": nodes[1], "priority": 2}}
	path := "/v1/clusters/" + cid + "/hierarchies/from-template"
	body := map[string]any{"template": "nginx", "version": 1, "name": "web", "priorities": prios,
		"parameters": map[string]any{"vip": "198.18.1.70", "data_source": "/srv/www-data", "port": 8080}}
	resp, b = e.do("POST", path, body)
	if resp.StatusCode != 201 {
		t.Fatalf("create from template: %d %s", resp.StatusCode, b)
	}
	var h struct {
		ID               string           `json:"id"`
		ExclusivityGroup string           `json:"exclusivity_group"`
		Resources        []map[string]any `json:"resources"`
	}
	_ = json.Unmarshal(b, &h)
	if len(h.Resources) != 4 || h.Resources[3]["params"].(map[string]any)["url"] != "http://198.18.1.70:8080/" {
		t.Fatalf("expanded resources: %s", b)
	}
	// An ordinary hierarchy: the operator edits it.
	resp, b = e.do("GET", "/v1/clusters/"+cid+"/hierarchies/"+h.ID, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("get: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("PATCH", "/v1/clusters/"+cid+"/hierarchies/"+h.ID, map[string]any{"description": "edited"}, "If-Match", resp.Header.Get("ETag")); resp.StatusCode != 200 {
		t.Fatalf("patch: %d %s", resp.StatusCode, b)
	}

	// Expand, edit, create: the preview is a HierarchySpec that POST
	// .../hierarchies takes as it is.
	resp, b = e.do("POST", "/v1/templates/nginx/expand", map[string]any{"name": "web3", "priorities": prios,
		"parameters": map[string]any{"vip": "198.18.1.72", "data_source": "/srv/www-data"}})
	if resp.StatusCode != 200 {
		t.Fatalf("expand: %d %s", resp.StatusCode, b)
	}
	var spec map[string]any
	_ = json.Unmarshal(b, &spec)
	if spec["name"] != "web3" || len(spec["resources"].([]any)) != 4 {
		t.Fatalf("expanded spec: %s", b)
	}
	spec["description"] = "edited before creation"
	if resp, b := e.do("POST", "/v1/clusters/"+cid+"/hierarchies", spec); resp.StatusCode != 201 {
		t.Fatalf("create the expanded spec: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("POST", "/v1/templates/nginx/expand", map[string]any{"name": "x", "priorities": prios, "parameters": map[string]any{"vip": "x"}}); resp.StatusCode != 422 || !strings.Contains(string(b), "/parameters/vip") {
		t.Fatalf("expand with a bad vip: %d %s", resp.StatusCode, b)
	}

	for _, tc := range []struct {
		change func(m map[string]any)
		status int
		detail string
	}{
		{func(m map[string]any) { m["parameters"].(map[string]any)["vip"] = "198.18.1.70/24" }, 422, "/parameters/vip"},
		{func(m map[string]any) { delete(m["parameters"].(map[string]any), "data_source") }, 422, "/parameters/data_source"},
		{func(m map[string]any) { m["parameters"].(map[string]any)["colour"] = "red" }, 422, "/parameters/colour"},
		{func(m map[string]any) { m["version"] = 7 }, 422, "version 1, not 7"},
		{func(m map[string]any) { m["template"] = "exchange" }, 404, "no template"},
		{func(m map[string]any) { m["parameters"].(map[string]any)["interface"] = "not an interface!" }, 422, "/resources/0/params/interface"},
	} {
		m := map[string]any{"template": "nginx", "name": "web2", "priorities": prios,
			"parameters": map[string]any{"vip": "198.18.1.71", "data_source": "/srv/www-data"}}
		tc.change(m)
		resp, b := e.do("POST", path, m)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(b), tc.detail) {
			t.Errorf("%v: %d %s, want %d mentioning %q", m, resp.StatusCode, b, tc.status, tc.detail)
		}
	}
}
