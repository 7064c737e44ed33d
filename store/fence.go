package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// Fence devices and the leader's fences through them.

const fenceColumns = `d.node_id, d.cluster_id, d.agent, d.params, d.secret_names, d.secret_sealed, d.timeout_s, n.fenced_at, d.version, d.created_at, d.updated_at`

func scanFenceDevice(row pgx.Row) (backstop.FenceDevice, error) {
	var d backstop.FenceDevice
	var timeoutS int
	err := row.Scan(&d.NodeID, &d.ClusterID, &d.Agent, &d.Params, &d.SecretNames, &d.SecretSealed, &timeoutS, &d.LastFencedAt, &d.Version, &d.CreatedAt, &d.UpdatedAt)
	d.Timeout = time.Duration(timeoutS) * time.Second
	if d.Params == nil {
		d.Params = map[string]string{}
	}
	return d, err
}

// FindFenceDevice returns a node's fence device (with its sealed
// secrets), or backstop.ErrNotFound when the node or its device does not
// exist.
func (s *Store) FindFenceDevice(ctx context.Context, clusterID, nodeID string) (backstop.FenceDevice, error) {
	d, err := scanFenceDevice(s.pool.QueryRow(ctx, `SELECT `+fenceColumns+` FROM fence_devices d JOIN nodes n ON n.id = d.node_id
		WHERE d.cluster_id = $1 AND d.node_id = $2`, clusterID, nodeID))
	if err != nil {
		if _, nerr := s.FindNodeByID(ctx, clusterID, nodeID); nerr != nil {
			return d, nerr
		}
		return d, fmt.Errorf("fence device of node %s: %w", nodeID, interpretError(err))
	}
	return d, nil
}

// PutFenceDevice creates or replaces a node's fence device under the
// node's row lock: change gets the current device (nil when there is
// none) and returns the new one (or a validation error). ifMatch names
// the current device's version; with no device, any If-Match is stale.
// The audit record names the agent, the options and the secret options'
// names, never their values. backstop.ErrNotFound for an unknown node.
func (s *Store) PutFenceDevice(ctx context.Context, clusterID, nodeID string, ifMatch *int64, change func(cur *backstop.FenceDevice) (backstop.FenceDevice, error)) (backstop.FenceDevice, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.FenceDevice, error) {
		if _, err := scanNode(tx.QueryRow(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, nodeID)); err != nil {
			return backstop.FenceDevice{}, fmt.Errorf("node %s: %w", nodeID, interpretError(err))
		}
		var cur *backstop.FenceDevice
		d, err := scanFenceDevice(tx.QueryRow(ctx, `SELECT `+fenceColumns+` FROM fence_devices d JOIN nodes n ON n.id = d.node_id WHERE d.node_id = $1`, nodeID))
		switch {
		case err == nil:
			cur = &d
			if err := checkVersion(d.Version, ifMatch); err != nil {
				return d, err
			}
		case errors.Is(err, pgx.ErrNoRows):
			if ifMatch != nil {
				return d, fmt.Errorf("%w: node %s has no fence device but If-Match names version %d", backstop.ErrPreconditionFailed, nodeID, *ifMatch)
			}
		default:
			return d, err
		}
		next, err := change(cur)
		if err != nil {
			return d, err
		}
		if next.Params == nil {
			next.Params = map[string]string{}
		}
		if next.SecretNames == nil {
			next.SecretNames = []string{}
		}
		out, err := scanFenceDevice(tx.QueryRow(ctx, `WITH d AS (
				INSERT INTO fence_devices AS f (node_id, cluster_id, agent, params, secret_names, secret_sealed, timeout_s)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (node_id) DO UPDATE SET agent = excluded.agent, params = excluded.params, secret_names = excluded.secret_names,
					secret_sealed = excluded.secret_sealed, timeout_s = excluded.timeout_s, version = f.version + 1, updated_at = now()
				RETURNING *)
			SELECT `+fenceColumns+` FROM d JOIN nodes n ON n.id = d.node_id`,
			nodeID, clusterID, next.Agent, next.Params, next.SecretNames, next.SecretSealed, int(next.Timeout/time.Second)))
		if err != nil {
			return out, err
		}
		action := "fence_device.create"
		if cur != nil {
			action = "fence_device.replace"
		}
		return out, audit(ctx, tx, action, "node", nodeID, clusterID, map[string]any{"agent": out.Agent, "params": out.Params,
			"secret_params_set": out.SecretNames, "timeout_s": int(out.Timeout / time.Second)})
	})
}

