package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// checkTermTx verifies term is still the leader term, holding it for the
// transaction (FOR SHARE): a new leader's TryLead waits for us to commit,
// and after it commits we fail here. Term 0 (operator actions on any
// replica) reads the current term instead.
func checkTermTx(ctx context.Context, tx pgx.Tx, term int64) (int64, error) {
	var cur int64
	if err := tx.QueryRow(ctx, `SELECT term FROM control_plane WHERE id = 1 FOR SHARE`).Scan(&cur); err != nil {
		return 0, err
	}
	if term != 0 && term != cur {
		return 0, fmt.Errorf("%w (term %d, now %d)", backstop.ErrStaleTerm, term, cur)
	}
	return cur, nil
}

// JudgeNodes is the failure detector, run by the leader. It looks at
// every up or unreachable node whose lease (TTL plus grace, measured from
// the receipt of its last heartbeat by the database clock) ran out, and
// decides from what its peers report:
//
//   - seen: a fresh peer (state up, lease not expired) reports a live
//     path to it → `unreachable`, warning, nothing moves. The node may
//     still serve.
//   - witnessed dead: no fresh peer sees it, and at least one fresh peer
//     whose report was received after the node's last heartbeat
//     (nodes.last_heartbeat_at, both by the database clock) has path
//     entries for it, all of them down → `down`, critical; its
//     hierarchies fail over.
//   - no evidence: no fresh peer report says anything about it since its
//     last heartbeat → no transition and no event. The node keeps its
//     state and is judged again at the next pass.
//
// Why positive evidence: a lease lapses either because the node died or
// because the control plane (backstopd, PostgreSQL, the network to them)
// was too slow to take its heartbeat. When the control plane is starved,
// every lease lapses at once, so no peer report is fresh; "no fresh peer
// sees it" then holds for healthy, mutually visible nodes whose agents see
// a majority and so, by design, do not fence themselves. Declaring them
// down would start second copies. An agent fences itself only without a
// majority; the server declares down only when a live peer looks at the
// node and sees it dead. A lapse that is the control plane's own fault
// therefore moves nothing (Kubernetes' node lifecycle controller likewise
// stops evicting when most of a zone goes NotReady at once). A real
// crash is still found at once: the crashed node's peers keep
// heartbeating, and their path to it is dead (path_heartbeat_ms ×
// path_dead_after ≤ lease_ttl_ms) by the time its lease runs out. Two of
// three nodes crashing together are both down on the third's reports.
//
// A node with no enrolled peer (a one-node cluster, or one whose other
// nodes never enrolled) can never get evidence. Its lapsed lease makes it
// `unreachable`, never `down`: no other node could take its hierarchies,
// its agent never fences itself (it is always a majority of one), so
// "down" would be a claim nobody checked, and marking its hierarchies
// failed would stop services an overloaded control plane merely lost.
//
// A new leader judges nobody until one lease period after it took over.
// Term is checked (and held) first: a deposed leader writes nothing.
//
// A node whose row is locked (a heartbeat renewing its lease right now)
// is skipped, judged at the next pass if its lease is still out: the
// failure detector never waits on a heartbeat, and so never makes the
// heartbeats behind it wait on it. Skipping only delays a judgement; it
// can never declare anything. The evidence is read before any node is
// locked, and the locks are taken only on nodes unchanged since (same
// state, no heartbeat since): the pass over the peers' reports, which
// takes long when most nodes lapsed at once, holds no lock a heartbeat
// needs.
func (s *Store) JudgeNodes(ctx context.Context, term int64) ([]backstop.NodeTransition, error) {
	return withTx(ctx, s, func(tx pgx.Tx) ([]backstop.NodeTransition, error) {
		if _, err := checkTermTx(ctx, tx, term); err != nil {
			return nil, err
		}
		// lapsed: the nodes to judge. evidence: per cluster of a lapsed
		// node and per node reported on, what the fresh peers (up, lease
		// running) report: whether any sees it up, and the latest receipt
		// of a report with an entry for it. Read in one pass over the
		// reports, not once per lapsed node: when the control plane was
		// starved, most nodes lapse at once, and a per-node pass was
		// quadratic exactly then. Read without locking anything: the pass
		// over the reports is the expensive part, and a heartbeat must not
		// wait for it (see lockUnchanged).
		rows, err := tx.Query(ctx, `WITH lapsed AS (
				SELECT n.id, n.cluster_id, n.name, n.state, n.last_heartbeat_at
				FROM nodes n JOIN clusters c ON c.id = n.cluster_id CROSS JOIN control_plane cp
				WHERE n.state IN ('up', 'unreachable') AND n.lease_expires_at < now()
				AND cp.leader_since + make_interval(secs => ((c.timing->>'lease_ttl_ms')::int + (c.timing->>'server_grace_ms')::int) / 1000.0) < now()),
			evidence AS (
				SELECT p.cluster_id, e->>'peer_node_id' AS node_id, bool_or(e->>'state' = 'up') AS seen, max(p.last_heartbeat_at) AS latest
				FROM nodes p, jsonb_array_elements(coalesce(p.report->'paths', '[]'::jsonb)) e
				WHERE p.cluster_id IN (SELECT cluster_id FROM lapsed) AND p.state = 'up' AND p.lease_expires_at > now()
				AND e->>'peer_node_id' <> p.id::text
				GROUP BY 1, 2)
			SELECT l.id, l.cluster_id, l.name, l.state, l.last_heartbeat_at,
				coalesce(ev.seen, false),
				coalesce(ev.latest > coalesce(l.last_heartbeat_at, '-infinity'::timestamptz), false),
				NOT EXISTS (SELECT 1 FROM nodes p WHERE p.cluster_id = l.cluster_id AND p.id <> l.id AND p.state <> 'pending')
			FROM lapsed l LEFT JOIN evidence ev ON ev.cluster_id = l.cluster_id AND ev.node_id = l.id::text
			ORDER BY l.id`)
		if err != nil {
			return nil, err
		}
		type row struct {
			t                      backstop.NodeTransition
			lastHeartbeat          *time.Time
			seen, witnessed, alone bool
			sev, msg               string
		}
		rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.t.NodeID, &x.t.ClusterID, &x.t.Node, &x.t.From, &x.lastHeartbeat, &x.seen, &x.witnessed, &x.alone)
			return x, err
		})
		if err != nil {
			return nil, err
		}
		var judged []row
		for _, x := range rs {
			switch {
			case x.seen:
				x.t.To, x.sev, x.msg = backstop.NodeUnreachable, backstop.SeverityWarning, "node %s is unreachable: the control plane lost it but a peer still sees it; nothing moves"
			case x.witnessed:
				x.t.To, x.sev, x.msg = backstop.NodeDown, backstop.SeverityCritical, "node %s is down: its lease expired and its peers see it on no communication path"
			case x.alone:
				x.t.To, x.sev, x.msg = backstop.NodeUnreachable, backstop.SeverityWarning, "node %s is unreachable: its lease expired and it has no peer that could see it dead; nothing moves"
			default:
				continue // no fresh evidence either way: judge it again later
			}
			if x.t.To != x.t.From {
				judged = append(judged, x)
			}
		}
		if len(judged) == 0 {
			return []backstop.NodeTransition{}, nil
		}
		// lockUnchanged: lock, in one order, the judged nodes that nothing
		// else holds (SKIP LOCKED: see above) and whose row has not changed
		// since the evidence was read (same state, no heartbeat since,
		// lease still out). The verdict is applied only to those; the
		// others are judged again at the next pass. The evidence is as old
		// as it would be had it been read under the locks: a statement
		// sees the reports as of its start either way.
		ids := make([]string, len(judged))
		froms := make([]string, len(judged))
		hbs := make([]*time.Time, len(judged))
		for i, x := range judged {
			ids[i], froms[i], hbs[i] = x.t.NodeID, string(x.t.From), x.lastHeartbeat
		}
		rows, err = tx.Query(ctx, `SELECT n.id FROM nodes n JOIN unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS b(id, state, hb) ON n.id = b.id
			WHERE n.state = b.state AND n.last_heartbeat_at IS NOT DISTINCT FROM b.hb AND n.lease_expires_at < now()
			ORDER BY n.id FOR UPDATE OF n SKIP LOCKED`, ids, froms, hbs)
		if err != nil {
			return nil, err
		}
		locked, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, err
		}
		held := make(map[string]bool, len(locked))
		for _, id := range locked {
			held[id] = true
		}
		out := []backstop.NodeTransition{}
		for _, x := range judged {
			if !held[x.t.NodeID] {
				continue
			}
			if _, err := tx.Exec(ctx, `UPDATE nodes SET state = $2, state_since = now() WHERE id = $1`, x.t.NodeID, x.t.To); err != nil {
				return nil, err
			}
			if err := writeEvent(ctx, tx, x.t.ClusterID, "node."+string(x.t.To), x.sev, map[string]string{"node_id": x.t.NodeID},
				map[string]any{"from": x.t.From}, x.msg, x.t.Node); err != nil {
				return nil, err
			}
			out = append(out, x.t)
		}
		return out, nil
	})
}

