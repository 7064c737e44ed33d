package store

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// ListAudit lists audit records, oldest first.
func (s *Store) ListAudit(ctx context.Context, p backstop.Page) ([]backstop.AuditRecord, string, error) {
	after, err := intCursor(p)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, coalesce(actor_token_id::text, ''), action, target_type, target_id,
		coalesce(cluster_id::text, ''), details FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2`, after, pageLimit(p))
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.AuditRecord, error) {
		var a backstop.AuditRecord
		err := r.Scan(&a.ID, &a.At, &a.Actor, &a.ActorTokenID, &a.Action, &a.TargetType, &a.TargetID, &a.ClusterID, &a.Details)
		return a, err
	})
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, next := trimPage(items, p, func(a backstop.AuditRecord) string { return strconv.FormatInt(a.ID, 10) })
	return items, next, nil
}
