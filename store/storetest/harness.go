package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/store/pgtemp"
)

// EnvDatabaseURL names the environment variable that points the test harness
// at an existing server instead of a private one. Its value is the URL of an
// existing database on that server, used for CREATE and DROP DATABASE, such as
// postgres://postgres@127.0.0.1:5432/postgres; its role needs CREATEDB.
const EnvDatabaseURL = "BACKSTOP_TEST_DATABASE_URL"

// PrepareFunc fills a new template database, typically by running migrations
// against url. It must close its connections before returning: a database
// cannot be cloned while sessions are connected to it (the harness terminates
// any left open).
type PrepareFunc func(ctx context.Context, url string) error

// Harness hands out fresh databases, each cloned from a template database
// that is prepared once per process and template name, and that is reused
// across processes sharing a server. It is safe for concurrent use.
type Harness struct {
	admin  *url.URL       // the maintenance database
	server *pgtemp.Server // nil when using EnvDatabaseURL
	logf   func(format string, args ...any)

	mu        sync.Mutex
	templates map[string]*templateState
}

// templateState memoises the preparation of one template in this process.
type templateState struct {
	mu   sync.Mutex
	done bool
	err  error
}

// NewHarness returns a harness on the server named by BACKSTOP_TEST_DATABASE_URL
// when it is set (after checking it can connect), and otherwise on a private
// server started with pgtemp.Start(ctx, opts), which Close stops.
func NewHarness(ctx context.Context, opts pgtemp.Options) (*Harness, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if raw := os.Getenv(EnvDatabaseURL); raw != "" {
		h, err := newHarnessForURL(ctx, raw, logf)
		if err != nil {
			return nil, fmt.Errorf("storetest: %s: %w", EnvDatabaseURL, err)
		}
		return h, nil
	}
	srv, err := pgtemp.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	admin, err := url.Parse(srv.URL("postgres"))
	if err != nil {
		_ = srv.Stop()
		return nil, fmt.Errorf("storetest: %w", err)
	}
	return &Harness{admin: admin, server: srv, logf: logf, templates: map[string]*templateState{}}, nil
}

// newHarnessForURL returns a harness on the existing server and database of
// raw, a postgres:// URL.
func newHarnessForURL(ctx context.Context, raw string, logf func(string, ...any)) (*Harness, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return nil, errors.New("want a URL such as postgres://postgres@127.0.0.1:5432/postgres")
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/postgres"
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", u.Redacted(), err)
	}
	err = conn.Ping(cctx)
	conn.Close(cctx)
	if err != nil {
		return nil, fmt.Errorf("ping %s: %w", u.Redacted(), err)
	}
	return &Harness{admin: u, logf: logf, templates: map[string]*templateState{}}, nil
}

// Close stops the harness's private server, if it has one; databases it
// handed out become unusable. It is safe to call more than once.
func (h *Harness) Close() error {
	if h.server == nil {
		return nil
	}
	return h.server.Stop()
}

// AdminURL returns the URL of the maintenance database the harness connects
// to for CREATE and DROP DATABASE.
func (h *Harness) AdminURL() string { return h.admin.String() }

// NewDatabase creates a database cloned from the template for templateName
// (see CreateDatabase), registers a t.Cleanup that drops it, and returns its
// URL. It fails the test on error.
func (h *Harness) NewDatabase(t testing.TB, templateName string, prepare PrepareFunc) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dbURL, drop, err := h.CreateDatabase(ctx, templateName, prepare)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := drop(ctx); err != nil {
			t.Errorf("storetest: %v", err)
		}
	})
	return dbURL
}

