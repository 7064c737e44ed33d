package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// CredentialPrefix starts every agent credential.
const CredentialPrefix = "bsa_"

const signingKeyColumns = `key_id, public_key, active, coalesce(endorsed_by, ''), endorsement, created_at, private_sealed`

func scanSigningKey(row pgx.Row) (backstop.SealedKey, error) {
	var k backstop.SealedKey
	err := row.Scan(&k.KeyID, &k.PublicKey, &k.Active, &k.EndorsedBy, &k.Endorsement, &k.CreatedAt, &k.PrivateSealed)
	return k, err
}

// ListSigningKeys returns every signing key, oldest first.
func (s *Store) ListSigningKeys(ctx context.Context) ([]backstop.SealedKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+signingKeyColumns+` FROM signing_keys ORDER BY created_at, key_id`)
	if err != nil {
		return nil, interpretError(err)
	}
	ks, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.SealedKey, error) { return scanSigningKey(r) })
	return ks, interpretError(err)
}

// EnsureSigningKey returns the active signing key, creating the first one
// with create when none exists. Replicas starting together serialise on an
// advisory lock, so exactly one first key is made.
func (s *Store) EnsureSigningKey(ctx context.Context, create func() (backstop.SealedKey, error)) (backstop.SealedKey, error) {
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.SealedKey, error) {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('backstop.signing-key'))`); err != nil {
			return backstop.SealedKey{}, err
		}
		k, err := scanSigningKey(tx.QueryRow(ctx, `SELECT `+signingKeyColumns+` FROM signing_keys WHERE active`))
		if err == nil || !errors.Is(err, pgx.ErrNoRows) {
			return k, err
		}
		k, err = create()
		if err != nil {
			return k, err
		}
		return k, insertSigningKeyTx(ctx, tx, k)
	})
}

func insertSigningKeyTx(ctx context.Context, tx pgx.Tx, k backstop.SealedKey) error {
	if _, err := tx.Exec(ctx, `UPDATE signing_keys SET active = false WHERE active`); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO signing_keys (key_id, public_key, private_sealed, active, endorsed_by, endorsement)
		VALUES ($1, $2, $3, true, $4, $5)`, k.KeyID, k.PublicKey, k.PrivateSealed, nullString(k.EndorsedBy), k.Endorsement)
	if err != nil {
		return err
	}
	// Every agent must learn the new key.
	if _, err := tx.Exec(ctx, `UPDATE clusters SET config_version = config_version + 1`); err != nil {
		return err
	}
	return audit(ctx, tx, "signing_key.create", "signing_key", k.KeyID, "", map[string]any{"endorsed_by": k.EndorsedBy})
}

