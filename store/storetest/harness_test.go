package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backstop-ha/backstop/store/pgtemp"
)

func TestMain(m *testing.M) { os.Exit(RunTests(m)) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// uniqueTemplate returns a template name no earlier run used (so that an
// external server's leftovers do not count) and drops the template when
// the test ends.
func uniqueTemplate(t *testing.T, h *Harness) string {
	t.Helper()
	name, err := randomName("storetest_test_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := h.connectAdmin(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		q := quoteIdent(templateDBName(name))
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+q+" WITH IS_TEMPLATE false"); err != nil {
			var missing bool
			if err := conn.QueryRow(ctx, "SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = $1)", templateDBName(name)).Scan(&missing); err != nil || !missing {
				t.Errorf("unmark template: %v", err)
			}
		}
		if err := dropDatabase(ctx, conn, templateDBName(name)); err != nil {
			t.Error(err)
		}
	})
	return name
}

func sharedHarness(t *testing.T) *Harness {
	t.Helper()
	h, err := SharedHarness(t.Context())
	if err != nil {
		skipOrFatal(t, err)
	}
	return h
}

// countingPrepare creates table items with one row, and counts its calls.
func countingPrepare(calls *atomic.Int32, delay time.Duration) PrepareFunc {
	return func(ctx context.Context, url string) error {
		calls.Add(1)
		time.Sleep(delay)
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "CREATE TABLE items (v int); INSERT INTO items VALUES (1)")
		return err
	}
}

func countItems(t *testing.T, url string) int {
	t.Helper()
	conn := connect(t, url)
	defer conn.Close(t.Context())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDatabasesFromTemplate(t *testing.T) {
	h := sharedHarness(t)
	name := uniqueTemplate(t, h)
	var calls atomic.Int32
	prepare := countingPrepare(&calls, 0)

	db1 := NewTestDatabase(t, name, prepare)
	db2 := NewTestDatabase(t, name, prepare)
	if db1 == db2 {
		t.Fatalf("two databases with the same URL %s", db1)
	}
	conn := connect(t, db1)
	if _, err := conn.Exec(t.Context(), "INSERT INTO items VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())
	if n := countItems(t, db1); n != 2 {
		t.Errorf("db1 has %d items, want 2", n)
	}
	if n := countItems(t, db2); n != 1 {
		t.Errorf("db2 has %d items, want 1 (the databases are not independent)", n)
	}

	// Concurrent clones of the same template.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			url, drop, err := h.CreateDatabase(t.Context(), name, prepare)
			if err != nil {
				errs <- err
				return
			}
			defer func() { errs <- drop(context.Background()) }()
			conn, err := pgx.Connect(t.Context(), url)
			if err != nil {
				errs <- err
				return
			}
			conn.Close(t.Context())
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("prepare ran %d times, want 1", n)
	}
}

func TestDropOnCleanup(t *testing.T) {
	h := sharedHarness(t)
	name := uniqueTemplate(t, h)
	var dbName string
	t.Run("inner", func(t *testing.T) {
		u, err := url.Parse(h.NewDatabase(t, name, nil))
		if err != nil {
			t.Fatal(err)
		}
		dbName = strings.TrimPrefix(u.Path, "/")
	})
	conn := connect(t, h.AdminURL())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_database WHERE datname = $1", dbName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 || !strings.HasPrefix(dbName, "test_") {
		t.Errorf("database %q still exists after its test (%d)", dbName, n)
	}
}

