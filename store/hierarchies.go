package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

const hierarchyColumns = `id, cluster_id, name, description, exclusivity_group, switchback, resources, version, created_at, updated_at,
	coalesce(placement_node_id::text, ''), epoch, placement_state, placement_detail, placement_updated_at`

func scanHierarchy(row pgx.Row) (backstop.Hierarchy, error) {
	var h backstop.Hierarchy
	p := &h.Placement
	err := row.Scan(&h.ID, &h.ClusterID, &h.Name, &h.Description, &h.ExclusivityGroup, &h.Switchback, &h.Resources, &h.Version, &h.CreatedAt, &h.UpdatedAt,
		&p.NodeID, &p.Epoch, &p.State, &p.Detail, &p.UpdatedAt)
	return h, err
}

// hierarchyReadColumns are hierarchyColumns and then the hierarchy's
// priorities, node ids and numbers lowest number first (loadPriorities'
// order): a read of hierarchies is one round trip instead of two.
const hierarchyReadColumns = hierarchyColumns + `,
	ARRAY(SELECT p.node_id::text FROM hierarchy_priorities p WHERE p.hierarchy_id = hierarchies.id ORDER BY p.priority),
	ARRAY(SELECT p.priority FROM hierarchy_priorities p WHERE p.hierarchy_id = hierarchies.id ORDER BY p.priority)`

// scanHierarchyRead scans hierarchyReadColumns.
func scanHierarchyRead(row pgx.Row) (backstop.Hierarchy, error) {
	var r struct {
		h     backstop.Hierarchy
		nodes []string
		prios []int
	}
	h, p := &r.h, &r.h.Placement
	err := row.Scan(&h.ID, &h.ClusterID, &h.Name, &h.Description, &h.ExclusivityGroup, &h.Switchback, &h.Resources, &h.Version, &h.CreatedAt, &h.UpdatedAt,
		&p.NodeID, &p.Epoch, &p.State, &p.Detail, &p.UpdatedAt, &r.nodes, &r.prios)
	if err == nil && len(r.nodes) != len(r.prios) {
		err = fmt.Errorf("hierarchy %s: %d priority nodes, %d priorities", h.ID, len(r.nodes), len(r.prios))
	}
	h.Priorities = make([]backstop.Priority, len(r.nodes))
	for i, n := range r.nodes {
		h.Priorities[i] = backstop.Priority{NodeID: n, Priority: r.prios[i]}
	}
	return *h, err
}

// loadPriorities fills the priorities of hs (lowest number first) with one
// query.
func loadPriorities(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, hs []backstop.Hierarchy) error {
	if len(hs) == 0 {
		return nil
	}
	ids := make([]string, len(hs))
	at := make(map[string]int, len(hs))
	for i, h := range hs {
		ids[i] = h.ID
		at[h.ID] = i
		hs[i].Priorities = []backstop.Priority{}
	}
	rows, err := q.Query(ctx, `SELECT hierarchy_id, node_id, priority FROM hierarchy_priorities
		WHERE hierarchy_id = ANY($1::uuid[]) ORDER BY hierarchy_id, priority`, ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var hid string
		var p backstop.Priority
		if err := rows.Scan(&hid, &p.NodeID, &p.Priority); err != nil {
			return err
		}
		hs[at[hid]].Priorities = append(hs[at[hid]].Priorities, p)
	}
	return rows.Err()
}

// writePrioritiesTx replaces a hierarchy's priorities after checking each
// node belongs to the cluster.
func writePrioritiesTx(ctx context.Context, tx pgx.Tx, h backstop.Hierarchy) error {
	nodes := make([]string, len(h.Priorities))
	for i, p := range h.Priorities {
		nodes[i] = p.NodeID
	}
	rows, err := tx.Query(ctx, `SELECT id::text FROM nodes WHERE cluster_id = $1 AND id = ANY($2::uuid[]) FOR SHARE`, h.ClusterID, nodes)
	if err != nil {
		return err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	known := make(map[string]bool, len(found))
	for _, id := range found {
		known[id] = true
	}
	v := &backstop.ValidationError{}
	for i, p := range h.Priorities {
		if !known[p.NodeID] {
			v.Add(fmt.Sprintf("/priorities/%d/node_id", i), "node %s is not a node of this cluster", p.NodeID)
		}
	}
	if err := v.Err(); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM hierarchy_priorities WHERE hierarchy_id = $1`, h.ID); err != nil {
		return err
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"hierarchy_priorities"}, []string{"cluster_id", "hierarchy_id", "node_id", "priority"},
		pgx.CopyFromSlice(len(h.Priorities), func(i int) ([]any, error) {
			return []any{h.ClusterID, h.ID, h.Priorities[i].NodeID, h.Priorities[i].Priority}, nil
		}))
	return err
}

// CreateHierarchy validates and stores a whole hierarchy atomically: the
// cluster's defaults are applied under its row lock, and nothing is written
// when any rule fails.
func (s *Store) CreateHierarchy(ctx context.Context, h backstop.Hierarchy) (backstop.Hierarchy, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Hierarchy, error) {
		c, err := lockClusterTx(ctx, tx, h.ClusterID)
		if err != nil {
			return h, err
		}
		if err := h.Normalize(&c); err != nil {
			return h, err
		}
		h.ID = newID()
		out, err := scanHierarchy(tx.QueryRow(ctx, `INSERT INTO hierarchies (id, cluster_id, name, description, exclusivity_group, switchback, resources)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+hierarchyColumns,
			h.ID, h.ClusterID, h.Name, h.Description, h.ExclusivityGroup, h.Switchback, h.Resources))
		if err != nil {
			return out, err
		}
		out.Priorities = h.Priorities
		if err := writePrioritiesTx(ctx, tx, out); err != nil {
			return out, err
		}
		if err := bumpConfigTx(ctx, tx, out.ClusterID); err != nil {
			return out, err
		}
		return out, audit(ctx, tx, "hierarchy.create", "hierarchy", out.ID, out.ClusterID, map[string]any{"name": out.Name, "resources": len(out.Resources)})
	})
}

