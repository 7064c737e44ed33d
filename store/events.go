package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/backstop-ha/backstop"
)

// EventNotifyChannel is the PostgreSQL NOTIFY channel writeEvent signals
// on, in the event's transaction (so only committed events are signalled).
// The payload is "<cluster_id> <seq> <severity> <type>".
const EventNotifyChannel = "backstop_events"

// writeEvent appends an event to a cluster's log in tx. The sequence comes
// from the cluster row, whose lock (held to commit) orders concurrent
// writers: events become visible in seq order, so a reader following
// `after` never skips one.
//
// In the same transaction (the outbox) it queues one delivery for every
// enabled target whose filters match, with the River job that will make
// it, and signals EventNotifyChannel for live streams: the deliveries and
// the signal exist exactly when the event does.
func writeEvent(ctx context.Context, tx pgx.Tx, clusterID, typ, severity string, subject map[string]string, details map[string]any, format string, args ...any) error {
	var seq int64
	var at time.Time
	if err := tx.QueryRow(ctx, `UPDATE clusters SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq, now()`, clusterID).Scan(&seq, &at); err != nil {
		return fmt.Errorf("event %s: %w", typ, err)
	}
	if subject == nil {
		subject = map[string]string{}
	}
	if details == nil {
		details = map[string]any{}
	}
	e := backstop.Event{ClusterID: clusterID, Seq: seq, ID: newID(), Type: typ, Severity: severity, Subject: subject,
		Message: fmt.Sprintf(format, args...), Details: details, At: at}
	payload, err := json.Marshal(EventJSON(e))
	if err != nil {
		return fmt.Errorf("event %s: %w", typ, err)
	}
	var ids []int64
	err = tx.QueryRow(ctx, `WITH ev AS (
			INSERT INTO events (cluster_id, seq, id, type, severity, subject, message, details, at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		), d AS (
			INSERT INTO deliveries (public_id, target_id, kind, event_id, cluster_id, event_seq, event_type, payload)
			SELECT gen_random_uuid(), t.id, 'event', $3, $1, $2, $4, $10 FROM targets t
			WHERE t.enabled
			AND (cardinality(t.cluster_ids) = 0 OR $1 = ANY (t.cluster_ids))
			AND `+severityRankSQL("$5")+` >= `+severityRankSQL("t.min_severity")+`
			AND (cardinality(t.event_types) = 0 OR $4 = ANY (t.event_types)
				OR EXISTS (SELECT 1 FROM unnest(t.event_types) p WHERE p LIKE '%.*' AND starts_with($4, left(p, -1))))
			-- a target never hears about its own dead letters: that would loop
			AND NOT ($4 = 'delivery.dead_lettered' AND t.id::text = $6::jsonb->>'target_id')
			ORDER BY t.id
			RETURNING id
		)
		SELECT coalesce((SELECT array_agg(id ORDER BY id) FROM d), '{}'), pg_notify($11, $12)`,
		clusterID, seq, e.ID, typ, severity, subject, e.Message, details, at, payload,
		EventNotifyChannel, fmt.Sprintf("%s %d %s %s", clusterID, seq, severity, typ)).Scan(&ids, nil)
	if err != nil {
		return fmt.Errorf("event %s: %w", typ, err)
	}
	return queueDeliveriesTx(ctx, tx, ids)
}

// severityRankSQL ranks a severity column or parameter as
// backstop.SeverityRank does.
func severityRankSQL(x string) string {
	return `(CASE ` + x + `::text WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)`
}

// EventJSON is an event as the API, the stream and webhooks show it (the
// contract's Event schema).
func EventJSON(e backstop.Event) map[string]any {
	return map[string]any{
		"seq": e.Seq, "id": e.ID, "cluster_id": e.ClusterID, "type": e.Type, "severity": e.Severity,
		"message": e.Message, "subject": e.Subject, "details": e.Details, "at": e.At.UTC().Format(time.RFC3339Nano),
	}
}

// inserter inserts delivery jobs in the caller's transaction. It is an
// insert-only River client: it never works jobs (the notify package's
// client does), so it needs no pool.
var inserter = sync.OnceValues(func() (*river.Client[pgx.Tx], error) {
	return river.NewClient(riverpgxv5.New(nil), &river.Config{SkipUnknownJobCheck: true})
})

// deliveryMaxAttempts bounds River's own retries of a delivery job, which
// happen only when the worker itself fails (database errors): the retry
// budget of the delivery (its attempts at the receiver) is kept in the
// deliveries table, and the job snoozes between attempts.
const deliveryMaxAttempts = 10000

// queueDeliveriesTx inserts one River job per delivery, in tx.
func queueDeliveriesTx(ctx context.Context, tx pgx.Tx, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	rc, err := inserter()
	if err != nil {
		return fmt.Errorf("job queue: %w", err)
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: backstop.DeliveryJob{DeliveryID: id},
			InsertOpts: &river.InsertOpts{Queue: backstop.DeliveryQueue, MaxAttempts: deliveryMaxAttempts}}
	}
	if _, err := rc.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("queue deliveries: %w", err)
	}
	return nil
}

// ListEvents lists a cluster's events after a sequence number, oldest
// first, optionally of one type and at least one severity.
func (s *Store) ListEvents(ctx context.Context, f backstop.EventFilter) ([]backstop.Event, error) {
	clusterID, after, typ, minSeverity, limit := f.ClusterID, f.After, f.Type, f.MinSeverity, f.Limit
	sev := map[string]int{"": 0, backstop.SeverityInfo: 0, backstop.SeverityWarning: 1, backstop.SeverityCritical: 2}[minSeverity]
	rows, err := s.pool.Query(ctx, `SELECT cluster_id, seq, id, type, severity, subject, message, details, at FROM events
		WHERE cluster_id = $1 AND seq > $2 AND ($3 = '' OR type = $3)
		AND CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END >= $4
		ORDER BY seq LIMIT $5`, clusterID, after, typ, sev, limit)
	if err != nil {
		return nil, interpretError(err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Event, error) {
		var e backstop.Event
		err := r.Scan(&e.ClusterID, &e.Seq, &e.ID, &e.Type, &e.Severity, &e.Subject, &e.Message, &e.Details, &e.At)
		return e, err
	})
	if err != nil {
		return nil, interpretError(err)
	}
	if len(evs) == 0 {
		if _, err := s.FindClusterByID(ctx, clusterID); err != nil {
			return nil, err
		}
	}
	return evs, nil
}

// ListenEvents calls fn for every event committed from now on (by any
// replica) until ctx ends or the connection fails. Notifications can be
// lost when it fails: callers read the log after every restart.
func (s *Store) ListenEvents(ctx context.Context, fn func(backstop.EventSignal)) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN `+EventNotifyChannel); err != nil {
		return err
	}
	// UNLISTEN before the connection returns to the pool; ctx is over by
	// then, so use a fresh one.
	defer conn.Exec(context.Background(), `UNLISTEN *`) //nolint:errcheck
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		f := strings.SplitN(n.Payload, " ", 4)
		if len(f) != 4 {
			continue
		}
		seq, _ := strconv.ParseInt(f[1], 10, 64)
		fn(backstop.EventSignal{ClusterID: f[0], Seq: seq, Severity: f[2], Type: f[3]})
	}
}
