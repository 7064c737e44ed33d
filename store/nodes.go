package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// EnrollmentPrefix starts every enrollment token.
const EnrollmentPrefix = "bse_"

const nodeColumns = `id, cluster_id, name, description, state, version, created_at, updated_at, enrolled_at, facts, last_heartbeat_at, maintenance, report`

func scanNode(row pgx.Row) (backstop.Node, error) {
	// One variable for every destination: what Scan is given escapes,
	// and one allocation per row is cheaper than five (node lists scan
	// 64 rows and more per read).
	var r struct {
		n              backstop.Node
		enrolled, seen *time.Time
		facts          *backstop.HostFacts
		report         []byte
	}
	n := &r.n
	err := row.Scan(&n.ID, &n.ClusterID, &n.Name, &n.Description, &n.State, &n.Version, &n.CreatedAt, &n.UpdatedAt, &r.enrolled, &r.facts, &r.seen, &n.Maintenance, &r.report)
	if err == nil && r.enrolled != nil {
		n.Agent = &backstop.NodeAgent{EnrolledAt: *r.enrolled, LastHeartbeatAt: r.seen, Report: r.report}
		if r.facts != nil {
			n.Agent.Facts = *r.facts
		}
	}
	return *n, err
}

// bumpConfigTx increases a cluster's configuration version: its agents
// fetch their configuration again.
func bumpConfigTx(ctx context.Context, tx pgx.Tx, clusterID string) error {
	_, err := tx.Exec(ctx, `UPDATE clusters SET config_version = config_version + 1 WHERE id = $1`, clusterID)
	return err
}

// CreateNode adds a node to a cluster and returns it with its one-time
// enrollment token, which ends with keyFingerprint (the fingerprint of the
// active signing key) so the agent can recognise the real control plane.
// It returns backstop.ErrLimit when the cluster already has
// backstop.MaxNodes nodes; the cluster row lock makes that count exact under
// concurrent creations.
func (s *Store) CreateNode(ctx context.Context, n backstop.Node, keyFingerprint string) (backstop.Node, backstop.Enrollment, error) {
	enr := backstop.Enrollment{Token: NewSecret(EnrollmentPrefix) + "." + keyFingerprint, ExpiresAt: time.Now().Add(backstop.EnrollmentTTL).UTC().Truncate(time.Microsecond)}
	out, err := withTx(ctx, s, func(tx pgx.Tx) (backstop.Node, error) {
		if _, err := lockClusterTx(ctx, tx, n.ClusterID); err != nil {
			return n, err
		}
		var count int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM nodes WHERE cluster_id = $1`, n.ClusterID).Scan(&count); err != nil {
			return n, err
		}
		if count >= backstop.MaxNodes {
			return n, fmt.Errorf("%w: a cluster has at most %d nodes and this one has %d", backstop.ErrLimit, backstop.MaxNodes, count)
		}
		n.ID = newID()
		out, err := scanNode(tx.QueryRow(ctx, `INSERT INTO nodes (id, cluster_id, name, description, enrollment_hash, enrollment_expires_at)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+nodeColumns,
			n.ID, n.ClusterID, n.Name, n.Description, hashSecret(enr.Token), enr.ExpiresAt))
		if err != nil {
			return out, err
		}
		if err := bumpConfigTx(ctx, tx, n.ClusterID); err != nil {
			return out, err
		}
		return out, audit(ctx, tx, "node.create", "node", out.ID, out.ClusterID, map[string]any{"name": out.Name})
	})
	return out, enr, err
}

// ReissueEnrollment gives a node that has not enrolled yet a new
// enrollment token (ending with keyFingerprint, as CreateNode's), which
// replaces the old one, and returns it. It returns backstop.ErrNotFound,
// backstop.ErrPreconditionFailed for a stale ifMatch version and
// backstop.ErrConflict for a node whose agent already enrolled (delete
// and re-create the node to enroll another machine).
func (s *Store) ReissueEnrollment(ctx context.Context, clusterID, id string, ifMatch *int64, keyFingerprint string) (backstop.Node, backstop.Enrollment, error) {
	enr := backstop.Enrollment{Token: NewSecret(EnrollmentPrefix) + "." + keyFingerprint, ExpiresAt: time.Now().Add(backstop.EnrollmentTTL).UTC().Truncate(time.Microsecond)}
	out, err := withTx(ctx, s, func(tx pgx.Tx) (backstop.Node, error) {
		cur, err := scanNode(tx.QueryRow(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, id))
		if err != nil {
			return cur, fmt.Errorf("node %s: %w", id, interpretError(err))
		}
		if ifMatch != nil && *ifMatch != cur.Version {
			return cur, fmt.Errorf("%w: node %q is at version %d", backstop.ErrPreconditionFailed, cur.Name, cur.Version)
		}
		if cur.Agent != nil {
			return cur, fmt.Errorf("%w: node %q already enrolled (at %s); delete and re-create it to enroll another machine",
				backstop.ErrConflict, cur.Name, cur.Agent.EnrolledAt.UTC().Format(time.RFC3339))
		}
		out, err := scanNode(tx.QueryRow(ctx, `UPDATE nodes SET enrollment_hash = $3, enrollment_expires_at = $4, version = version + 1, updated_at = now()
			WHERE cluster_id = $1 AND id = $2 RETURNING `+nodeColumns, clusterID, id, hashSecret(enr.Token), enr.ExpiresAt))
		if err != nil {
			return out, err
		}
		return out, audit(ctx, tx, "node.reissue_enrollment", "node", out.ID, out.ClusterID, map[string]any{"name": out.Name})
	})
	return out, enr, err
}