// RotateSigningKey makes k (endorsed by the key active until now) the
// active key; the older keys stay trusted.
func (s *Store) RotateSigningKey(ctx context.Context, k backstop.SealedKey) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('backstop.signing-key'))`); err != nil {
			return struct{}{}, err
		}
		var active string
		if err := tx.QueryRow(ctx, `SELECT key_id FROM signing_keys WHERE active`).Scan(&active); err != nil {
			return struct{}{}, err
		}
		if active != k.EndorsedBy {
			return struct{}{}, fmt.Errorf("%w: the active key changed during rotation (now %s); retry", backstop.ErrConflict, active)
		}
		return struct{}{}, insertSigningKeyTx(ctx, tx, k)
	})
	return err
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// CurrentTerm returns the leader term commands carry.
func (s *Store) CurrentTerm(ctx context.Context) (int64, error) {
	var t int64
	err := s.pool.QueryRow(ctx, `SELECT term FROM control_plane WHERE id = 1`).Scan(&t)
	return t, interpretError(err)
}

// Enroll exchanges a node's one-time enrollment token for an agent
// credential, which it returns (stored only as a hash). It returns
// backstop.ErrUnauthenticated, saying why, for an unknown, used or expired
// token.
func (s *Store) Enroll(ctx context.Context, token string, publicKey []byte, facts backstop.HostFacts) (backstop.Node, string, error) {
	credential := NewSecret(CredentialPrefix)
	n, err := withTx(ctx, s, func(tx pgx.Tx) (backstop.Node, error) {
		var id string
		var expires time.Time
		var was backstop.NodeState
		err := tx.QueryRow(ctx, `SELECT id, enrollment_expires_at, state FROM nodes WHERE enrollment_hash = $1 FOR UPDATE`, hashSecret(token)).Scan(&id, &expires, &was)
		if errors.Is(err, pgx.ErrNoRows) {
			return backstop.Node{}, fmt.Errorf("%w: the enrollment token is unknown or was already used; create a new node or ask an administrator", backstop.ErrUnauthenticated)
		}
		if err != nil {
			return backstop.Node{}, err
		}
		if time.Now().After(expires) {
			return backstop.Node{}, fmt.Errorf("%w: the enrollment token expired at %s", backstop.ErrUnauthenticated, expires.UTC().Format(time.RFC3339))
		}
		n, err := scanNode(tx.QueryRow(ctx, `UPDATE nodes SET enrollment_hash = NULL, credential_hash = $2, agent_public_key = $3, facts = $4,
			enrolled_at = now(), last_heartbeat_at = now(), state = 'up', state_since = now(), version = version + 1, updated_at = now()
			WHERE id = $1 RETURNING `+nodeColumns, id, hashSecret(credential), publicKey, facts))
		if err != nil {
			return n, err
		}
		// No configuration version bump: nothing any agent's
		// configuration holds changes here. Peers (id and name), paths
		// (addresses) and hierarchies are the same before and after; the
		// node was a peer from its creation, which bumped the version.
		// Bumping here made every running agent of the cluster fetch its
		// whole configuration again at each enrollment, quadratic in the
		// cluster's size during a mass enrollment (issue 10). The
		// enrolling agent fetches its own after its first heartbeat.
		//
		// The node is up from its enrollment on, so its first heartbeat
		// finds it up: the node.up of its first time is written here.
		if was != backstop.NodeUp {
			if err := writeEvent(ctx, tx, n.ClusterID, "node.up", backstop.SeverityInfo, map[string]string{"node_id": n.ID},
				map[string]any{"from": was}, "node %s is up (was %s)", n.Name, was); err != nil {
				return n, err
			}
		}
		return n, audit(backstop.WithActor(ctx, backstop.Actor{Name: "agent:" + n.Name}), tx, "node.enroll", "node", n.ID, n.ClusterID,
			map[string]any{"hostname": facts.Hostname, "agent_version": facts.AgentVersion})
	})
	return n, credential, err
}

// AuthenticateAgent returns the agent whose credential this is, or
// backstop.ErrUnauthenticated.
func (s *Store) AuthenticateAgent(ctx context.Context, credential string) (backstop.AgentIdentity, error) {
	var a backstop.AgentIdentity
	err := s.pool.QueryRow(ctx, `SELECT id, cluster_id, name, agent_public_key FROM nodes WHERE credential_hash = $1`, hashSecret(credential)).Scan(&a.NodeID, &a.ClusterID, &a.NodeName, &a.PublicKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, backstop.ErrUnauthenticated
	}
	return a, interpretError(err)
}

// heartbeatLockWaitSQL bounds how long a full heartbeat waits for a lock
// (heartbeatLockWait).
const heartbeatLockWaitSQL = `SET LOCAL lock_timeout = '250ms'`

// RecordHeartbeat renews a node's lease, measured by the server's clock
// from now: the cluster's lease TTL plus the server grace, so the agent's
// own deadline (TTL from its send time) always passes first. An agent
// announcing a restart (r.RestartHold longer than the TTL) gets the hold
// instead of the TTL, in the lease and in the answer, and a
// node.restarting event is written: its hierarchies stay in place while
// the next agent process starts (the node's fence guard keeps the same
// deadline, measured from the send time, so it passes first). It stores
// the report; reports of a failed or fenced hierarchy at its current
// epoch update the placement.
func (s *Store) RecordHeartbeat(ctx context.Context, a backstop.AgentIdentity, r backstop.AgentReport) (backstop.HeartbeatAck, error) {
	if r.RestartHold < 0 || r.RestartHold > backstop.MaxRestartHold {
		return backstop.HeartbeatAck{}, backstop.Invalid("/restart_hold_ms", "must be between 0 and %d ms", backstop.MaxRestartHold.Milliseconds())
	}
	holdMS := r.RestartHold.Milliseconds()
	return withTx(ctx, s, func(tx pgx.Tx) (backstop.HeartbeatAck, error) {
		var ack backstop.HeartbeatAck
		var ttlMS int64
		var was backstop.NodeState
		var prev []byte
		// A heartbeat waits for the node's row (a placement, the failure
		// detector, this node's previous heartbeat still running) and the
		// cluster's (events) at most heartbeatLockWait, then is answered
		// 503 and the agent sends its next one: a heartbeat that waited
		// longer would hold a pooled connection while the agent, past its
		// own deadline, already sent the next, which would wait behind
		// it. Nothing is granted by a heartbeat that gave up (the
		// transaction rolls back), so this only ever shortens leases.
		if _, err := tx.Exec(ctx, heartbeatLockWaitSQL); err != nil {
			return ack, err
		}
		var prevSeen *time.Time
		if err := tx.QueryRow(ctx, `SELECT state, report, last_heartbeat_at FROM nodes WHERE id = $1 FOR UPDATE`, a.NodeID).Scan(&was, &prev, &prevSeen); err != nil {
			return ack, fmt.Errorf("node %s: %w", a.NodeID, interpretError(err))
		}
		// The lease follows the newest heartbeat, so a hold ends with the
		// next agent process's first one; but a heartbeat of the very
		// process that asked for the hold, reaching us after it (it timed
		// out on the agent's side), must not end it: that process is gone
		// and its guard keeps the hold's deadline. Such a heartbeat keeps
		// the longer of the two leases.
		err := tx.QueryRow(ctx, `UPDATE nodes n SET last_heartbeat_at = now(),
			lease_expires_at = CASE WHEN $4 <> '' AND n.hold_instance = $4 AND $3::bigint = 0
				THEN greatest(n.lease_expires_at, now() + make_interval(secs => ((c.timing->>'lease_ttl_ms')::int + (c.timing->>'server_grace_ms')::int) / 1000.0))
				ELSE now() + make_interval(secs => (greatest((c.timing->>'lease_ttl_ms')::bigint, $3::bigint) + (c.timing->>'server_grace_ms')::int) / 1000.0) END,
			hold_instance = CASE WHEN $3::bigint > (c.timing->>'lease_ttl_ms')::bigint AND $4 <> '' THEN $4
				WHEN $4 <> '' AND n.hold_instance = $4 THEN n.hold_instance ELSE NULL END,
			report = $2, report_digest = $5, state = 'up', state_since = CASE WHEN n.state = 'up' THEN n.state_since ELSE now() END
			FROM clusters c WHERE n.id = $1 AND c.id = n.cluster_id
			RETURNING (c.timing->>'lease_ttl_ms')::bigint, c.config_version, (SELECT term FROM control_plane WHERE id = 1)`,
			a.NodeID, r.Raw, holdMS, r.Instance, nullBytes(r.Digest)).Scan(&ttlMS, &ack.ConfigVersion, &ack.Term)
		if err != nil {
			return ack, fmt.Errorf("node %s: %w", a.NodeID, interpretError(err))
		}
		if err := reportChangesTx(ctx, tx, a, prev, r.Raw); err != nil {
			return ack, err
		}
		if was != backstop.NodeUp {
			if err := writeEvent(ctx, tx, a.ClusterID, "node.up", backstop.SeverityInfo, map[string]string{"node_id": a.NodeID},
				map[string]any{"from": was}, "node %s is up (was %s)", a.NodeName, was); err != nil {
				return ack, err
			}
		}
		// The first passing deep check after a move ends its timeline.
		if _, err := tx.Exec(ctx, `UPDATE incidents i SET first_deep_check_at = now() FROM hierarchies h
			WHERE i.hierarchy_id = h.id AND i.to_node = $1 AND i.started_at IS NOT NULL AND i.first_deep_check_at IS NULL
			AND h.placement_node_id = $1 AND h.placement_state = 'in_service'
			AND EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce($2::jsonb->'resources', '[]'::jsonb)) e
				WHERE e->>'hierarchy_id' = h.id::text AND (e->'deep'->>'ok')::boolean AND (e->'deep'->>'at')::timestamptz >= i.started_at - interval '1 second')
			AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce($2::jsonb->'resources', '[]'::jsonb)) e
				WHERE e->>'hierarchy_id' = h.id::text AND NOT coalesce((e->'deep'->>'ok')::boolean, false))`, a.NodeID, r.Raw); err != nil {
			return ack, err
		}
		ack.LeaseTTL = time.Duration(ttlMS) * time.Millisecond
		if was == backstop.NodeDown {
			// The node was declared down before this heartbeat arrived
			// (perhaps sent before the declaration): a failover may be
			// under way. Granting a lease from its send time could let the
			// agent, and its fence guard, serve past the moment a second
			// copy starts. No lease: the agent fences at once.
			ack.LeaseTTL = 0
			ack.DeclaredDown = true
		}
		if holdMS > ttlMS {
			ack.LeaseTTL = r.RestartHold.Truncate(time.Millisecond)
			if err := writeEvent(ctx, tx, a.ClusterID, "node.restarting", backstop.SeverityInfo, map[string]string{"node_id": a.NodeID},
				map[string]any{"restart_hold_ms": holdMS}, "node %s's agent is restarting; its hierarchies stay in place for up to %d ms", a.NodeName, holdMS); err != nil {
				return ack, err
			}
		}
		for _, h := range r.Hierarchies {
			if h.State != backstop.PlacementFailed {
				continue
			}
			name, err := setPlacementTx(ctx, tx, a.NodeID, h.HierarchyID, h.Epoch, backstop.PlacementFailed, "agent on "+a.NodeName+" reports: "+h.Detail)
			if err != nil {
				return ack, err
			}
			if name != "" && strings.Contains(h.Detail, "local recovery") {
				if err := writeEvent(ctx, tx, a.ClusterID, "local_recovery.failed", backstop.SeverityCritical, map[string]string{"hierarchy_id": h.HierarchyID, "node_id": a.NodeID},
					map[string]any{"detail": h.Detail}, "local recovery of %s on %s gave up: %s", name, a.NodeName, h.Detail); err != nil {
					return ack, err
				}
			}
			if name != "" {
				if err := writeEvent(ctx, tx, a.ClusterID, "hierarchy.failed", backstop.SeverityCritical, map[string]string{"hierarchy_id": h.HierarchyID, "node_id": a.NodeID},
					map[string]any{"detail": h.Detail, "epoch": h.Epoch}, "hierarchy %s failed on %s: %s", name, a.NodeName, h.Detail); err != nil {
					return ack, err
				}
			}
		}
		for _, f := range r.Fences {
			for _, hid := range f.Hierarchies {
				// A fence report arrives late: queued while the node was cut
				// off, it comes with the first heartbeat after it is back,
				// perhaps after a hierarchy was already placed on the node
				// again. It concerns only placements the node had before
				// its previous heartbeat; both times are the database's,
				// so no clock of the agent is trusted.
				//
				// A clean fence is not the hierarchy's failure on the node
				// (a lease lapsed; a hierarchy whose fence failed is
				// reported failed above and keeps its mark): the hierarchy
				// is left failed with no node and no failed mark, and the
				// engine places it again where it can run, this node
				// included (failover.Decide), so one lapse under load does
				// not leave the service down until an operator acts.
				if _, err := tx.Exec(ctx, `UPDATE hierarchies SET placement_node_id = NULL, placement_state = 'failed', placement_detail = $3, placement_updated_at = now()
					WHERE id = $1 AND placement_node_id = $2 AND placement_state <> 'failed' AND placement_updated_at <= $4`,
					hid, a.NodeID, fmt.Sprintf("node %s fenced itself at %s: %s; it will be placed again as soon as a node can take it",
						a.NodeName, f.At.UTC().Format(time.RFC3339Nano), f.Reason), prevSeen); err != nil {
					return ack, err
				}
			}
			if err := audit(backstop.WithActor(ctx, backstop.Actor{Name: "agent:" + a.NodeName}), tx, "node.fenced", "node", a.NodeID, a.ClusterID,
				map[string]any{"at": f.At, "reason": f.Reason, "hierarchies": f.Hierarchies}); err != nil {
				return ack, err
			}
			if err := writeEvent(ctx, tx, a.ClusterID, "node.self_fenced", backstop.SeverityCritical, map[string]string{"node_id": a.NodeID},
				map[string]any{"at": f.At, "reason": f.Reason, "hierarchies": f.Hierarchies},
				"node %s fenced itself: %s", a.NodeName, f.Reason); err != nil {
				return ack, err
			}
		}
		return ack, nil
	})
}

// setPlacementTx sets the placement state of a hierarchy placed on nodeID,
// only if its epoch is still epoch (-1: any epoch), so a stale report never
// overrides a newer placement. It returns the hierarchy's name when it
// changed something, "" otherwise.
func setPlacementTx(ctx context.Context, tx pgx.Tx, nodeID, hierarchyID string, epoch int64, state backstop.PlacementState, detail string) (string, error) {
	var name string
	err := tx.QueryRow(ctx, `UPDATE hierarchies SET placement_state = $4, placement_detail = $5, placement_updated_at = now()
		WHERE id = $1 AND placement_node_id = $2 AND ($3 < 0 OR epoch = $3) AND placement_state <> $4 RETURNING name`,
		hierarchyID, nodeID, epoch, state, detail).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return name, err
}

// AgentConfig assembles the desired configuration of a node.
func (s *Store) AgentConfig(ctx context.Context, a backstop.AgentIdentity) (backstop.AgentConfig, error) {
	var cfg backstop.AgentConfig
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return cfg, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // read-only
	c, err := scanCluster(tx.QueryRow(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE id = $1`, a.ClusterID))
	if err != nil {
		return cfg, interpretError(err)
	}
	cfg.Cluster, cfg.NodeID = c, a.NodeID
	if err := tx.QueryRow(ctx, `SELECT config_version, path_key FROM clusters WHERE id = $1`, a.ClusterID).Scan(&cfg.Version, &cfg.PathKey); err != nil {
		return cfg, interpretError(err)
	}
	rows, err := tx.Query(ctx, `SELECT `+hierarchyColumns+` FROM hierarchies h WHERE cluster_id = $1
		AND EXISTS (SELECT 1 FROM hierarchy_priorities p WHERE p.hierarchy_id = h.id AND p.node_id = $2) ORDER BY id`, a.ClusterID, a.NodeID)
	if err != nil {
		return cfg, interpretError(err)
	}
	if cfg.Hierarchies, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Hierarchy, error) { return scanHierarchy(r) }); err != nil {
		return cfg, interpretError(err)
	}
	if err := loadPriorities(ctx, tx, cfg.Hierarchies); err != nil {
		return cfg, interpretError(err)
	}
	rows, err = tx.Query(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE cluster_id = $1 AND id <> $2 ORDER BY id`, a.ClusterID, a.NodeID)
	if err != nil {
		return cfg, interpretError(err)
	}
	if cfg.Peers, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Node, error) { return scanNode(r) }); err != nil {
		return cfg, interpretError(err)
	}
	rows, err = tx.Query(ctx, `SELECT `+pathColumns+` FROM paths WHERE cluster_id = $1 AND (local_node_id = $2 OR remote_node_id = $2) ORDER BY id`, a.ClusterID, a.NodeID)
	if err != nil {
		return cfg, interpretError(err)
	}
	if cfg.Paths, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Path, error) { return scanPath(r) }); err != nil {
		return cfg, interpretError(err)
	}
	rows, err = tx.Query(ctx, `SELECT `+signingKeyColumns+` FROM signing_keys ORDER BY created_at, key_id`)
	if err != nil {
		return cfg, interpretError(err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.SealedKey, error) { return scanSigningKey(r) })
	if err != nil {
		return cfg, interpretError(err)
	}
	for _, k := range keys {
		cfg.SigningKeys = append(cfg.SigningKeys, k.SigningKey)
	}
	return cfg, nil
}

// ListenCommands calls wake with the node id of every command queued on
// any replica, until ctx ends. It holds one dedicated connection.
func (s *Store) ListenCommands(ctx context.Context, wake func(nodeID string)) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN `+CommandNotifyChannel); err != nil {
		return err
	}
	// UNLISTEN before the connection returns to the pool; ctx is over by
	// then, so use a fresh one.
	defer conn.Exec(context.Background(), `UNLISTEN *`) //nolint:errcheck
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		wake(n.Payload)
	}
}