// TestTemplateBuiltOnceAcrossProcesses stands in for two test binaries
// sharing a server: two harnesses do not share memory, so only the advisory
// lock keeps them from both building the template.
func TestTemplateBuiltOnceAcrossProcesses(t *testing.T) {
	h1 := sharedHarness(t)
	h2, err := newHarnessForURL(t.Context(), h1.AdminURL(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	name := uniqueTemplate(t, h1)
	var calls atomic.Int32
	prepare := countingPrepare(&calls, 300*time.Millisecond)
	urls := make([]string, 2)
	var wg sync.WaitGroup
	for i, h := range []*Harness{h1, h2} {
		wg.Go(func() {
			url, drop, err := h.CreateDatabase(t.Context(), name, prepare)
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() {
				if err := drop(context.Background()); err != nil {
					t.Error(err)
				}
			})
			urls[i] = url
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("prepare ran %d times, want 1", n)
	}
	for _, url := range urls {
		if n := countItems(t, url); n != 1 {
			t.Errorf("%s has %d items, want 1", url, n)
		}
	}
}

func TestIncompleteTemplateRebuilt(t *testing.T) {
	h := sharedHarness(t)
	name := uniqueTemplate(t, h)
	conn := connect(t, h.AdminURL())
	// As a builder that died half way would leave it: not marked a template.
	if _, err := conn.Exec(t.Context(), "CREATE DATABASE "+quoteIdent(templateDBName(name))); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	url := h.NewDatabase(t, name, countingPrepare(&calls, 0))
	if n := calls.Load(); n != 1 {
		t.Errorf("prepare ran %d times, want 1", n)
	}
	if n := countItems(t, url); n != 1 {
		t.Errorf("%d items, want 1", n)
	}
}

func TestPrepareLeavesConnectionOpen(t *testing.T) {
	h := sharedHarness(t)
	name := uniqueTemplate(t, h)
	var leaked *pgx.Conn
	defer func() {
		if leaked != nil {
			leaked.Close(context.Background())
		}
	}()
	url := h.NewDatabase(t, name, func(ctx context.Context, url string) error {
		var err error
		leaked, err = pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		_, err = leaked.Exec(ctx, "CREATE TABLE items (v int)")
		return err
	})
	if n := countItems(t, url); n != 0 {
		t.Errorf("%d items, want 0", n)
	}
}

func TestPrepareErrorRemembered(t *testing.T) {
	h := sharedHarness(t)
	name := uniqueTemplate(t, h)
	var calls atomic.Int32
	boom := errors.New("boom")
	prepare := func(ctx context.Context, url string) error {
		calls.Add(1)
		return boom
	}
	for range 2 {
		if _, _, err := h.CreateDatabase(t.Context(), name, prepare); !errors.Is(err, boom) {
			t.Fatalf("CreateDatabase: %v, want %v", err, boom)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("prepare ran %d times, want 1", n)
	}
	conn := connect(t, h.AdminURL())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_database WHERE datname = $1", templateDBName(name)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("failed template %s was not dropped", templateDBName(name))
	}
}

// fakeTB records Skipf and Fatal instead of stopping the test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Skipf(string, ...any) { f.skipped = true }
func (f *fakeTB) Fatal(...any)         { f.failed = true }

func TestSkipOrFatal(t *testing.T) {
	missing := fmt.Errorf("wrapped: %w", pgtemp.ErrBinariesNotFound)
	for _, tc := range []struct {
		ci            string
		err           error
		skip, failure bool
	}{
		{"", missing, true, false},
		{"true", missing, false, true},
		{"", errors.New("postgres user missing"), false, true},
	} {
		t.Setenv("CI", tc.ci)
		f := &fakeTB{TB: t}
		skipOrFatal(f, tc.err)
		if f.skipped != tc.skip || f.failed != tc.failure {
			t.Errorf("CI=%q, %v: skipped %v, failed %v", tc.ci, tc.err, f.skipped, f.failed)
		}
	}
}

func TestTemplateDBName(t *testing.T) {
	hash := strings.Repeat("0123456789abcdef", 4)
	for _, tc := range []struct{ in, want string }{
		{"abc_123", "tpl_abc_123"},
		{strings.Repeat("a", 59), "tpl_" + strings.Repeat("a", 59)},
	} {
		if got := templateDBName(tc.in); got != tc.want {
			t.Errorf("templateDBName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	seen := map[string]string{}
	for _, in := range []string{hash, hash + "0", "Store-V1", "store_v1_", strings.Repeat("a", 60)} {
		got := templateDBName(in)
		if len(got) > maxIdentLen || !strings.HasPrefix(got, "tpl_") || strings.Trim(got[4:], "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("templateDBName(%q) = %q: not a short lowercase identifier", in, got)
		}
		if got != templateDBName(in) {
			t.Errorf("templateDBName(%q) is not deterministic", in)
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("templateDBName(%q) = templateDBName(%q) = %q", in, prev, got)
		}
		seen[got] = in
	}
}

func TestNewHarnessBadURL(t *testing.T) {
	t.Setenv(EnvDatabaseURL, "host=localhost dbname=postgres")
	_, err := NewHarness(t.Context(), pgtemp.Options{})
	if err == nil || !strings.Contains(err.Error(), EnvDatabaseURL) {
		t.Errorf("NewHarness with a keyword/value string: %v", err)
	}
}

// pgtemp cannot import this package, so it spells out EnvDatabaseURL in
// the advice of ErrBinariesNotFound: the two must agree.
func TestErrBinariesNotFoundNamesEnv(t *testing.T) {
	if !strings.Contains(pgtemp.ErrBinariesNotFound.Error(), EnvDatabaseURL+" to the URL") {
		t.Errorf("pgtemp.ErrBinariesNotFound = %q does not suggest %s", pgtemp.ErrBinariesNotFound, EnvDatabaseURL)
	}
}
