package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

// Tests of the heartbeat's fast path (RenewLease) and of the failure
// detector never waiting on a heartbeat. Both are about the safety
// promise "never two copies": a lease is only ever granted where the full
// heartbeat would have granted the same one, and a node is never judged
// on a lease a heartbeat is renewing.

func (e *judgeEnv) agent(i int) backstop.AgentIdentity {
	return backstop.AgentIdentity{NodeID: e.nodes[i].ID, ClusterID: e.c.ID, NodeName: e.nodes[i].Name}
}

// leaseLeft is how long node i's lease runs, by the database clock.
func (e *judgeEnv) leaseLeft(i int) time.Duration {
	e.t.Helper()
	var ms float64
	if err := e.st.Pool().QueryRow(e.t.Context(), `SELECT extract(epoch FROM lease_expires_at - now()) * 1000 FROM nodes WHERE id = $1`, e.nodes[i].ID).Scan(&ms); err != nil {
		e.t.Fatal(err)
	}
	return time.Duration(ms * float64(time.Millisecond))
}

func (e *judgeEnv) storedReport(i int) string {
	e.t.Helper()
	var s string
	if err := e.st.Pool().QueryRow(e.t.Context(), `SELECT report::text FROM nodes WHERE id = $1`, e.nodes[i].ID).Scan(&s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

// TestRenewLease: the fast path renews a lease exactly as the full
// heartbeat would, and only where the full heartbeat would do nothing
// else. Invariant (never two copies): a node declared down gets no lease
// from it (its agent must be told to fence, which only RecordHeartbeat
// does), and a restart hold or an incident's deep-check timeline is never
// skipped.
func TestRenewLease(t *testing.T) {
	e := newJudgeEnv(t, 2)
	ctx := t.Context()
	d1, d2 := []byte("digest-1-0123456789abcdef0123456"), []byte("digest-2-0123456789abcdef0123456")
	renew := func(d []byte) (backstop.HeartbeatAck, bool) {
		t.Helper()
		ack, ok, err := e.st.RenewLease(ctx, e.agent(0), backstop.LeaseRenewal{Digest: d})
		if err != nil {
			t.Fatalf("RenewLease: %v", err)
		}
		return ack, ok
	}
	// No digest stored yet: the first report must be stored.
	if _, ok := renew(d1); ok {
		t.Fatal("RenewLease renewed a node with no stored digest")
	}
	if _, ok := renew(nil); ok {
		t.Fatal("RenewLease renewed without a digest")
	}
	raw1 := `{"config_version": 1, "paths": [{"path_id": "0195f7a4-2222-7000-8000-000000000001", "state": "up", "rtt_ms": 0.3, "peer_node_id": "` + e.nodes[1].ID + `"}]}`
	if _, err := e.st.RecordHeartbeat(ctx, e.agent(0), backstop.AgentReport{ConfigVersion: 1, Raw: []byte(raw1), Digest: d1}); err != nil {
		t.Fatal(err)
	}
	stored := e.storedReport(0)

	// Same digest: renewed from now, TTL plus grace, report kept.
	e.exec(`UPDATE nodes SET lease_expires_at = now() + interval '10 ms' WHERE id = $1`, e.nodes[0].ID)
	ack, ok := renew(d1)
	if !ok {
		t.Fatal("RenewLease refused an up node with the same digest")
	}
	if ack.LeaseTTL != time.Second || ack.Term != e.term || ack.DeclaredDown {
		t.Errorf("ack %+v, want a 1 s lease at term %d", ack, e.term)
	}
	if left := e.leaseLeft(0); left < time.Second || left > 1250*time.Millisecond {
		t.Errorf("lease runs %v more, want TTL plus grace (1.25 s)", left)
	}
	if got := e.storedReport(0); got != stored {
		t.Errorf("report rewritten by the fast path: %s, want %s", got, stored)
	}

	// The same content in the next telemetry period: the renewal that
	// carries the report and the previous digest stores both; one whose
	// previous digest does not match changes nothing.
	raw2 := strings.Replace(raw1, `"rtt_ms": 0.3`, `"rtt_ms": 0.7`, 1)
	d1next := []byte("digest-1-0123456789abcdef0123456+next")
	if _, ok, err := e.st.RenewLease(ctx, e.agent(0), backstop.LeaseRenewal{Digest: d1next, Prev: d2, Report: []byte(raw2)}); err != nil || ok {
		t.Fatalf("renewal refreshing from a digest that is not stored: renewed %v, %v", ok, err)
	}
	if got := e.storedReport(0); got != stored {
		t.Errorf("report rewritten by a refused refresh: %s", got)
	}
	if _, ok, err := e.st.RenewLease(ctx, e.agent(0), backstop.LeaseRenewal{Digest: d1next, Prev: d1, Report: []byte(raw2)}); err != nil || !ok {
		t.Fatalf("renewal refreshing the telemetry: renewed %v, %v", ok, err)
	}
	if got := e.storedReport(0); !strings.Contains(got, `"rtt_ms": 0.7`) {
		t.Errorf("telemetry not stored by the refreshing renewal: %s", got)
	}
	stored = e.storedReport(0)
	if _, ok := renew(d1next); !ok {
		t.Fatal("RenewLease refused the digest the refresh stored")
	}
	if _, ok := renew(d1); ok {
		t.Fatal("RenewLease renewed with the digest of the telemetry period before")
	}
	d1 = d1next

	// Another digest: nothing done.
	e.exec(`UPDATE nodes SET lease_expires_at = now() + interval '10 ms' WHERE id = $1`, e.nodes[0].ID)
	if _, ok := renew(d2); ok {
		t.Fatal("RenewLease renewed a node whose report changed")
	}
	if left := e.leaseLeft(0); left > 100*time.Millisecond {
		t.Errorf("a refused fast path renewed the lease (%v left)", left)
	}

	// Declared down: no lease from the fast path; the full heartbeat
	// answers with none and says why.
	e.exec(`UPDATE nodes SET state = 'down', lease_expires_at = now() - interval '1 s' WHERE id = $1`, e.nodes[0].ID)
	if _, ok := renew(d1); ok {
		t.Fatal("RenewLease renewed the lease of a node declared down")
	}
	if left := e.leaseLeft(0); left > 0 {
		t.Errorf("a down node's lease was renewed (%v left)", left)
	}
	ack, err := e.st.RecordHeartbeat(ctx, e.agent(0), backstop.AgentReport{ConfigVersion: 1, Raw: []byte(raw1), Digest: d1})
	if err != nil {
		t.Fatal(err)
	}
	if ack.LeaseTTL != 0 || !ack.DeclaredDown {
		t.Errorf("full heartbeat of a node declared down: %+v, want no lease", ack)
	}

	// A restart hold is the full heartbeat's business.
	e.exec(`UPDATE nodes SET state = 'up', hold_instance = 'a1' WHERE id = $1`, e.nodes[0].ID)
	if _, ok := renew(d1); ok {
		t.Fatal("RenewLease renewed a node under a restart hold")
	}
	e.exec(`UPDATE nodes SET hold_instance = NULL WHERE id = $1`, e.nodes[0].ID)
	if _, ok := renew(d1); !ok {
		t.Fatal("RenewLease refused an up node after its hold ended")
	}

	// An incident waiting for the node's first passing deep check needs
	// the reports' check times: the full heartbeat stores them.
	e.exec(`INSERT INTO incidents (id, cluster_id, hierarchy_id, kind, to_node, reason, detected_at, started_at)
		VALUES (gen_random_uuid(), $1, gen_random_uuid(), 'failover', $2, 'test', now(), now())`, e.c.ID, e.nodes[0].ID)
	if _, ok := renew(d1); ok {
		t.Fatal("RenewLease skipped a report an incident waits for")
	}
	e.exec(`UPDATE incidents SET first_deep_check_at = now() WHERE to_node = $1`, e.nodes[0].ID)
	if _, ok := renew(d1); !ok {
		t.Fatal("RenewLease refused after the incident's timeline ended")
	}

	// A deleted node: nothing to renew, no error (the full heartbeat
	// answers not found).
	e.exec(`DELETE FROM nodes WHERE id = $1`, e.nodes[0].ID)
	if _, ok := renew(d1); ok {
		t.Fatal("RenewLease renewed a deleted node")
	}
	if _, err := e.st.RecordHeartbeat(ctx, e.agent(0), backstop.AgentReport{Raw: []byte(raw1), Digest: d1}); !errors.Is(err, backstop.ErrNotFound) {
		t.Errorf("heartbeat of a deleted node: %v, want not found", err)
	}
}

// TestJudgeSkipsLockedNodes: the failure detector does not wait on a
// node whose row a heartbeat holds, and does not judge it; once the
// heartbeat is done (here: it did not renew) the next pass judges it.
// Invariant: no node is declared down on a lease being renewed, and the
// detector never holds up heartbeats by waiting itself.
func TestJudgeSkipsLockedNodes(t *testing.T) {
	e := newJudgeEnv(t, 3)
	e.lapse(0)
	e.set(1, "up", "-10 ms", "1 s", map[int]string{0: "down", 2: "up"})
	e.set(2, "up", "-10 ms", "1 s", map[int]string{0: "down", 1: "up"})
	tx, err := e.st.Pool().Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	if _, err := tx.Exec(t.Context(), `SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE`, e.nodes[0].ID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	trs, err := e.st.JudgeNodes(ctx, e.term)
	if err != nil {
		t.Fatalf("JudgeNodes with a node row locked: %v (it waited on the lock)", err)
	}
	if len(trs) != 0 {
		t.Fatalf("JudgeNodes judged a node a heartbeat holds: %+v", trs)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	trs = e.judge()
	if len(trs) != 1 || trs[0].NodeID != e.nodes[0].ID || trs[0].To != backstop.NodeDown {
		t.Fatalf("after the heartbeat let go: %+v, want node 1 down", trs)
	}
}

// TestRenewLeaseGroups: renewals that arrive together are committed
// together, and each still gets the answer a lone renewal would: the
// nodes whose stored report has the digest and that are up are renewed,
// a node declared down and a node with another digest are not, and a
// node whose row another transaction holds is answered at once with "not
// renewed" (the caller then takes the full heartbeat, which waits for
// the lock) instead of holding up the whole group. Invariant (never two
// copies): grouping grants no lease a lone RenewLease would refuse.
func TestRenewLeaseGroups(t *testing.T) {
	const n = 24
	e := newJudgeEnv(t, n)
	ctx := t.Context()
	digest := func(i int) []byte { return []byte(fmt.Sprintf("digest-%02d-0123456789abcdef012345", i)) }
	for i := range n {
		if _, err := e.st.RecordHeartbeat(ctx, e.agent(i), backstop.AgentReport{ConfigVersion: 1, Raw: []byte(`{"config_version": 1}`), Digest: digest(i)}); err != nil {
			t.Fatal(err)
		}
	}
	const down, changed, locked = 3, 5, 7
	e.exec(`UPDATE nodes SET state = 'down', lease_expires_at = now() - interval '1 s' WHERE id = $1`, e.nodes[down].ID)
	e.exec(`UPDATE nodes SET lease_expires_at = now() + interval '10 ms'`)
	tx, err := e.st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE`, e.nodes[locked].ID); err != nil {
		t.Fatal(err)
	}

	// Every node renews several times at once, so groups form (the
	// in-flight limit holds the rest back while the first are written).
	const rounds = 4
	type answer struct {
		ok  bool
		ack backstop.HeartbeatAck
		err error
	}
	answers := make([][rounds]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		for k := range rounds {
			wg.Go(func() {
				d := digest(i)
				if i == changed {
					d = digest(99)
				}
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				ack, ok, err := e.st.RenewLease(rctx, e.agent(i), backstop.LeaseRenewal{Digest: d})
				answers[i][k] = answer{ok, ack, err}
			})
		}
	}
	wg.Wait()
	for i := range n {
		want := i != down && i != changed && i != locked
		renewed := 0
		for k := range rounds {
			a := answers[i][k]
			if a.err != nil {
				t.Fatalf("node %d renewal %d: %v (a locked row held up the group?)", i, k, a.err)
			}
			if a.ok && !want {
				t.Errorf("node %d renewal %d: renewed, want refused", i, k)
			}
			if a.ok {
				renewed++
			}
			if a.ok && (a.ack.LeaseTTL != time.Second || a.ack.Term != e.term) {
				t.Errorf("node %d renewal %d: ack %+v, want a 1 s lease at term %d", i, k, a.ack, e.term)
			}
		}
		// A node's renewals in two groups written at once: the later
		// group skips the row the earlier holds and answers "not
		// renewed" (that heartbeat takes the full path), so not every
		// renewal of a healthy node need succeed, but the first group
		// to reach its row renews it.
		if want && renewed == 0 {
			t.Errorf("node %d: none of its %d renewals renewed", i, rounds)
		}
		if left := e.leaseLeft(i); want != (left > 500*time.Millisecond) {
			t.Errorf("node %d: lease runs %v more after the groups; renewed should be %v", i, left, want)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := e.st.RenewLease(ctx, e.agent(locked), backstop.LeaseRenewal{Digest: digest(locked)}); err != nil || !ok {
		t.Errorf("node %d after its row was let go: renewed %v, %v", locked, ok, err)
	}
}

// TestHeartbeatGivesUpOnAHeldRow: a full heartbeat whose node row another
// transaction holds waits at most heartbeatLockWait, then fails with
// ErrBusy (503 to the agent) and grants nothing. Invariant (never two
// copies): giving up only ever shortens a lease; and a heartbeat never
// holds a connection for long behind someone else's lock.
func TestHeartbeatGivesUpOnAHeldRow(t *testing.T) {
	e := newJudgeEnv(t, 2)
	ctx := t.Context()
	e.exec(`UPDATE nodes SET lease_expires_at = now() + interval '10 ms' WHERE id = $1`, e.nodes[0].ID)
	tx, err := e.st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE`, e.nodes[0].ID); err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = e.st.RecordHeartbeat(hctx, e.agent(0), backstop.AgentReport{ConfigVersion: 1, Raw: []byte(`{"config_version": 1}`)})
	if !errors.Is(err, backstop.ErrBusy) {
		t.Fatalf("heartbeat behind a held row: %v, want ErrBusy", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if left := e.leaseLeft(0); left > 100*time.Millisecond {
		t.Errorf("a heartbeat that gave up renewed the lease (%v left)", left)
	}
	if _, err := e.st.RecordHeartbeat(ctx, e.agent(0), backstop.AgentReport{ConfigVersion: 1, Raw: []byte(`{"config_version": 1}`)}); err != nil {
		t.Fatalf("heartbeat after the row was let go: %v", err)
	}
}
