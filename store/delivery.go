package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/backstop-ha/backstop"
)

// What the delivery workers (package notify) need: a target's deliveries
// are made one at a time, in order, by whichever worker holds the
// target's lease; each attempt and its outcome are recorded with the
// retry schedule in the deliveries table.

// OpenSized is Open with a pool of at most maxConns connections (unless
// the URL sets pool_max_conns): backstopd gives event delivery a pool of
// its own, so slow receivers can never take the connections the API and
// the failover engine need.
func OpenSized(ctx context.Context, url string, maxConns int32) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return &Store{pool: pool}, nil
}

// riverMigrateLock serialises River's migrations between replicas
// starting together (rivermigrate takes no lock of its own).
const riverMigrateLock = 0x6276737472697672 // "bvstrivr"

// MigrateRiver creates or upgrades River's tables (the job queue event
// delivery runs on) under a session advisory lock held on a connection of
// its own: rivermigrate takes no lock, and applies each of its versions
// in a transaction of its own (some cannot share one).
func MigrateRiver(ctx context.Context, pool *pgxpool.Pool) error {
	m, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return fmt.Errorf("migrate job queue: %w", err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate job queue: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(riverMigrateLock)); err != nil {
		return fmt.Errorf("migrate job queue: %w", err)
	}
	// Unlock with a context of its own: the connection goes back to the
	// pool, and must not keep the lock when ctx is over.
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(riverMigrateLock)) //nolint:errcheck
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("migrate job queue: %w", err)
	}
	return nil
}

// LoadDelivery returns a delivery with its target (sealed secret
// included). It returns backstop.ErrNotFound when the target was deleted.
func (s *Store) LoadDelivery(ctx context.Context, seq int64) (backstop.Delivery, backstop.Target, error) {
	d, err := scanDelivery(s.pool.QueryRow(ctx, `SELECT `+deliveryColumns+` FROM deliveries d JOIN targets t ON t.id = d.target_id WHERE d.id = $1`, seq))
	if err != nil {
		return d, backstop.Target{}, interpretError(err)
	}
	t, err := scanTarget(s.pool.QueryRow(ctx, `SELECT `+targetColumns+` FROM targets WHERE id = $1`, d.TargetID))
	return d, t, interpretError(err)
}

// ClaimTarget takes (or renews) the lease of a target for owner, for ttl.
// It returns false when another owner holds an unexpired lease.
func (s *Store) ClaimTarget(ctx context.Context, targetID, owner string, ttl time.Duration) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE targets SET lease_owner = $2, lease_until = now() + $3::bigint * interval '1 millisecond'
		WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < now())`, targetID, owner, ttl.Milliseconds())
	if err != nil {
		return false, interpretError(err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseTarget gives up owner's lease of a target.
func (s *Store) ReleaseTarget(ctx context.Context, targetID, owner string) error {
	_, err := s.pool.Exec(ctx, `UPDATE targets SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2`, targetID, owner)
	return interpretError(err)
}

// HeadDelivery returns the first pending delivery of a target (the next
// one to make, in order) with the target; ok is false when none is
// pending.
func (s *Store) HeadDelivery(ctx context.Context, targetID string) (d backstop.Delivery, t backstop.Target, ok bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT `+deliveryColumns+`, `+prefixed("t.", targetColumns)+` FROM deliveries d JOIN targets t ON t.id = d.target_id
		WHERE d.target_id = $1 AND d.status = 'pending' ORDER BY d.id LIMIT 1`, targetID)
	if err != nil {
		return d, t, false, interpretError(err)
	}
	defer rows.Close()
	if !rows.Next() {
		return d, t, false, interpretError(rows.Err())
	}
	var cfg []byte
	err = rows.Scan(&d.Seq, &d.ID, &d.TargetID, &d.TargetKind, &d.Kind, &d.EventID, &d.ClusterID, &d.EventSeq, &d.EventType,
		&d.Payload, &d.Status, &d.Attempts, &d.NextAttemptAt, &d.LastError, &d.CreatedAt, &d.FinishedAt,
		&t.ID, &t.Kind, &t.Name, &t.Description, &t.Enabled, &t.Filter.EventTypes, &t.Filter.MinSeverity,
		&t.Filter.ClusterIDs, &cfg, &t.Secret, &t.Version, &t.CreatedAt, &t.UpdatedAt)
	if err != nil {
		return d, t, false, interpretError(err)
	}
	if err := unmarshalTargetConfig(&t, cfg); err != nil {
		return d, t, false, err
	}
	return d, t, true, nil
}

