package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop"
)

// TokenPrefix starts every API token secret, so leaked secrets are easy to
// recognise and scan for.
const TokenPrefix = "bsk_"

// NewSecret returns a random secret: prefix followed by 256 random bits in
// unpadded base64url.
func NewSecret(prefix string) string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// hashSecret hashes a high-entropy secret for storage. A fast hash is right
// here: the secrets are 256 random bits, so there is nothing to brute-force.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func secretPrefix(secret string) string {
	const n = 10
	if len(secret) < n {
		return secret
	}
	return secret[:n]
}

const tokenColumns = `id, name, role, prefix, created_at, last_used_at, clusters`

func scanToken(row pgx.Row) (backstop.Token, error) {
	var t backstop.Token
	var role string
	err := row.Scan(&t.ID, &t.Name, &role, &t.Prefix, &t.CreatedAt, &t.LastUsedAt, &t.Clusters)
	t.Role = backstop.Role(role)
	return t, err
}

// CreateToken creates an API token and returns it with its secret, which is
// stored only as a hash. clusters, when not nil, limits the token to those
// clusters; each must exist (backstop.ErrInvalid naming the first that
// does not).
func (s *Store) CreateToken(ctx context.Context, name string, role backstop.Role, clusters []string) (backstop.Token, string, error) {
	secret := NewSecret(TokenPrefix)
	t, err := withTx(ctx, s, func(tx pgx.Tx) (backstop.Token, error) {
		for i, id := range clusters {
			var ok bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM clusters WHERE id = $1)`, id).Scan(&ok); err != nil {
				return backstop.Token{}, interpretError(err)
			}
			if !ok {
				return backstop.Token{}, backstop.Invalid(fmt.Sprintf("/clusters/%d", i), "no cluster %s", id)
			}
		}
		return createTokenTx(ctx, tx, name, role, secret, clusters)
	})
	return t, secret, err
}

func createTokenTx(ctx context.Context, tx pgx.Tx, name string, role backstop.Role, secret string, clusters []string) (backstop.Token, error) {
	id := newID()
	t, err := scanToken(tx.QueryRow(ctx, `INSERT INTO api_tokens (id, name, role, secret_hash, prefix, clusters)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+tokenColumns,
		id, name, string(role), hashSecret(secret), secretPrefix(secret), clusters))
	if err != nil {
		return t, fmt.Errorf("insert token: %w", err)
	}
	details := map[string]any{"name": name, "role": role}
	if clusters != nil {
		details["clusters"] = clusters
	}
	return t, audit(ctx, tx, "token.create", "token", id, "", details)
}

// EnsureBootstrapToken creates an admin token when no token exists at all.
// With secret empty it generates one. It returns the secret when it created
// a token and "" when tokens already existed. Replicas starting together
// serialise on an advisory lock, so at most one bootstrap token is made.
func (s *Store) EnsureBootstrapToken(ctx context.Context, secret string) (string, error) {
	if secret == "" {
		secret = NewSecret(TokenPrefix)
	}
	return withTx(ctx, s, func(tx pgx.Tx) (string, error) {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('backstop.bootstrap-token'))`); err != nil {
			return "", fmt.Errorf("lock: %w", err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM api_tokens`).Scan(&n); err != nil {
			return "", fmt.Errorf("count tokens: %w", err)
		}
		if n > 0 {
			return "", nil
		}
		if _, err := createTokenTx(ctx, tx, "bootstrap", backstop.RoleAdmin, secret, nil); err != nil {
			return "", err
		}
		return secret, nil
	})
}

