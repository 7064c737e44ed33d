package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// CommandNotifyChannel is the PostgreSQL NOTIFY channel that wakes agents'
// long polls on every replica; the payload is the node id.
const CommandNotifyChannel = "backstop_commands"

// PlaceHierarchy brings a hierarchy in service on req.NodeID (kind
// in_service) or takes it out of service on the node it is placed on
// (kind out_of_service, NodeID ignored). In one transaction it checks the
// request against the current placement, bumps the epoch, stores the
// signed command and the operation, and notifies the node's long poll.
// Returns backstop.ErrConflict when the hierarchy is active on another node
// (or already out of service), backstop.ErrInvalid when the node has no
// priority for it or has no enrolled agent.
func (s *Store) PlaceHierarchy(ctx context.Context, req backstop.PlaceRequest, sign backstop.Signer) (backstop.Operation, error) {
	clusterID, hierarchyID, kind, nodeID := req.ClusterID, req.HierarchyID, req.Kind, req.NodeID
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.Operation, error) {
		var op backstop.Operation
		h, err := scanHierarchy(tx.QueryRow(ctx, `SELECT `+hierarchyColumns+` FROM hierarchies WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, hierarchyID))
		if err != nil {
			return op, fmt.Errorf("hierarchy %s: %w", hierarchyID, interpretError(err))
		}
		p := h.Placement
		var action string
		var state backstop.PlacementState
		switch kind {
		case backstop.OperationInService:
			if p.Active() && p.NodeID != nodeID {
				return op, fmt.Errorf("%w: hierarchy %q is %s on node %s; take it out of service there first", backstop.ErrConflict, h.Name, p.State, p.NodeID)
			}
			if p.Active() && p.State != backstop.PlacementStopping {
				return op, fmt.Errorf("%w: hierarchy %q is already %s on this node", backstop.ErrConflict, h.Name, p.State)
			}
			var prio int
			var enrolled bool
			err := tx.QueryRow(ctx, `SELECT p.priority, n.enrolled_at IS NOT NULL FROM hierarchy_priorities p JOIN nodes n ON n.id = p.node_id
				WHERE p.hierarchy_id = $1 AND p.node_id = $2`, hierarchyID, nodeID).Scan(&prio, &enrolled)
			if err == pgx.ErrNoRows {
				return op, backstop.Invalid("/node_id", "node %s has no priority for hierarchy %q", nodeID, h.Name)
			}
			if err != nil {
				return op, err
			}
			if !enrolled {
				return op, backstop.Invalid("/node_id", "node %s has no enrolled agent yet", nodeID)
			}
			action, state = "bring_in_service", backstop.PlacementStarting
		case backstop.OperationOutOfService:
			if p.NodeID == "" || p.State == backstop.PlacementOutOfService {
				return op, fmt.Errorf("%w: hierarchy %q is not in service anywhere", backstop.ErrConflict, h.Name)
			}
			nodeID = p.NodeID
			action, state = "take_out_of_service", backstop.PlacementStopping
		default:
			return op, fmt.Errorf("unknown placement kind %q", kind)
		}
		var term int64
		if err := tx.QueryRow(ctx, `SELECT term FROM control_plane WHERE id = 1`).Scan(&term); err != nil {
			return op, err
		}
		epoch := p.Epoch + 1
		spec := backstop.CommandSpec{ID: newID(), ClusterID: clusterID, NodeID: nodeID, HierarchyID: hierarchyID, Hierarchy: h.Name,
			Epoch: epoch, Term: term, Action: action, Resources: backstop.BringUpOrder(h.Resources)}
		sc, issued, expires, err := sign(spec)
		if err != nil {
			return op, err
		}
		op = backstop.Operation{ID: newID(), ClusterID: clusterID, HierarchyID: hierarchyID, NodeID: nodeID, Kind: kind,
			State: backstop.OperationPending, Epoch: epoch, CommandID: spec.ID, Steps: []backstop.StepResult{}}
		if _, err := tx.Exec(ctx, `UPDATE hierarchies SET placement_node_id = $2, epoch = $3, placement_state = $4,
			placement_detail = '', placement_updated_at = now() WHERE id = $1`, hierarchyID, nodeID, epoch, state); err != nil {
			return op, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO commands (id, cluster_id, node_id, hierarchy_id, operation_id, action, epoch, term, key_id, payload, signature, issued_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			spec.ID, clusterID, nodeID, hierarchyID, op.ID, action, epoch, term, sc.KeyID, sc.Payload, sc.Signature, issued, expires); err != nil {
			return op, err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO operations (id, cluster_id, hierarchy_id, node_id, kind, epoch, command_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at, updated_at`,
			op.ID, clusterID, hierarchyID, nodeID, kind, epoch, spec.ID).Scan(&op.CreatedAt, &op.UpdatedAt); err != nil {
			return op, err
		}
		// Delivered at commit, to every replica's listener.
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, CommandNotifyChannel, nodeID); err != nil {
			return op, err
		}
		return op, audit(ctx, tx, "hierarchy."+kind, "hierarchy", hierarchyID, clusterID,
			map[string]any{"node_id": nodeID, "epoch": epoch, "command_id": spec.ID, "operation_id": op.ID})
	})
}

