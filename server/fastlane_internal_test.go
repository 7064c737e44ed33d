package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/oapi-codegen/runtime"

	"github.com/backstop-ha/backstop/openapi"
	"github.com/backstop-ha/backstop/openapi/api"
)

// A heartbeat as backstop-agent sends it: two hierarchies, resources with
// quick and deep checks, paths with telemetry, an instance.
const agentLikeHeartbeat = `{"config_version":7,"instance":"4f6c2a1e9b3d4c5e",
"hierarchies":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","epoch":4,"state":"in_service"},
 {"hierarchy_id":"0195f7a4-3333-7000-8000-000000000002","epoch":2,"state":"out_of_service","detail":""}],
"resources":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","resource":"vip","quick":{"ok":true,"at":"2026-11-26T06:00:00.123456789Z"},"deep":{"ok":false,"at":"2026-11-26T06:00:00+01:00","detail":"connection refused"},"restarts":1,"check_failures":2},
 {"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","resource":"postfix","quick":{"ok":true,"at":"2026-11-26T06:00:00Z"}}],
"paths":[{"path_id":"0195f7a4-2222-7000-8000-000000000001","peer_node_id":"0195f7a4-1111-7000-8000-000000000002","state":"up","rtt_ms":0.41,"loss":0},
 {"path_id":"0195F7A4-2222-7000-8000-00000000000A","peer_node_id":"0195f7a4-1111-7000-8000-000000000003","state":"down","rtt_ms":12.5,"loss":1}]}`

// fastLaneSeeds: bodies the lane must take, and near misses it must hand
// over or that the general path refuses.
var fastLaneSeeds = []string{
	agentLikeHeartbeat,
	`{"config_version":0}`,
	`{"config_version":0,"hierarchies":[],"resources":[],"paths":[],"fences":[]}`,
	`{"config_version":3,"restart_hold_ms":15000,"instance":"a.b_c-d"}`,
	`{"Config_Version":3}`,
	`{"config_version":3,"config_version":4}`,
	`{"config_version":1e3}`,
	`{"config_version":3.0}`,
	`{"config_version":-0}`,
	`{"config_version":-1}`,
	`{"config_version":9223372036854775808}`,
	`{"config_version":null}`,
	`{"config_version":3,"hierarchies":null}`,
	`{"config_version":3,"bogus":1}`,
	`{"config_version":3} {"config_version":4}`,
	`{"config_version":3,"instance":""}`,
	`{"config_version":3,"instance":"a b"}`,
	`{"config_version":3,"restart_hold_ms":120001}`,
	`{"config_version":3,"fences":[{"at":"2026-11-26T06:00:00Z","reason":"lease expired","hierarchies":[]}]}`,
	`{"config_version":3,"hierarchies":[{"hierarchy_id":"00000000-0000-0000-0000-000000000000","epoch":1,"state":"in_service"}]}`,
	`{"config_version":3,"hierarchies":[{"hierarchy_id":"{0195f7a4-3333-7000-8000-000000000001}","epoch":1,"state":"in_service"}]}`,
	`{"config_version":3,"hierarchies":[{"hierarchy_id":"0195f7a4333370008000000000000001","epoch":1,"state":"in_service"}]}`,
	`{"config_version":3,"hierarchies":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","epoch":1,"state":"sideways"}]}`,
	`{"config_version":3,"hierarchies":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","state":"in_service"}]}`,
	`{"config_version":3,"resources":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","resource":"x","quick":{"ok":true,"at":"2026-11-26t06:00:00z"}}]}`,
	`{"config_version":3,"resources":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","resource":"x","quick":{"ok":true,"at":"2026-11-26T06:00:60Z"}}]}`,
	`{"config_version":3,"resources":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","resource":"x","quick":{"ok":true}}]}`,
	`{"config_version":3,"resources":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","resource":"x","restarts":1.5}]}`,
	`{"config_version":3,"paths":[{"path_id":"0195f7a4-2222-7000-8000-000000000001","peer_node_id":"0195f7a4-1111-7000-8000-000000000002","state":"up","rtt_ms":1e300}]}`,
	`{"config_version":3,"paths":[{"path_id":"0195f7a4-2222-7000-8000-000000000001","peer_node_id":"0195f7a4-1111-7000-8000-000000000002","state":"up","loss":1.01}]}`,
	`{"config_version":3,"hierarchies":[{"hierarchy_id":"0195f7a4-3333-7000-8000-000000000001","epoch":1,"state":"failed","detail":"a\u0000b"}]}`,
	"{\"config_version\":3,\"instance\":\"\xff\xfe\"}",
	`{"config\u005fversion":3}`,
	`[{"config_version":3}]`,
	``,
}

