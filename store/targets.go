package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// Delivery targets: webhook receivers and SNMP managers share one table
// (targets), so writeEvent matches them with one query.

const targetColumns = `id, kind, name, description, enabled, event_types, min_severity, cluster_ids::text[], config, secret, version, created_at, updated_at`

func scanTarget(row pgx.Row) (backstop.Target, error) {
	var t backstop.Target
	var cfg []byte
	err := row.Scan(&t.ID, &t.Kind, &t.Name, &t.Description, &t.Enabled, &t.Filter.EventTypes, &t.Filter.MinSeverity,
		&t.Filter.ClusterIDs, &cfg, &t.Secret, &t.Version, &t.CreatedAt, &t.UpdatedAt)
	if err != nil {
		return t, err
	}
	return t, unmarshalTargetConfig(&t, cfg)
}

func unmarshalTargetConfig(t *backstop.Target, cfg []byte) error {
	switch t.Kind {
	case backstop.TargetWebhook:
		t.Webhook = &backstop.WebhookConfig{}
		return json.Unmarshal(cfg, t.Webhook)
	case backstop.TargetSNMP:
		t.SNMP = &backstop.SNMPConfig{}
		return json.Unmarshal(cfg, t.SNMP)
	}
	return fmt.Errorf("target %s: unknown kind %q", t.ID, t.Kind)
}

func targetConfig(t backstop.Target) ([]byte, error) {
	if t.Kind == backstop.TargetWebhook {
		return json.Marshal(t.Webhook)
	}
	return json.Marshal(t.SNMP)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// CreateTarget stores a new target. The caller chooses t.ID (a UUID), so
// that it can seal t.Secret bound to it first.
func (s *Store) CreateTarget(ctx context.Context, t backstop.Target) (backstop.Target, error) {
	cfg, err := targetConfig(t)
	if err != nil {
		return t, err
	}
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Target, error) {
		out, err := scanTarget(tx.QueryRow(ctx, `INSERT INTO targets (id, kind, name, description, enabled, event_types, min_severity, cluster_ids, config, secret)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[]::uuid[], $9, $10) RETURNING `+targetColumns,
			t.ID, t.Kind, t.Name, t.Description, t.Enabled, nonNil(t.Filter.EventTypes), t.Filter.MinSeverity, nonNil(t.Filter.ClusterIDs), cfg, t.Secret))
		if err != nil {
			return out, err
		}
		return out, audit(ctx, tx, t.Kind+".create", t.Kind, out.ID, "", map[string]any{"name": out.Name})
	})
}

// FindTarget returns a target of a kind, or backstop.ErrNotFound.
func (s *Store) FindTarget(ctx context.Context, kind, id string) (backstop.Target, error) {
	t, err := scanTarget(s.pool.QueryRow(ctx, `SELECT `+targetColumns+` FROM targets WHERE id = $1 AND kind = $2`, id, kind))
	if err != nil {
		return t, fmt.Errorf("%s %s: %w", targetNoun(kind), id, interpretError(err))
	}
	return t, nil
}

func targetNoun(kind string) string {
	if kind == backstop.TargetSNMP {
		return "SNMP target"
	}
	return "webhook"
}

// ListTargets lists the targets of a kind, oldest first.
func (s *Store) ListTargets(ctx context.Context, kind string, p backstop.Page) ([]backstop.Target, string, error) {
	after, err := idCursor(p)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+targetColumns+` FROM targets WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3`, kind, after, pageLimit(p))
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Target, error) { return scanTarget(r) })
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, next := trimPage(items, p, func(t backstop.Target) string { return t.ID })
	return items, next, nil
}