const operationColumns = `id, cluster_id, hierarchy_id, node_id, kind, state, epoch, coalesce(command_id::text, ''), detail, steps, created_at, updated_at`

// FindOperation returns an operation or backstop.ErrNotFound.
func (s *Store) FindOperation(ctx context.Context, id string) (backstop.Operation, error) {
	var o backstop.Operation
	err := s.pool.QueryRow(ctx, `SELECT `+operationColumns+` FROM operations WHERE id = $1`, id).Scan(
		&o.ID, &o.ClusterID, &o.HierarchyID, &o.NodeID, &o.Kind, &o.State, &o.Epoch, &o.CommandID, &o.Detail, &o.Steps, &o.CreatedAt, &o.UpdatedAt)
	if err != nil {
		return o, fmt.Errorf("operation %s: %w", id, interpretError(err))
	}
	return o, nil
}

// NextCommands returns the commands queued for a node, oldest first, and
// marks them delivered (their operations running).
func (s *Store) NextCommands(ctx context.Context, nodeID string) ([]backstop.SignedCommand, error) {
	return withTx(ctx, s, func(tx pgx.Tx) ([]backstop.SignedCommand, error) {
		rows, err := tx.Query(ctx, `UPDATE commands SET status = 'delivered', delivered_at = now()
			WHERE id IN (SELECT id FROM commands WHERE node_id = $1 AND status = 'queued' ORDER BY issued_at FOR UPDATE SKIP LOCKED)
			RETURNING id, payload, key_id, signature, operation_id, issued_at`, nodeID)
		if err != nil {
			return nil, err
		}
		type row struct {
			c      backstop.SignedCommand
			op     *string
			issued time.Time
		}
		rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.c.ID, &x.c.Payload, &x.c.KeyID, &x.c.Signature, &x.op, &x.issued)
			return x, err
		})
		if err != nil {
			return nil, err
		}
		out := make([]backstop.SignedCommand, 0, len(rs))
		for _, x := range rs {
			if x.op != nil {
				if _, err := tx.Exec(ctx, `UPDATE operations SET state = 'running', updated_at = now() WHERE id = $1 AND state = 'pending'`, *x.op); err != nil {
					return nil, err
				}
			}
		}
		// RETURNING gives no order; deliver oldest first.
		for len(rs) > 0 {
			i := 0
			for j := range rs {
				if rs[j].issued.Before(rs[i].issued) {
					i = j
				}
			}
			out = append(out, rs[i].c)
			rs = append(rs[:i], rs[i+1:]...)
		}
		return out, nil
	})
}

