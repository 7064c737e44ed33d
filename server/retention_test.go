package server_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/server/notify"
)

// TestDeliveryRetention proves the delivery log is bounded: Prune deletes
// the finished deliveries (and their attempts) older than the retention,
// in batches, and keeps the recent ones and every pending one, however
// old.
func TestDeliveryRetention(t *testing.T) {
	// PruneBatch 2 makes one Prune run several batches; the hour-long
	// interval keeps the service's own pruning out of the way.
	e := newDeliveryEnv(t, notify.Config{Retention: time.Hour, PruneInterval: time.Hour, PruneBatch: 2})
	cid, nodes := clusterWithNodes(e, 1)
	r := newReceiver(t)
	wid := r.subscribe(e, map[string]any{})
	maintenance(e, cid, nodes[0], 4) // 8 events, 8 deliveries
	testkit.Eventually(t, 30*time.Second, "8 deliveries", func() bool { return len(r.received()) >= 8 })

	conn, err := pgx.Connect(t.Context(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var ids []int64
	rows, err := conn.Query(t.Context(), `SELECT id FROM deliveries WHERE status = 'delivered' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil || len(ids) < 8 {
		t.Fatalf("delivered deliveries %v (%v), want 8", ids, err)
	}
	// Age them: the first five finished two hours ago; the sixth is an
	// old delivery still pending (its job long done, so nothing retries
	// it during the test); the rest are recent.
	old, pending := ids[:5], ids[5]
	if _, err := conn.Exec(t.Context(), `UPDATE deliveries SET finished_at = now() - interval '2 hours', created_at = now() - interval '2 hours' WHERE id = ANY($1)`, old); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `UPDATE deliveries SET status = 'pending', finished_at = NULL, created_at = now() - interval '2 hours',
		next_attempt_at = now() + interval '1 day' WHERE id = $1`, pending); err != nil {
		t.Fatal(err)
	}

	n, err := e.deliver.Prune(t.Context())
	if err != nil || n != 5 {
		t.Fatalf("Prune: %d, %v; want 5 deleted", n, err)
	}
	var left []int64
	rows, err = conn.Query(t.Context(), `SELECT id FROM deliveries ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	if !slices.Equal(left, ids[5:]) {
		t.Errorf("deliveries left %v, want %v (the pending one and the recent ones)", left, ids[5:])
	}
	var attempts int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM delivery_attempts WHERE delivery_id = ANY($1)`, old).Scan(&attempts); err != nil || attempts != 0 {
		t.Errorf("%d attempts of pruned deliveries left (%v)", attempts, err)
	}
	// The API's delivery log shows what is left.
	resp, b := e.do("GET", "/v1/webhooks/"+wid+"/deliveries?limit=100", nil)
	var l struct {
		Items []json.RawMessage `json:"items"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &l) != nil || len(l.Items) != len(ids)-5 {
		t.Errorf("delivery log: %d, %d items, want %d: %s", resp.StatusCode, len(l.Items), len(ids)-5, b)
	}
	if n, err := e.deliver.Prune(t.Context()); err != nil || n != 0 {
		t.Errorf("second Prune: %d, %v; want nothing to do", n, err)
	}
}
