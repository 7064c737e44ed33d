package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// IdempotencyTTL is how long a stored response answers a repeated key.
const IdempotencyTTL = 24 * time.Hour

// ClaimIdempotencyKey claims key for a request of tokenID with the given
// method, path and body hash. It returns (nil, nil) when the caller must
// run the request and then Complete or Release it; the stored response when
// the same request already completed; backstop.ErrIdempotencyMismatch when the key
// was used for something else; backstop.ErrIdempotencyInProgress while the first
// request still runs.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, c backstop.IdempotencyClaim) (*backstop.StoredResponse, error) {
	tokenID, key, method, path, hash := c.TokenID, c.Key, c.Method, c.Path, c.BodyHash
	return withTx(ctx, s, func(tx pgx.Tx) (*backstop.StoredResponse, error) {
		// Expired keys are removed lazily; the index keeps this cheap.
		if _, err := tx.Exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval`, IdempotencyTTL.String()); err != nil {
			return nil, err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (token_id, key, method, path, request_hash)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, tokenID, key, method, path, hash)
		if err != nil {
			return nil, err
		}
		if tag.RowsAffected() == 1 {
			return nil, nil
		}
		var (
			m, p    string
			h, body []byte
			status  *int
			headers map[string][]string
		)
		err = tx.QueryRow(ctx, `SELECT method, path, request_hash, status, headers, body FROM idempotency_keys
			WHERE token_id = $1 AND key = $2`, tokenID, key).Scan(&m, &p, &h, &status, &headers, &body)
		if errors.Is(err, pgx.ErrNoRows) { // expired and removed between our statements
			return nil, backstop.ErrIdempotencyInProgress
		}
		if err != nil {
			return nil, err
		}
		if m != method || p != path || string(h) != string(hash) {
			return nil, backstop.ErrIdempotencyMismatch
		}
		if status == nil {
			return nil, backstop.ErrIdempotencyInProgress
		}
		return &backstop.StoredResponse{Status: *status, Headers: headers, Body: body}, nil
	})
}

// CompleteIdempotencyKey stores the response of a claimed key.
func (s *Store) CompleteIdempotencyKey(ctx context.Context, tokenID, key string, r backstop.StoredResponse) error {
	_, err := s.pool.Exec(ctx, `UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE token_id = $1 AND key = $2`,
		tokenID, key, r.Status, r.Headers, r.Body)
	return interpretError(err)
}

// ReleaseIdempotencyKey forgets a claimed key whose request failed in a way
// the client may retry (a 5xx), so the retry runs again.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, tokenID, key string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE token_id = $1 AND key = $2 AND status IS NULL`, tokenID, key)
	return interpretError(err)
}