// RecordCommandResult stores an agent's outcome of a command addressed to
// it, completes its operation, moves the placement on when the command's
// epoch is still the hierarchy's, and advances the command's incident.
// When the command was a move's stop and it succeeded, the move's
// bring-up on the target is issued in the same transaction (signed with
// sign, under the current term, as an operator's move is; nil leaves it
// to the engine's AdvanceMoves, up to a pass later). It returns
// backstop.ErrNotFound for a command of another node and
// backstop.ErrConflict for a second result.
func (s *Store) RecordCommandResult(ctx context.Context, a backstop.AgentIdentity, commandID string, r backstop.CommandOutcome, sign backstop.Signer) (backstop.CommandEffect, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.CommandEffect, error) {
		var eff backstop.CommandEffect
		var status, action, hierarchyID, clusterID, hname string
		var epoch int64
		var opID, incID *string
		err := tx.QueryRow(ctx, `SELECT c.status, c.action, c.hierarchy_id, c.cluster_id, c.epoch, c.operation_id, c.incident_id, coalesce(h.name, '')
			FROM commands c LEFT JOIN hierarchies h ON h.id = c.hierarchy_id WHERE c.id = $1 AND c.node_id = $2 FOR UPDATE OF c`,
			commandID, a.NodeID).Scan(&status, &action, &hierarchyID, &clusterID, &epoch, &opID, &incID, &hname)
		if err != nil {
			return eff, fmt.Errorf("command %s: %w", commandID, interpretError(err))
		}
		switch status {
		case backstop.CommandSucceeded, backstop.CommandFailed, backstop.CommandRejected:
			if r.Status != backstop.CommandRejected {
				return eff, fmt.Errorf("%w: command %s already has a result (%s)", backstop.ErrConflict, commandID, status)
			}
			// The command was delivered again after it completed (its row
			// requeued: a replay attempt) and the agent refused it. Keep
			// the original outcome, and make the refusal visible.
			if _, err := tx.Exec(ctx, `UPDATE commands SET rejection_reason = $2, detail = $3 WHERE id = $1`, commandID, r.Reason,
				fmt.Sprintf("delivered again after it completed (%s); the agent on %s rejected it: %s: %s", status, a.NodeName, r.Reason, r.Detail)); err != nil {
				return eff, err
			}
			return eff, writeEvent(ctx, tx, clusterID, "command.rejected", backstop.SeverityWarning,
				map[string]string{"hierarchy_id": hierarchyID, "node_id": a.NodeID, "command_id": commandID},
				map[string]any{"reason": r.Reason, "detail": r.Detail, "redelivered": true},
				"the agent on %s rejected a redelivered %s command for %s: %s", a.NodeName, action, hname, r.Reason)
		}
		if r.Steps == nil {
			r.Steps = []backstop.StepResult{}
		}
		detail := r.Detail
		if r.Status == backstop.CommandRejected {
			detail = fmt.Sprintf("rejected by the agent on %s: %s: %s", a.NodeName, r.Reason, r.Detail)
		}
		if _, err := tx.Exec(ctx, `UPDATE commands SET status = $2, rejection_reason = $3, detail = $4, steps = $5, completed_at = now(),
			delivered_at = coalesce(delivered_at, now()) WHERE id = $1`, commandID, r.Status, r.Reason, detail, r.Steps); err != nil {
			return eff, err
		}
		ok := r.Status == backstop.CommandSucceeded
		// A replay rejection means the agent ran this command before: it
		// changes nothing on the node, so neither the operation nor the
		// placement moves.
		replay := r.Status == backstop.CommandRejected && r.Reason == "replay"
		if opID != nil && !replay {
			var kind string
			if err := tx.QueryRow(ctx, `SELECT kind FROM operations WHERE id = $1`, *opID).Scan(&kind); err != nil {
				return eff, err
			}
			// A switchover's first step (stopping on the old node) leaves
			// its operation running.
			if !(kind == "switchover" && action == "take_out_of_service" && ok) {
				state := backstop.OperationFailed
				if ok {
					state = backstop.OperationSucceeded
				}
				if _, err := tx.Exec(ctx, `UPDATE operations SET state = $2, detail = $3, steps = $4, updated_at = now() WHERE id = $1`,
					*opID, state, detail, r.Steps); err != nil {
					return eff, err
				}
			}
		}
		var place backstop.PlacementState
		switch {
		case ok && action == "bring_in_service":
			place = backstop.PlacementInService
		case ok && action == "take_out_of_service":
			place = backstop.PlacementOutOfService
		case replay:
		case !ok && (action == "bring_in_service" || action == "take_out_of_service"):
			place = backstop.PlacementFailed
		}
		// A bring-up the node gave up because it fenced itself or was
		// isolated is not the hierarchy's failure on that node: nothing of
		// it runs there (the agent fenced what it had started, or started
		// nothing), and the node it left was down and fenced before the
		// command was issued. The hierarchy is failed with no node, so the
		// engine places it again as soon as a node, this one included,
		// can take it, rather than leaving a failed mark no operator asked
		// for (the last survivor's lease lapsing once under load must not
		// end the service).
		// stopped: this result took the hierarchy out of service on this
		// node at the command's epoch (a stale result changes nothing).
		stopped := false
		unplaced := place == backstop.PlacementFailed && action == "bring_in_service" && backstop.NodeGaveUp(r.Reason)
		switch {
		case unplaced:
			if _, err := tx.Exec(ctx, `UPDATE hierarchies SET placement_node_id = NULL, placement_state = 'failed', placement_detail = $4,
				placement_updated_at = now() WHERE id = $1 AND placement_node_id = $2 AND epoch = $3`,
				hierarchyID, a.NodeID, epoch, detail+"; it will be placed again as soon as a node can take it"); err != nil {
				return eff, err
			}
		case place != "":
			name, err := setPlacementTx(ctx, tx, a.NodeID, hierarchyID, epoch, place, detailIf(place == backstop.PlacementFailed, detail))
			if err != nil {
				return eff, err
			}
			stopped = place == backstop.PlacementOutOfService && name != ""
		}
		subject := map[string]string{"hierarchy_id": hierarchyID, "node_id": a.NodeID, "command_id": commandID}
		switch {
		case r.Status == backstop.CommandRejected:
			err = writeEvent(ctx, tx, clusterID, "command.rejected", backstop.SeverityWarning, subject, map[string]any{"reason": r.Reason, "detail": r.Detail},
				"the agent on %s rejected a %s command for %s: %s", a.NodeName, action, hname, r.Reason)
		case place == backstop.PlacementInService:
			err = writeEvent(ctx, tx, clusterID, "hierarchy.in_service", backstop.SeverityInfo, subject, nil, "hierarchy %s is in service on %s", hname, a.NodeName)
		case place == backstop.PlacementOutOfService:
			err = writeEvent(ctx, tx, clusterID, "hierarchy.out_of_service", backstop.SeverityInfo, subject, nil, "hierarchy %s is out of service on %s", hname, a.NodeName)
		case place == backstop.PlacementFailed:
			err = writeEvent(ctx, tx, clusterID, "hierarchy.failed", backstop.SeverityCritical, subject, map[string]any{"detail": detail},
				"hierarchy %s failed on %s: %s", hname, a.NodeName, detail)
		}
		if err != nil {
			return eff, err
		}
		if incID != nil {
			eff.IncidentID = *incID
			var kind string
			var detected time.Time
			if err := tx.QueryRow(ctx, `SELECT kind, detected_at FROM incidents WHERE id = $1`, *incID).Scan(&kind, &detected); err != nil {
				return eff, err
			}
			switch {
			case ok && action == "take_out_of_service":
				_, err = tx.Exec(ctx, `UPDATE incidents SET stopped_at = now() WHERE id = $1`, *incID)
			case ok && action == "bring_in_service":
				var ms int64
				if err := tx.QueryRow(ctx, `UPDATE incidents SET started_at = now(), state = 'resolved',
					recovery_ms = (extract(epoch FROM now() - detected_at) * 1000)::bigint WHERE id = $1 RETURNING recovery_ms`, *incID).Scan(&ms); err != nil {
					return eff, err
				}
				d := time.Duration(ms) * time.Millisecond
				eff.Recovered = &d
				err = writeEvent(ctx, tx, clusterID, kind+".completed", backstop.SeverityInfo, map[string]string{"hierarchy_id": hierarchyID, "incident_id": *incID, "node_id": a.NodeID},
					map[string]any{"recovery_ms": ms}, "%s of %s completed: in service on %s after %d ms", kind, hname, a.NodeName, ms)
			case !ok:
				if _, err := tx.Exec(ctx, `UPDATE incidents SET state = 'failed' WHERE id = $1 AND state = 'open'`, *incID); err != nil {
					return eff, err
				}
				err = writeEvent(ctx, tx, clusterID, kind+".failed", backstop.SeverityCritical, map[string]string{"hierarchy_id": hierarchyID, "incident_id": *incID, "node_id": a.NodeID},
					map[string]any{"detail": detail}, "%s of %s failed on %s: %s", kind, hname, a.NodeName, detail)
			}
			if err != nil {
				return eff, err
			}
		}
		if stopped && sign != nil {
			// The stop of a move succeeded (its incident's stopped_at is
			// set above): bring the hierarchy up on the target now. The
			// engine's AdvanceMoves did it at its next pass: after the
			// event's notification reached the leader and up to its
			// 50-ms pass interval, a third of a switchover's time at a
			// thousand agents. Same checks, same lock (the hierarchy's
			// row, held since setPlacementTx), and the move is cleared as
			// it advances, so it advances once either way.
			cur, err := checkTermTx(ctx, tx, 0)
			if err != nil {
				return eff, err
			}
			if _, err := advanceMovesTx(ctx, tx, cur, sign, hierarchyID); err != nil {
				return eff, err
			}
		}
		return eff, nil
	})
}