// DeleteFenceDevice removes a node's fence device. A node down and
// awaiting its fence is then failed over without one: removing the
// device is how an operator who made sure the node is off (pulled its
// power) releases its hierarchies when the device itself is broken.
func (s *Store) DeleteFenceDevice(ctx context.Context, clusterID, nodeID string, ifMatch *int64) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		d, err := scanFenceDevice(tx.QueryRow(ctx, `SELECT `+fenceColumns+` FROM fence_devices d JOIN nodes n ON n.id = d.node_id
			WHERE d.cluster_id = $1 AND d.node_id = $2 FOR UPDATE OF d`, clusterID, nodeID))
		if err != nil {
			return struct{}{}, fmt.Errorf("fence device of node %s: %w", nodeID, interpretError(err))
		}
		if err := checkVersion(d.Version, ifMatch); err != nil {
			return struct{}{}, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM fence_devices WHERE node_id = $1`, nodeID); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, audit(ctx, tx, "fence_device.delete", "node", nodeID, clusterID, map[string]any{"agent": d.Agent})
	})
	return err
}

// awaitingFenceSQL is true for a node (alias n) the leader must fence
// before anything moves off it: down, with a fence device, and no fence
// confirmed since it went down.
const awaitingFenceSQL = `(n.state = 'down' AND EXISTS (SELECT 1 FROM fence_devices fd WHERE fd.node_id = n.id)
	AND (n.fenced_at IS NULL OR n.fenced_at < n.state_since))`

// FenceJobs lists the fences the leader owes: every node awaiting one,
// with its device (sealed secrets included).
func (s *Store) FenceJobs(ctx context.Context) ([]backstop.FenceJob, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+fenceColumns+`, n.name, n.state_since FROM fence_devices d JOIN nodes n ON n.id = d.node_id
		WHERE `+awaitingFenceSQL+` ORDER BY n.id`)
	if err != nil {
		return nil, interpretError(err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.FenceJob, error) {
		var j backstop.FenceJob
		d := &j.Device
		var timeoutS int
		err := r.Scan(&d.NodeID, &d.ClusterID, &d.Agent, &d.Params, &d.SecretNames, &d.SecretSealed, &timeoutS, &d.LastFencedAt, &d.Version, &d.CreatedAt, &d.UpdatedAt,
			&j.NodeName, &j.DownSince)
		d.Timeout = time.Duration(timeoutS) * time.Second
		return j, err
	})
}

// RecordFence stores the outcome of a fence attempt as the leader
// (term): a success sets the node's fenced_at (so its hierarchies may
// move) and writes fence.succeeded; a failure writes fence.failed
// (critical: webhooks and traps) and changes nothing else. A success
// counts only for the down episode it was made for: when the node came
// back (or went down again) since, the fence confirms nothing about its
// current state and only the event is written. backstop.ErrStaleTerm when
// another replica leads.
func (s *Store) RecordFence(ctx context.Context, term int64, r backstop.FenceResult) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		if _, err := checkTermTx(ctx, tx, term); err != nil {
			return struct{}{}, err
		}
		subject := map[string]string{"node_id": r.NodeID}
		details := map[string]any{"agent": r.Agent, "duration_ms": r.Duration.Milliseconds(), "attempt": r.Attempt}
		if !r.OK {
			details["detail"] = r.Detail
			return struct{}{}, writeEvent(ctx, tx, r.ClusterID, "fence.failed", backstop.SeverityCritical, subject, details,
				"fencing node %s with %s failed (attempt %d); nothing moves off it until a fence succeeds: %s", r.NodeName, r.Agent, r.Attempt, r.Detail)
		}
		tag, err := tx.Exec(ctx, `UPDATE nodes SET fenced_at = now() WHERE id = $1 AND state = 'down' AND state_since = $2`, r.NodeID, r.DownSince)
		if err != nil {
			return struct{}{}, err
		}
		details["current"] = tag.RowsAffected() == 1
		return struct{}{}, writeEvent(ctx, tx, r.ClusterID, "fence.succeeded", backstop.SeverityInfo, subject, details,
			"node %s fenced with %s in %d ms: its fence device confirms it off", r.NodeName, r.Agent, r.Duration.Milliseconds())
	})
	return err
}
