package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// WithTx exposes withTx to the store_test package.
func WithTx(ctx context.Context, s *Store, fn func(tx pgx.Tx) (int, error)) (int, error) {
	return withTx(ctx, s, fn)
}

// TxRetries is how many transactions withTx ran again on s.
func TxRetries(s *Store) int64 { return s.txRetries.Load() }