// Authenticate returns the token whose secret this is. It returns
// backstop.ErrUnauthenticated for an unknown secret. last_used_at is
// refreshed at most once a minute to keep reads cheap.
func (s *Store) Authenticate(ctx context.Context, secret string) (backstop.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE secret_hash = $1`, hashSecret(secret)))
	if errors.Is(err, pgx.ErrNoRows) {
		return t, backstop.ErrUnauthenticated
	}
	if err != nil {
		return t, fmt.Errorf("authenticate: %w", err)
	}
	if t.LastUsedAt == nil || time.Since(*t.LastUsedAt) > time.Minute {
		if _, err := s.pool.Exec(ctx, `UPDATE api_tokens SET last_used_at = now() WHERE id = $1`, t.ID); err != nil {
			return t, fmt.Errorf("authenticate: record use: %w", err)
		}
	}
	return t, nil
}

// ListTokens lists tokens, oldest first.
func (s *Store) ListTokens(ctx context.Context, p backstop.Page) ([]backstop.Token, string, error) {
	after, err := idCursor(p)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE id > $1 ORDER BY id LIMIT $2`, after, pageLimit(p))
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backstop.Token, error) { return scanToken(r) })
	if err != nil {
		return nil, "", interpretError(err)
	}
	items, next := trimPage(items, p, func(t backstop.Token) string { return t.ID })
	return items, next, nil
}

// FindToken returns a token, without its secret, or backstop.ErrNotFound.
func (s *Store) FindToken(ctx context.Context, id string) (backstop.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE id = $1`, id))
	if err != nil {
		return t, fmt.Errorf("token %s: %w", id, interpretError(err))
	}
	return t, nil
}

// checkPrefix returns backstop.ErrPreconditionFailed when prefix is set
// and is not the token's: the secret changed since it was read (the
// prefix is the token's ETag).
func checkPrefix(t backstop.Token, prefix *string) error {
	if prefix != nil && *prefix != t.Prefix {
		return fmt.Errorf("%w: token %q was re-issued since it was read (its ETag is now \"%s\")", backstop.ErrPreconditionFailed, t.Name, t.Prefix)
	}
	return nil
}

// ReissueToken gives a token a new secret, ending the old one at once,
// and returns the token with the new secret. prefix, when set, must be
// the token's current prefix (its ETag), else backstop.ErrPreconditionFailed.
func (s *Store) ReissueToken(ctx context.Context, id string, prefix *string) (backstop.Token, string, error) {
	secret := NewSecret(TokenPrefix)
	t, err := withTx(ctx, s, func(tx pgx.Tx) (backstop.Token, error) {
		t, err := scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return t, fmt.Errorf("token %s: %w", id, interpretError(err))
		}
		if err := checkPrefix(t, prefix); err != nil {
			return t, err
		}
		t, err = scanToken(tx.QueryRow(ctx, `UPDATE api_tokens SET secret_hash = $2, prefix = $3 WHERE id = $1 RETURNING `+tokenColumns,
			id, hashSecret(secret), secretPrefix(secret)))
		if err != nil {
			return t, err
		}
		return t, audit(ctx, tx, "token.reissue", "token", id, "", map[string]any{"name": t.Name, "role": t.Role})
	})
	return t, secret, err
}

// DeleteToken revokes a token. It returns backstop.ErrNotFound for an
// unknown id, backstop.ErrPreconditionFailed when prefix is set and is not
// the token's (it was re-issued) and backstop.ErrConflict when it is the
// last admin token.
func (s *Store) DeleteToken(ctx context.Context, id string, prefix *string) error {
	_, err := withTx(ctx, s, func(tx pgx.Tx) (struct{}, error) {
		// Lock every admin token so two concurrent revocations cannot
		// both see another admin left.
		var admins int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM api_tokens WHERE role = 'admin' FOR UPDATE) a`).Scan(&admins); err != nil {
			return struct{}{}, err
		}
		t, err := scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return struct{}{}, fmt.Errorf("token %s: %w", id, interpretError(err))
		}
		if err := checkPrefix(t, prefix); err != nil {
			return struct{}{}, err
		}
		if t.Role == backstop.RoleAdmin && admins <= 1 {
			return struct{}{}, fmt.Errorf("%w: %q is the last admin token; create another admin token before revoking it", backstop.ErrConflict, t.Name)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM api_tokens WHERE id = $1`, id); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, audit(ctx, tx, "token.delete", "token", id, "", map[string]any{"name": t.Name, "role": t.Role})
	})
	return err
}
