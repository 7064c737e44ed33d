package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

func ptr64(v int64) *int64 { return &v }

func putDevice(t *testing.T, e *judgeEnv, i int, ifMatch *int64) (backstop.FenceDevice, error) {
	t.Helper()
	return e.st.PutFenceDevice(actorCtx(t), e.c.ID, e.nodes[i].ID, ifMatch, func(cur *backstop.FenceDevice) (backstop.FenceDevice, error) {
		d := backstop.FenceDevice{Agent: "fence_redfish", Params: map[string]string{"ip": "192.0.2.1"}, Timeout: 20 * time.Second,
			SecretNames: []string{"password"}, SecretSealed: []byte("sealed")}
		if cur != nil {
			d.Params["ipport"] = "8443"
		}
		return d, nil
	})
}

func TestFenceDeviceCRUD(t *testing.T) {
	e := newJudgeEnv(t, 2)
	if _, err := putDevice(t, e, 0, ptr64(1)); !errors.Is(err, backstop.ErrPreconditionFailed) {
		t.Fatalf("create with If-Match: %v, want ErrPreconditionFailed", err)
	}
	d, err := putDevice(t, e, 0, nil)
	if err != nil || d.Version != 1 || d.Agent != "fence_redfish" || string(d.SecretSealed) != "sealed" || d.Timeout != 20*time.Second {
		t.Fatalf("create: %+v, %v", d, err)
	}
	if _, err := putDevice(t, e, 0, ptr64(7)); !errors.Is(err, backstop.ErrPreconditionFailed) {
		t.Fatalf("stale If-Match: %v, want ErrPreconditionFailed", err)
	}
	if d, err = putDevice(t, e, 0, ptr64(1)); err != nil || d.Version != 2 || d.Params["ipport"] != "8443" {
		t.Fatalf("replace: %+v, %v", d, err)
	}
	got, err := e.st.FindFenceDevice(t.Context(), e.c.ID, e.nodes[0].ID)
	if err != nil || got.Version != 2 || fmt.Sprint(got.SecretNames) != "[password]" {
		t.Fatalf("find: %+v, %v", got, err)
	}
	if _, err := e.st.FindFenceDevice(t.Context(), e.c.ID, e.nodes[1].ID); !errors.Is(err, backstop.ErrNotFound) {
		t.Fatalf("node without a device: %v, want ErrNotFound", err)
	}
	var audited int
	var leaked bool
	if err := e.st.Pool().QueryRow(t.Context(), `SELECT count(*), bool_or(details::text LIKE '%sealed%') FROM audit_log WHERE action LIKE 'fence_device.%'`).Scan(&audited, &leaked); err != nil {
		t.Fatal(err)
	}
	if audited != 2 || leaked {
		t.Fatalf("%d audit records (want 2), secret in them: %v", audited, leaked)
	}
	if err := e.st.DeleteFenceDevice(actorCtx(t), e.c.ID, e.nodes[0].ID, ptr64(1)); !errors.Is(err, backstop.ErrPreconditionFailed) {
		t.Fatalf("delete with a stale If-Match: %v", err)
	}
	if err := e.st.DeleteFenceDevice(actorCtx(t), e.c.ID, e.nodes[0].ID, ptr64(2)); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteFenceDevice(actorCtx(t), e.c.ID, e.nodes[0].ID, nil); !errors.Is(err, backstop.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

// Never two copies: a down node with a fence device awaits its fence;
// nothing moves off it (the snapshot says so and StartMove refuses)
// until RecordFence confirms a fence made for this down episode. A
// failed fence changes nothing but the event log.
func TestAwaitingFenceGate(t *testing.T) {
	e := newJudgeEnv(t, 2)
	h := e.placeOnFirst()
	if _, err := putDevice(t, e, 0, nil); err != nil {
		t.Fatal(err)
	}
	e.silenceFirst()
	e.judge()
	e.wantStates("down", "up")

	awaiting := func() bool {
		t.Helper()
		st, err := e.st.ClusterStatus(t.Context(), e.c.ID)
		if err != nil {
			t.Fatal(err)
		}
		return st.Nodes[0].AwaitingFence || st.Nodes[1].AwaitingFence
	}
	if !awaiting() {
		t.Fatal("a down node with a fence device and no fence does not await its fence")
	}
	jobs, err := e.st.FenceJobs(t.Context())
	if err != nil || len(jobs) != 1 || jobs[0].Device.NodeID != e.nodes[0].ID || jobs[0].NodeName != "n1" {
		t.Fatalf("FenceJobs: %+v, %v", jobs, err)
	}
	move := func() error {
		_, _, err := e.st.StartMove(t.Context(), e.term, backstop.MoveRequest{Kind: backstop.MoveFailover, ClusterID: e.c.ID, HierarchyID: h.ID,
			ExpectEpoch: -1, To: e.nodes[1].ID, DetectedAt: time.Now(), Decision: backstop.DecisionRecord{ClusterID: e.c.ID, HierarchyID: h.ID,
				Kind: "failover", From: e.nodes[0].ID, To: e.nodes[1].ID, Reason: "test", Key: "k"}}, fakeSign)
		return err
	}
	if err := move(); !errors.Is(err, backstop.ErrConflict) {
		t.Fatalf("StartMove off a node awaiting its fence: %v, want ErrConflict", err)
	}
	res := backstop.FenceResult{ClusterID: e.c.ID, NodeID: e.nodes[0].ID, NodeName: "n1", DownSince: jobs[0].DownSince, Agent: "fence_redfish",
		Duration: 700 * time.Millisecond, Attempt: 1, Detail: "off: fence_redfish exited 1 (generic error)"}
	if err := e.st.RecordFence(t.Context(), e.term, res); err != nil {
		t.Fatal(err)
	}
	if !awaiting() {
		t.Fatal("a failed fence released the node")
	}
	// A success for an earlier down episode confirms nothing.
	old := res
	old.OK, old.DownSince = true, jobs[0].DownSince.Add(-time.Minute)
	if err := e.st.RecordFence(t.Context(), e.term, old); err != nil {
		t.Fatal(err)
	}
	if !awaiting() {
		t.Fatal("a fence of an earlier down episode released the node")
	}
	// A success recorded under another term than the current one is refused.
	res.OK = true
	if err := e.st.RecordFence(t.Context(), e.term+1, res); !errors.Is(err, backstop.ErrStaleTerm) {
		t.Fatalf("RecordFence with a stale term: %v", err)
	}
	if err := e.st.RecordFence(t.Context(), e.term, res); err != nil {
		t.Fatal(err)
	}
	if awaiting() {
		t.Fatal("still awaiting after a confirmed fence")
	}
	if jobs, err := e.st.FenceJobs(t.Context()); err != nil || len(jobs) != 0 {
		t.Fatalf("FenceJobs after the fence: %+v, %v", jobs, err)
	}
	if err := move(); err != nil {
		t.Fatalf("StartMove after the fence: %v", err)
	}
	var fencedAt *time.Time
	if err := e.st.Pool().QueryRow(t.Context(), `SELECT fenced_at FROM incidents WHERE hierarchy_id = $1`, h.ID).Scan(&fencedAt); err != nil || fencedAt == nil {
		t.Fatalf("the incident does not record the fence: %v, %v", fencedAt, err)
	}
	rows, err := e.st.Pool().Query(t.Context(), `SELECT type || ':' || severity FROM events WHERE cluster_id = $1 AND type LIKE 'fence.%' ORDER BY seq`, e.c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var evs []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, s)
	}
	if fmt.Sprint(evs) != "[fence.failed:critical fence.succeeded:info fence.succeeded:info]" {
		t.Fatalf("fence events %v", evs)
	}
}

// A node that comes back (heartbeats) no longer awaits a fence, and a
// node without a fence device never does.
func TestAwaitingFenceClearedByHeartbeat(t *testing.T) {
	e := newJudgeEnv(t, 3)
	if _, err := putDevice(t, e, 0, nil); err != nil {
		t.Fatal(err)
	}
	e.lapse(0)
	e.lapse(2)
	e.set(1, "up", "-10 ms", "1 s", map[int]string{0: "down", 2: "down"})
	e.judge()
	e.wantStates("down", "up", "down")
	st, err := e.st.ClusterStatus(t.Context(), e.c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Nodes[0].AwaitingFence || st.Nodes[2].AwaitingFence {
		t.Fatalf("awaiting fence: n1 %v (want true), n3 %v (no device: want false)", st.Nodes[0].AwaitingFence, st.Nodes[2].AwaitingFence)
	}
	e.set(0, "up", "-1 ms", "1 s", map[int]string{1: "up"})
	if jobs, err := e.st.FenceJobs(t.Context()); err != nil || len(jobs) != 0 {
		t.Fatalf("FenceJobs after the node came back: %+v, %v", jobs, err)
	}
}
