// Package store keeps Backstop's state in PostgreSQL through pgx. It is the
// only package that speaks SQL: driver errors are turned into the domain
// errors of package cluster here, at the edge, and every mutation writes its
// audit record in the same transaction as the change.
package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backstop-ha/backstop"
)

// Store is Backstop's PostgreSQL store. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// txRetries counts the transactions withTx ran again after
	// PostgreSQL aborted them (deadlock, serialization failure); tests
	// read it to show a lock order holds without leaning on the retry.
	txRetries atomic.Int64
	// renew groups lease renewals (RenewLease).
	renew renewBatcher
}

// Open connects a pool to the database at url and checks it answers.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	// Two connections listen all the time (commands, events), long polls
	// and streams come in bursts, and a full heartbeat may hold one while
	// it waits for a lock (at most heartbeatLockWait): pgx's default of
	// max(4, CPUs) is too small for a control plane. (32 measured the
	// same as 16 at 1,000 agents, 48 worse.)
	cfg.MaxConns = max(cfg.MaxConns, 16)
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		registerJSONCodecs(c.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s@%s:%d/%s: %w", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool returns the underlying pool, for migrations and tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// withTx runs fn in a transaction and commits it when fn returns nil
// (River's dbutil.WithTxV). Errors come back through interpretError.
func withTx[T any](ctx context.Context, s *Store, fn func(tx pgx.Tx) (T, error)) (T, error) {
	// PostgreSQL aborts one of two transactions that deadlock (or, at a
	// stricter isolation, fail to serialize); the loser is safe to run
	// again, since everything it did was rolled back. Without this, a
	// request racing the failure detector's or a heartbeat's row locks got
	// a 500 under load.
	for attempt := 1; ; attempt++ {
		v, err := withTxOnce(ctx, s, fn)
		if err == nil || attempt == maxTxAttempts || !retryableTx(err) || ctx.Err() != nil {
			return v, err
		}
		s.txRetries.Add(1)
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(time.Duration(attempt) * time.Duration(5+rand.IntN(20)) * time.Millisecond):
		}
	}
}

// maxTxAttempts bounds withTx's runs of one transaction.
const maxTxAttempts = 4

// retryableTx reports a transaction PostgreSQL aborted to break a
// deadlock or a serialization conflict.
func retryableTx(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

func withTxOnce[T any](ctx context.Context, s *Store, fn func(tx pgx.Tx) (T, error)) (T, error) {
	var zero T
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return zero, fmt.Errorf("begin: %w", err)
	}
	// Rollback is a no-op after Commit; it uses a fresh context so a
	// cancelled request still releases its transaction.
	defer tx.Rollback(context.Background()) //nolint:errcheck
	v, err := fn(tx)
	if err != nil {
		return zero, interpretError(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return zero, interpretError(fmt.Errorf("commit: %w", err))
	}
	return v, nil
}

// interpretError turns driver errors into domain errors (River's
// interpretError, wtf's FormatError). Errors that already are domain errors
// pass through.
func interpretError(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return backstop.ErrNotFound
	case errors.As(err, &pgErr):
		switch pgErr.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: %s", backstop.ErrConflict, uniqueMessage(pgErr.ConstraintName))
		case "23503": // foreign_key_violation
			return fmt.Errorf("%w: the object is still referenced (%s)", backstop.ErrConflict, pgErr.ConstraintName)
		case "23514": // check_violation
			return fmt.Errorf("%w: value out of range (%s)", backstop.ErrInvalid, pgErr.ConstraintName)
		case "55P03": // lock_not_available: a lock_timeout ran out
			return fmt.Errorf("%w: the change waited too long for a lock other work holds; nothing was changed, retry shortly: %w", backstop.ErrBusy, err)
		case "40P01", "40001": // deadlock_detected, serialization_failure
			// Both %w: withTx still sees the driver error to retry on.
			return fmt.Errorf("%w: the database aborted the change to resolve a conflict with concurrent work (%s); nothing was changed, retry shortly: %w",
				backstop.ErrBusy, map[string]string{"40P01": "deadlock", "40001": "serialization failure"}[pgErr.Code], err)
		}
	}
	return err
}

func uniqueMessage(constraint string) string {
	switch constraint {
	case "clusters_name_key":
		return "a cluster with this name already exists"
	case "nodes_cluster_id_name_key":
		return "a node with this name already exists in the cluster"
	case "hierarchies_cluster_id_name_key":
		return "a hierarchy with this name already exists in the cluster"
	case "paths_local_node_id_local_address_remote_node_id_remote_address_key":
		return "a path between these nodes and addresses already exists"
	}
	return "already exists (" + constraint + ")"
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// audit writes one audit record in tx, naming the actor carried by ctx.
func audit(ctx context.Context, tx pgx.Tx, action, targetType, targetID, clusterID string, details map[string]any) error {
	a := backstop.ActorFrom(ctx)
	if details == nil {
		details = map[string]any{}
	}
	d, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("audit details: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO audit_log (actor, actor_token_id, action, target_type, target_id, cluster_id, details)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		a.String(), nullUUID(a.TokenID), action, targetType, targetID, nullUUID(clusterID), d)
	if err != nil {
		return fmt.Errorf("write audit record: %w", err)
	}
	return nil
}

func nullUUID(id string) any {
	if id == "" {
		return nil
	}
	return id
}

// pageLimit returns the page size to fetch: one more than asked, so the
// presence of a next page is known without a count.
func pageLimit(p backstop.Page) int {
	if p.Limit <= 0 {
		return backstop.DefaultPageLimit + 1
	}
	return p.Limit + 1
}

var errBadCursor = backstop.Invalid("query.cursor", "not a cursor returned by this server")

// idCursor decodes a cursor over uuid keys ("" for the first page).
func idCursor(p backstop.Page) (string, error) {
	if p.Cursor == "" {
		return "00000000-0000-0000-0000-000000000000", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(p.Cursor)
	if err != nil {
		return "", errBadCursor
	}
	id, err := uuid.ParseBytes(b)
	if err != nil {
		return "", errBadCursor
	}
	return id.String(), nil
}

// intCursor decodes a cursor over integer keys (0 for the first page).
func intCursor(p backstop.Page) (int64, error) {
	if p.Cursor == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(p.Cursor)
	if err != nil {
		return 0, errBadCursor
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 {
		return 0, errBadCursor
	}
	return n, nil
}

// trimPage cuts the extra item fetched by pageLimit and returns the cursor
// of the next page ("" on the last one).
func trimPage[T any](items []T, p backstop.Page, key func(T) string) ([]T, string) {
	limit := pageLimit(p) - 1
	if len(items) <= limit {
		return items, ""
	}
	items = items[:limit]
	return items, base64.RawURLEncoding.EncodeToString([]byte(key(items[len(items)-1])))
}

// checkVersion compares a stored version with an If-Match version (nil when
// the client sent none).
func checkVersion(stored int64, ifMatch *int64) error {
	if ifMatch != nil && *ifMatch != stored {
		return fmt.Errorf("%w: the object is at version %d but If-Match names %d; read it again", backstop.ErrPreconditionFailed, stored, *ifMatch)
	}
	return nil
}