// UpdateTarget changes a target under its row lock: change gets the
// current target and returns the new one (or a validation error).
// Disabling a target cancels its pending deliveries (a disabled target is
// how an operator stops the retries to a receiver that is gone).
func (s *Store) UpdateTarget(ctx context.Context, kind, id string, ifMatch *int64, change func(backstop.Target) (backstop.Target, error)) (backstop.Target, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Target, error) {
		cur, err := scanTarget(tx.QueryRow(ctx, `SELECT `+targetColumns+` FROM targets WHERE id = $1 AND kind = $2 FOR UPDATE`, id, kind))
		if err != nil {
			return cur, fmt.Errorf("%s %s: %w", targetNoun(kind), id, interpretError(err))
		}
		if err := checkVersion(cur.Version, ifMatch); err != nil {
			return cur, err
		}
		t, err := change(cur)
		if err != nil {
			return cur, err
		}
		cfg, err := targetConfig(t)
		if err != nil {
			return t, err
		}
		out, err := scanTarget(tx.QueryRow(ctx, `UPDATE targets SET name = $2, description = $3, enabled = $4, event_types = $5, min_severity = $6,
			cluster_ids = $7::text[]::uuid[], config = $8, secret = $9, version = version + 1, updated_at = now() WHERE id = $1 RETURNING `+targetColumns,
			id, t.Name, t.Description, t.Enabled, nonNil(t.Filter.EventTypes), t.Filter.MinSeverity, nonNil(t.Filter.ClusterIDs), cfg, t.Secret))
		if err != nil {
			return out, err
		}
		if cur.Enabled && !out.Enabled {
			if _, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'cancelled', finished_at = now(), last_error = 'target disabled'
				WHERE target_id = $1 AND status = 'pending'`, id); err != nil {
				return out, err
			}
		}
		return out, audit(ctx, tx, kind+".update", kind, id, "", map[string]any{"enabled": out.Enabled, "secret_changed": string(out.Secret) != string(cur.Secret)})
	})
}

// DeleteTarget removes a target with its deliveries (their queued jobs
// find nothing to do).
func (s *Store) DeleteTarget(ctx context.Context, kind, id string, ifMatch *int64) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		var version int64
		if err := tx.QueryRow(ctx, `SELECT version FROM targets WHERE id = $1 AND kind = $2 FOR UPDATE`, id, kind).Scan(&version); err != nil {
			return struct{}{}, fmt.Errorf("%s %s: %w", targetNoun(kind), id, interpretError(err))
		}
		if err := checkVersion(version, ifMatch); err != nil {
			return struct{}{}, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM targets WHERE id = $1`, id); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, audit(ctx, tx, kind+".delete", kind, id, "", nil)
	})
	return err
}

const deliveryColumns = `d.id, d.public_id, d.target_id, t.kind, d.kind, d.event_id, coalesce(d.cluster_id::text, ''), coalesce(d.event_seq, 0), d.event_type,
	d.payload, d.status, d.attempts, d.next_attempt_at, d.last_error, d.created_at, d.finished_at`

func scanDelivery(row pgx.Row) (backstop.Delivery, error) {
	var d backstop.Delivery
	err := row.Scan(&d.Seq, &d.ID, &d.TargetID, &d.TargetKind, &d.Kind, &d.EventID, &d.ClusterID, &d.EventSeq, &d.EventType,
		&d.Payload, &d.Status, &d.Attempts, &d.NextAttemptAt, &d.LastError, &d.CreatedAt, &d.FinishedAt)
	return d, err
}

// ListDeliveries lists a target's deliveries, newest first, each with its
// attempts. status "" means any.
func (s *Store) ListDeliveries(ctx context.Context, kind, targetID, status string, p backstop.Page) ([]backstop.Delivery, string, error) {
	before := int64(1<<63 - 1)
	if p.Cursor != "" {
		n, err := intCursor(p)
		if err != nil {
			return nil, "", err
		}
		before = n
	}
	if _, err := s.FindTarget(ctx, kind, targetID); err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+deliveryColumns+` FROM deliveries d JOIN targets t ON t.id = d.target_id
		WHERE d.target_id = $1 AND d.id < $2 AND ($3 = '' OR d.status = $3) ORDER BY d.id DESC LIMIT $4`, targetID, before, status, pageLimit(p))
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Delivery, error) { return scanDelivery(r) })
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, next := trimPage(items, p, func(d backstop.Delivery) string { return strconv.FormatInt(d.Seq, 10) })
	if err := s.attachAttempts(ctx, items); err != nil {
		return nil, "", err
	}
	return items, next, nil
}

