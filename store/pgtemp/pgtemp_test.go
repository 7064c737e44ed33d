package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	os.Exit(m.Run())
}

// skipOrFatal skips t when err says the server binaries are missing and CI
// is unset, and fails it otherwise (as storetest's harness does).
func skipOrFatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrBinariesNotFound) && os.Getenv("CI") == "" {
		t.Skipf("skipping: %v", err)
		return
	}
	t.Fatal(err)
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
