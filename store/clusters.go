package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

const clusterColumns = `id, name, description, timing_profile, timing, switchback_default, fencing, version, created_at, updated_at`

func scanCluster(row pgx.Row) (backstop.Cluster, error) {
	var c backstop.Cluster
	err := row.Scan(&c.ID, &c.Name, &c.Description, &c.TimingProfile, &c.Timing, &c.SwitchbackDefault, &c.Fencing, &c.Version, &c.CreatedAt, &c.UpdatedAt)
	return c, err
}

// CreateCluster stores a new, validated cluster and returns it.
func (s *Store) CreateCluster(ctx context.Context, c backstop.Cluster) (backstop.Cluster, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Cluster, error) {
		c.ID = newID()
		out, err := scanCluster(tx.QueryRow(ctx, `INSERT INTO clusters (id, name, description, timing_profile, timing, switchback_default, fencing)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+clusterColumns,
			c.ID, c.Name, c.Description, c.TimingProfile, c.Timing, c.SwitchbackDefault, c.Fencing))
		if err != nil {
			return out, err
		}
		return out, audit(ctx, tx, "cluster.create", "cluster", out.ID, out.ID, map[string]any{"name": out.Name, "timing_profile": out.TimingProfile})
	})
}

// FindClusterByID returns a cluster or backstop.ErrNotFound.
func (s *Store) FindClusterByID(ctx context.Context, id string) (backstop.Cluster, error) {
	c, err := scanCluster(s.pool.QueryRow(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE id = $1`, id))
	if err != nil {
		return c, fmt.Errorf("cluster %s: %w", id, interpretError(err))
	}
	return c, nil
}

func lockClusterTx(ctx context.Context, tx pgx.Tx, id string) (backstop.Cluster, error) {
	c, err := scanCluster(tx.QueryRow(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE id = $1 FOR UPDATE`, id))
	if err != nil {
		return c, fmt.Errorf("cluster %s: %w", id, interpretError(err))
	}
	return c, nil
}

// ListClusters lists clusters, oldest first: those in the scope of the
// context's actor when its token is scoped.
func (s *Store) ListClusters(ctx context.Context, p backstop.Page) ([]backstop.Cluster, string, error) {
	after, err := idCursor(p)
	if err != nil {
		return nil, "", err
	}
	// A token scoped to clusters lists only those (backstop.Actor.Scope);
	// NULL: every cluster.
	rows, err := s.pool.Query(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE id > $1 AND ($3 = '' OR name = $3)
		AND ($4::uuid[] IS NULL OR id = ANY($4)) ORDER BY id LIMIT $2`, after, pageLimit(p), p.Name, backstop.ActorFrom(ctx).Scope)
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Cluster, error) { return scanCluster(r) })
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, next := trimPage(items, p, func(c backstop.Cluster) string { return c.ID })
	return items, next, nil
}

// UpdateCluster applies change to a cluster under a row lock. change gets
// the current cluster and returns the new one (or a validation error), so
// that rules depending on the current values run on the locked row.
func (s *Store) UpdateCluster(ctx context.Context, id string, ifMatch *int64, change func(backstop.Cluster) (backstop.Cluster, error)) (backstop.Cluster, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Cluster, error) {
		cur, err := lockClusterTx(ctx, tx, id)
		if err != nil {
			return cur, err
		}
		if err := checkVersion(cur.Version, ifMatch); err != nil {
			return cur, err
		}
		c, err := change(cur)
		if err != nil {
			return cur, err
		}
		out, err := scanCluster(tx.QueryRow(ctx, `UPDATE clusters SET name = $2, description = $3, timing_profile = $4, timing = $5,
			switchback_default = $6, fencing = $7, version = version + 1, config_version = config_version + 1, updated_at = now()
			WHERE id = $1 RETURNING `+clusterColumns,
			id, c.Name, c.Description, c.TimingProfile, c.Timing, c.SwitchbackDefault, c.Fencing))
		if err != nil {
			return out, err
		}
		return out, audit(ctx, tx, "cluster.update", "cluster", id, id, map[string]any{"name": out.Name, "version": out.Version})
	})
}

// DeleteCluster deletes a cluster and everything it owns.
//
// Lock order. Everything an agent or the leader does to a cluster locks
// rows of it first (a command, a node, a hierarchy) and the cluster row
// last, when it writes an event (clusters.event_seq) or bumps
// config_version. Deleting the cluster row cascades to every one of those
// rows, so locking the cluster first and cascading made the delete wait
// on a heartbeat's node row while the heartbeat waited on the cluster row
// for its node.up event: "deadlock detected" while agents still ran. The
// delete therefore takes the rows others lock first, in their order and
// in id order within a table (open commands, nodes, hierarchies), and the
// cluster row last; whoever holds one of them finishes first, and whoever
// comes later waits at its first lock holding nothing. Configuration
// writes that lock the cluster row first (creating a node, path or
// hierarchy) can still meet the delete the other way round; withTx runs
// the loser again and it finds the cluster gone.
func (s *Store) DeleteCluster(ctx context.Context, id string, ifMatch *int64) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		for _, q := range []string{
			// Command results and polls lock the command first.
			`SELECT 1 FROM commands WHERE cluster_id = $1 AND status IN ('queued', 'delivered') ORDER BY id FOR UPDATE`,
			// Heartbeats and the failure detector lock node rows first.
			`SELECT 1 FROM nodes WHERE cluster_id = $1 ORDER BY id FOR UPDATE`,
			// The engine and placements lock the hierarchy first.
			`SELECT 1 FROM hierarchies WHERE cluster_id = $1 ORDER BY id FOR UPDATE`,
		} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return struct{}{}, err
			}
		}
		cur, err := lockClusterTx(ctx, tx, id)
		if err != nil {
			return struct{}{}, err
		}
		if err := checkVersion(cur.Version, ifMatch); err != nil {
			return struct{}{}, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM clusters WHERE id = $1`, id); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, audit(ctx, tx, "cluster.delete", "cluster", id, id, map[string]any{"name": cur.Name})
	})
	return err
}