func (s *Store) attachAttempts(ctx context.Context, ds []backstop.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	idx := map[int64]int{}
	ids := make([]int64, len(ds))
	for i, d := range ds {
		ids[i], idx[d.Seq] = d.Seq, i
		ds[i].Log = []backstop.DeliveryAttempt{}
	}
	rows, err := s.pool.Query(ctx, `SELECT delivery_id, n, at, latency_ms, coalesce(status_code, 0), outcome, error, response_excerpt
		FROM delivery_attempts WHERE delivery_id = ANY ($1) ORDER BY delivery_id, n`, ids)
	if err != nil {
		return interpretError(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var a backstop.DeliveryAttempt
		var ms float64
		if err := rows.Scan(&id, &a.N, &a.At, &ms, &a.StatusCode, &a.Outcome, &a.Error, &a.Excerpt); err != nil {
			return err
		}
		a.Latency = msDuration(ms)
		ds[idx[id]].Log = append(ds[idx[id]].Log, a)
	}
	return interpretError(rows.Err())
}

// FindDelivery returns a delivery of a target with its attempts.
func (s *Store) FindDelivery(ctx context.Context, kind, targetID, id string) (backstop.Delivery, error) {
	d, err := scanDelivery(s.pool.QueryRow(ctx, `SELECT `+deliveryColumns+` FROM deliveries d JOIN targets t ON t.id = d.target_id
		WHERE d.public_id = $1 AND d.target_id = $2 AND t.kind = $3`, id, targetID, kind))
	if err != nil {
		return d, fmt.Errorf("delivery %s: %w", id, interpretError(err))
	}
	ds := []backstop.Delivery{d}
	err = s.attachAttempts(ctx, ds)
	return ds[0], err
}

// Redeliver queues a new delivery of the event of an earlier delivery
// (same event id, so a receiver's deduplication still applies), after
// everything already queued for the target.
func (s *Store) Redeliver(ctx context.Context, kind, targetID, id string) (backstop.Delivery, error) {
	seq, err := withTx(ctx, s, func(tx pgx.Tx) (int64, error) {
		var seq int64
		var enabled bool
		err := tx.QueryRow(ctx, `INSERT INTO deliveries (public_id, target_id, kind, event_id, cluster_id, event_seq, event_type, payload)
			SELECT gen_random_uuid(), d.target_id, 'redelivery', d.event_id, d.cluster_id, d.event_seq, d.event_type, d.payload
			FROM deliveries d JOIN targets t ON t.id = d.target_id
			WHERE d.public_id = $1 AND d.target_id = $2 AND t.kind = $3 AND d.kind IN ('event', 'redelivery')
			RETURNING id, (SELECT enabled FROM targets WHERE id = $2)`, id, targetID, kind).Scan(&seq, &enabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("delivery %s of %s %s (of an event): %w", id, targetNoun(kind), targetID, backstop.ErrNotFound)
		}
		if err != nil {
			return 0, err
		}
		if !enabled {
			return 0, fmt.Errorf("%w: the %s is disabled; enable it first", backstop.ErrConflict, targetNoun(kind))
		}
		if err := queueDeliveriesTx(ctx, tx, []int64{seq}); err != nil {
			return 0, err
		}
		return seq, audit(ctx, tx, kind+".redeliver", kind, targetID, "", map[string]any{"delivery_id": id})
	})
	if err != nil {
		return backstop.Delivery{}, err
	}
	return s.deliveryBySeq(ctx, seq)
}

func (s *Store) deliveryBySeq(ctx context.Context, seq int64) (backstop.Delivery, error) {
	d, err := scanDelivery(s.pool.QueryRow(ctx, `SELECT `+deliveryColumns+` FROM deliveries d JOIN targets t ON t.id = d.target_id WHERE d.id = $1`, seq))
	if err != nil {
		return d, interpretError(err)
	}
	ds := []backstop.Delivery{d}
	err = s.attachAttempts(ctx, ds)
	return ds[0], err
}

// RecordOneShot stores a delivery that is tried once, now, outside the
// queue (a ping or a test trap), with its only attempt.
func (s *Store) RecordOneShot(ctx context.Context, targetID, kind, eventID, eventType string, payload []byte, r backstop.AttemptResult) (backstop.Delivery, error) {
	seq, err := withTx(ctx, s, func(tx pgx.Tx) (int64, error) {
		status, outcome, errText := backstop.DeliveryDelivered, backstop.OutcomeDelivered, ""
		if r.Err != nil {
			status, outcome, errText = backstop.DeliveryDeadLettered, backstop.OutcomeFailed, r.Err.Error()
		}
		var seq int64
		err := tx.QueryRow(ctx, `INSERT INTO deliveries (public_id, target_id, kind, event_id, event_type, payload, status, attempts, last_error, finished_at)
			VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, 1, $7, now()) RETURNING id`,
			targetID, kind, eventID, eventType, payload, status, errText).Scan(&seq)
		if err != nil {
			return 0, err
		}
		return seq, insertAttemptTx(ctx, tx, seq, 1, outcome, r)
	})
	if err != nil {
		return backstop.Delivery{}, err
	}
	return s.deliveryBySeq(ctx, seq)
}

func insertAttemptTx(ctx context.Context, tx pgx.Tx, seq int64, n int, outcome string, r backstop.AttemptResult) error {
	errText := ""
	if r.Err != nil {
		errText = cleanText(r.Err.Error(), 1000)
	}
	var code *int
	if r.StatusCode != 0 {
		code = &r.StatusCode
	}
	_, err := tx.Exec(ctx, `INSERT INTO delivery_attempts (delivery_id, n, latency_ms, status_code, outcome, error, response_excerpt)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, seq, n, float64(r.Latency.Microseconds())/1000, code, outcome, errText, cleanText(r.Excerpt, backstop.MaxExcerpt))
	return err
}
