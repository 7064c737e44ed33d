package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/backstop-ha/backstop/pki"
)

// lanTiming is the lan profile of the contract, every cluster's default.
var lanTiming = timing{
	HeartbeatMS: 250, LeaseTTLMS: 1000, ServerGraceMS: 250, PathHeartbeatMS: 200,
	PathDeadAfter: 3, QuickCheckIntervalMS: 500, DeepCheckIntervalMS: 5000,
}

// TestConfigurationRoundTrip proves that a whole configuration written
// through the API reads back exactly as sent, with the documented defaults
// filled in, and that the API's cross-cutting promises hold on the real
// binary: public system endpoints, one-time enrollment tokens, paths in
// both directions, ETag/If-Match (412 changes nothing), the audit trail of
// every mutation and of nothing else, cursor pagination, Idempotency-Key
// replay, delete rules (409 naming the hierarchy, cascade on cluster
// delete) and token roles.
func TestConfigurationRoundTrip(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "backstopd", newDatabase(t), adminSecret)
	admin := d.client(adminSecret)

	// mutation is one audit record the test expects, in order.
	type mutation struct{ action, targetType, targetID string }
	var mutations []mutation

	t.Run("system endpoints need no token", func(t *testing.T) {
		pub := admin.as("")
		var h healthJSON
		pub.do(t, "GET", "/healthz", nil).must(t, 200).decode(t, &h)
		if h.Status != "ok" {
			t.Errorf("GET /healthz: status %q, want ok", h.Status)
		}
		h = healthJSON{}
		pub.do(t, "GET", "/readyz", nil).must(t, 200).decode(t, &h)
		if h.Status != "ok" || h.SchemaVersion == nil || *h.SchemaVersion < 1 {
			t.Errorf("GET /readyz: %+v, want status ok and a schema_version >= 1", h)
		}
		m := pub.do(t, "GET", "/metrics", nil)
		m.must(t, 200)
		if !strings.Contains(string(m.body), "backstop_http_requests_total") {
			t.Errorf("GET /metrics lacks backstop_http_requests_total:\n%.2000s", m.body)
		}
		y := pub.do(t, "GET", "/openapi.yaml", nil)
		y.must(t, 200)
		served, err := openapi3.NewLoader().LoadFromData(y.body)
		if err != nil {
			t.Fatalf("GET /openapi.yaml does not parse as an OpenAPI document: %v", err)
		}
		if err := served.Validate(t.Context()); err != nil {
			t.Errorf("GET /openapi.yaml is not a valid OpenAPI document: %v", err)
		}
		if !bytes.Equal(y.body, env.spec) {
			t.Errorf("GET /openapi.yaml is not %s (%d bytes served, %d in the repository)", specPath, len(y.body), len(env.spec))
		}
	})

	// The cluster: only a name and a description; every other setting is
	// a default.
	var cl clusterJSON
	created := admin.do(t, "POST", "/v1/clusters", `{"name": "mail", "description": "Postfix for example.com"}`).must(t, 201)
	created.decode(t, &cl)
	if created.header.Get("Location") != "/v1/clusters/"+cl.ID {
		t.Errorf("POST /v1/clusters: Location %q, want /v1/clusters/%s", created.header.Get("Location"), cl.ID)
	}
	if created.header.Get("ETag") == "" {
		t.Error("POST /v1/clusters: no ETag")
	}
	sameJSON(t, "created cluster", cl, clusterJSON{
		ID: cl.ID, Name: "mail", Description: "Postfix for example.com", TimingProfile: "lan", Timing: lanTiming,
		SwitchbackDefault: "intelligent", Fencing: "self", Version: 1, CreatedAt: cl.CreatedAt, UpdatedAt: cl.UpdatedAt,
	})
	mutations = append(mutations, mutation{"cluster.create", "cluster", cl.ID})
	cpath := "/v1/clusters/" + cl.ID
	var clGot clusterJSON
	admin.do(t, "GET", cpath, nil).must(t, 200).decode(t, &clGot)
	sameJSON(t, "GET cluster", clGot, cl)

	// Three nodes: each answer carries a one-time enrollment token that
	// no read shows again.
	var nodes []nodeJSON
	var enrollTokens []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("mx%d", i)
		r := admin.do(t, "POST", cpath+"/nodes", fmt.Sprintf(`{"name": %q, "description": "rack %c"}`, name, 'A'+i-1)).must(t, 201)
		var n nodeCreatedJSON
		r.decode(t, &n)
		if n.EnrollmentToken == "" || slices.Contains(enrollTokens, n.EnrollmentToken) {
			t.Errorf("POST node %s: enrollment_token %q, want a new non-empty token", name, n.EnrollmentToken)
		}
		if until := time.Until(n.EnrollmentExpiresAt); until < 23*time.Hour || until > 25*time.Hour {
			t.Errorf("POST node %s: enrollment_expires_at %v, want about 24 h from now", name, n.EnrollmentExpiresAt)
		}
		if r.header.Get("Location") != cpath+"/nodes/"+n.ID {
			t.Errorf("POST node %s: Location %q", name, r.header.Get("Location"))
		}
		sameJSON(t, "created node "+name, n.nodeJSON, nodeJSON{
			ID: n.ID, ClusterID: cl.ID, Name: name, Description: fmt.Sprintf("rack %c", 'A'+i-1), State: "pending",
			Version: 1, CreatedAt: n.CreatedAt, UpdatedAt: n.UpdatedAt,
		})
		enrollTokens = append(enrollTokens, n.EnrollmentToken)
		nodes = append(nodes, n.nodeJSON)
		mutations = append(mutations, mutation{"node.create", "node", n.ID})
	}
	for i, n := range nodes {
		g := admin.do(t, "GET", cpath+"/nodes/"+n.ID, nil).must(t, 200)
		var raw map[string]any
		g.decode(t, &raw)
		for _, k := range []string{"enrollment_token", "enrollment_expires_at"} {
			if _, ok := raw[k]; ok {
				t.Errorf("GET node %s shows %s", n.Name, k)
			}
		}
		if bytes.Contains(g.body, []byte(enrollTokens[i])) {
			t.Errorf("GET node %s shows its enrollment token", n.Name)
		}
		if g.header.Get("ETag") == "" {
			t.Errorf("GET node %s: no ETag", n.Name)
		}
		var got nodeJSON
		g.decode(t, &got)
		sameJSON(t, "GET node "+n.Name, got, n)
	}
	list := admin.do(t, "GET", cpath+"/nodes", nil).must(t, 200)
	for _, tok := range enrollTokens {
		if bytes.Contains(list.body, []byte(tok)) {
			t.Error("GET nodes shows an enrollment token")
		}
	}
	var nodeList page[nodeJSON]
	list.decode(t, &nodeList)
	sameJSON(t, "GET nodes", nodeList.Items, nodes)

	// A path between mx1 and mx2 exists in both directions.
	var pair pathPairJSON
	admin.do(t, "POST", cpath+"/paths", fmt.Sprintf(`{"a": {"node_id": %q, "address": "198.18.1.11"},
		"b": {"node_id": %q, "address": "198.18.1.12"}, "priority": 2}`, nodes[0].ID, nodes[1].ID)).must(t, 201).decode(t, &pair)
	fw, rv := pair.Forward, pair.Reverse
	sameJSON(t, "forward path", fw, pathJSON{
		ID: fw.ID, ClusterID: cl.ID, LinkID: fw.LinkID, ReverseID: rv.ID,
		LocalNodeID: nodes[0].ID, LocalAddress: "198.18.1.11", RemoteNodeID: nodes[1].ID, RemoteAddress: "198.18.1.12",
		Priority: 2, CreatedAt: fw.CreatedAt,
	})
	sameJSON(t, "reverse path", rv, pathJSON{
		ID: rv.ID, ClusterID: cl.ID, LinkID: fw.LinkID, ReverseID: fw.ID,
		LocalNodeID: nodes[1].ID, LocalAddress: "198.18.1.12", RemoteNodeID: nodes[0].ID, RemoteAddress: "198.18.1.11",
		Priority: 2, CreatedAt: rv.CreatedAt,
	})
	if fw.ID == rv.ID {
		t.Error("both directions of the path have the same id")
	}
	mutations = append(mutations, mutation{"path.create", "path", fw.LinkID})
	paths := listAll[pathJSON](t, admin, cpath+"/paths")
	slices.SortFunc(paths, func(a, b pathJSON) int { return strings.Compare(a.ID, b.ID) })
	wantPaths := []pathJSON{fw, rv}
	slices.SortFunc(wantPaths, func(a, b pathJSON) int { return strings.Compare(a.ID, b.ID) })
	sameJSON(t, "GET paths (both directions)", paths, wantPaths)
	for _, p := range []pathJSON{fw, rv} {
		var got pathJSON
		g := admin.do(t, "GET", cpath+"/paths/"+p.ID, nil).must(t, 200)
		g.decode(t, &got)
		sameJSON(t, "GET path "+p.ID, got, p)
		if g.header.Get("ETag") == "" {
			t.Errorf("GET path %s: no ETag", p.ID)
		}
	}

	// The hierarchy ip <- volume <- service, priorities sent out of order;
	// it reads back in the order given with every default filled in.
	spec := fmt.Sprintf(`{
		"name": "mail",
		"description": "Postfix",
		"exclusivity_group": "exchange",
		"resources": [
			{"name": "vip", "kind": "ip", "params": {"address": "198.18.1.50/24", "interface": "eth0"}},
			{"name": "spool", "kind": "volume", "params": {"source": "/srv/mail", "target": "/var/spool/postfix"},
			 "depends_on": ["vip"], "deep_check": {"interval_ms": 10000, "timeout_ms": 3000},
			 "local_recovery": {"max_restarts": 0, "window_s": 60}},
			{"name": "postfix", "kind": "service", "params": {"start": "postfix start"}, "depends_on": ["spool"]}
		],
		"priorities": [
			{"node_id": %q, "priority": 3},
			{"node_id": %q, "priority": 1},
			{"node_id": %q, "priority": 2}
		]
	}`, nodes[2].ID, nodes[0].ID, nodes[1].ID)
	hr := admin.do(t, "POST", cpath+"/hierarchies", spec).must(t, 201)
	var h hierarchyJSON
	hr.decode(t, &h)
	hpath := cpath + "/hierarchies/" + h.ID
	if hr.header.Get("Location") != hpath {
		t.Errorf("POST hierarchy: Location %q, want %s", hr.header.Get("Location"), hpath)
	}
	lanQuick, lanDeep := checkJSON{IntervalMS: 500, TimeoutMS: 250}, checkJSON{IntervalMS: 5000, TimeoutMS: 2500}
	defaultRecovery := recoveryJSON{MaxRestarts: 3, WindowS: 300}
	wantH := hierarchyJSON{
		ID: h.ID, ClusterID: cl.ID, Name: "mail", Description: "Postfix", ExclusivityGroup: "exchange",
		Switchback: "intelligent",
		Resources: []resourceJSON{
			{Name: "vip", Kind: "ip", Params: map[string]any{"address": "198.18.1.50/24", "interface": "eth0"},
				DependsOn: []string{}, QuickCheck: lanQuick, DeepCheck: lanDeep, LocalRecovery: defaultRecovery},
			{Name: "spool", Kind: "volume", Params: map[string]any{"source": "/srv/mail", "target": "/var/spool/postfix"},
				DependsOn: []string{"vip"}, QuickCheck: lanQuick, DeepCheck: checkJSON{IntervalMS: 10000, TimeoutMS: 3000},
				LocalRecovery: recoveryJSON{MaxRestarts: 0, WindowS: 60}},
			{Name: "postfix", Kind: "service", Params: map[string]any{"start": "postfix start"},
				DependsOn: []string{"spool"}, QuickCheck: lanQuick, DeepCheck: lanDeep, LocalRecovery: defaultRecovery},
		},
		Priorities: []priorityJSON{{nodes[0].ID, 1}, {nodes[1].ID, 2}, {nodes[2].ID, 3}},
		Version:    1, CreatedAt: h.CreatedAt, UpdatedAt: h.UpdatedAt,
	}
	sameJSON(t, "created hierarchy", h, wantH)
	mutations = append(mutations, mutation{"hierarchy.create", "hierarchy", h.ID})
	g := admin.do(t, "GET", hpath, nil).must(t, 200)
	var hGot hierarchyJSON
	g.decode(t, &hGot)
	sameJSON(t, "GET hierarchy", hGot, wantH)
	sameJSON(t, "GET hierarchies", listAll[hierarchyJSON](t, admin, cpath+"/hierarchies"), []hierarchyJSON{wantH})

	t.Run("If-Match: the current ETag updates, a stale one is refused with 412 and changes nothing", func(t *testing.T) {
		etag1 := g.header.Get("ETag")
		if etag1 == "" {
			t.Fatal("GET hierarchy: no ETag")
		}
		up := admin.do(t, "PATCH", hpath, `{"description": "Postfix MTA", "switchback": "automatic"}`, ifMatch(etag1)).must(t, 200)
		etag2 := up.header.Get("ETag")
		if etag2 == "" || etag2 == etag1 {
			t.Errorf("PATCH hierarchy: ETag %q after %q, want a new one", etag2, etag1)
		}
		var hUp hierarchyJSON
		up.decode(t, &hUp)
		want := wantH
		want.Description, want.Switchback, want.Version, want.UpdatedAt = "Postfix MTA", "automatic", 2, hUp.UpdatedAt
		sameJSON(t, "patched hierarchy", hUp, want)
		mutations = append(mutations, mutation{"hierarchy.update", "hierarchy", h.ID})

		stale := admin.do(t, "PATCH", hpath, `{"description": "stale write"}`, ifMatch(etag1))
		if stale.want(t, 412) {
			stale.problem(t)
		}
		var after hierarchyJSON
		again := admin.do(t, "GET", hpath, nil).must(t, 200)
		again.decode(t, &after)
		sameJSON(t, "hierarchy after the stale PATCH", after, hUp)
		if again.header.Get("ETag") != etag2 {
			t.Errorf("hierarchy ETag %q after the stale PATCH, want %q", again.header.Get("ETag"), etag2)
		}
		wantH = hUp

		cg := admin.do(t, "GET", cpath, nil).must(t, 200)
		cEtag1 := cg.header.Get("ETag")
		cu := admin.do(t, "PATCH", cpath, `{"switchback_default": "automatic", "fencing": "none"}`, ifMatch(cEtag1)).must(t, 200)
		var cUp clusterJSON
		cu.decode(t, &cUp)
		wantC := cl
		wantC.SwitchbackDefault, wantC.Fencing, wantC.Version, wantC.UpdatedAt = "automatic", "none", 2, cUp.UpdatedAt
		sameJSON(t, "patched cluster", cUp, wantC)
		if e := cu.header.Get("ETag"); e == "" || e == cEtag1 {
			t.Errorf("PATCH cluster: ETag %q after %q, want a new one", e, cEtag1)
		}
		mutations = append(mutations, mutation{"cluster.update", "cluster", cl.ID})
		cstale := admin.do(t, "PATCH", cpath, `{"name": "stale-write"}`, ifMatch(cEtag1))
		if cstale.want(t, 412) {
			cstale.problem(t)
		}
		var cAfter clusterJSON
		admin.do(t, "GET", cpath, nil).must(t, 200).decode(t, &cAfter)
		sameJSON(t, "cluster after the stale PATCH", cAfter, cUp)
	})

	var clusterIDs []string // every cluster, in creation order
	clusterIDs = append(clusterIDs, cl.ID)

	t.Run("Idempotency-Key replays the first answer and refuses another body", func(t *testing.T) {
		first := admin.do(t, "POST", "/v1/clusters", `{"name": "idem"}`, idempotencyKey("e2e-create-idem"))
		first.must(t, 201)
		second := admin.do(t, "POST", "/v1/clusters", `{"name": "idem"}`, idempotencyKey("e2e-create-idem"))
		if second.status != first.status || !bytes.Equal(second.body, first.body) {
			t.Errorf("replay: %d %s, want the first answer %d %s", second.status, second.body, first.status, first.body)
		}
		if second.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("replay: Idempotent-Replayed %q, want true", second.header.Get("Idempotent-Replayed"))
		}
		if first.header.Get("Idempotent-Replayed") != "" {
			t.Error("first request is marked Idempotent-Replayed")
		}
		var c clusterJSON
		first.decode(t, &c)
		clusterIDs = append(clusterIDs, c.ID)
		mutations = append(mutations, mutation{"cluster.create", "cluster", c.ID})
		n := 0
		for _, x := range listAll[clusterJSON](t, admin, "/v1/clusters") {
			if x.Name == "idem" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d clusters named idem after a replayed POST, want 1", n)
		}
		other := admin.do(t, "POST", "/v1/clusters", `{"name": "idem-other"}`, idempotencyKey("e2e-create-idem"))
		if other.want(t, 422) {
			if p := other.problem(t); !slices.Contains(p.locations(), "header.Idempotency-Key") {
				t.Errorf("422 for a reused key names %v, want header.Idempotency-Key", p.locations())
			}
		}
	})

	t.Run("pagination visits every cluster once, oldest first", func(t *testing.T) {
		for i := 1; i <= 5; i++ {
			var c clusterJSON
			admin.do(t, "POST", "/v1/clusters", fmt.Sprintf(`{"name": "page-%d"}`, i)).must(t, 201).decode(t, &c)
			clusterIDs = append(clusterIDs, c.ID)
			mutations = append(mutations, mutation{"cluster.create", "cluster", c.ID})
		}
		var seen []string
		var sizes []int
		cursor := ""
		for pages := 0; pages < 20; pages++ {
			q := url.Values{"limit": {"2"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			r := admin.do(t, "GET", "/v1/clusters?"+q.Encode(), nil).must(t, 200)
			var p page[clusterJSON]
			r.decode(t, &p)
			sizes = append(sizes, len(p.Items))
			for _, c := range p.Items {
				seen = append(seen, c.ID)
			}
			if p.NextCursor == nil {
				var raw map[string]any
				r.decode(t, &raw)
				if _, ok := raw["next_cursor"]; ok {
					t.Error("last page has a next_cursor key")
				}
				break
			}
			if *p.NextCursor == "" {
				t.Fatal("next_cursor is empty instead of absent")
			}
			cursor = *p.NextCursor
		}
		// 7 clusters in pages of 2: 2, 2, 2, 1.
		if !slices.Equal(sizes, []int{2, 2, 2, 1}) {
			t.Errorf("page sizes %v, want [2 2 2 1]", sizes)
		}
		if !slices.Equal(seen, clusterIDs) {
			t.Errorf("pages listed %v, want every cluster once, oldest first: %v", seen, clusterIDs)
		}
	})

	var bootstrapID string
	t.Run("token roles: viewer reads, cannot write; secrets are never listed", func(t *testing.T) {
		var viewer, operator tokenJSON
		vr := admin.do(t, "POST", "/v1/tokens", `{"name": "nagios", "role": "viewer"}`).must(t, 201)
		vr.decode(t, &viewer)
		admin.do(t, "POST", "/v1/tokens", `{"name": "ops", "role": "operator"}`).must(t, 201).decode(t, &operator)
		mutations = append(mutations, mutation{"token.create", "token", viewer.ID}, mutation{"token.create", "token", operator.ID})
		if vr.header.Get("Location") != "/v1/tokens/"+viewer.ID {
			t.Errorf("POST token: Location %q", vr.header.Get("Location"))
		}
		for _, tok := range []tokenJSON{viewer, operator} {
			if tok.Secret == "" || tok.Prefix == "" || !strings.HasPrefix(tok.Secret, tok.Prefix) {
				t.Errorf("token %s: secret %q with prefix %q, want a secret starting with its prefix", tok.Name, tok.Secret, tok.Prefix)
			}
		}
		admin.as(viewer.Secret).do(t, "GET", "/v1/clusters", nil).want(t, 200)
		admin.as(viewer.Secret).do(t, "GET", cpath+"/hierarchies/"+h.ID, nil).want(t, 200)
		if r := admin.as(viewer.Secret).do(t, "POST", "/v1/clusters", `{"name": "by-viewer"}`); r.want(t, 403) {
			r.problem(t)
		}
		admin.as(operator.Secret).do(t, "GET", "/v1/clusters", nil).want(t, 200)
		if r := admin.as(operator.Secret).do(t, "GET", "/v1/tokens", nil); r.want(t, 403) {
			r.problem(t)
		}

		lr := admin.do(t, "GET", "/v1/tokens", nil).must(t, 200)
		for _, s := range []string{viewer.Secret, operator.Secret, adminSecret} {
			if bytes.Contains(lr.body, []byte(s)) {
				t.Errorf("GET /v1/tokens shows a secret")
			}
		}
		var tl page[map[string]any]
		lr.decode(t, &tl)
		var names []string
		for _, tok := range tl.Items {
			if _, ok := tok["secret"]; ok {
				t.Errorf("GET /v1/tokens: token %v has a secret field", tok["name"])
			}
			names = append(names, fmt.Sprint(tok["name"]))
			if tok["name"] == "bootstrap" {
				bootstrapID, _ = tok["id"].(string)
				if tok["role"] != "admin" {
					t.Errorf("bootstrap token has role %v, want admin", tok["role"])
				}
			}
		}
		if !slices.Equal(names, []string{"bootstrap", "nagios", "ops"}) {
			t.Errorf("tokens %v, want [bootstrap nagios ops]", names)
		}
	})

	t.Run("deleting a node still in priorities is refused with 409 naming the hierarchy", func(t *testing.T) {
		r := admin.do(t, "DELETE", cpath+"/nodes/"+nodes[0].ID, nil)
		if r.want(t, 409) {
			if p := r.problem(t); !strings.Contains(p.Detail, `mail`) {
				t.Errorf("409 detail %q does not name the hierarchy mail", p.Detail)
			}
		}
		admin.do(t, "GET", cpath+"/nodes/"+nodes[0].ID, nil).want(t, 200)
		admin.do(t, "DELETE", hpath, nil).want(t, 204)
		mutations = append(mutations, mutation{"hierarchy.delete", "hierarchy", h.ID})
		admin.do(t, "GET", hpath, nil).want(t, 404)
		admin.do(t, "DELETE", cpath+"/nodes/"+nodes[0].ID, nil).want(t, 204)
		mutations = append(mutations, mutation{"node.delete", "node", nodes[0].ID})
		admin.do(t, "GET", cpath+"/nodes/"+nodes[0].ID, nil).want(t, 404)
		// The node's paths went with it.
		if ps := listAll[pathJSON](t, admin, cpath+"/paths"); len(ps) != 0 {
			t.Errorf("%d paths left after deleting their node, want 0", len(ps))
		}
		admin.do(t, "GET", cpath+"/paths/"+fw.ID, nil).want(t, 404)
	})

	t.Run("deleting a cluster deletes what it owns", func(t *testing.T) {
		// A second hierarchy on the remaining nodes, so the cascade has
		// priorities to remove.
		var h2 hierarchyJSON
		admin.do(t, "POST", cpath+"/hierarchies", fmt.Sprintf(`{"name": "web",
			"resources": [{"name": "probe", "kind": "http", "params": {"url": "http://127.0.0.1/"}}],
			"priorities": [{"node_id": %q, "priority": 1}]}`, nodes[1].ID)).must(t, 201).decode(t, &h2)
		mutations = append(mutations, mutation{"hierarchy.create", "hierarchy", h2.ID})
		admin.do(t, "DELETE", cpath, nil).must(t, 204)
		mutations = append(mutations, mutation{"cluster.delete", "cluster", cl.ID})
		for _, p := range []string{
			cpath, cpath + "/nodes", cpath + "/nodes/" + nodes[1].ID, cpath + "/nodes/" + nodes[2].ID,
			cpath + "/hierarchies", cpath + "/hierarchies/" + h2.ID, cpath + "/paths",
		} {
			if r := admin.do(t, "GET", p, nil); r.want(t, 404) {
				r.problem(t)
			}
		}
	})

	t.Run("the audit trail lists every mutation, by token:bootstrap, and nothing else", func(t *testing.T) {
		recs := listAll[auditJSON](t, admin, "/v1/audit")
		type rec struct{ Action, TargetType, TargetID, Actor, ActorTokenID string }
		var got, want []rec
		bootstrapCreated := false
		for i, r := range recs {
			if i > 0 && r.ID <= recs[i-1].ID {
				t.Errorf("audit ids not increasing: %d after %d", r.ID, recs[i-1].ID)
			}
			if r.Actor == "system" { // what backstopd does on its own, such as at start
				if r.Action == "token.create" && r.TargetType == "token" && r.TargetID == bootstrapID {
					bootstrapCreated = true
				}
				continue
			}
			got = append(got, rec{r.Action, r.TargetType, r.TargetID, r.Actor, r.ActorTokenID})
			if r.TargetType != "token" && r.ClusterID == "" {
				t.Errorf("audit record %d (%s) has no cluster_id", r.ID, r.Action)
			}
		}
		if !bootstrapCreated {
			t.Errorf("no audit record of the system creating the bootstrap token %s", bootstrapID)
		}
		for _, m := range mutations {
			want = append(want, rec{m.action, m.targetType, m.targetID, "token:bootstrap", bootstrapID})
		}
		sameJSON(t, "audit trail after the bootstrap token", got, want)
	})
}

// badRequest is one request the API must refuse.
type badRequest struct {
	name   string
	method string
	path   string
	body   any      // nil: none; string: raw JSON
	opts   []reqOpt // headers, token
	status int      // the exact status expected
	locs   []string // each must be one of errors[].location
	detail string   // a substring of the problem's detail, if set
	check  func(t *testing.T, r *response, p problem)
}

// TestBadRequests proves that every kind of bad request, on every
// endpoint, is refused with the right status and an RFC 9457 problem
// (type, title, status equal to the HTTP status, detail) naming the
// offending field, that none causes a 5xx or breaks the contract, and that
// refused requests write nothing: no partial hierarchy, node, path,
// cluster or token, no changed version, and no audit record.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "backstopd", newDatabase(t), adminSecret)
	admin := d.client(adminSecret)

	// Setup: two clusters with nodes, a path and a hierarchy; a full
	// cluster; tokens of every role and a revoked one; a used
	// Idempotency-Key.
	mkCluster := func(name string) string {
		var c clusterJSON
		admin.do(t, "POST", "/v1/clusters", fmt.Sprintf(`{"name": %q}`, name)).must(t, 201).decode(t, &c)
		return c.ID
	}
	mkNode := func(clusterID, name string) string {
		var n nodeCreatedJSON
		admin.do(t, "POST", "/v1/clusters/"+clusterID+"/nodes", fmt.Sprintf(`{"name": %q}`, name)).must(t, 201).decode(t, &n)
		return n.ID
	}
	mkToken := func(name, role string) tokenJSON {
		var tok tokenJSON
		admin.do(t, "POST", "/v1/tokens", fmt.Sprintf(`{"name": %q, "role": %q}`, name, role)).must(t, 201).decode(t, &tok)
		return tok
	}
	alpha, beta, big, victim := mkCluster("alpha"), mkCluster("beta"), mkCluster("big"), mkCluster("victim")
	// a3 has a priority in no hierarchy: every refused hierarchy names it,
	// so that deleting it afterwards proves no priority was left behind.
	a1, a2, a3, b1 := mkNode(alpha, "a1"), mkNode(alpha, "a2"), mkNode(alpha, "a3"), mkNode(beta, "b1")
	for i := 1; i <= 64; i++ {
		mkNode(big, fmt.Sprintf("n%d", i))
	}
	var pair pathPairJSON
	admin.do(t, "POST", "/v1/clusters/"+alpha+"/paths", fmt.Sprintf(`{"a": {"node_id": %q, "address": "198.18.1.11"},
		"b": {"node_id": %q, "address": "198.18.1.12"}}`, a1, a2)).must(t, 201).decode(t, &pair)
	var web hierarchyJSON
	admin.do(t, "POST", "/v1/clusters/"+alpha+"/hierarchies", fmt.Sprintf(`{"name": "web",
		"resources": [{"name": "vip", "kind": "ip", "params": {"address": "198.18.1.60/24", "interface": "eth0"}}],
		"priorities": [{"node_id": %q, "priority": 1}, {"node_id": %q, "priority": 2}]}`, a1, a2)).must(t, 201).decode(t, &web)
	admin.do(t, "POST", "/v1/clusters", `{"name": "gamma"}`, idempotencyKey("e2e-used-key")).must(t, 201)
	viewer, operator, revoked := mkToken("viewer", "viewer"), mkToken("operator", "operator"), mkToken("revoked", "viewer")
	admin.do(t, "DELETE", "/v1/tokens/"+revoked.ID, nil).must(t, 204)
	var bootstrapID string
	for _, tok := range listAll[tokenJSON](t, admin, "/v1/tokens") {
		if tok.Name == "bootstrap" {
			bootstrapID = tok.ID
		}
	}
	if bootstrapID == "" {
		t.Fatal("no token named bootstrap")
	}

	ca, cb := "/v1/clusters/"+alpha, "/v1/clusters/"+beta
	hpath := ca + "/hierarchies/" + web.ID
	unknownID := uuid.NewString() // a random, well-formed id nothing has
	probe := `{"name": "probe", "kind": "command", "params": {"check": "true"}}`
	prio1 := fmt.Sprintf(`{"node_id": %q, "priority": 1}`, a3)
	// hier builds a hierarchy body from resource and priority lists.
	hier := func(resources, priorities string) string {
		return fmt.Sprintf(`{"name": "bad", "resources": [%s], "priorities": [%s]}`, resources, priorities)
	}
	goodTiming := `"heartbeat_ms": 250, "lease_ttl_ms": 1000, "server_grace_ms": 250, "path_heartbeat_ms": 200, "path_dead_after": 3, "quick_check_interval_ms": 500, "deep_check_interval_ms": 5000`
	asViewer, asOperator := header("Authorization", "Bearer "+viewer.Secret), header("Authorization", "Bearer "+operator.Secret)
	plain := header("Content-Type", "text/plain")
	wantHeader := func(k, sub string) func(*testing.T, *response, problem) {
		return func(t *testing.T, r *response, _ problem) {
			if v := r.header.Get(k); v == "" || !strings.Contains(v, sub) {
				t.Errorf("%s header %q, want one containing %q", k, v, sub)
			}
		}
	}
	wantAllow := func(methods ...string) func(*testing.T, *response, problem) {
		return func(t *testing.T, r *response, _ problem) {
			var got []string
			for _, m := range strings.Split(r.header.Get("Allow"), ",") {
				got = append(got, strings.TrimSpace(m))
			}
			slices.Sort(got)
			slices.Sort(methods)
			if !slices.Equal(got, methods) {
				t.Errorf("Allow %q, want %v", r.header.Get("Allow"), methods)
			}
		}
	}
	// wantOneOf accepts any of locs among errors[].location: for a cycle,
	// either resource of it may be named.
	wantOneOf := func(locs ...string) func(*testing.T, *response, problem) {
		return func(t *testing.T, r *response, p problem) {
			for _, l := range locs {
				if slices.Contains(p.locations(), l) {
					return
				}
			}
			t.Errorf("errors[].location %v, want one of %v", p.locations(), locs)
		}
	}
	oversize := `{"name": "big-body", "description": "` + strings.Repeat("x", 1<<20) + `"}`
	alphaETag := admin.do(t, "GET", ca, nil).must(t, 200).header.Get("ETag")
	rawKey := idempotencyKey("\xff\xfe-probe") // raw bytes, not UTF-8
	hugeKey := idempotencyKey(strings.Repeat("k", 8000))
	// wantInstance checks the problem's instance is the request URI as
	// sent, escaped, not the decoded path.
	wantInstance := func(uri string) func(*testing.T, *response, problem) {
		return func(t *testing.T, _ *response, p problem) {
			if p.Instance != uri {
				t.Errorf("instance %q, want %q", p.Instance, uri)
			}
		}
	}

	cases := []badRequest{
		// Body syntax and shape.
		{name: "malformed JSON", method: "POST", path: "/v1/clusters", body: `{"name": "x",`, status: 400},
		{name: "empty body on POST", method: "POST", path: "/v1/clusters", body: "", status: 400},
		{name: "no body and no Content-Type on POST", method: "POST", path: "/v1/clusters", status: 400},
		{name: "name of the wrong JSON type", method: "POST", path: "/v1/clusters", body: `{"name": 5}`, status: 400, locs: []string{"/name"}},
		{name: "trailing data after the JSON body", method: "POST", path: "/v1/clusters", body: `{"name": "trailing-data"} {"name": "x"}`, status: 400},
		{name: "body is a JSON array", method: "POST", path: "/v1/clusters", body: `[{"name": "x"}]`, status: 400},
		{name: "unknown top-level field", method: "POST", path: "/v1/clusters", body: `{"name": "x", "bogus": 1}`, status: 400, locs: []string{"/bogus"}},
		{name: "unknown field nested in timing", method: "POST", path: "/v1/clusters",
			body: `{"name": "x", "timing_profile": "custom", "timing": {` + goodTiming + `, "bogus_ms": 1}}`, status: 400, locs: []string{"/timing/bogus_ms"}},
		{name: "missing required name", method: "POST", path: "/v1/clusters", body: `{"description": "no name"}`, status: 400, locs: []string{"/name"}},
		{name: "name too long", method: "POST", path: "/v1/clusters", body: `{"name": "` + strings.Repeat("a", 64) + `"}`, status: 400, locs: []string{"/name"}},
		{name: "name with a bad pattern", method: "POST", path: "/v1/clusters", body: `{"name": "-mail server"}`, status: 400, locs: []string{"/name"}},
		{name: "bad enum timing_profile", method: "POST", path: "/v1/clusters", body: `{"name": "x", "timing_profile": "turbo"}`, status: 400, locs: []string{"/timing_profile"}},
		{name: "bad enum fencing", method: "POST", path: "/v1/clusters", body: `{"name": "x", "fencing": "stonith"}`, status: 400, locs: []string{"/fencing"}},
		{name: "timing value below its minimum", method: "POST", path: "/v1/clusters",
			body:   `{"name": "x", "timing_profile": "custom", "timing": {` + strings.Replace(goodTiming, `"path_dead_after": 3`, `"path_dead_after": 1`, 1) + `}}`,
			status: 400, locs: []string{"/timing/path_dead_after"}},

		// Cluster rules.
		{name: "custom timing_profile without timing", method: "POST", path: "/v1/clusters", body: `{"name": "x", "timing_profile": "custom"}`, status: 422, locs: []string{"/timing"}},
		{name: "timing with a named profile", method: "POST", path: "/v1/clusters", body: `{"name": "x", "timing_profile": "lan", "timing": {` + goodTiming + `}}`, status: 422, locs: []string{"/timing"}},
		{name: "custom timing breaking the heartbeat rule", method: "POST", path: "/v1/clusters",
			body:   `{"name": "x", "timing_profile": "custom", "timing": {` + strings.Replace(goodTiming, `"heartbeat_ms": 250, "lease_ttl_ms": 1000, "server_grace_ms": 250`, `"heartbeat_ms": 400, "lease_ttl_ms": 1000, "server_grace_ms": 400`, 1) + `}}`,
			status: 422, locs: []string{"/timing/heartbeat_ms"}},
		{name: "NUL character in a description", method: "POST", path: "/v1/clusters", body: `{"name": "nul", "description": "a\u0000b"}`, status: 422, locs: []string{"/description"}},
		{name: "duplicate cluster name", method: "POST", path: "/v1/clusters", body: `{"name": "alpha"}`, status: 409},
		{name: "PATCH cluster with an empty object", method: "PATCH", path: ca, body: `{}`, status: 400},
		{name: "PATCH cluster to a taken name", method: "PATCH", path: ca, body: `{"name": "beta"}`, status: 409},
		{name: "PATCH cluster with a stale If-Match", method: "PATCH", path: ca, body: `{"description": "stale"}`, opts: []reqOpt{ifMatch(`"7"`)}, status: 412},
		{name: "DELETE cluster with a stale If-Match", method: "DELETE", path: ca, opts: []reqOpt{ifMatch(`"7"`)}, status: 412},
		{name: "PATCH cluster with a weak If-Match of the current version", method: "PATCH", path: ca, body: `{"description": "weak"}`,
			opts: []reqOpt{ifMatch("W/" + alphaETag)}, status: 412},
		{name: "DELETE cluster with a weak If-Match of the current version", method: "DELETE", path: ca, opts: []reqOpt{ifMatch("W/" + alphaETag)}, status: 412},
		{name: "If-Match longer than 100 characters", method: "PATCH", path: ca, body: `{"description": "x"}`,
			opts: []reqOpt{ifMatch(`"` + strings.Repeat("9", 120) + `"`)}, status: 400, locs: []string{"header.If-Match"}},

		// Nodes.
		{name: "the 65th node", method: "POST", path: "/v1/clusters/" + big + "/nodes", body: `{"name": "n65"}`, status: 422, detail: "64"},
		{name: "duplicate node name", method: "POST", path: ca + "/nodes", body: `{"name": "a1"}`, status: 409},
		{name: "empty node name", method: "POST", path: ca + "/nodes", body: `{"name": ""}`, status: 400, locs: []string{"/name"}},
		{name: "node in an unknown cluster", method: "POST", path: "/v1/clusters/" + unknownID + "/nodes", body: `{"name": "x"}`, status: 404},
		{name: "PATCH node with an empty object", method: "PATCH", path: ca + "/nodes/" + a1, body: `{}`, status: 400},
		{name: "node read through another cluster", method: "GET", path: cb + "/nodes/" + a1, status: 404},
		{name: "DELETE node with a stale If-Match", method: "DELETE", path: ca + "/nodes/" + a2, opts: []reqOpt{ifMatch(`"7"`)}, status: 412},
		{name: "DELETE node still in priorities", method: "DELETE", path: ca + "/nodes/" + a2, status: 409, detail: "web"},

		// Paths.
		{name: "path with both ends the same node", method: "POST", path: ca + "/paths",
			body: fmt.Sprintf(`{"a": {"node_id": %q, "address": "198.18.1.11"}, "b": {"node_id": %q, "address": "198.18.1.13"}}`, a1, a1), status: 422, locs: []string{"/b/node_id"}},
		{name: "path with a bad IP address", method: "POST", path: ca + "/paths",
			body: fmt.Sprintf(`{"a": {"node_id": %q, "address": "198.18.1.999"}, "b": {"node_id": %q, "address": "198.18.1.12"}}`, a1, a2), status: 422, locs: []string{"/a/address"}},
		{name: "path to a node of another cluster", method: "POST", path: ca + "/paths",
			body: fmt.Sprintf(`{"a": {"node_id": %q, "address": "198.18.1.11"}, "b": {"node_id": %q, "address": "198.18.2.12"}}`, a1, b1), status: 422, locs: []string{"/b/node_id"}},
		{name: "path address with an IPv6 zone", method: "POST", path: ca + "/paths",
			body: fmt.Sprintf(`{"a": {"node_id": %q, "address": "fe80::1%%eth0"}, "b": {"node_id": %q, "address": "fe80::2"}}`, a1, a2), status: 422, locs: []string{"/a/address"}},
		{name: "path priority above 99", method: "POST", path: ca + "/paths",
			body: fmt.Sprintf(`{"a": {"node_id": %q, "address": "198.18.1.11"}, "b": {"node_id": %q, "address": "198.18.1.12"}, "priority": 100}`, a1, a2), status: 400, locs: []string{"/priority"}},
		{name: "unknown field in a path end", method: "POST", path: ca + "/paths",
			body: fmt.Sprintf(`{"a": {"node_id": %q, "address": "198.18.1.11", "port": 7000}, "b": {"node_id": %q, "address": "198.18.1.12"}}`, a1, a2), status: 400, locs: []string{"/a/port"}},
		{name: "path end node_id not a uuid", method: "POST", path: ca + "/paths",
			body: fmt.Sprintf(`{"a": {"node_id": "a1", "address": "198.18.1.11"}, "b": {"node_id": %q, "address": "198.18.1.12"}}`, a2), status: 400, locs: []string{"/a/node_id"}},
		{name: "duplicate path", method: "POST", path: ca + "/paths",
			body: fmt.Sprintf(`{"a": {"node_id": %q, "address": "198.18.1.11"}, "b": {"node_id": %q, "address": "198.18.1.12"}}`, a1, a2), status: 409},

		{name: "DELETE path with a stale If-Match", method: "DELETE", path: ca + "/paths/" + pair.Forward.ID, opts: []reqOpt{ifMatch(`"7"`)}, status: 412},
		{name: "path read through another cluster", method: "GET", path: cb + "/paths/" + pair.Reverse.ID, status: 404},

		// Hierarchies: contract violations (400).
		{name: "priority of the wrong JSON type", method: "POST", path: ca + "/hierarchies", body: hier(probe, fmt.Sprintf(`{"node_id": %q, "priority": "1"}`, a3)), status: 400, locs: []string{"/priorities/0/priority"}},
		{name: "priority 0", method: "POST", path: ca + "/hierarchies", body: hier(probe, fmt.Sprintf(`{"node_id": %q, "priority": 0}`, a3)), status: 400, locs: []string{"/priorities/0/priority"}},
		{name: "priority 1000", method: "POST", path: ca + "/hierarchies", body: hier(probe, fmt.Sprintf(`{"node_id": %q, "priority": 1000}`, a3)), status: 400, locs: []string{"/priorities/0/priority"}},
		{name: "bad enum resource kind", method: "POST", path: ca + "/hierarchies", body: hier(`{"name": "data", "kind": "nfs", "params": {}}`, prio1), status: 400, locs: []string{"/resources/0/kind"}},
		{name: "unknown field nested in a resource", method: "POST", path: ca + "/hierarchies", body: hier(`{"name": "probe", "kind": "command", "params": {"check": "true"}, "bogus": true}`, prio1), status: 400, locs: []string{"/resources/0/bogus"}},
		{name: "empty resources list", method: "POST", path: ca + "/hierarchies", body: hier("", prio1), status: 400, locs: []string{"/resources"}},
		{name: "missing priorities", method: "POST", path: ca + "/hierarchies", body: `{"name": "bad", "resources": [` + probe + `]}`, status: 400, locs: []string{"/priorities"}},
		{name: "priority node_id not a uuid", method: "POST", path: ca + "/hierarchies", body: hier(probe, `{"node_id": "a1", "priority": 1}`), status: 400, locs: []string{"/priorities/0/node_id"}},

		// Hierarchies: domain rules (422).
		{name: "dependency cycle a->b->a", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "a", "kind": "command", "params": {"check": "true"}, "depends_on": ["b"]},
				{"name": "b", "kind": "command", "params": {"check": "true"}, "depends_on": ["a"]}`, prio1),
			status: 422, check: wantOneOf("/resources/0/depends_on", "/resources/1/depends_on", "/resources/0/depends_on/0", "/resources/1/depends_on/0")},
		{name: "unknown dependency", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "probe", "kind": "command", "params": {"check": "true"}, "depends_on": ["ghost"]}`, prio1), status: 422, locs: []string{"/resources/0/depends_on/0"}},
		{name: "self dependency", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "probe", "kind": "command", "params": {"check": "true"}, "depends_on": ["probe"]}`, prio1), status: 422, locs: []string{"/resources/0/depends_on/0"}},
		{name: "duplicate resource names", method: "POST", path: ca + "/hierarchies", body: hier(probe+", "+probe, prio1), status: 422, locs: []string{"/resources/1/name"}},
		{name: "duplicate priorities", method: "POST", path: ca + "/hierarchies",
			body: hier(probe, fmt.Sprintf(`{"node_id": %q, "priority": 1}, {"node_id": %q, "priority": 1}`, a3, a2)), status: 422, locs: []string{"/priorities/1/priority"}},
		{name: "duplicate node in priorities", method: "POST", path: ca + "/hierarchies",
			body: hier(probe, fmt.Sprintf(`{"node_id": %q, "priority": 1}, {"node_id": %q, "priority": 2}`, a3, a3)), status: 422, locs: []string{"/priorities/1/node_id"}},
		{name: "unknown node in priorities", method: "POST", path: ca + "/hierarchies",
			body: hier(probe, fmt.Sprintf(`{"node_id": %q, "priority": 1}`, unknownID)), status: 422, locs: []string{"/priorities/0/node_id"}},
		{name: "node of another cluster in priorities", method: "POST", path: ca + "/hierarchies",
			body: hier(probe, fmt.Sprintf(`{"node_id": %q, "priority": 1}, {"node_id": %q, "priority": 2}`, a3, b1)), status: 422, locs: []string{"/priorities/1/node_id"}},
		{name: "ip without interface", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "vip", "kind": "ip", "params": {"address": "198.18.1.50/24"}}`, prio1), status: 422, locs: []string{"/resources/0/params/interface"}},
		{name: "ip address without prefix", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "vip", "kind": "ip", "params": {"address": "198.18.1.50", "interface": "eth0"}}`, prio1), status: 422, locs: []string{"/resources/0/params/address"}},
		{name: "volume with a relative target", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "spool", "kind": "volume", "params": {"source": "/srv/mail", "target": "var/spool"}}`, prio1), status: 422, locs: []string{"/resources/0/params/target"}},
		{name: "tcp port 70000", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "db", "kind": "tcp", "params": {"host": "db.example", "port": 70000}}`, prio1), status: 422, locs: []string{"/resources/0/params/port"}},
		{name: "ocf agent without provider", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "mta", "kind": "ocf", "params": {"agent": "postfix"}}`, prio1), status: 422, locs: []string{"/resources/0/params/agent"}},
		{name: "http url with an ftp scheme", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "site", "kind": "http", "params": {"url": "ftp://x"}}`, prio1), status: 422, locs: []string{"/resources/0/params/url"}},
		{name: "unknown kind parameter", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "probe", "kind": "command", "params": {"check": "true", "bogus": "1"}}`, prio1), status: 422, locs: []string{"/resources/0/params/bogus"}},
		{name: "NUL character in a kind parameter", method: "POST", path: ca + "/hierarchies",
			body: hier(`{"name": "probe", "kind": "command", "params": {"check": "a\u0000b"}}`, prio1), status: 422, locs: []string{"/resources/0/params/check"}},
		{name: "check timeout not below its interval", method: "POST", path: ca + "/hierarchies",
			body:   hier(`{"name": "probe", "kind": "command", "params": {"check": "true"}, "quick_check": {"interval_ms": 500, "timeout_ms": 500}}`, prio1),
			status: 422, locs: []string{"/resources/0/quick_check/timeout_ms"}},
		{name: "duplicate hierarchy name", method: "POST", path: ca + "/hierarchies",
			body: strings.Replace(hier(probe, prio1), `"name": "bad"`, `"name": "web"`, 1), status: 409},
		{name: "hierarchy in an unknown cluster", method: "POST", path: "/v1/clusters/" + unknownID + "/hierarchies", body: hier(probe, prio1), status: 404},
		{name: "PATCH hierarchy with an empty object", method: "PATCH", path: hpath, body: `{}`, status: 400},
		{name: "PATCH hierarchy with a stale If-Match", method: "PATCH", path: hpath, body: `{"description": "stale"}`, opts: []reqOpt{ifMatch(`"7"`)}, status: 412},
		{name: "PATCH hierarchy priorities to an unknown node", method: "PATCH", path: hpath,
			body: fmt.Sprintf(`{"priorities": [{"node_id": %q, "priority": 1}]}`, unknownID), status: 422, locs: []string{"/priorities/0/node_id"}},
		{name: "PUT hierarchy with a dependency cycle", method: "PUT", path: hpath, opts: []reqOpt{ifMatch(`"1"`)},
			body:   `{"name": "web", "resources": [{"name": "a", "kind": "command", "params": {"check": "true"}, "depends_on": ["a"]}], "priorities": [` + prio1 + `]}`,
			status: 422, locs: []string{"/resources/0/depends_on/0"}},
		{name: "DELETE hierarchy with a stale If-Match", method: "DELETE", path: hpath, opts: []reqOpt{ifMatch(`"7"`)}, status: 412},
		{name: "hierarchy read through another cluster", method: "GET", path: cb + "/hierarchies/" + web.ID, status: 404},

		// Tokens.
		{name: "bad enum token role", method: "POST", path: "/v1/tokens", body: `{"name": "x", "role": "root"}`, status: 400, locs: []string{"/role"}},
		{name: "token without role", method: "POST", path: "/v1/tokens", body: `{"name": "x"}`, status: 400, locs: []string{"/role"}},
		{name: "revoking the last admin token", method: "DELETE", path: "/v1/tokens/" + bootstrapID, status: 409},
		{name: "revoking an unknown token", method: "DELETE", path: "/v1/tokens/" + unknownID, status: 404},
		{name: "token id not a uuid", method: "DELETE", path: "/v1/tokens/bootstrap", status: 400, locs: []string{"path.token_id"}},

		// Parameters.
		{name: "cluster id not a uuid", method: "GET", path: "/v1/clusters/not-a-uuid", status: 400, locs: []string{"path.cluster_id"}},
		{name: "unknown cluster id", method: "GET", path: "/v1/clusters/" + unknownID, status: 404},
		{name: "limit not a number", method: "GET", path: "/v1/clusters?limit=abc", status: 400, locs: []string{"query.limit"}},
		{name: "limit 0", method: "GET", path: "/v1/clusters?limit=0", status: 400, locs: []string{"query.limit"}},
		{name: "limit 501", method: "GET", path: "/v1/clusters?limit=501", status: 400, locs: []string{"query.limit"}},
		{name: "cursor not issued by the server", method: "GET", path: "/v1/clusters?cursor=not-a-cursor!", status: 422, locs: []string{"query.cursor"}},
		{name: "audit cursor not issued by the server", method: "GET", path: "/v1/audit?cursor=abc", status: 422, locs: []string{"query.cursor"}},
		{name: "cursor longer than 200 characters", method: "GET", path: ca + "/nodes?cursor=" + strings.Repeat("A", 201), status: 400, locs: []string{"query.cursor"}},
		{name: "Idempotency-Key longer than 255 characters", method: "POST", path: "/v1/clusters", body: `{"name": "x"}`,
			opts: []reqOpt{idempotencyKey(strings.Repeat("k", 256))}, status: 400, locs: []string{"header.Idempotency-Key"}},
		{name: "malformed percent-encoding in a cursor", method: "GET", path: "/v1/clusters?cursor=%%%garbage", status: 400, locs: []string{"query.cursor"}},
		{name: "limit given twice", method: "GET", path: "/v1/clusters?limit=1&limit=2", status: 400, locs: []string{"query.limit"}},
		{name: "cursor given twice", method: "GET", path: ca + "/nodes?cursor=a&cursor=b", status: 400, locs: []string{"query.cursor"}},
		{name: "event type given twice", method: "GET", path: ca + "/events?type=node.up&type=node.down", status: 400, locs: []string{"query.type"}},
		{name: "invalid UTF-8 in an event type", method: "GET", path: ca + "/events?type=%FF%FE", status: 400, locs: []string{"query.type"}},
		{name: "overlong UTF-8 NUL in an event type", method: "GET", path: ca + "/events?type=%C0%80", status: 400, locs: []string{"query.type"}},
		{name: "NUL in an event type", method: "GET", path: ca + "/events?type=node.%00", status: 400, locs: []string{"query.type"}},
		{name: "invalid UTF-8 in the event stream's type", method: "GET", path: ca + "/events/stream?type=%FF", status: 400, locs: []string{"query.type"}},
		{name: "NUL in the event stream's type", method: "GET", path: ca + "/events/stream?type=a%00", status: 400, locs: []string{"query.type"}},
		{name: "invalid UTF-8 in a query parameter name", method: "GET", path: "/v1/clusters?%FF=1", status: 400, locs: []string{"query"}},
		{name: "NUL in a path parameter", method: "GET", path: "/v1/clusters/%00", status: 400, locs: []string{"path.cluster_id"},
			check: wantInstance("/v1/clusters/%00")},
		{name: "problem instance keeps the query as sent", method: "GET", path: "/v1/clusters?limit=0&x=%C3%A9", status: 400, locs: []string{"query.limit"},
			check: wantInstance("/v1/clusters?limit=0&x=%C3%A9")},
		{name: "raw bytes in an Idempotency-Key creating a cluster", method: "POST", path: "/v1/clusters", body: `{"name": "raw-key"}`,
			opts: []reqOpt{rawKey}, status: 400, locs: []string{"header.Idempotency-Key"}},
		{name: "raw bytes in an Idempotency-Key creating a node", method: "POST", path: ca + "/nodes", body: `{"name": "raw-key"}`,
			opts: []reqOpt{rawKey}, status: 400, locs: []string{"header.Idempotency-Key"}},
		{name: "raw bytes in an Idempotency-Key testing an SNMP target", method: "POST", path: "/v1/snmp-targets/" + unknownID + "/test",
			opts: []reqOpt{rawKey}, status: 400, locs: []string{"header.Idempotency-Key"}},
		{name: "8,000-character Idempotency-Key on simulate", method: "POST", path: ca + "/simulate", body: `{}`,
			opts: []reqOpt{hugeKey}, status: 400, locs: []string{"header.Idempotency-Key"}, detail: "255"},
		{name: "8,000-character Idempotency-Key on a webhook ping", method: "POST", path: "/v1/webhooks/" + unknownID + "/ping",
			opts: []reqOpt{hugeKey}, status: 400, locs: []string{"header.Idempotency-Key"}, detail: "255"},
		{name: "Idempotency-Key reused with another body", method: "POST", path: "/v1/clusters", body: `{"name": "delta"}`,
			opts: []reqOpt{idempotencyKey("e2e-used-key")}, status: 422, locs: []string{"header.Idempotency-Key"}},

		// Routing, media types and sizes.
		{name: "unknown route", method: "GET", path: "/v1/nope", status: 404},
		{name: "unknown route without a token", method: "GET", path: "/v2/clusters", opts: []reqOpt{noAuth()}, status: 404},
		{name: "wrong method on a collection", method: "PUT", path: "/v1/clusters", body: `{"name": "x"}`, status: 405, check: wantAllow("GET", "POST")},
		{name: "wrong method on a system endpoint", method: "POST", path: "/healthz", status: 405, check: wantAllow("GET")},
		{name: "wrong Content-Type", method: "POST", path: "/v1/clusters", body: `name=x`, opts: []reqOpt{plain}, status: 415},
		{name: "body over 1 MiB", method: "POST", path: "/v1/clusters", body: oversize, status: 413},
		{name: "body on DELETE", method: "DELETE", path: "/v1/clusters/" + victim, body: `{}`, status: 400},
		{name: "body over 1 MiB on DELETE", method: "DELETE", path: "/v1/clusters/" + victim, body: oversize, status: 400},

		// Authentication and roles.
		{name: "missing token", method: "GET", path: "/v1/clusters", opts: []reqOpt{noAuth()}, status: 401, check: wantHeader("WWW-Authenticate", "Bearer")},
		{name: "Basic Authorization", method: "GET", path: "/v1/clusters", opts: []reqOpt{header("Authorization", "Basic xyz")}, status: 401, check: wantHeader("WWW-Authenticate", "Bearer")},
		{name: "Bearer without a token", method: "GET", path: "/v1/clusters", opts: []reqOpt{header("Authorization", "Bearer ")}, status: 401, check: wantHeader("WWW-Authenticate", "Bearer")},
		{name: "unknown token", method: "GET", path: "/v1/clusters", opts: []reqOpt{header("Authorization", "Bearer bsk_unknown0000000000000000000000000000000000")}, status: 401, check: wantHeader("WWW-Authenticate", "Bearer")},
		{name: "revoked token", method: "GET", path: "/v1/clusters", opts: []reqOpt{header("Authorization", "Bearer "+revoked.Secret)}, status: 401, check: wantHeader("WWW-Authenticate", "Bearer")},
		{name: "unauthenticated write", method: "POST", path: "/v1/clusters", body: `{"name": "x"}`, opts: []reqOpt{noAuth()}, status: 401},
		{name: "viewer creates a cluster", method: "POST", path: "/v1/clusters", body: `{"name": "x"}`, opts: []reqOpt{asViewer}, status: 403},
		{name: "viewer deletes a hierarchy", method: "DELETE", path: hpath, opts: []reqOpt{asViewer}, status: 403},
		{name: "viewer reads the audit trail", method: "GET", path: "/v1/audit", opts: []reqOpt{asViewer}, status: 403},
		{name: "operator creates a token", method: "POST", path: "/v1/tokens", body: `{"name": "x", "role": "admin"}`, opts: []reqOpt{asOperator}, status: 403},
		{name: "operator changes a cluster", method: "PATCH", path: ca, body: `{"description": "x"}`, opts: []reqOpt{asOperator}, status: 403},
	}
	if len(cases) < 45 {
		t.Fatalf("only %d bad requests; the table must cover at least 45", len(cases))
	}

	before := snapshot(t, admin)
	names := map[string]bool{}
	for _, tc := range cases {
		if names[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		names[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			r := admin.do(t, tc.method, tc.path, tc.body, tc.opts...)
			if r.status != tc.status {
				t.Errorf("%s, want %d; body: %.600s", r.what, tc.status, r.body)
			}
			if r.status < 400 {
				return // accepted: there is no problem to check
			}
			p := r.problem(t)
			if !hasAll(p.locations(), tc.locs) {
				t.Errorf("%s: errors[].location %v, want %v among them; body: %.600s", r.what, p.locations(), tc.locs, r.body)
			}
			if tc.detail != "" && !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("%s: detail %q, want it to mention %q", r.what, p.Detail, tc.detail)
			}
			if tc.check != nil {
				tc.check(t, r, p)
			}
		})
	}
	t.Logf("%d bad requests checked", len(cases))

	// Nothing was written: every object reads back exactly as before, and
	// the audit trail has no new record.
	after := snapshot(t, admin)
	for _, k := range slices.Sorted(maps.Keys(after)) {
		switch b, ok := before[k]; {
		case !ok:
			t.Errorf("refused requests wrote %s: %s", k, after[k])
		case b != after[k]:
			t.Errorf("refused requests changed %s\nbefore: %s\n after: %s", k, b, after[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			t.Errorf("refused requests removed %s: %s", k, before[k])
		}
	}
	// No refused hierarchy left a priority behind: a3, named by all of
	// them, is in no hierarchy's priorities, so it can be deleted.
	if r := admin.do(t, "DELETE", ca+"/nodes/"+a3, nil); !r.want(t, 204) {
		t.Error("a refused hierarchy request left a priority on node a3")
	}
}

// TestNodeEventsOnce proves that a node's first enrollment writes the
// node.up the README promises, and that putting a node in maintenance (or
// taking it out) when it already is so writes no event and keeps its
// version: 3×PUT and 2×DELETE make one event each way.
func TestNodeEventsOnce(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "backstopd", newDatabase(t), adminSecret)
	admin := d.client(adminSecret)
	var c clusterJSON
	admin.do(t, "POST", "/v1/clusters", `{"name": "once"}`).must(t, 201).decode(t, &c)
	base := "/v1/clusters/" + c.ID
	var n nodeCreatedJSON
	admin.do(t, "POST", base+"/nodes", `{"name": "n1"}`).must(t, 201).decode(t, &n)
	npath := base + "/nodes/" + n.ID

	events := func(typ string) int {
		var l struct {
			Items []struct {
				Subject map[string]string `json:"subject"`
			} `json:"items"`
		}
		admin.do(t, "GET", base+"/events?limit=500&type="+typ, nil).must(t, 200).decode(t, &l)
		count := 0
		for _, e := range l.Items {
			if e.Subject["node_id"] == n.ID {
				count++
			}
		}
		return count
	}
	version := func() int64 {
		var got nodeJSON
		admin.do(t, "GET", npath, nil).must(t, 200).decode(t, &got)
		return got.Version
	}

	// Standing in for an agent: enrollment over TLS presents a client
	// certificate of the key it enrolls.
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := pki.ClientCertificate(key, "n1")
	if err != nil {
		t.Fatal(err)
	}
	admin.as("").withClientCert(cert).do(t, "POST", "/agent/v1/enroll", map[string]any{
		"enrollment_token": n.EnrollmentToken, "public_key": base64.StdEncoding.EncodeToString(pub),
		"facts": map[string]any{"hostname": "n1", "os": "linux", "arch": "amd64", "agent_version": "test"},
	}).must(t, 201)
	if got := events("node.up"); got != 1 {
		t.Errorf("first enrollment wrote %d node.up events, want 1", got)
	}

	v0 := version()
	for range 3 {
		admin.do(t, "PUT", npath+"/maintenance", nil).must(t, 200)
	}
	if v := version(); v != v0+1 {
		t.Errorf("3×PUT maintenance: version %d, want %d", v, v0+1)
	}
	for range 2 {
		admin.do(t, "DELETE", npath+"/maintenance", nil).must(t, 200)
	}
	if v := version(); v != v0+2 {
		t.Errorf("2×DELETE maintenance: version %d, want %d", v, v0+2)
	}
	if got := events("node.maintenance_started"); got != 1 {
		t.Errorf("3×PUT maintenance wrote %d node.maintenance_started events, want 1", got)
	}
	if got := events("node.maintenance_ended"); got != 1 {
		t.Errorf("2×DELETE maintenance wrote %d node.maintenance_ended events, want 1", got)
	}
}