// FindNodeByID returns a node of a cluster or backstop.ErrNotFound.
func (s *Store) FindNodeByID(ctx context.Context, clusterID, id string) (backstop.Node, error) {
	n, err := scanNode(s.pool.QueryRow(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE cluster_id = $1 AND id = $2`, clusterID, id))
	if err != nil {
		return n, fmt.Errorf("node %s: %w", id, interpretError(err))
	}
	return n, nil
}

// ListNodes lists a cluster's nodes, oldest first. It returns
// backstop.ErrNotFound for an unknown cluster.
func (s *Store) ListNodes(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Node, string, error) {
	after, err := idCursor(p)
	if err != nil {
		return nil, "", err
	}
	return listInCluster(ctx, s, clusterID, p, `SELECT `+nodeColumns+` FROM nodes WHERE cluster_id = $1 AND id > $2 AND ($4 = '' OR name = $4) ORDER BY id LIMIT $3`,
		[]any{clusterID, after, pageLimit(p), p.Name}, scanNode, func(n backstop.Node) string { return n.ID })
}

// listInCluster runs a page query over a cluster's children and tells an
// empty list apart from an unknown cluster.
func listInCluster[T any](ctx context.Context, s *Store, clusterID string, p backstop.Page, query string, args []any, scan func(pgx.Row) (T, error), key func(T) string) ([]T, string, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
	if err != nil {
		return nil, "", interpretError(err)
	}
	if len(items) == 0 {
		if _, err := s.FindClusterByID(ctx, clusterID); err != nil {
			return nil, "", err
		}
	}
	items, next := trimPage(items, p, key)
	return items, next, nil
}

// UpdateNode renames a node or changes its description.
func (s *Store) UpdateNode(ctx context.Context, clusterID, id string, ifMatch *int64, u backstop.NodeUpdate) (backstop.Node, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Node, error) {
		cur, err := scanNode(tx.QueryRow(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, id))
		if err != nil {
			return cur, fmt.Errorf("node %s: %w", id, interpretError(err))
		}
		if err := checkVersion(cur.Version, ifMatch); err != nil {
			return cur, err
		}
		if u.Name != nil {
			cur.Name = *u.Name
		}
		if u.Description != nil {
			cur.Description = *u.Description
		}
		out, err := scanNode(tx.QueryRow(ctx, `UPDATE nodes SET name = $2, description = $3, version = version + 1, updated_at = now()
			WHERE id = $1 RETURNING `+nodeColumns, id, cur.Name, cur.Description))
		if err != nil {
			return out, err
		}
		if err := bumpConfigTx(ctx, tx, clusterID); err != nil {
			return out, err
		}
		return out, audit(ctx, tx, "node.update", "node", id, clusterID, map[string]any{"name": out.Name, "version": out.Version})
	})
}

// DeleteNode removes a node and its paths. It returns backstop.ErrConflict,
// naming the hierarchies, while any hierarchy gives the node a priority.
func (s *Store) DeleteNode(ctx context.Context, clusterID, id string, ifMatch *int64) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		cur, err := scanNode(tx.QueryRow(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, id))
		if err != nil {
			return struct{}{}, fmt.Errorf("node %s: %w", id, interpretError(err))
		}
		if err := checkVersion(cur.Version, ifMatch); err != nil {
			return struct{}{}, err
		}
		rows, err := tx.Query(ctx, `SELECT h.name FROM hierarchy_priorities p JOIN hierarchies h ON h.id = p.hierarchy_id
			WHERE p.node_id = $1 ORDER BY h.name`, id)
		if err != nil {
			return struct{}{}, err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return struct{}{}, err
		}
		if len(names) > 0 {
			return struct{}{}, fmt.Errorf("%w: node %q still has a priority in hierarchies %s; remove it from their priorities first",
				backstop.ErrConflict, cur.Name, strings.Join(names, ", "))
		}
		if _, err := tx.Exec(ctx, `DELETE FROM nodes WHERE id = $1`, id); err != nil {
			return struct{}{}, err
		}
		if err := bumpConfigTx(ctx, tx, clusterID); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, audit(ctx, tx, "node.delete", "node", id, clusterID, map[string]any{"name": cur.Name})
	})
	return err
}