// reportView is the part of an agent's heartbeat report whose changes are
// events.
type reportView struct {
	Resources []struct {
		HierarchyID string `json:"hierarchy_id"`
		Resource    string `json:"resource"`
		Quick       *struct {
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"quick"`
		Deep *struct {
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"deep"`
		Restarts int `json:"restarts"`
	} `json:"resources"`
	Paths []struct {
		PathID     string `json:"path_id"`
		PeerNodeID string `json:"peer_node_id"`
		State      string `json:"state"`
	} `json:"paths"`
}

// reportChangesTx turns what changed between two heartbeat reports of a
// node into events: paths going down or up, checks starting to fail, and
// local restarts (with whether the restarted resource passes again).
func reportChangesTx(ctx context.Context, tx pgx.Tx, a backstop.AgentIdentity, prevRaw, curRaw []byte) error {
	if len(prevRaw) == 0 || len(curRaw) == 0 {
		return nil // the first report says nothing about changes
	}
	var prev, cur reportView
	if json.Unmarshal(prevRaw, &prev) != nil || json.Unmarshal(curRaw, &cur) != nil {
		return nil
	}
	paths := map[string]string{}
	for _, p := range prev.Paths {
		paths[p.PathID] = p.State
	}
	for _, p := range cur.Paths {
		old, known := paths[p.PathID]
		if !known || old == p.State || (p.State != "up" && p.State != "down") {
			continue
		}
		sev := backstop.SeverityInfo
		if p.State == "down" {
			sev = backstop.SeverityWarning
		}
		if err := writeEvent(ctx, tx, a.ClusterID, "path."+p.State, sev, map[string]string{"node_id": a.NodeID, "path_id": p.PathID, "peer_node_id": p.PeerNodeID},
			nil, "communication path from %s to node %s is %s", a.NodeName, p.PeerNodeID, p.State); err != nil {
			return err
		}
	}
	type resKey struct{ h, r string }
	type resWas struct {
		quickOK, deepOK bool
		restarts        int
	}
	res := map[resKey]resWas{}
	for _, x := range prev.Resources {
		res[resKey{x.HierarchyID, x.Resource}] = resWas{quickOK: x.Quick == nil || x.Quick.OK, deepOK: x.Deep == nil || x.Deep.OK, restarts: x.Restarts}
	}
	for _, x := range cur.Resources {
		old, known := res[resKey{x.HierarchyID, x.Resource}]
		if !known {
			continue
		}
		subject := map[string]string{"node_id": a.NodeID, "hierarchy_id": x.HierarchyID, "resource": x.Resource}
		for _, c := range []struct {
			name   string
			wasOK  bool
			result *struct {
				OK     bool   `json:"ok"`
				Detail string `json:"detail"`
			}
		}{{"quick", old.quickOK, x.Quick}, {"deep", old.deepOK, x.Deep}} {
			if c.result != nil && c.wasOK && !c.result.OK {
				if err := writeEvent(ctx, tx, a.ClusterID, "resource.check_failed", backstop.SeverityWarning, subject,
					map[string]any{"check": c.name, "detail": c.result.Detail}, "%s check of %s failed on %s: %s", c.name, x.Resource, a.NodeName, c.result.Detail); err != nil {
					return err
				}
			}
		}
		if x.Restarts > old.restarts {
			typ, sev, msg := "local_recovery.started", backstop.SeverityWarning, "%s restarted %s locally (restart %d)"
			if x.Quick != nil && x.Quick.OK {
				typ, sev, msg = "local_recovery.succeeded", backstop.SeverityInfo, "%s restarted %s locally and it passes its checks (restart %d)"
			}
			if err := writeEvent(ctx, tx, a.ClusterID, typ, sev, subject, map[string]any{"restarts": x.Restarts}, msg, a.NodeName, x.Resource, x.Restarts); err != nil {
				return err
			}
		}
	}
	return nil
}