// CreateDatabase creates a database named test_<random> as a clone of the
// template database for templateName and returns its URL and a function that
// drops it (WITH (FORCE)).
//
// The first use of templateName in a process makes sure the template
// database exists: under a PostgreSQL advisory lock (so that processes
// sharing a server build it once), if no complete template exists it runs
// CREATE DATABASE tpl_<templateName> (UTF8, C collation) and calls prepare
// with its URL, then marks it a template that accepts no connections.
// A template left incomplete by a process that died is rebuilt; a complete
// one is reused, so templateName must change whenever what prepare does
// changes: pass, for example, a hash of the migrations. Names that are not
// lowercase letters, digits and underscores, or too long for PostgreSQL, are
// shortened and suffixed with a hash. A failed preparation is remembered: later
// calls with the same name return the same error. prepare may be nil for an
// empty database.
func (h *Harness) CreateDatabase(ctx context.Context, templateName string, prepare PrepareFunc) (dbURL string, drop func(context.Context) error, err error) {
	if templateName == "" {
		return "", nil, errors.New("storetest: empty template name")
	}
	tpl, err := h.ensureTemplate(ctx, templateName, prepare)
	if err != nil {
		return "", nil, err
	}
	name, err := randomName("test_")
	if err != nil {
		return "", nil, err
	}
	conn, err := h.connectAdmin(ctx)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(context.Background())
	create := "CREATE DATABASE " + quoteIdent(name) + " TEMPLATE " + quoteIdent(tpl)
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err = conn.Exec(ctx, create)
		if err == nil {
			break
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			return "", nil, fmt.Errorf("storetest: create database %s from template %s: %w", name, tpl, err)
		}
		// 55006 object_in_use: a session is still connected to the template.
		if err := testkit.Sleep(ctx, 50*time.Millisecond); err != nil {
			return "", nil, fmt.Errorf("storetest: create database %s from template %s: %w", name, tpl, err)
		}
	}
	drop = func(ctx context.Context) error {
		conn, err := h.connectAdmin(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		if err := dropDatabase(ctx, conn, name); err != nil {
			return fmt.Errorf("storetest: %w", err)
		}
		return nil
	}
	return h.dbURL(name), drop, nil
}

// ensureTemplate makes sure the template database for templateName exists,
// once per process, and returns its name.
func (h *Harness) ensureTemplate(ctx context.Context, templateName string, prepare PrepareFunc) (string, error) {
	tpl := templateDBName(templateName)
	h.mu.Lock()
	st := h.templates[tpl]
	if st == nil {
		st = &templateState{}
		h.templates[tpl] = st
	}
	h.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return tpl, st.err
	}
	err := h.buildTemplate(ctx, tpl, prepare)
	if err != nil && ctx.Err() != nil {
		return tpl, err // the caller gave up: let the next caller try again
	}
	st.done, st.err = true, err
	return tpl, err
}

// buildTemplate creates and prepares template database tpl unless a complete
// one exists, holding an advisory lock against other processes meanwhile.
func (h *Harness) buildTemplate(ctx context.Context, tpl string, prepare PrepareFunc) (err error) {
	conn, err := h.connectAdmin(ctx)
	if err != nil {
		return err
	}
	// Closing the session also releases the advisory lock.
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey(tpl)); err != nil {
		return fmt.Errorf("storetest: lock template %s: %w", tpl, err)
	}

	var isTemplate bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", tpl).Scan(&isTemplate)
	switch {
	case err == nil && isTemplate:
		h.logf("storetest: reusing template database %s", tpl)
		return nil
	case err == nil:
		h.logf("storetest: template database %s is incomplete (its builder died?); rebuilding it", tpl)
		if err := dropDatabase(ctx, conn, tpl); err != nil {
			return fmt.Errorf("storetest: %w", err)
		}
	case errors.Is(err, pgx.ErrNoRows):
	default:
		return fmt.Errorf("storetest: look up template %s: %w", tpl, err)
	}

	began := time.Now()
	q := quoteIdent(tpl)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+q+" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"); err != nil {
		return fmt.Errorf("storetest: create template %s: %w", tpl, err)
	}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if dropErr := dropDatabase(cctx, conn, tpl); dropErr != nil {
				h.logf("storetest: %v", dropErr)
			}
		}
	}()
	if prepare != nil {
		if err := prepare(ctx, h.dbURL(tpl)); err != nil {
			return fmt.Errorf("storetest: prepare template %s: %w", tpl, err)
		}
	}
	// Being a template marks it complete; refusing connections keeps
	// sessions from blocking clones.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+q+" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"); err != nil {
		return fmt.Errorf("storetest: mark %s a template: %w", tpl, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", tpl); err != nil {
		h.logf("storetest: end sessions left connected to %s: %v", tpl, err)
	}
	h.logf("storetest: prepared template database %s in %v", tpl, time.Since(began).Round(time.Millisecond))
	return nil
}