func prefixed(p, columns string) string {
	parts := strings.Split(columns, ", ")
	for i, c := range parts {
		parts[i] = p + c
	}
	return strings.Join(parts, ", ")
}

// RecordAttempt stores one attempt of a pending delivery and its outcome,
// in one transaction: delivered; retry at next; or failed, which
// dead-letters the delivery and writes a delivery.dead_lettered event to
// the event's cluster (when it still exists). It returns the delivery's
// new status; a delivery no longer pending (cancelled meanwhile) is left
// as it is.
func (s *Store) RecordAttempt(ctx context.Context, t backstop.Target, d backstop.Delivery, r backstop.AttemptResult, outcome string, next time.Time) (string, error) {
	if outcome != backstop.OutcomeFailed {
		// The common case in one statement (one round trip): the attempt
		// and the delivery's new state.
		errText, next := "", next
		if r.Err != nil {
			errText = cleanText(r.Err.Error(), 1000)
		}
		var code *int
		if r.StatusCode != 0 {
			code = &r.StatusCode
		}
		status := backstop.DeliveryPending
		if outcome == backstop.OutcomeDelivered {
			status, next = backstop.DeliveryDelivered, time.Now()
		}
		tag, err := s.pool.Exec(ctx, `WITH d AS (
				UPDATE deliveries SET attempts = attempts + 1, status = $2, last_error = $3, next_attempt_at = $4,
					finished_at = CASE WHEN $2 = 'delivered' THEN now() END
				WHERE id = $1 AND status = 'pending' RETURNING id, attempts)
			INSERT INTO delivery_attempts (delivery_id, n, latency_ms, status_code, outcome, error, response_excerpt)
			SELECT id, attempts, $5, $6, $7, $3, $8 FROM d`,
			d.Seq, status, errText, next, float64(r.Latency.Microseconds())/1000, code, outcome, cleanText(r.Excerpt, backstop.MaxExcerpt))
		if err != nil {
			return "", interpretError(err)
		}
		if tag.RowsAffected() == 0 { // no longer pending (cancelled)
			err := s.pool.QueryRow(ctx, `SELECT status FROM deliveries WHERE id = $1`, d.Seq).Scan(&status)
			return status, interpretError(err)
		}
		return status, nil
	}
	return withTx(ctx, s, func(tx pgx.Tx) (string, error) {
		var status string
		var attempts int
		if err := tx.QueryRow(ctx, `SELECT status, attempts FROM deliveries WHERE id = $1 FOR UPDATE`, d.Seq).Scan(&status, &attempts); err != nil {
			return "", err
		}
		if status != backstop.DeliveryPending {
			return status, nil
		}
		attempts++
		if err := insertAttemptTx(ctx, tx, d.Seq, attempts, outcome, r); err != nil {
			return "", err
		}
		errText := ""
		if r.Err != nil {
			errText = cleanText(r.Err.Error(), 1000)
		}
		switch outcome {
		case backstop.OutcomeDelivered:
			status = backstop.DeliveryDelivered
			_, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'delivered', attempts = $2, last_error = '', finished_at = now() WHERE id = $1`, d.Seq, attempts)
			return status, err
		case backstop.OutcomeRetry:
			_, err := tx.Exec(ctx, `UPDATE deliveries SET attempts = $2, last_error = $3, next_attempt_at = $4 WHERE id = $1`, d.Seq, attempts, errText, next)
			return status, err
		}
		status = backstop.DeliveryDeadLettered
		if _, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'dead_lettered', attempts = $2, last_error = $3, finished_at = now() WHERE id = $1`,
			d.Seq, attempts, errText); err != nil {
			return "", err
		}
		if d.ClusterID == "" || (d.Kind != backstop.DeliveryEvent && d.Kind != backstop.DeliveryRedelivery) {
			return status, nil
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM clusters WHERE id = $1)`, d.ClusterID).Scan(&exists); err != nil || !exists {
			return status, err
		}
		name := t.Name
		if name == "" {
			name = t.ID
		}
		return status, writeEvent(ctx, tx, d.ClusterID, "delivery.dead_lettered", backstop.SeverityWarning,
			map[string]string{"target_id": t.ID, "delivery_id": d.ID, "event_id": d.EventID},
			map[string]any{"target_kind": t.Kind, "target_name": t.Name, "event_type": d.EventType, "event_seq": d.EventSeq, "attempts": attempts, "last_error": errText},
			"%s delivery of %s #%d to %q given up after %d attempt(s): %s", targetNoun(t.Kind), d.EventType, d.EventSeq, name, attempts, errText)
	})
}

// PruneDeliveries deletes up to limit finished deliveries (delivered,
// dead-lettered or cancelled) that finished before before, oldest first,
// with their attempts, and returns how many it deleted. A pending
// delivery is never pruned, however old. Replicas pruning at once skip
// each other's rows.
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, limit int) (int64, error) {
	// Ids grow with time, so the oldest finished rows come first in the
	// primary key's order and a batch stops early; no index is needed.
	tag, err := s.pool.Exec(ctx, `DELETE FROM deliveries WHERE id IN (
			SELECT id FROM deliveries WHERE status <> 'pending' AND coalesce(finished_at, created_at) < $1
			ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)`, before, limit)
	if err != nil {
		return 0, interpretError(err)
	}
	return tag.RowsAffected(), nil
}

// DeliveryBacklog returns, for every target, how many deliveries are
// pending and since when.
func (s *Store) DeliveryBacklog(ctx context.Context) ([]backstop.TargetBacklog, error) {
	rows, err := s.pool.Query(ctx, `SELECT t.id, t.kind, t.name, count(d.id), coalesce(min(d.created_at), 'epoch')
		FROM targets t LEFT JOIN deliveries d ON d.target_id = t.id AND d.status = 'pending' GROUP BY t.id ORDER BY t.id`)
	if err != nil {
		return nil, interpretError(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.TargetBacklog, error) {
		var b backstop.TargetBacklog
		err := r.Scan(&b.TargetID, &b.Kind, &b.Name, &b.Pending, &b.Oldest)
		if b.Pending == 0 {
			b.Oldest = time.Time{}
		}
		return b, err
	})
	return out, interpretError(err)
}

// snmpPEN is the private enterprise number in the engine id: 32473, the
// number RFC 5612 sets aside for documentation, a placeholder until
// Backstop has its own (see openapi/BACKSTOP-MIB.txt).
const snmpPEN = 32473

// StartSNMPEngine creates the SNMPv3 engine on the first start (id:
// RFC 3411 format 5, the enterprise number then 8 random octets) and
// counts one more boot at every start. Every replica increments it: boots
// only ever grow, which is what receivers check.
func (s *Store) StartSNMPEngine(ctx context.Context) (backstop.SNMPEngine, error) {
	id := []byte{0x80 | byte(snmpPEN>>24), byte(snmpPEN >> 16 & 0xff), byte(snmpPEN >> 8 & 0xff), byte(snmpPEN & 0xff), 5}
	suffix := make([]byte, 8)
	rand.Read(suffix) // never fails (crypto/rand, Go 1.24+)
	id = append(id, suffix...)
	var e backstop.SNMPEngine
	err := s.pool.QueryRow(ctx, `WITH ins AS (INSERT INTO snmp_engine (id, engine_id, boots) VALUES (1, $1, 0) ON CONFLICT (id) DO NOTHING)
		SELECT 1`, id).Scan(nil)
	if err != nil {
		return e, interpretError(err)
	}
	err = s.pool.QueryRow(ctx, `UPDATE snmp_engine SET boots = LEAST(boots + 1, 2147483647), boots_at = now() WHERE id = 1 RETURNING engine_id, boots`).Scan(&e.ID, &e.Boots)
	return e, interpretError(err)
}

// SNMPEngine returns the engine with its current boots and time (seconds
// since the last boot, by the database clock, so that every replica
// agrees).
func (s *Store) SNMPEngine(ctx context.Context) (backstop.SNMPEngine, error) {
	var e backstop.SNMPEngine
	err := s.pool.QueryRow(ctx, `SELECT engine_id, boots, LEAST(floor(extract(epoch FROM now() - boots_at)), 2147483647)::int FROM snmp_engine WHERE id = 1`).Scan(&e.ID, &e.Boots, &e.Time)
	return e, interpretError(err)
}

// cleanText makes s storable as PostgreSQL text of at most max bytes:
// valid UTF-8, no NUL characters, cut on a character boundary.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
