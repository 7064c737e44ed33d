package server_test

import (
	"encoding/json"
	"net/url"
	"testing"
)

// TestLookupByName proves ?name= on the lists of clusters, nodes and
// hierarchies finds the one object of that name, in that cluster only,
// and finds nothing for an unknown name (a 200 with no items, not a 404).
func TestLookupByName(t *testing.T) {
	e := newEnv(t, 1)
	c1, n1 := clusterWithNodes(e, 2)
	c2, _ := clusterWithNodes(&env{t: t, url: e.url}, 1) // another cluster, its own node n0
	if resp, b := e.do("POST", "/v1/clusters/"+c1+"/hierarchies", map[string]any{"name": "web",
		"resources":  []any{map[string]any{"name": "probe", "kind": "command", "params": map[string]any{"check": "true"}}},
		"priorities": []any{map[string]any{"node_id": n1[0], "priority": 1}}}); resp.StatusCode != 201 {
		t.Fatalf("create hierarchy: %d %s", resp.StatusCode, b)
	}
	ids := func(path, name string) []string {
		t.Helper()
		resp, b := e.do("GET", path+"?name="+url.QueryEscape(name), nil)
		var l struct {
			Items []struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"items"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &l) != nil {
			t.Fatalf("GET %s?name=%s: %d %s", path, name, resp.StatusCode, b)
		}
		var out []string
		for _, it := range l.Items {
			if it.Name != name {
				t.Errorf("GET %s?name=%s answered %q", path, name, it.Name)
			}
			out = append(out, it.ID)
		}
		return out
	}
	var c1Name string
	{
		resp, b := e.do("GET", "/v1/clusters/"+c1, nil)
		var c struct {
			Name string `json:"name"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &c) != nil {
			t.Fatal(resp.StatusCode)
		}
		c1Name = c.Name
	}
	if got := ids("/v1/clusters", c1Name); len(got) != 1 || got[0] != c1 {
		t.Errorf("cluster %q: %v, want [%s]", c1Name, got, c1)
	}
	if got := ids("/v1/clusters/"+c1+"/nodes", "n1"); len(got) != 1 || got[0] != n1[1] {
		t.Errorf("node n1: %v, want [%s]", got, n1[1])
	}
	if got := ids("/v1/clusters/"+c2+"/nodes", "n1"); len(got) != 0 {
		t.Errorf("node n1 of the other cluster: %v, want none", got)
	}
	if got := ids("/v1/clusters/"+c1+"/hierarchies", "web"); len(got) != 1 {
		t.Errorf("hierarchy web: %v, want one", got)
	}
	for _, p := range []string{"/v1/clusters", "/v1/clusters/" + c1 + "/nodes", "/v1/clusters/" + c1 + "/hierarchies"} {
		if got := ids(p, "nothing-by-this-name"); len(got) != 0 {
			t.Errorf("%s?name=nothing-by-this-name: %v, want none", p, got)
		}
	}
	if resp, b := e.do("GET", "/v1/clusters?name=", nil); resp.StatusCode != 400 {
		t.Errorf("an empty name: %d %s, want 400", resp.StatusCode, b)
	}
}
