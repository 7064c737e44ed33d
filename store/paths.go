package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

const pathColumns = `id, cluster_id, link_id, reverse_id, local_node_id, host(local_address), remote_node_id, host(remote_address), priority, created_at`

func scanPath(row pgx.Row) (backstop.Path, error) {
	var p backstop.Path
	err := row.Scan(&p.ID, &p.ClusterID, &p.LinkID, &p.ReverseID, &p.LocalNodeID, &p.LocalAddress, &p.RemoteNodeID, &p.RemoteAddress, &p.Priority, &p.CreatedAt)
	return p, err
}

// CreatePath creates a communication path between two nodes of a cluster
// in both directions and returns them (a→b, then b→a). Ends naming a node
// of another cluster get a validation error naming the field.
func (s *Store) CreatePath(ctx context.Context, clusterID string, a, b backstop.PathEnd, priority int) ([2]backstop.Path, error) {
	return withTx(ctx, s, func(tx pgx.Tx) ([2]backstop.Path, error) {
		var out [2]backstop.Path
		if _, err := lockClusterTx(ctx, tx, clusterID); err != nil {
			return out, err
		}
		v := &backstop.ValidationError{}
		for _, end := range []struct {
			at string
			e  backstop.PathEnd
		}{{"/a/node_id", a}, {"/b/node_id", b}} {
			var ok bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM nodes WHERE cluster_id = $1 AND id = $2)`, clusterID, end.e.NodeID).Scan(&ok); err != nil {
				return out, err
			}
			if !ok {
				v.Add(end.at, "node %s is not a node of this cluster", end.e.NodeID)
			}
		}
		if err := v.Err(); err != nil {
			return out, err
		}
		link, fwd, rev := newID(), newID(), newID()
		ins := `INSERT INTO paths (id, cluster_id, link_id, reverse_id, local_node_id, local_address, remote_node_id, remote_address, priority)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ` + pathColumns
		var err error
		if out[0], err = scanPath(tx.QueryRow(ctx, ins, fwd, clusterID, link, rev, a.NodeID, a.Address, b.NodeID, b.Address, priority)); err != nil {
			return out, err
		}
		if out[1], err = scanPath(tx.QueryRow(ctx, ins, rev, clusterID, link, fwd, b.NodeID, b.Address, a.NodeID, a.Address, priority)); err != nil {
			return out, err
		}
		if err := bumpConfigTx(ctx, tx, clusterID); err != nil {
			return out, err
		}
		return out, audit(ctx, tx, "path.create", "path", link, clusterID, map[string]any{
			"a":        map[string]string{"node_id": a.NodeID, "address": a.Address},
			"b":        map[string]string{"node_id": b.NodeID, "address": b.Address},
			"priority": priority, "path_ids": []string{fwd, rev},
		})
	})
}

// FindPathByID returns one direction of a path or backstop.ErrNotFound.
func (s *Store) FindPathByID(ctx context.Context, clusterID, id string) (backstop.Path, error) {
	p, err := scanPath(s.pool.QueryRow(ctx, `SELECT `+pathColumns+` FROM paths WHERE cluster_id = $1 AND id = $2`, clusterID, id))
	if err != nil {
		return p, fmt.Errorf("path %s: %w", id, interpretError(err))
	}
	return p, nil
}

// ListPaths lists every directed path of a cluster, oldest first.
func (s *Store) ListPaths(ctx context.Context, clusterID string, p backstop.Page) ([]backstop.Path, string, error) {
	after, err := idCursor(p)
	if err != nil {
		return nil, "", err
	}
	return listInCluster(ctx, s, clusterID, p, `SELECT `+pathColumns+` FROM paths WHERE cluster_id = $1 AND id > $2 ORDER BY id LIMIT $3`,
		[]any{clusterID, after, pageLimit(p)}, scanPath, func(p backstop.Path) string { return p.ID })
}

// DeletePath deletes both directions of the path one of whose ids is id.
func (s *Store) DeletePath(ctx context.Context, clusterID, id string, ifMatch *int64) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		p, err := scanPath(tx.QueryRow(ctx, `SELECT `+pathColumns+` FROM paths WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, id))
		if err != nil {
			return struct{}{}, fmt.Errorf("path %s: %w", id, interpretError(err))
		}
		if err := checkVersion(p.Version(), ifMatch); err != nil {
			return struct{}{}, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM paths WHERE link_id = $1`, p.LinkID); err != nil {
			return struct{}{}, err
		}
		if err := bumpConfigTx(ctx, tx, clusterID); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, audit(ctx, tx, "path.delete", "path", p.LinkID, clusterID, map[string]any{"path_ids": []string{p.ID, p.ReverseID}})
	})
	return err
}
