package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// WithTx exposes withTx to the store_test package.
func WithTx(ctx context.Context, s *Store, fn func(tx pgx.Tx) (int, error)) (int, error) {
	return withTx(ctx, s, fn)
}
