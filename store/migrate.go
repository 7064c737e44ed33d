package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/backstop-ha/backstop/migrations"
)

// Migrate applies every embedded migration not yet applied and returns the
// schema version. golang-migrate's PostgreSQL driver holds an advisory lock
// for the whole run, so replicas starting together apply each migration
// once; a replica that finds the work done gets migrate.ErrNoChange, which
// is success (as in coder).
func Migrate(ctx context.Context, pool *pgxpool.Pool) (uint, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	drv, err := migratepgx.WithInstance(db, &migratepgx.Config{})
	if err != nil {
		return 0, fmt.Errorf("migrate: open driver: %w", err)
	}
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return 0, fmt.Errorf("migrate: open embedded migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer m.Close()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return 0, fmt.Errorf("migrate: apply: %w", err)
	}
	v, dirty, err := m.Version()
	if err != nil {
		return 0, fmt.Errorf("migrate: read version: %w", err)
	}
	if dirty {
		return v, fmt.Errorf("migrate: schema version %d is dirty: a migration failed halfway; repair it by hand", v)
	}
	// River's tables (the job queue of event delivery) come from River's
	// own migrations, at the version go.mod pins.
	if err := MigrateRiver(ctx, pool); err != nil {
		return v, err
	}
	return v, nil
}

// LatestMigration is the version of the newest embedded migration.
func LatestMigration() (uint, error) {
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return 0, err
	}
	defer src.Close()
	v, err := src.First()
	if err != nil {
		return 0, err
	}
	for {
		next, err := src.Next(v)
		if err != nil {
			return v, nil //nolint:nilerr // os.ErrNotExist ends the list
		}
		v = next
	}
}

// SchemaVersion reads the applied schema version; ok is false when the
// database has no schema or a dirty one.
func (s *Store) SchemaVersion(ctx context.Context) (version uint, ok bool, err error) {
	var v int64
	var dirty bool
	err = s.pool.QueryRow(ctx, `SELECT version, dirty FROM schema_migrations LIMIT 1`).Scan(&v, &dirty)
	if err != nil {
		return 0, false, interpretError(err)
	}
	return uint(v), !dirty, nil
}