// LeaseOutlook tells the engine, in one pass over the nodes, whether any
// lease of an up or unreachable node has run out (JudgeNodes has work:
// the engine skips it otherwise, it is the costliest read of a pass) and
// how long until the next running one runs out, by the database clock.
// The engine sleeps until then instead of polling blindly, so detection
// costs no tick latency. Leases that already ran out are left out of
// Next: a node JudgeNodes left unjudged (no fresh evidence, or a new
// leader's grace) or found unreachable would otherwise make the engine
// wake at once, again and again, and spin exactly when the control plane
// is overloaded. Such nodes are judged again at the engine's passes.
func (s *Store) LeaseOutlook(ctx context.Context) (backstop.LeaseOutlook, error) {
	var ms *float64
	var o backstop.LeaseOutlook
	err := s.pool.QueryRow(ctx, `SELECT extract(epoch FROM min(lease_expires_at) FILTER (WHERE lease_expires_at > now()) - now()) * 1000,
		coalesce(bool_or(lease_expires_at < now()), false)
		FROM nodes WHERE state IN ('up', 'unreachable')`).Scan(&ms, &o.Lapsed)
	if err != nil {
		return o, interpretError(err)
	}
	if ms != nil {
		o.Running, o.Next = true, time.Duration(*ms*float64(time.Millisecond))
	}
	return o, nil
}