// snapshot reads every object the API lists, as canonical JSON by object
// ("node a1 <id>", "audit 7", ...); tokens without their last use.
func snapshot(t *testing.T, c *client) map[string]string {
	t.Helper()
	s := map[string]string{}
	put := func(k string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		s[k] = string(b)
	}
	for _, cl := range listAll[clusterJSON](t, c, "/v1/clusters") {
		put("cluster "+cl.Name+" "+cl.ID, cl)
		base := "/v1/clusters/" + cl.ID
		for _, n := range listAll[nodeJSON](t, c, base+"/nodes") {
			put("node "+n.Name+" "+n.ID, n)
		}
		for _, p := range listAll[pathJSON](t, c, base+"/paths") {
			put("path "+p.ID, p)
		}
		for _, h := range listAll[hierarchyJSON](t, c, base+"/hierarchies") {
			put("hierarchy "+h.Name+" "+h.ID, h)
		}
	}
	for _, tok := range listAll[tokenJSON](t, c, "/v1/tokens") {
		tok.LastUsedAt = nil
		put("token "+tok.Name+" "+tok.ID, tok)
	}
	for _, a := range listAll[auditJSON](t, c, "/v1/audit") {
		put(fmt.Sprintf("audit record %d", a.ID), a)
	}
	return s
}
