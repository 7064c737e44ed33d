package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// leaderLockKey is the advisory lock whose holder leads.
const leaderLockKey = 0x6261636b73746f70 // "backstop"

// LeaderSession is held leadership: the advisory lock on a dedicated
// connection, and the term it was granted. Losing the connection loses
// the lock at once (PostgreSQL releases it with the session), which is
// what makes a killed leader's successor safe.
type LeaderSession struct {
	conn *pgx.Conn
	Term int64
	// Since is when this leadership began (database clock).
	Since time.Time
}

// TryLead tries to become leader. It returns nil (and no error) when
// another replica leads. On success the term is incremented in the same
// transaction that records the leader.
func (s *Store) TryLead(ctx context.Context, replicaID string) (*LeaderSession, error) {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := pc.Hijack() // dedicated: the lock lives as long as this session
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(leaderLockKey)).Scan(&got); err != nil || !got {
		conn.Close(context.Background())
		return nil, err
	}
	l := &LeaderSession{conn: conn}
	if err := takeLeadership(ctx, conn, replicaID, l); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("take leadership: %w", err)
	}
	return l, nil
}

// takeLeadership increments the term and records the leader, and writes a
// leader.changed event to every cluster's log in the same transaction: a
// leader change concerns every cluster, and each log must stay complete
// on its own.
func takeLeadership(ctx context.Context, conn *pgx.Conn, replicaID string, l *LeaderSession) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	var previous *string
	err = tx.QueryRow(ctx, `UPDATE control_plane c SET term = c.term + 1, leader_id = $1, leader_since = now()
		FROM (SELECT leader_id FROM control_plane WHERE id = 1) old WHERE c.id = 1
		RETURNING c.term, c.leader_since, old.leader_id`, replicaID).Scan(&l.Term, &l.Since, &previous)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT id FROM clusters ORDER BY id`)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	details := map[string]any{"term": l.Term, "leader_id": replicaID}
	if previous != nil {
		details["previous_leader_id"] = *previous
	}
	for _, id := range ids {
		if err := writeEvent(ctx, tx, id, "leader.changed", backstop.SeverityInfo, map[string]string{"replica_id": replicaID}, details,
			"replica %s leads the control plane (term %d)", replicaID, l.Term); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// LeaderTerm returns the term this leadership was granted
// (leader.TermSession).
func (l *LeaderSession) LeaderTerm() int64 { return l.Term }

// Check verifies the session (and so the lock) is still alive.
func (l *LeaderSession) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return l.conn.Ping(ctx)
}

// Release gives leadership up by ending the session.
func (l *LeaderSession) Release() {
	// A fresh context: releasing must happen even when the caller's
	// context is what ended leadership.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, int64(leaderLockKey))
	_ = l.conn.Close(ctx)
}

// TouchReplica records that a replica is alive.
func (s *Store) TouchReplica(ctx context.Context, id, address, version string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO replicas (id, address, version) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), address = excluded.address`, id, address, version)
	return interpretError(err)
}

// RemoveReplica forgets a replica that stops cleanly.
func (s *Store) RemoveReplica(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM replicas WHERE id = $1`, id)
	return interpretError(err)
}

// ControlPlane returns the replicas seen in the last minute, the leader
// and its term.
func (s *Store) ControlPlane(ctx context.Context) (backstop.ControlPlane, error) {
	var cp backstop.ControlPlane
	var leader *string
	err := s.pool.QueryRow(ctx, `SELECT term, leader_id, leader_since FROM control_plane WHERE id = 1`).Scan(&cp.Term, &leader, &cp.LeaderSince)
	if err != nil {
		return cp, interpretError(err)
	}
	if leader != nil {
		cp.LeaderID = *leader
	}
	rows, err := s.pool.Query(ctx, `SELECT id, address, version, started_at, last_seen_at FROM replicas
		WHERE last_seen_at > now() - interval '1 minute' ORDER BY started_at, id`)
	if err != nil {
		return cp, interpretError(err)
	}
	cp.Replicas, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Replica, error) {
		var x backstop.Replica
		err := r.Scan(&x.ID, &x.Address, &x.Version, &x.StartedAt, &x.LastSeenAt)
		x.Leader = x.ID == cp.LeaderID
		return x, err
	})
	return cp, interpretError(err)
}