// FuzzHeartbeatFastLane: whatever the body, a heartbeat the fast lane
// takes is one the general path takes too (the contract's validator, the
// NUL check and the generated handler's decoding all accept it), and the
// generated handler would see the very same heartbeat. So the lane can
// only change what a good heartbeat costs, never what any heartbeat is
// answered. Without -fuzz it runs the seeds, and checks that the lane does
// take the heartbeats agents send (a lane that takes nothing would pass
// the rest).
func FuzzHeartbeatFastLane(f *testing.F) {
	for _, s := range fastLaneSeeds {
		f.Add([]byte(s))
	}
	doc, err := openapi.Load()
	if err != nil {
		f.Fatal(err)
	}
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		f.Fatal(err)
	}
	opts := contractValidation()
	for _, s := range []string{agentLikeHeartbeat, `{"config_version":0}`, fastLaneSeeds[2], fastLaneSeeds[3]} {
		if _, ok := decodeFastHeartbeat([]byte(s)); !ok {
			f.Fatalf("the fast lane hands over a heartbeat agents send: %s", s)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		hb, ok := decodeFastHeartbeat(body)
		if !ok {
			return
		}
		r := httptest.NewRequest(http.MethodPost, heartbeatPath, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		route, params, err := router.FindRoute(r)
		if err != nil {
			t.Fatal(err)
		}
		in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts}
		if err := openapi3filter.ValidateRequest(t.Context(), in); err != nil {
			t.Fatalf("the fast lane took a body the contract refuses (%v): %q", err, body)
		}
		if ve := checkJSONBody(body); ve != nil {
			t.Fatalf("the fast lane took a body the NUL check refuses (%v): %q", ve, body)
		}
		var general api.Heartbeat
		r = httptest.NewRequest(http.MethodPost, heartbeatPath, bytes.NewReader(body))
		if err := runtime.BindJSONBody(r, &general); err != nil {
			t.Fatalf("the fast lane took a body the generated handler cannot decode (%v): %q", err, body)
		}
		got, _ := json.Marshal(hb)
		want, _ := json.Marshal(general)
		if !bytes.Equal(got, want) {
			t.Fatalf("the fast lane read %q\nas   %s\nthe handler as %s", body, got, want)
		}
	})
}

// TestFastLaneLimitsMatchTheContract: the lane's limits are the
// contract's, read from the document, so a change there cannot leave the
// lane taking what the contract now refuses.
func TestFastLaneLimitsMatchTheContract(t *testing.T) {
	doc, err := openapi.Load()
	if err != nil {
		t.Fatal(err)
	}
	sc := doc.Components.Schemas
	prop := func(s, p string) (maxItems, maxLength uint64, max float64) {
		t.Helper()
		ref := sc[s]
		if ref == nil || ref.Value == nil || ref.Value.Properties[p] == nil {
			t.Fatalf("contract has no %s.%s", s, p)
		}
		v := ref.Value.Properties[p].Value
		if v.MaxItems != nil {
			maxItems = *v.MaxItems
		}
		if v.MaxLength != nil {
			maxLength = *v.MaxLength
		}
		if v.Max != nil {
			max = *v.Max
		}
		return
	}
	for _, c := range []struct {
		what string
		got  uint64
		want uint64
	}{
		{"Heartbeat.hierarchies maxItems", first(prop("Heartbeat", "hierarchies")), fastMaxHierarchies},
		{"Heartbeat.resources maxItems", first(prop("Heartbeat", "resources")), fastMaxResources},
		{"Heartbeat.paths maxItems", first(prop("Heartbeat", "paths")), fastMaxPaths},
		{"Heartbeat.instance maxLength", second(prop("Heartbeat", "instance")), fastMaxInstance},
		{"Heartbeat.restart_hold_ms maximum", uint64(third(prop("Heartbeat", "restart_hold_ms"))), fastMaxHold},
		{"HierarchyReport.detail maxLength", second(prop("HierarchyReport", "detail")), fastMaxDetail},
		{"CheckResult.detail maxLength", second(prop("CheckResult", "detail")), fastMaxDetail},
		{"ResourceHealth.resource maxLength", second(prop("ResourceHealth", "resource")), fastMaxResource},
	} {
		if c.got != c.want {
			t.Errorf("%s: contract %d, fast lane %d", c.what, c.got, c.want)
		}
	}
	if !strings.Contains(doc.Components.Schemas["Heartbeat"].Value.Properties["instance"].Value.Pattern, "A-Za-z0-9._-") {
		t.Error("Heartbeat.instance's pattern changed; update instanceOK")
	}
}

func first(a, _ uint64, _ float64) uint64  { return a }
func second(_, b uint64, _ float64) uint64 { return b }
func third(_, _ uint64, c float64) float64 { return c }