// FindHierarchyByID returns a hierarchy with its priorities, or
// backstop.ErrNotFound.
func (s *Store) FindHierarchyByID(ctx context.Context, clusterID, id string) (backstop.Hierarchy, error) {
	h, err := scanHierarchyRead(s.pool.QueryRow(ctx, `SELECT `+hierarchyReadColumns+` FROM hierarchies WHERE cluster_id = $1 AND id = $2`, clusterID, id))
	if err != nil {
		return h, fmt.Errorf("hierarchy %s: %w", id, interpretError(err))
	}
	return h, nil
}

// ListHierarchies lists a cluster's hierarchies, oldest first.
func (s *Store) ListHierarchies(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Hierarchy, string, error) {
	after, err := idCursor(p)
	if err != nil {
		return nil, "", err
	}
	return listInCluster(ctx, s, clusterID, p, `SELECT `+hierarchyReadColumns+` FROM hierarchies WHERE cluster_id = $1 AND id > $2 AND ($4 = '' OR name = $4) ORDER BY id LIMIT $3`,
		[]any{clusterID, after, pageLimit(p), p.Name}, scanHierarchyRead, func(h backstop.Hierarchy) string { return h.ID })
}

// UpdateHierarchy applies u to a hierarchy (for PUT, u carries every
// field) and validates the result as a whole, under the cluster's lock.
func (s *Store) UpdateHierarchy(ctx context.Context, clusterID, id string, ifMatch *int64, u backstop.HierarchyUpdate) (backstop.Hierarchy, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Hierarchy, error) {
		c, err := lockClusterTx(ctx, tx, clusterID)
		if err != nil {
			return backstop.Hierarchy{}, err
		}
		cur, err := scanHierarchy(tx.QueryRow(ctx, `SELECT `+hierarchyColumns+` FROM hierarchies WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, id))
		if err != nil {
			return cur, fmt.Errorf("hierarchy %s: %w", id, interpretError(err))
		}
		if err := checkVersion(cur.Version, ifMatch); err != nil {
			return cur, err
		}
		hs := []backstop.Hierarchy{cur}
		if err := loadPriorities(ctx, tx, hs); err != nil {
			return cur, err
		}
		h := u.Apply(hs[0])
		if err := h.Normalize(&c); err != nil {
			return h, err
		}
		if p := cur.Placement; p.Active() && !slices.ContainsFunc(h.Priorities, func(x backstop.Priority) bool { return x.NodeID == p.NodeID }) {
			return h, fmt.Errorf("%w: the hierarchy is %s on node %s, which the new priorities leave out; take it out of service first",
				backstop.ErrConflict, p.State, p.NodeID)
		}
		out, err := scanHierarchy(tx.QueryRow(ctx, `UPDATE hierarchies SET name = $2, description = $3, exclusivity_group = $4, switchback = $5,
			resources = $6, version = version + 1, updated_at = now() WHERE id = $1 RETURNING `+hierarchyColumns,
			id, h.Name, h.Description, h.ExclusivityGroup, h.Switchback, h.Resources))
		if err != nil {
			return out, err
		}
		out.Priorities = h.Priorities
		if err := writePrioritiesTx(ctx, tx, out); err != nil {
			return out, err
		}
		if err := bumpConfigTx(ctx, tx, clusterID); err != nil {
			return out, err
		}
		return out, audit(ctx, tx, "hierarchy.update", "hierarchy", id, clusterID, map[string]any{"name": out.Name, "version": out.Version})
	})
}

// DeleteHierarchy deletes a hierarchy with its priorities.
func (s *Store) DeleteHierarchy(ctx context.Context, clusterID, id string, ifMatch *int64) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		cur, err := scanHierarchy(tx.QueryRow(ctx, `SELECT `+hierarchyColumns+` FROM hierarchies WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, id))
		if err != nil {
			return struct{}{}, fmt.Errorf("hierarchy %s: %w", id, interpretError(err))
		}
		if err := checkVersion(cur.Version, ifMatch); err != nil {
			return struct{}{}, err
		}
		if cur.Placement.Active() {
			return struct{}{}, fmt.Errorf("%w: hierarchy %q is %s on node %s; take it out of service first",
				backstop.ErrConflict, cur.Name, cur.Placement.State, cur.Placement.NodeID)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM hierarchies WHERE id = $1`, id); err != nil {
			return struct{}{}, err
		}
		if err := bumpConfigTx(ctx, tx, clusterID); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, audit(ctx, tx, "hierarchy.delete", "hierarchy", id, clusterID, map[string]any{"name": cur.Name})
	})
	return err
}