func (h *Harness) connectAdmin(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, h.admin.String())
	if err != nil {
		return nil, fmt.Errorf("storetest: connect to %s: %w", h.admin.Redacted(), err)
	}
	return conn, nil
}

// dbURL returns the URL of database name on the harness's server.
func (h *Harness) dbURL(name string) string {
	u := *h.admin
	u.Path, u.RawPath = "/"+name, ""
	return u.String()
}

func dropDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

func quoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// maxIdentLen is PostgreSQL's NAMEDATALEN-1: longer names are truncated.
const maxIdentLen = 63

// templateDBName maps a caller's template name to a database name:
// "tpl_" + name when name is short lowercase letters, digits and
// underscores; otherwise a sanitised, shortened name plus a hash of it.
func templateDBName(name string) string {
	const prefix = "tpl_"
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		default:
			return '_'
		}
	}, name)
	if clean == name && len(prefix)+len(name) <= maxIdentLen {
		return prefix + name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "_" + hex.EncodeToString(sum[:8])
	if keep := maxIdentLen - len(prefix) - len(suffix); len(clean) > keep {
		clean = clean[:keep]
	}
	return prefix + clean + suffix
}

// lockKey is the advisory lock key that guards building template tpl.
func lockKey(tpl string) int64 {
	f := fnv.New64a()
	// The text predates the move from pgtemp: keeping it lets harnesses of
	// older and newer checkouts sharing a server exclude each other.
	f.Write([]byte("backstop pgtemp template " + tpl))
	return int64(f.Sum64())
}

func randomName(prefix string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("storetest: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

var shared struct {
	mu sync.Mutex
	h  *Harness
	// err is a remembered failure of NewHarness.
	err error
}

// SharedHarness returns the process-wide harness, created with NewHarness on
// the first call (an external server when BACKSTOP_TEST_DATABASE_URL is set,
// else a private one); later calls return the same harness, or the same
// error. Stop it with CloseSharedHarness, typically through RunTests in
// TestMain.
func SharedHarness(ctx context.Context) (*Harness, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.h != nil || shared.err != nil {
		return shared.h, shared.err
	}
	h, err := NewHarness(ctx, pgtemp.Options{})
	if err != nil {
		if ctx.Err() == nil {
			shared.err = err
		}
		return nil, err
	}
	shared.h = h
	return h, nil
}

// CloseSharedHarness closes the process-wide harness if one was created, and
// forgets it, so that a later SharedHarness starts afresh.
func CloseSharedHarness() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	h := shared.h
	shared.h, shared.err = nil, nil
	if h == nil {
		return nil
	}
	return h.Close()
}

// RunTests runs the tests of m, then CloseSharedHarness, and returns the exit
// code, for use as
//
//	func TestMain(m *testing.M) { os.Exit(storetest.RunTests(m)) }
func RunTests(m *testing.M) int {
	code := m.Run()
	if err := CloseSharedHarness(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// NewTestDatabase is NewDatabase on the SharedHarness. If no server is
// available because the PostgreSQL binaries are missing (and
// BACKSTOP_TEST_DATABASE_URL is unset), it skips the test, unless the CI
// environment variable is set, in which case it fails it; other errors fail
// the test.
func NewTestDatabase(t testing.TB, templateName string, prepare PrepareFunc) string {
	t.Helper()
	h, err := SharedHarness(t.Context())
	if err != nil {
		skipOrFatal(t, err)
	}
	return h.NewDatabase(t, templateName, prepare)
}

// skipOrFatal skips t when err says the server binaries are missing and CI
// is unset, and fails it otherwise.
func skipOrFatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, pgtemp.ErrBinariesNotFound) && os.Getenv("CI") == "" {
		t.Skipf("skipping: %v", err)
		return
	}
	t.Fatal(err)
}
