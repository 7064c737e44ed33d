package store

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// ListAudit lists the audit records f selects, oldest first (newest
// first with f.Newest).
func (s *Store) ListAudit(ctx context.Context, f backstop.AuditFilter, p backstop.Page) ([]backstop.AuditRecord, string, error) {
	after, err := intCursor(p)
	if err != nil {
		return nil, "", err
	}
	// The cursor is the last id of the previous page: later ids follow
	// it oldest first, earlier ones newest first.
	keyset, order := `id > $1`, `id`
	if f.Newest {
		keyset, order = `($1 = 0 OR id < $1)`, `id DESC`
	}
	action, prefix := f.Action, ""
	if p, ok := strings.CutSuffix(f.Action, ".*"); ok {
		action, prefix = "", p+"."
	}
	var since, until *time.Time
	if !f.Since.IsZero() {
		since = &f.Since
	}
	if !f.Until.IsZero() {
		until = &f.Until
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, coalesce(actor_token_id::text, ''), action, target_type, target_id,
		coalesce(cluster_id::text, ''), details FROM audit_log
		WHERE `+keyset+`
			AND ($3 = '' OR actor = $3)
			AND ($4 = '' OR cluster_id::text = $4)
			AND ($5 = '' OR action = $5)
			AND ($6 = '' OR starts_with(action, $6))
			AND ($7::timestamptz IS NULL OR at >= $7)
			AND ($8::timestamptz IS NULL OR at < $8)
		ORDER BY `+order+` LIMIT $2`, after, pageLimit(p), f.Actor, f.ClusterID, action, prefix, since, until)
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