// ClusterStatuses reads what the failover engine decides from, for the
// clusters ids that have hierarchies (nil: every cluster with
// hierarchies; ids of clusters gone or without hierarchies are left
// out). Placements failed on an up node (the agent gave up after local
// recovery, or a bring-up failed) are first turned into failed marks.
func (s *Store) ClusterStatuses(ctx context.Context, ids []string) ([]backstop.ClusterStatus, error) {
	return withTx(ctx, s, func(tx pgx.Tx) ([]backstop.ClusterStatus, error) {
		if _, err := tx.Exec(ctx, `INSERT INTO failed_marks (hierarchy_id, node_id, reason)
			SELECT h.id, h.placement_node_id, h.placement_detail FROM hierarchies h JOIN nodes n ON n.id = h.placement_node_id
			WHERE h.placement_state = 'failed' AND n.state = 'up' AND ($1::uuid[] IS NULL OR h.cluster_id = ANY($1::uuid[]))
			ON CONFLICT DO NOTHING`, ids); err != nil {
			return nil, err
		}
		rows, err := tx.Query(ctx, `SELECT `+clusterColumns+` FROM clusters c WHERE EXISTS (SELECT 1 FROM hierarchies h WHERE h.cluster_id = c.id)
			AND ($1::uuid[] IS NULL OR c.id = ANY($1::uuid[])) ORDER BY id`, ids)
		if err != nil {
			return nil, err
		}
		cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Cluster, error) { return scanCluster(r) })
		if err != nil {
			return nil, err
		}
		return clusterStatusesTx(ctx, tx, cs)
	})
}

