package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// SetMaintenance puts a node in maintenance or takes it out. Asking for
// what already holds changes nothing: no event, no new version and no
// audit record, so that PUT and DELETE are idempotent.
func (s *Store) SetMaintenance(ctx context.Context, clusterID, nodeID string, on bool) (backstop.Node, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Node, error) {
		n, err := scanNode(tx.QueryRow(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, nodeID))
		if err != nil {
			return n, fmt.Errorf("node %s: %w", nodeID, interpretError(err))
		}
		if n.Maintenance == on {
			return n, nil // already so: no event, no new version, no audit record
		}
		n, err = scanNode(tx.QueryRow(ctx, `UPDATE nodes SET maintenance = $3, version = version + 1, updated_at = now()
			WHERE cluster_id = $1 AND id = $2 RETURNING `+nodeColumns, clusterID, nodeID, on))
		if err != nil {
			return n, fmt.Errorf("node %s: %w", nodeID, interpretError(err))
		}
		typ, msg := "node.maintenance_ended", "node %s left maintenance"
		if on {
			typ, msg = "node.maintenance_started", "node %s is in maintenance"
		}
		if err := writeEvent(ctx, tx, clusterID, typ, backstop.SeverityInfo, map[string]string{"node_id": nodeID}, nil, msg, n.Name); err != nil {
			return n, err
		}
		return n, audit(ctx, tx, "node."+map[bool]string{true: "maintenance_on", false: "maintenance_off"}[on], "node", nodeID, clusterID, nil)
	})
}

// ClearFailedMark makes a node a candidate for a hierarchy again.
func (s *Store) ClearFailedMark(ctx context.Context, clusterID, hierarchyID, nodeID string) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		tag, err := tx.Exec(ctx, `DELETE FROM failed_marks m USING hierarchies h WHERE m.hierarchy_id = h.id AND h.cluster_id = $1
			AND m.hierarchy_id = $2 AND m.node_id = $3`, clusterID, hierarchyID, nodeID)
		if err != nil {
			return struct{}{}, err
		}
		if tag.RowsAffected() == 0 {
			return struct{}{}, fmt.Errorf("failed mark of hierarchy %s on node %s: %w", hierarchyID, nodeID, backstop.ErrNotFound)
		}
		// A placement still failed on that node would be marked again at
		// once: leave it out of service there instead.
		if _, err := tx.Exec(ctx, `UPDATE hierarchies SET placement_state = 'out_of_service', placement_detail = 'failed mark cleared by an operator',
			placement_updated_at = now() WHERE id = $1 AND placement_node_id = $2 AND placement_state = 'failed'`, hierarchyID, nodeID); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, audit(ctx, tx, "hierarchy.clear_failed_mark", "hierarchy", hierarchyID, clusterID, map[string]any{"node_id": nodeID})
	})
	return err
}

// LastDecision returns the newest stored decision about a hierarchy; ok is
// false when there is none.
func (s *Store) LastDecision(ctx context.Context, hierarchyID string) (backstop.DecisionRecord, bool, error) {
	var d backstop.DecisionRecord
	var from, to *string
	err := s.pool.QueryRow(ctx, `SELECT cluster_id, hierarchy_id, kind, from_node::text, to_node::text, reason, candidates, inputs, term, at
		FROM decisions WHERE hierarchy_id = $1 ORDER BY id DESC LIMIT 1`, hierarchyID).Scan(
		&d.ClusterID, &d.HierarchyID, &d.Kind, &from, &to, &d.Reason, &d.Candidates, &d.Inputs, &d.Term, &d.At)
	if err == pgx.ErrNoRows {
		return d, false, nil
	}
	d.From, d.To = deref(from), deref(to)
	return d, err == nil, interpretError(err)
}

// FailedMarks lists the nodes a hierarchy is marked failed on.
func (s *Store) FailedMarks(ctx context.Context, hierarchyID string) ([]backstop.FailedMark, error) {
	rows, err := s.pool.Query(ctx, `SELECT node_id, reason, at FROM failed_marks WHERE hierarchy_id = $1 ORDER BY at`, hierarchyID)
	if err != nil {
		return nil, interpretError(err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.FailedMark, error) {
		var m backstop.FailedMark
		err := r.Scan(&m.NodeID, &m.Reason, &m.At)
		return m, err
	})
	return ms, interpretError(err)
}

const incidentColumns = `id, cluster_id, hierarchy_id, kind, coalesce(from_node::text, ''), coalesce(to_node::text, ''), reason, state,
	detected_at, decided_at, stopped_at, started_at, first_deep_check_at, recovery_ms, fenced_at`

// ListIncidents lists a cluster's incidents, oldest first.
func (s *Store) ListIncidents(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Incident, string, error) {
	after, err := idCursor(p)
	if err != nil {
		return nil, "", err
	}
	return listInCluster(ctx, s, clusterID, p, `SELECT `+incidentColumns+` FROM incidents WHERE cluster_id = $1 AND id > $2 ORDER BY id LIMIT $3`,
		[]any{clusterID, after, pageLimit(p)}, func(r pgx.Row) (backstop.Incident, error) {
			var i backstop.Incident
			err := r.Scan(&i.ID, &i.ClusterID, &i.HierarchyID, &i.Kind, &i.From, &i.To, &i.Reason, &i.State,
				&i.DetectedAt, &i.DecidedAt, &i.StoppedAt, &i.StartedAt, &i.FirstDeepCheckAt, &i.RecoveryMS, &i.FencedAt)
			return i, err
		}, func(i backstop.Incident) string { return i.ID })
}

// ActiveHierarchiesOn lists the ids of hierarchies in service (or
// starting) on a node.
func (s *Store) ActiveHierarchiesOn(ctx context.Context, nodeID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::text FROM hierarchies WHERE placement_node_id = $1
		AND placement_state IN ('in_service', 'starting') ORDER BY id`, nodeID)
	if err != nil {
		return nil, interpretError(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, interpretError(err)
}

// OperationsDone reports whether every listed operation ended.
func (s *Store) OperationsDone(ctx context.Context, ids []string) (bool, error) {
	if len(ids) == 0 {
		return true, nil
	}
	var open int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM operations WHERE id = ANY($1::uuid[]) AND state IN ('pending', 'running')`, ids).Scan(&open)
	return open == 0, interpretError(err)
}
