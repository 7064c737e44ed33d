package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// helperEnv makes the test binary act as a process that starts a server and
// exits without stopping it (see TestWatchdogCleansUpAfterOwnerDies).
const helperEnv = "PGTEMP_TEST_HELPER_EXIT_WITHOUT_STOP"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		s, err := Start(context.Background(), Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%d %s\n", s.PID(), s.Dir())
		os.Exit(0) // no Stop: the watchdog must clean up
	}
	os.Exit(RunTests(m))
}

// startServer starts a private server stopped at the end of the test.
func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := Start(t.Context(), Options{Logf: t.Logf})
	if err != nil {
		skipOrFatal(t, err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartStop(t *testing.T) {
	began := time.Now()
	s := startServer(t)
	t.Logf("Start took %v", time.Since(began))

	conn := connect(t, s.URL("postgres"))
	if got := queryString(t, conn, "SELECT 1::text"); got != "1" {
		t.Fatalf("SELECT 1 = %s", got)
	}
	for setting, want := range map[string]string{
		"fsync":              "off",
		"full_page_writes":   "off",
		"synchronous_commit": "off",
		"max_connections":    "200",
		"listen_addresses":   "127.0.0.1",
		"server_encoding":    "UTF8",
		"port":               strconv.Itoa(s.Port()),
	} {
		if got := queryString(t, conn, "SELECT current_setting($1)", setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := queryString(t, conn, "SELECT current_user"); got != "postgres" {
		t.Errorf("current_user = %q", got)
	}
	conn.Close(t.Context())

	// The unix socket lives in the server directory.
	sock := connect(t, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", s.Dir(), s.Port()))
	if got := queryString(t, sock, "SELECT 'unix'"); got != "unix" {
		t.Fatalf("over the unix socket: %q", got)
	}
	sock.Close(t.Context())

	// The postmaster is detached from our process group and session.
	pid := s.PID()
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid == syscall.Getpgrp() {
		t.Errorf("postmaster process group = %d (%v); ours is %d", pgid, err, syscall.Getpgrp())
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(s.Dir())
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Errorf("running as root, but %s is owned by root", s.Dir())
		}
	}

	dir := s.Dir()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Stop, stat %s: %v", dir, err)
	}
	if processAlive(pid) {
		t.Errorf("after Stop, postmaster %d is alive", pid)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestStartCancelled: a Start whose context ends part way leaves nothing
// behind in Options.Dir.
func TestStartCancelled(t *testing.T) {
	if _, err := findBinaries(os.Getenv("PATH"), versionedBinGlob); err != nil {
		skipOrFatal(t, err)
	}
	parent, err := os.MkdirTemp("", "pgtemp-parent-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, after := range []time.Duration{0, 200 * time.Millisecond, 800 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(t.Context(), after)
		s, err := Start(ctx, Options{Logf: t.Logf, Dir: parent})
		cancel()
		if err == nil {
			// Started within the time: fine, as long as Stop cleans up.
			if err := s.Stop(); err != nil {
				t.Error(err)
			}
		}
		if entries, _ := os.ReadDir(parent); len(entries) != 0 {
			t.Errorf("after a Start cancelled after %v (%v), %s holds %v", after, err, parent, entries)
		}
	}
}

// TestStopKillsStuckPostmaster: when pg_ctl stop cannot stop the server,
// Stop kills the postmaster by its PID.
func TestStopKillsStuckPostmaster(t *testing.T) {
	s := startServer(t)
	s.stopWait = time.Second
	pid, dir := s.PID(), s.Dir()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("after Stop, postmaster %d is alive", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Stop, stat %s: %v", dir, err)
	}
}

// TestPortClash: Start tries another port when the one it picked is taken
// by the time the server binds it, and gives up with the server log after a
// few attempts.
func TestPortClash(t *testing.T) {
	if _, err := findBinaries(os.Getenv("PATH"), versionedBinGlob); err != nil {
		skipOrFatal(t, err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { pickPort = freePort })

	var picks atomic.Int32
	pickPort = func() (int, error) {
		if picks.Add(1) == 1 {
			return takenPort, nil
		}
		return freePort()
	}
	s := startServer(t)
	if s.Port() == takenPort || picks.Load() != 2 {
		t.Errorf("port %d after %d picks; port %d was taken", s.Port(), picks.Load(), takenPort)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	pickPort = func() (int, error) { return takenPort, nil }
	_, err = Start(t.Context(), Options{Logf: t.Logf})
	if !errors.Is(err, errPortInUse) || !strings.Contains(err.Error(), "Address already in use") ||
		!strings.Contains(err.Error(), "end of the server log") {
		t.Errorf("Start on a taken port: %v", err)
	}
	if picks.Load() != 2 {
		t.Errorf("pickPort called again after a success")
	}
}

// TestWatchdogCleansUpAfterOwnerDies runs a process that starts a server and
// exits without Stop: the watchdog must stop the server and remove its
// directory.
func TestWatchdogCleansUpAfterOwnerDies(t *testing.T) {
	if _, err := findBinaries(os.Getenv("PATH"), versionedBinGlob); err != nil {
		skipOrFatal(t, err)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	// Output (not a pipe read by hand) also proves that neither the server
	// nor the watchdog holds the helper's stdout open, which would make
	// `go test` wait for them.
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v; output %q", err, out)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	pidStr, dir, ok := strings.Cut(line, " ")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil || !strings.Contains(dir, "pgtemp-") {
		t.Fatalf("helper printed %q", out)
	}
	t.Cleanup(func() { // in case the watchdog failed
		if processAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for processAlive(pid) || exists(dir) {
		if time.Now().After(deadline) {
			t.Fatalf("30s after its owner exited: postmaster %d alive=%v, %s exists=%v", pid, processAlive(pid), dir, exists(dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// uniqueTemplate returns a template name no earlier run used (so that an
// external server's leftovers do not count) and drops the template when
// the test ends.
func uniqueTemplate(t *testing.T, h *Harness) string {
	t.Helper()
	name, err := randomName("pgtemp_test_")
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

func TestFindBinaries(t *testing.T) {
	_, err := findBinaries("", filepath.Join(t.TempDir(), "*", "bin"))
	if !errors.Is(err, ErrBinariesNotFound) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{
		"PostgreSQL server binaries (initdb, pg_ctl) not found; install them with: apt-get install -y postgresql",
		"BACKSTOP_TEST_DATABASE_URL",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	root := t.TempDir()
	mk := func(dir string, progs ...string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range progs {
			if err := os.WriteFile(filepath.Join(dir, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, v := range []string{"9.6", "15", "16", "notaversion"} {
		mk(filepath.Join(root, "pg", v, "bin"), "initdb", "pg_ctl")
	}
	mk(filepath.Join(root, "pg", "17", "bin"), "initdb") // no pg_ctl
	glob := filepath.Join(root, "pg", "*", "bin")
	onlyInitdb := mk(filepath.Join(root, "path1"), "initdb")
	inPath := mk(filepath.Join(root, "path2"), "initdb", "pg_ctl")

	for _, tc := range []struct{ path, want string }{
		{"", filepath.Join(root, "pg", "16", "bin")},
		{onlyInitdb, filepath.Join(root, "pg", "16", "bin")},
		{onlyInitdb + string(os.PathListSeparator) + inPath, inPath},
	} {
		b, err := findBinaries(tc.path, glob)
		if err != nil || b.dir != tc.want || b.pgCtl != filepath.Join(tc.want, "pg_ctl") || b.initdb != filepath.Join(tc.want, "initdb") {
			t.Errorf("findBinaries(%q) = %+v, %v; want dir %s", tc.path, b, err, tc.want)
		}
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
	missing := fmt.Errorf("wrapped: %w", ErrBinariesNotFound)
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

func TestCheckSearchable(t *testing.T) {
	nobody := &syscall.Credential{Uid: 54321, Gid: 54321}
	private := t.TempDir() // mode 0700
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	err := checkSearchable(filepath.Join(private), nobody)
	if err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("checkSearchable(%s) = %v, want an error", private, err)
	}
	if err := checkSearchable("/", nobody); err != nil {
		t.Errorf("checkSearchable(/) = %v", err)
	}
}

func TestURL(t *testing.T) {
	s := &Server{port: 54321}
	if got, want := s.URL("my db"), "postgres://postgres@127.0.0.1:54321/my%20db?sslmode=disable"; got != want {
		t.Errorf("URL = %s, want %s", got, want)
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
	_, err := NewHarness(t.Context(), Options{})
	if err == nil || !strings.Contains(err.Error(), EnvDatabaseURL) {
		t.Errorf("NewHarness with a keyword/value string: %v", err)
	}
}
