package server_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"
)

// TestAuditFilters proves the audit trail's filters (actor, cluster,
// action exact and by prefix, time range) and its newest-first order,
// with pagination that visits each selected record once.
func TestAuditFilters(t *testing.T) {
	e := newEnv(t, 1)
	start := time.Now().UTC().Add(-time.Second)
	c1, n1 := clusterWithNodes(e, 2)
	c2, _ := clusterWithNodes(&env{t: t, url: e.url}, 1)
	if resp, b := e.do("PATCH", "/v1/clusters/"+c1+"/nodes/"+n1[0], map[string]any{"description": "x"}); resp.StatusCode != 200 {
		t.Fatalf("patch node: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.do("POST", "/v1/tokens", map[string]any{"name": "other", "role": "viewer"}); resp.StatusCode != 201 {
		t.Fatalf("create token: %d %s", resp.StatusCode, b)
	}

	type rec struct {
		ID        int64     `json:"id"`
		At        time.Time `json:"at"`
		Actor     string    `json:"actor"`
		Action    string    `json:"action"`
		ClusterID string    `json:"cluster_id"`
	}
	// list follows every page of a query (limit 2, so several pages).
	list := func(query string) []rec {
		t.Helper()
		var all []rec
		cursor := ""
		for range 100 {
			q := "limit=2&" + query
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			resp, b := e.do("GET", "/v1/audit?"+q, nil)
			var l struct {
				Items      []rec   `json:"items"`
				NextCursor *string `json:"next_cursor"`
			}
			if resp.StatusCode != 200 || json.Unmarshal(b, &l) != nil {
				t.Fatalf("GET /v1/audit?%s: %d %s", q, resp.StatusCode, b)
			}
			all = append(all, l.Items...)
			if l.NextCursor == nil {
				return all
			}
			cursor = *l.NextCursor
		}
		t.Fatalf("no last page for %s", query)
		return nil
	}
	ids := func(rs []rec) []int64 {
		var out []int64
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}

	oldest := list("")
	if len(oldest) < 6 {
		t.Fatalf("%d records, want at least 6", len(oldest))
	}
	newest := list("order=newest")
	want := ids(oldest)
	slices.Reverse(want)
	if !slices.Equal(ids(newest), want) {
		t.Errorf("newest first: %v, want %v", ids(newest), want)
	}
	check := func(query string, keep func(rec) bool) {
		t.Helper()
		var want []int64
		for _, r := range oldest {
			if keep(r) {
				want = append(want, r.ID)
			}
		}
		if len(want) == 0 {
			t.Fatalf("%s: the test selects nothing", query)
		}
		if got := ids(list(query)); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", query, got, want)
		}
	}
	check("cluster_id="+c1, func(r rec) bool { return r.ClusterID == c1 })
	check("cluster_id="+c2+"&action=node.create", func(r rec) bool { return r.ClusterID == c2 && r.Action == "node.create" })
	check("action=node.*", func(r rec) bool { return len(r.Action) > 5 && r.Action[:5] == "node." })
	check("action=token.create", func(r rec) bool { return r.Action == "token.create" })
	check("actor="+url.QueryEscape(oldest[0].Actor), func(r rec) bool { return r.Actor == oldest[0].Actor })
	mid := oldest[len(oldest)/2].At
	check("since="+url.QueryEscape(mid.Format(time.RFC3339Nano)), func(r rec) bool { return !r.At.Before(mid) })
	check("until="+url.QueryEscape(mid.Format(time.RFC3339Nano))+"&since="+url.QueryEscape(start.Format(time.RFC3339Nano)),
		func(r rec) bool { return r.At.Before(mid) && !r.At.Before(start) })
	if got := list("actor=token:nobody"); len(got) != 0 {
		t.Errorf("unknown actor: %v", got)
	}
	if resp, b := e.do("GET", "/v1/audit?since=yesterday", nil); resp.StatusCode != 400 {
		t.Errorf("since=yesterday: %d %s, want 400", resp.StatusCode, b)
	}
}
