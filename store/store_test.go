package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/store"
	"github.com/backstop-ha/backstop/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }

func actorCtx(t *testing.T) context.Context {
	return backstop.WithActor(t.Context(), backstop.Actor{TokenID: "01a21687-0000-7000-8000-000000000001", Name: "test", Role: backstop.RoleAdmin})
}

func newCluster(t *testing.T, st *store.Store, name string) backstop.Cluster {
	t.Helper()
	c, err := st.CreateCluster(actorCtx(t), backstop.Cluster{Name: name, TimingProfile: backstop.ProfileLAN, Timing: backstop.Profiles[backstop.ProfileLAN],
		SwitchbackDefault: backstop.SwitchbackIntelligent, Fencing: backstop.FencingSelf})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newNode(t *testing.T, st *store.Store, c backstop.Cluster, name string) backstop.Node {
	t.Helper()
	n, _, err := st.CreateNode(actorCtx(t), backstop.Node{ClusterID: c.ID, Name: name}, "fp")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func vipHierarchy(c backstop.Cluster, name string, nodes ...backstop.Node) backstop.Hierarchy {
	h := backstop.Hierarchy{ClusterID: c.ID, Name: name, Resources: []backstop.Resource{
		{Name: "vip", Kind: backstop.KindIP, Params: map[string]any{"address": "198.18.1.50/24", "interface": "eth0"}},
	}}
	for i, n := range nodes {
		h.Priorities = append(h.Priorities, backstop.Priority{NodeID: n.ID, Priority: i + 1})
	}
	return h
}

// Replicas starting together must apply each migration once and all come
// up: golang-migrate's advisory lock serialises them.
func TestMigrateConcurrently(t *testing.T) {
	url := storetest.EmptyURL(t)
	latest, err := store.LatestMigration()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			st, err := store.Open(t.Context(), url)
			if err != nil {
				errs[i] = err
				return
			}
			defer st.Close()
			v, err := store.Migrate(t.Context(), st.Pool())
			if err == nil && v != latest {
				err = fmt.Errorf("version %d, want %d", v, latest)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
}

// The 65th node is refused, also when the last ones race each other.
func TestNodeLimit(t *testing.T) {
	st := storetest.New(t)
	c := newCluster(t, st, "big")
	for i := range backstop.MaxNodes - 4 {
		newNode(t, st, c, fmt.Sprintf("n%d", i))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, limited := 0, 0
	for i := range 8 {
		wg.Go(func() {
			_, _, err := st.CreateNode(actorCtx(t), backstop.Node{ClusterID: c.ID, Name: fmt.Sprintf("race%d", i)}, "fp")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, backstop.ErrLimit):
				limited++
			default:
				t.Errorf("create node: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 4 || limited != 4 {
		t.Fatalf("created %d and refused %d of 8 racing nodes; want 4 and 4", ok, limited)
	}
}

// A node named in priorities cannot be removed; the error names the
// hierarchy. Deleting the cluster still removes everything.
func TestDeleteNodeInUse(t *testing.T) {
	st := storetest.New(t)
	c := newCluster(t, st, "mail")
	n1, n2 := newNode(t, st, c, "mx1"), newNode(t, st, c, "mx2")
	if _, err := st.CreatePath(actorCtx(t), c.ID, backstop.PathEnd{NodeID: n1.ID, Address: "198.18.1.11"}, backstop.PathEnd{NodeID: n2.ID, Address: "198.18.1.12"}, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateHierarchy(actorCtx(t), vipHierarchy(c, "web", n1, n2)); err != nil {
		t.Fatal(err)
	}
	err := st.DeleteNode(actorCtx(t), c.ID, n2.ID, nil)
	if !errors.Is(err, backstop.ErrConflict) || !strings.Contains(err.Error(), "web") {
		t.Fatalf("DeleteNode = %v, want ErrConflict naming hierarchy web", err)
	}
	if err := st.DeleteCluster(actorCtx(t), c.ID, nil); err != nil {
		t.Fatalf("DeleteCluster: %v", err)
	}
	if _, err := st.FindNodeByID(t.Context(), c.ID, n1.ID); !errors.Is(err, backstop.ErrNotFound) {
		t.Fatalf("node after cluster delete: %v, want ErrNotFound", err)
	}
	var left int
	if err := st.Pool().QueryRow(t.Context(), `SELECT (SELECT count(*) FROM paths) + (SELECT count(*) FROM hierarchy_priorities) + (SELECT count(*) FROM hierarchies)`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("rows left after cluster delete: %d (%v)", left, err)
	}
}

// A refused hierarchy leaves nothing behind, audit record included.
func TestCreateHierarchyAtomic(t *testing.T) {
	st := storetest.New(t)
	c := newCluster(t, st, "mail")
	other := newCluster(t, st, "other")
	n1, foreign := newNode(t, st, c, "mx1"), newNode(t, st, other, "mx9")
	count := func() (n int) {
		if err := st.Pool().QueryRow(t.Context(), `SELECT (SELECT count(*) FROM hierarchies) + (SELECT count(*) FROM hierarchy_priorities) + (SELECT count(*) FROM audit_log)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	_, err := st.CreateHierarchy(actorCtx(t), vipHierarchy(c, "web", n1, foreign))
	var ve *backstop.ValidationError
	if !errors.As(err, &ve) || ve.Fields[0].Location != "/priorities/1/node_id" {
		t.Fatalf("CreateHierarchy with a foreign node = %v, want a validation error at /priorities/1/node_id", err)
	}
	if after := count(); after != before {
		t.Fatalf("rows grew from %d to %d after a refused create", before, after)
	}
}

// Stale If-Match versions are refused and change nothing.
func TestUpdateHierarchyIfMatch(t *testing.T) {
	st := storetest.New(t)
	c := newCluster(t, st, "mail")
	n1 := newNode(t, st, c, "mx1")
	h, err := st.CreateHierarchy(actorCtx(t), vipHierarchy(c, "web", n1))
	if err != nil {
		t.Fatal(err)
	}
	desc := "new"
	v := h.Version
	h2, err := st.UpdateHierarchy(actorCtx(t), c.ID, h.ID, &v, backstop.HierarchyUpdate{Description: &desc})
	if err != nil || h2.Version != v+1 || h2.Description != "new" || len(h2.Priorities) != 1 {
		t.Fatalf("update with the current version: %+v, %v", h2, err)
	}
	stale := "stale"
	if _, err := st.UpdateHierarchy(actorCtx(t), c.ID, h.ID, &v, backstop.HierarchyUpdate{Description: &stale}); !errors.Is(err, backstop.ErrPreconditionFailed) {
		t.Fatalf("update with a stale version = %v, want ErrPreconditionFailed", err)
	}
	got, err := st.FindHierarchyByID(t.Context(), c.ID, h.ID)
	if err != nil || got.Description != "new" {
		t.Fatalf("after the stale update: %q, %v", got.Description, err)
	}
}

// Replicas starting together create one bootstrap token at most.
func TestBootstrapTokenOnce(t *testing.T) {
	st := storetest.New(t)
	var wg sync.WaitGroup
	secrets := make([]string, 4)
	for i := range secrets {
		wg.Go(func() {
			s, err := st.EnsureBootstrapToken(t.Context(), "")
			if err != nil {
				t.Error(err)
			}
			secrets[i] = s
		})
	}
	wg.Wait()
	created := 0
	for _, s := range secrets {
		if s != "" {
			created++
			if _, err := st.Authenticate(t.Context(), s); err != nil {
				t.Errorf("bootstrap secret does not authenticate: %v", err)
			}
		}
	}
	if created != 1 {
		t.Fatalf("%d bootstrap tokens created, want 1", created)
	}
	if _, err := st.Authenticate(t.Context(), "bsk_nope"); !errors.Is(err, backstop.ErrUnauthenticated) {
		t.Fatalf("unknown secret: %v, want ErrUnauthenticated", err)
	}
}

// The last admin token cannot be revoked, so the API never locks itself out.
func TestLastAdminToken(t *testing.T) {
	st := storetest.New(t)
	if _, err := st.EnsureBootstrapToken(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	ts, _, err := st.ListTokens(t.Context(), backstop.Page{})
	if err != nil || len(ts) != 1 {
		t.Fatalf("tokens: %v %v", ts, err)
	}
	if err := st.DeleteToken(actorCtx(t), ts[0].ID, nil); !errors.Is(err, backstop.ErrConflict) {
		t.Fatalf("revoking the last admin: %v, want ErrConflict", err)
	}
	if _, _, err := st.CreateToken(actorCtx(t), "second", backstop.RoleAdmin, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteToken(actorCtx(t), ts[0].ID, nil); err != nil {
		t.Fatalf("revoking one of two admins: %v", err)
	}
}

// Pages cover every item once, in order, and end without a cursor.
func TestPagination(t *testing.T) {
	st := storetest.New(t)
	for i := range 7 {
		newCluster(t, st, fmt.Sprintf("c%d", i))
	}
	seen := map[string]bool{}
	p := backstop.Page{Limit: 3}
	for pages := 1; ; pages++ {
		cs, next, err := st.ListClusters(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if seen[c.ID] {
				t.Fatalf("cluster %s seen twice", c.Name)
			}
			seen[c.ID] = true
		}
		if next == "" {
			if pages != 3 || len(seen) != 7 {
				t.Fatalf("%d pages, %d clusters; want 3 and 7", pages, len(seen))
			}
			break
		}
		p.Cursor = next
	}
	if _, _, err := st.ListClusters(t.Context(), backstop.Page{Limit: 3, Cursor: "!!"}); !errors.Is(err, backstop.ErrInvalid) {
		t.Fatalf("bad cursor: %v, want ErrInvalid", err)
	}
}

// An Idempotency-Key answers a repeat with the stored response, refuses
// another body, and is released for a retry after a server error.
func TestIdempotencyKeys(t *testing.T) {
	st := storetest.New(t)
	tok, _, err := st.CreateToken(actorCtx(t), "t", backstop.RoleAdmin, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	claim := func(hash string) (*backstop.StoredResponse, error) {
		return st.ClaimIdempotencyKey(ctx, backstop.IdempotencyClaim{TokenID: tok.ID, Key: "k1", Method: "POST", Path: "/v1/clusters", BodyHash: []byte(hash)})
	}
	if r, err := claim("a"); r != nil || err != nil {
		t.Fatalf("first claim: %v %v", r, err)
	}
	if _, err := claim("a"); !errors.Is(err, backstop.ErrIdempotencyInProgress) {
		t.Fatalf("claim while running: %v", err)
	}
	if err := st.CompleteIdempotencyKey(ctx, tok.ID, "k1", backstop.StoredResponse{Status: 201, Headers: map[string][]string{"Etag": {`"1"`}}, Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	r, err := claim("a")
	if err != nil || r == nil || r.Status != 201 || r.Headers["Etag"][0] != `"1"` {
		t.Fatalf("replay: %+v %v", r, err)
	}
	if _, err := claim("b"); !errors.Is(err, backstop.ErrInvalid) {
		t.Fatalf("other body: %v, want ErrInvalid", err)
	}
	if _, err := st.ClaimIdempotencyKey(ctx, backstop.IdempotencyClaim{TokenID: tok.ID, Key: "k2", Method: "POST", Path: "/x", BodyHash: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if err := st.ReleaseIdempotencyKey(ctx, tok.ID, "k2"); err != nil {
		t.Fatal(err)
	}
	if r, err := st.ClaimIdempotencyKey(ctx, backstop.IdempotencyClaim{TokenID: tok.ID, Key: "k2", Method: "POST", Path: "/x", BodyHash: []byte("a")}); r != nil || err != nil {
		t.Fatalf("claim after release: %v %v", r, err)
	}
}

// A fence report fails the placements the node had before it was cut
// off (with no node and no failed mark: they are placed again), never one
// made after it came back (the report arrives with the
// first heartbeat after the reconnection, possibly after a switch back).
func TestLateFenceReport(t *testing.T) {
	st := storetest.New(t)
	c := newCluster(t, st, "mail")
	n1, enr, err := st.CreateNode(actorCtx(t), backstop.Node{ClusterID: c.ID, Name: "mx1"}, "fp")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Enroll(t.Context(), enr.Token, make([]byte, 32), backstop.HostFacts{Hostname: "mx1", OS: "linux", Arch: "amd64", AgentVersion: "t"}); err != nil {
		t.Fatal(err)
	}
	a := backstop.AgentIdentity{NodeID: n1.ID, ClusterID: c.ID, NodeName: "mx1"}
	old, err := st.CreateHierarchy(actorCtx(t), vipHierarchy(c, "old", n1))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := st.CreateHierarchy(actorCtx(t), vipHierarchy(c, "fresh", n1))
	if err != nil {
		t.Fatal(err)
	}
	place := func(id string) {
		if _, err := st.Pool().Exec(t.Context(), `UPDATE hierarchies SET placement_node_id = $2, placement_state = 'in_service', epoch = epoch + 1,
			placement_updated_at = clock_timestamp() WHERE id = $1`, id, n1.ID); err != nil {
			t.Fatal(err)
		}
	}
	place(old.ID) // placed before the node's last heartbeat before the cut
	if _, err := st.RecordHeartbeat(t.Context(), a, backstop.AgentReport{Raw: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	place(fresh.ID) // placed after it, while the fence report was queued
	rep := backstop.AgentReport{Raw: []byte(`{}`), Fences: []backstop.FenceReport{{At: time.Now(), Reason: "isolated", Hierarchies: []string{old.ID, fresh.ID}}}}
	if _, err := st.RecordHeartbeat(t.Context(), a, rep); err != nil {
		t.Fatal(err)
	}
	// A clean fence leaves the hierarchy failed with no node and no failed
	// mark, so the engine places it again (the node is up: on it).
	if _, err := st.ClusterStatuses(t.Context(), nil); err != nil { // turns failed placements on up nodes into marks
		t.Fatal(err)
	}
	for id, want := range map[string]backstop.Placement{old.ID: {State: backstop.PlacementFailed}, fresh.ID: {NodeID: n1.ID, State: backstop.PlacementInService}} {
		h, err := st.FindHierarchyByID(t.Context(), c.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		if h.Placement.State != want.State || h.Placement.NodeID != want.NodeID {
			t.Errorf("hierarchy %s after the fence report: %s on %q, want %s on %q", h.Name, h.Placement.State, h.Placement.NodeID, want.State, want.NodeID)
		}
		if marks, err := st.FailedMarks(t.Context(), id); err != nil || len(marks) != 0 {
			t.Errorf("hierarchy %s has failed marks %+v (%v) after a clean fence", h.Name, marks, err)
		}
	}
}

// Never two copies: a hierarchy whose fence failed on the node (the agent
// reports it failed, perhaps still running) keeps its node and gets a
// failed mark, even when the same heartbeat's fence report lists it; only
// a clean fence leaves it with no node to be placed again.
func TestFailedFenceKeepsTheNode(t *testing.T) {
	e := newJudgeEnv(t, 2)
	h := e.placeOnFirst()
	a := backstop.AgentIdentity{NodeID: e.nodes[0].ID, ClusterID: e.c.ID, NodeName: e.nodes[0].Name}
	e.exec(`UPDATE hierarchies SET placement_updated_at = now() - interval '1 minute' WHERE id = $1`, h.ID)
	rep := backstop.AgentReport{Raw: []byte(`{}`),
		Hierarchies: []backstop.HierarchyReport{{HierarchyID: h.ID, Epoch: 1, State: backstop.PlacementFailed, Detail: "fence of svc failed"}},
		Fences:      []backstop.FenceReport{{At: time.Now(), Reason: "lease expired", Hierarchies: []string{h.ID}}}}
	if _, err := e.st.RecordHeartbeat(t.Context(), a, rep); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.ClusterStatuses(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	got, err := e.st.FindHierarchyByID(t.Context(), e.c.ID, h.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Placement.NodeID != e.nodes[0].ID || got.Placement.State != backstop.PlacementFailed {
		t.Fatalf("placement %+v: want failed on n1 (its fence failed)", got.Placement)
	}
	if marks, err := e.st.FailedMarks(t.Context(), h.ID); err != nil || len(marks) != 1 {
		t.Fatalf("failed marks %+v (%v): want the node's", marks, err)
	}
}

// A read of hierarchies (one, or a page) carries each one's priorities,
// lowest number first whatever order they were given in, each with its
// node; one round trip reads them with the hierarchies.
func TestHierarchyReadsCarryPriorities(t *testing.T) {
	st := storetest.New(t)
	c := newCluster(t, st, "prio")
	n1, n2, n3 := newNode(t, st, c, "n1"), newNode(t, st, c, "n2"), newNode(t, st, c, "n3")
	h := vipHierarchy(c, "a")
	// Neither in the order given nor in node id order.
	h.Priorities = []backstop.Priority{{NodeID: n2.ID, Priority: 30}, {NodeID: n3.ID, Priority: 5}, {NodeID: n1.ID, Priority: 7}}
	a, err := st.CreateHierarchy(actorCtx(t), h)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateHierarchy(actorCtx(t), vipHierarchy(c, "b", n2))
	if err != nil {
		t.Fatal(err)
	}
	wantA := []backstop.Priority{{NodeID: n3.ID, Priority: 5}, {NodeID: n1.ID, Priority: 7}, {NodeID: n2.ID, Priority: 30}}
	wantB := []backstop.Priority{{NodeID: n2.ID, Priority: 1}}
	got, err := st.FindHierarchyByID(t.Context(), c.ID, a.ID)
	if err != nil || !slices.Equal(got.Priorities, wantA) {
		t.Fatalf("find: %v %+v, want %+v", err, got.Priorities, wantA)
	}
	list, _, err := st.ListHierarchies(t.Context(), c.ID, backstop.Page{Limit: 10})
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %d", err, len(list))
	}
	for _, h := range list {
		want := map[string][]backstop.Priority{a.ID: wantA, b.ID: wantB}[h.ID]
		if !slices.Equal(h.Priorities, want) {
			t.Fatalf("list: %s has %+v, want %+v", h.Name, h.Priorities, want)
		}
	}
}