func detailIf(cond bool, s string) string {
	if cond {
		return s
	}
	return ""
}

// ExpireCommands closes commands that can no longer run: queued past
// their expiry (never delivered), or delivered with no result long after
// it. Their operations fail, and placements still waiting on them fail.
func (s *Store) ExpireCommands(ctx context.Context, resultGrace time.Duration) (int, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (int, error) {
		rows, err := tx.Query(ctx, `UPDATE commands SET
			status = CASE WHEN status = 'queued' THEN 'expired' ELSE 'failed' END,
			detail = CASE WHEN status = 'queued' THEN 'expired before the agent fetched it' ELSE 'no result from the agent' END,
			completed_at = now()
			WHERE (status = 'queued' AND expires_at < now()) OR (status = 'delivered' AND expires_at < now() - $1::interval)
			RETURNING operation_id, node_id, hierarchy_id, epoch, detail`, resultGrace.String())
		if err != nil {
			return 0, err
		}
		type row struct {
			op                  *string
			node, hierarchy, dt string
			epoch               int64
		}
		rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.op, &x.node, &x.hierarchy, &x.epoch, &x.dt)
			return x, err
		})
		if err != nil {
			return 0, err
		}
		for _, x := range rs {
			if x.op != nil {
				if _, err := tx.Exec(ctx, `UPDATE operations SET state = 'failed', detail = $2, updated_at = now() WHERE id = $1 AND state IN ('pending', 'running')`, *x.op, x.dt); err != nil {
					return 0, err
				}
			}
			if _, err := setPlacementTx(ctx, tx, x.node, x.hierarchy, x.epoch, backstop.PlacementFailed, "command "+x.dt); err != nil {
				return 0, err
			}
		}
		return len(rs), nil
	})
}

