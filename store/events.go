package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop/server/cluster"
)

// writeEvent appends an event to a cluster's log in tx. The sequence comes
// from the cluster row, whose lock (held to commit) orders concurrent
// writers: events become visible in seq order, so a reader following
// `after` never skips one.
func writeEvent(ctx context.Context, tx pgx.Tx, clusterID, typ, severity string, subject map[string]string, details map[string]any, format string, args ...any) error {
	var seq int64
	if err := tx.QueryRow(ctx, `UPDATE clusters SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq`, clusterID).Scan(&seq); err != nil {
		return fmt.Errorf("event %s: %w", typ, err)
	}
	if subject == nil {
		subject = map[string]string{}
	}
	if details == nil {
		details = map[string]any{}
	}
	_, err := tx.Exec(ctx, `INSERT INTO events (cluster_id, seq, id, type, severity, subject, message, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		clusterID, seq, newID(), typ, severity, subject, fmt.Sprintf(format, args...), details)
	return err
}

// ListEvents lists a cluster's events after a sequence number, oldest
// first, optionally of one type and at least one severity.
func (s *Store) ListEvents(ctx context.Context, clusterID string, after int64, typ, minSeverity string, limit int) ([]cluster.Event, error) {
	sev := map[string]int{"": 0, cluster.SeverityInfo: 0, cluster.SeverityWarning: 1, cluster.SeverityCritical: 2}[minSeverity]
	rows, err := s.pool.Query(ctx, `SELECT cluster_id, seq, id, type, severity, subject, message, details, at FROM events
		WHERE cluster_id = $1 AND seq > $2 AND ($3 = '' OR type = $3)
		AND CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END >= $4
		ORDER BY seq LIMIT $5`, clusterID, after, typ, sev, limit)
	if err != nil {
		return nil, interpretError(err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (cluster.Event, error) {
		var e cluster.Event
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