// ClusterStatus reads one cluster as the engine sees it (for explain and
// simulate).
func (s *Store) ClusterStatus(ctx context.Context, clusterID string) (backstop.ClusterStatus, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.ClusterStatus, error) {
		c, err := scanCluster(tx.QueryRow(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE id = $1`, clusterID))
		if err != nil {
			return backstop.ClusterStatus{}, fmt.Errorf("cluster %s: %w", clusterID, interpretError(err))
		}
		return clusterStatusTx(ctx, tx, c)
	})
}

func clusterStatusTx(ctx context.Context, tx pgx.Tx, c backstop.Cluster) (backstop.ClusterStatus, error) {
	sts, err := clusterStatusesTx(ctx, tx, []backstop.Cluster{c})
	if err != nil {
		return backstop.ClusterStatus{}, err
	}
	return sts[0], nil
}

// clusterStatusesTx reads the engine's view of clusters cs in four
// queries whatever their number (nodes, hierarchies, priorities, failed
// marks), in cs's order; within a cluster nodes and hierarchies are in id
// order. A query per cluster made the engine's step grow with the number
// of clusters times four round trips, at twenty steps a second.
func clusterStatusesTx(ctx context.Context, tx pgx.Tx, cs []backstop.Cluster) ([]backstop.ClusterStatus, error) {
	out := make([]backstop.ClusterStatus, len(cs))
	ids := make([]string, len(cs))
	idx := make(map[string]int, len(cs))
	for i, c := range cs {
		out[i] = backstop.ClusterStatus{Cluster: c, Nodes: []backstop.NodeStatus{}, Hierarchies: []backstop.HierarchyStatus{}}
		ids[i] = c.ID
		idx[c.ID] = i
	}
	if len(cs) == 0 {
		return out, nil
	}
	// seen: the nodes some fresh peer (up, lease not expired) of their
	// cluster reports a live path to, read in one pass over the reports
	// rather than once per node (which was quadratic in a cluster's
	// nodes).
	rows, err := tx.Query(ctx, `WITH seen AS (SELECT DISTINCT p.cluster_id, e->>'peer_node_id' AS id
			FROM nodes p, jsonb_array_elements(coalesce(p.report->'paths', '[]'::jsonb)) e
			WHERE p.cluster_id = ANY($1::uuid[]) AND p.state = 'up' AND p.lease_expires_at > now()
			AND e->>'state' = 'up' AND e->>'peer_node_id' <> p.id::text)
		SELECT n.cluster_id, n.id, n.name, n.state, n.maintenance, n.state_since,
		EXISTS (SELECT 1 FROM seen WHERE seen.cluster_id = n.cluster_id AND seen.id = n.id::text),
		`+awaitingFenceSQL+`
		FROM nodes n WHERE n.cluster_id = ANY($1::uuid[]) ORDER BY n.cluster_id, n.id`, ids)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var cid string
		var n backstop.NodeStatus
		if err := rows.Scan(&cid, &n.ID, &n.Name, &n.State, &n.Maintenance, &n.StateSince, &n.PathsAlive, &n.AwaitingFence); err != nil {
			rows.Close()
			return nil, err
		}
		out[idx[cid]].Nodes = append(out[idx[cid]].Nodes, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = tx.Query(ctx, `SELECT `+hierarchyColumns+`, last_decision, coalesce(move_to::text, '') FROM hierarchies
		WHERE cluster_id = ANY($1::uuid[]) ORDER BY cluster_id, id`, ids)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.HierarchyStatus, error) {
		var h backstop.HierarchyStatus
		p := &h.Placement
		err := r.Scan(&h.ID, &h.ClusterID, &h.Name, &h.Description, &h.ExclusivityGroup, &h.Switchback, &h.Resources, &h.Version, &h.CreatedAt, &h.UpdatedAt,
			&p.NodeID, &p.Epoch, &p.State, &p.Detail, &p.UpdatedAt, &h.LastDecision, &h.MoveTo)
		h.FailedOn = map[string]string{}
		return h, err
	})
	if err != nil {
		return nil, err
	}
	hs := make([]backstop.Hierarchy, len(all))
	for i, h := range all {
		hs[i] = h.Hierarchy
	}
	if err := loadPriorities(ctx, tx, hs); err != nil {
		return nil, err
	}
	type loc struct{ c, h int }
	at := make(map[string]loc, len(all))
	for i, h := range all {
		h.Priorities = hs[i].Priorities
		ci := idx[h.ClusterID]
		at[h.ID] = loc{ci, len(out[ci].Hierarchies)}
		out[ci].Hierarchies = append(out[ci].Hierarchies, h)
	}
	rows, err = tx.Query(ctx, `SELECT m.hierarchy_id, m.node_id, m.reason FROM failed_marks m JOIN hierarchies h ON h.id = m.hierarchy_id
		WHERE h.cluster_id = ANY($1::uuid[])`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var hid, nid, reason string
		if err := rows.Scan(&hid, &nid, &reason); err != nil {
			return nil, err
		}
		if l, ok := at[hid]; ok {
			out[l.c].Hierarchies[l.h].FailedOn[nid] = reason
		}
	}
	return out, rows.Err()
}

func insertDecisionTx(ctx context.Context, tx pgx.Tx, d backstop.DecisionRecord) error {
	if d.Candidates == nil {
		d.Candidates = json.RawMessage("[]")
	}
	if d.Inputs == nil {
		d.Inputs = json.RawMessage("{}")
	}
	_, err := tx.Exec(ctx, `INSERT INTO decisions (cluster_id, hierarchy_id, kind, from_node, to_node, reason, candidates, inputs, term)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, d.ClusterID, d.HierarchyID, d.Kind, nullUUID(d.From), nullUUID(d.To), d.Reason, d.Candidates, d.Inputs, d.Term)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE hierarchies SET last_decision = $2 WHERE id = $1`, d.HierarchyID, d.Key)
	return err
}

// issueCommandParams are the parameters of issueCommandTx: a struct, as
// River's driver params are, because six positional ids, states and
// actions were easy to pass in the wrong order.
type issueCommandParams struct {
	// Hierarchy is the locked hierarchy; its placement epoch is bumped.
	Hierarchy backstop.Hierarchy
	// NodeID is the node the command is for; Action what it runs there.
	NodeID string
	Action string
	// State is the hierarchy's placement state from now on.
	State backstop.PlacementState
	// Term is the leader's term (0 for an operator's action).
	Term int64
	// IncidentID and OperationID link the command ("" for none).
	IncidentID  string
	OperationID string
}

// issueCommandTx bumps a hierarchy's epoch, sets its placement, and stores
// a signed command for p.NodeID in one go.
func issueCommandTx(ctx context.Context, tx pgx.Tx, p issueCommandParams, sign backstop.Signer) (backstop.CommandSpec, error) {
	h := p.Hierarchy
	spec := backstop.CommandSpec{ID: newID(), ClusterID: h.ClusterID, NodeID: p.NodeID, HierarchyID: h.ID, Hierarchy: h.Name,
		Epoch: h.Placement.Epoch + 1, Term: p.Term, Action: p.Action, Resources: backstop.BringUpOrder(h.Resources)}
	sc, issued, expires, err := sign(spec)
	if err != nil {
		return spec, err
	}
	if _, err := tx.Exec(ctx, `UPDATE hierarchies SET placement_node_id = $2, epoch = $3, placement_state = $4,
		placement_detail = '', placement_updated_at = now() WHERE id = $1`, h.ID, p.NodeID, spec.Epoch, p.State); err != nil {
		return spec, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO commands (id, cluster_id, node_id, hierarchy_id, operation_id, incident_id, action, epoch, term, key_id, payload, signature, issued_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		spec.ID, h.ClusterID, p.NodeID, h.ID, nullUUID(p.OperationID), nullUUID(p.IncidentID), p.Action, spec.Epoch, p.Term, sc.KeyID, sc.Payload, sc.Signature, issued, expires)
	if err != nil {
		return spec, err
	}
	_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, CommandNotifyChannel, p.NodeID)
	return spec, err
}

func lockHierarchyTx(ctx context.Context, tx pgx.Tx, clusterID, id string) (backstop.Hierarchy, error) {
	h, err := scanHierarchy(tx.QueryRow(ctx, `SELECT `+hierarchyColumns+` FROM hierarchies WHERE cluster_id = $1 AND id = $2 FOR UPDATE`, clusterID, id))
	if err != nil {
		return h, fmt.Errorf("hierarchy %s: %w", id, interpretError(err))
	}
	return h, nil
}

// StartMove starts moving a hierarchy, as the leader (term) or an operator
// (term 0) decided. From a down node, or a hierarchy with no node, it is
// brought in service on the target at once (the old node fenced itself
// before the server's lease ran out). From a live node it is first taken
// out of service there; AdvanceMoves brings it up on the target once that
// succeeded. Each step bumps the epoch. It returns the incident and, when
// asked, the operation. backstop.ErrConflict when the hierarchy changed
// since the decision (epoch) or a move is already running.
func (s *Store) StartMove(ctx context.Context, term int64, m backstop.MoveRequest, sign backstop.Signer) (backstop.Incident, *backstop.Operation, error) {
	type out struct {
		inc backstop.Incident
		op  *backstop.Operation
	}
	o, err := withTx(ctx, s, func(tx pgx.Tx) (out, error) {
		var o out
		cur, err := checkTermTx(ctx, tx, term)
		if err != nil {
			return o, err
		}
		h, err := lockHierarchyTx(ctx, tx, m.ClusterID, m.HierarchyID)
		if err != nil {
			return o, err
		}
		if m.ExpectEpoch >= 0 && h.Placement.Epoch != m.ExpectEpoch {
			return o, fmt.Errorf("%w: hierarchy %q changed (epoch %d, decided at %d)", backstop.ErrConflict, h.Name, h.Placement.Epoch, m.ExpectEpoch)
		}
		var moving *string
		if err := tx.QueryRow(ctx, `SELECT move_to::text FROM hierarchies WHERE id = $1`, h.ID).Scan(&moving); err != nil {
			return o, err
		}
		if moving != nil {
			return o, fmt.Errorf("%w: hierarchy %q is already moving to node %s", backstop.ErrConflict, h.Name, *moving)
		}
		from := h.Placement.NodeID
		var fromState backstop.NodeState
		var awaitingFence bool
		if from != "" {
			if err := tx.QueryRow(ctx, `SELECT state, `+awaitingFenceSQL+` FROM nodes n WHERE id = $1`, from).Scan(&fromState, &awaitingFence); err != nil {
				return o, err
			}
		}
		if awaitingFence {
			// The engine's decision waits for the fence already; this
			// holds for an operator's move too.
			return o, fmt.Errorf("%w: node of hierarchy %q is down and awaits its fence; nothing moves off it until its fence device confirms it off (or the device is removed)",
				backstop.ErrConflict, h.Name)
		}
		now := time.Now()
		o.inc = backstop.Incident{ID: newID(), ClusterID: m.ClusterID, HierarchyID: h.ID, Kind: m.Kind, From: from, To: m.To,
			Reason: m.Decision.Reason, State: "open", DetectedAt: m.DetectedAt, DecidedAt: &now}
		if _, err := tx.Exec(ctx, `INSERT INTO incidents (id, cluster_id, hierarchy_id, kind, from_node, to_node, reason, detected_at, decided_at, fenced_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(),
				(SELECT fenced_at FROM nodes WHERE id = $5 AND state = 'down' AND fenced_at >= state_since))`,
			o.inc.ID, m.ClusterID, h.ID, m.Kind, nullUUID(from), m.To, m.Decision.Reason, m.DetectedAt); err != nil {
			return o, err
		}
		m.Decision.Term = cur
		if err := insertDecisionTx(ctx, tx, m.Decision); err != nil {
			return o, err
		}
		opID := ""
		if m.WithOperation {
			op := backstop.Operation{ID: newID(), ClusterID: m.ClusterID, HierarchyID: h.ID, NodeID: m.To, Kind: "switchover",
				State: backstop.OperationPending, Epoch: h.Placement.Epoch + 1, Steps: []backstop.StepResult{}}
			if err := tx.QueryRow(ctx, `INSERT INTO operations (id, cluster_id, hierarchy_id, node_id, kind, epoch, target_node_id)
				VALUES ($1, $2, $3, $4, 'switchover', $5, $4) RETURNING created_at, updated_at`, op.ID, m.ClusterID, h.ID, m.To, op.Epoch).Scan(&op.CreatedAt, &op.UpdatedAt); err != nil {
				return o, err
			}
			o.op, opID = &op, op.ID
		}
		liveFrom := from != "" && fromState != backstop.NodeDown && (h.Placement.State == backstop.PlacementInService || h.Placement.State == backstop.PlacementStarting)
		subject := map[string]string{"hierarchy_id": h.ID, "incident_id": o.inc.ID}
		if liveFrom {
			spec, err := issueCommandTx(ctx, tx, issueCommandParams{Hierarchy: h, NodeID: from, Action: "take_out_of_service",
				State: backstop.PlacementStopping, Term: cur, IncidentID: o.inc.ID, OperationID: opID}, sign)
			if err != nil {
				return o, err
			}
			if _, err := tx.Exec(ctx, `UPDATE hierarchies SET move_to = $2, move_incident = $3 WHERE id = $1`, h.ID, m.To, o.inc.ID); err != nil {
				return o, err
			}
			if o.op != nil {
				o.op.CommandID = spec.ID
				if _, err := tx.Exec(ctx, `UPDATE operations SET command_id = $2 WHERE id = $1`, opID, spec.ID); err != nil {
					return o, err
				}
			}
		} else {
			spec, err := issueCommandTx(ctx, tx, issueCommandParams{Hierarchy: h, NodeID: m.To, Action: "bring_in_service",
				State: backstop.PlacementStarting, Term: cur, IncidentID: o.inc.ID, OperationID: opID}, sign)
			if err != nil {
				return o, err
			}
			if o.op != nil {
				o.op.CommandID = spec.ID
				if _, err := tx.Exec(ctx, `UPDATE operations SET command_id = $2 WHERE id = $1`, opID, spec.ID); err != nil {
					return o, err
				}
			}
		}
		sev := backstop.SeverityInfo
		if m.Kind == backstop.MoveFailover {
			sev = backstop.SeverityCritical
		}
		if err := writeEvent(ctx, tx, m.ClusterID, m.Kind+".started", sev, subject,
			map[string]any{"from_node_id": from, "to_node_id": m.To, "reason": m.Decision.Reason},
			"%s of %s started: %s", m.Kind, h.Name, m.Decision.Reason); err != nil {
			return o, err
		}
		return o, audit(ctx, tx, "hierarchy."+m.Kind, "hierarchy", h.ID, m.ClusterID, map[string]any{"from": from, "to": m.To, "incident_id": o.inc.ID})
	})
	return o.inc, o.op, err
}

// AdvanceMoves brings hierarchies whose old node finished taking them out
// of service in service on their move's target, and abandons moves whose
// stop failed. It returns how many moved on. A successful stop usually
// advanced its move already (RecordCommandResult); this catches the rest:
// a failed stop, a result recorded without a signer.
func (s *Store) AdvanceMoves(ctx context.Context, term int64, sign backstop.Signer) (int, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (int, error) {
		cur, err := checkTermTx(ctx, tx, term)
		if err != nil {
			return 0, err
		}
		return advanceMovesTx(ctx, tx, cur, sign, "")
	})
}

// advanceMovesTx advances the moves whose stop finished (of hierarchy
// hierarchyID only, if not ""), with leader term cur: a bring-up on the
// target for a stop that succeeded, the incident and operation failed
// for one that failed. The hierarchies are locked; each move is cleared
// as it advances, so it advances once.
func advanceMovesTx(ctx context.Context, tx pgx.Tx, cur int64, sign backstop.Signer, hierarchyID string) (int, error) {
	rows, err := tx.Query(ctx, `SELECT `+hierarchyColumns+`, move_to::text, coalesce(move_incident::text, '') FROM hierarchies
		WHERE move_to IS NOT NULL AND placement_state IN ('out_of_service', 'failed') AND ($1::uuid IS NULL OR id = $1::uuid) FOR UPDATE`, nullUUID(hierarchyID))
	if err != nil {
		return 0, err
	}
	type row struct {
		h       backstop.Hierarchy
		to, inc string
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		p := &x.h.Placement
		err := r.Scan(&x.h.ID, &x.h.ClusterID, &x.h.Name, &x.h.Description, &x.h.ExclusivityGroup, &x.h.Switchback, &x.h.Resources, &x.h.Version, &x.h.CreatedAt, &x.h.UpdatedAt,
			&p.NodeID, &p.Epoch, &p.State, &p.Detail, &p.UpdatedAt, &x.to, &x.inc)
		return x, err
	})
	if err != nil {
		return 0, err
	}
	for _, x := range rs {
		if _, err := tx.Exec(ctx, `UPDATE hierarchies SET move_to = NULL, move_incident = NULL WHERE id = $1`, x.h.ID); err != nil {
			return 0, err
		}
		var opID *string
		_ = tx.QueryRow(ctx, `SELECT operation_id::text FROM commands WHERE incident_id = $1 AND operation_id IS NOT NULL LIMIT 1`, x.inc).Scan(&opID)
		if x.h.Placement.State == backstop.PlacementFailed {
			if _, err := tx.Exec(ctx, `UPDATE incidents SET state = 'failed' WHERE id = $1`, x.inc); err != nil {
				return 0, err
			}
			if opID != nil {
				if _, err := tx.Exec(ctx, `UPDATE operations SET state = 'failed', detail = $2, updated_at = now() WHERE id = $1`, *opID, "stopping on the old node failed: "+x.h.Placement.Detail); err != nil {
					return 0, err
				}
			}
			continue
		}
		if _, err := issueCommandTx(ctx, tx, issueCommandParams{Hierarchy: x.h, NodeID: x.to, Action: "bring_in_service",
			State: backstop.PlacementStarting, Term: cur, IncidentID: x.inc, OperationID: deref(opID)}, sign); err != nil {
			return 0, err
		}
	}
	return len(rs), nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// FailHierarchy records that no node can take a hierarchy: its placement
// becomes failed with no node, and a critical event says why.
func (s *Store) FailHierarchy(ctx context.Context, term int64, clusterID, hierarchyID string, expectEpoch int64, d backstop.DecisionRecord) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		cur, err := checkTermTx(ctx, tx, term)
		if err != nil {
			return struct{}{}, err
		}
		h, err := lockHierarchyTx(ctx, tx, clusterID, hierarchyID)
		if err != nil {
			return struct{}{}, err
		}
		if h.Placement.Epoch != expectEpoch {
			return struct{}{}, fmt.Errorf("%w: hierarchy changed since the decision", backstop.ErrConflict)
		}
		d.Term = cur
		if err := insertDecisionTx(ctx, tx, d); err != nil {
			return struct{}{}, err
		}
		if _, err := tx.Exec(ctx, `UPDATE hierarchies SET placement_node_id = NULL, epoch = epoch + 1, placement_state = 'failed',
			placement_detail = $2, placement_updated_at = now() WHERE id = $1`, h.ID, d.Reason); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, writeEvent(ctx, tx, clusterID, "hierarchy.failed", backstop.SeverityCritical, map[string]string{"hierarchy_id": h.ID},
			map[string]any{"reason": d.Reason, "candidates": d.Candidates}, "hierarchy %s failed: %s", h.Name, d.Reason)
	})
	return err
}

// NoteDecision stores a decision that moves nothing (a possible
// switchback under the intelligent policy) with its event.
func (s *Store) NoteDecision(ctx context.Context, term int64, d backstop.DecisionRecord, eventType, message string) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		cur, err := checkTermTx(ctx, tx, term)
		if err != nil {
			return struct{}{}, err
		}
		d.Term = cur
		if err := insertDecisionTx(ctx, tx, d); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, writeEvent(ctx, tx, d.ClusterID, eventType, backstop.SeverityInfo, map[string]string{"hierarchy_id": d.HierarchyID, "node_id": d.To},
			map[string]any{"reason": d.Reason}, "%s", message)
	})
	return err
}