const commandColumns = `id, cluster_id, node_id, hierarchy_id, action, epoch, term, key_id, status, rejection_reason, detail, issued_at, expires_at, completed_at`

// ListCommands lists a cluster's commands, oldest first, optionally only
// those of one node.
func (s *Store) ListCommands(ctx context.Context, clusterID, nodeID string, p backstop.Page) ([]backstop.CommandInfo, string, error) {
	after, err := idCursor(p)
	if err != nil {
		return nil, "", err
	}
	return listInCluster(ctx, s, clusterID, p, `SELECT `+commandColumns+` FROM commands WHERE cluster_id = $1 AND id > $2
		AND ($4 = '' OR node_id::text = $4) ORDER BY id LIMIT $3`,
		[]any{clusterID, after, pageLimit(p), nodeID}, func(r pgx.Row) (backstop.CommandInfo, error) {
			var c backstop.CommandInfo
			err := r.Scan(&c.ID, &c.ClusterID, &c.NodeID, &c.HierarchyID, &c.Action, &c.Epoch, &c.Term, &c.KeyID, &c.Status, &c.RejectionReason, &c.Detail, &c.IssuedAt, &c.ExpiresAt, &c.CompletedAt)
			return c, err
		}, func(c backstop.CommandInfo) string { return c.ID })
}
