// Package storetest gives tests a real, migrated PostgreSQL database of
// their own: a template database is migrated once per process (named after
// the hash of the migrations, so a schema change gets a new template) and
// each test gets a clone of it.
//
// The databases come from a Harness, on a throwaway server started with
// store/pgtemp or, when BACKSTOP_TEST_DATABASE_URL is set, on an existing
// one. A test binary that uses them stops the shared server in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }
//
// This package imports testing; production code must not import it (pgtemp,
// which backstopd's demo mode uses, stays free of testing).
package storetest

import (
	"context"
	"testing"

	"github.com/backstop-ha/backstop/migrations"
	"github.com/backstop-ha/backstop/store"
)

// URL returns the URL of a fresh, migrated database dropped when t ends.
func URL(t testing.TB) string {
	t.Helper()
	return NewTestDatabase(t, "backstop_"+migrations.Hash()[:16], func(ctx context.Context, url string) error {
		st, err := store.Open(ctx, url)
		if err != nil {
			return err
		}
		defer st.Close()
		_, err = store.Migrate(ctx, st.Pool())
		return err
	})
}

// EmptyURL returns the URL of a fresh database with no schema at all.
func EmptyURL(t testing.TB) string {
	t.Helper()
	return NewTestDatabase(t, "empty", func(context.Context, string) error { return nil })
}

// New returns a store on a fresh, migrated database.
func New(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}
