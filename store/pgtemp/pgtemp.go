// Package pgtemp starts a private, throwaway PostgreSQL server for tests and
// for demos.
//
// Start runs initdb and pg_ctl from the local PostgreSQL installation in a new
// temporary directory, on 127.0.0.1 and a free TCP port, with durability
// switched off (fsync, full_page_writes, synchronous_commit) because the data
// is thrown away. Stop shuts it down and removes the directory.
//
// PostgreSQL refuses to run as root, so when the process runs as root the
// server binaries are run as the "postgres" operating-system user.
//
// The postmaster runs in its own session, so signals sent to the process
// group of the test (Ctrl-C in a terminal, for example) do not reach it.
// A small watchdog shell process, also in its own session, holds the read end
// of a pipe whose write end only this process holds: if this process exits
// without calling Stop (a test timeout panic, SIGKILL), the pipe reaches end
// of file and the watchdog stops the server and removes its directory, so no
// server is left behind.
//
// Handing tests fresh databases cloned from per-schema template databases is
// store/storetest's job (its Harness uses such a private server or, when
// BACKSTOP_TEST_DATABASE_URL is set, an existing one). It lives there, not
// here, because it needs the testing package and backstopd's demo mode links
// pgtemp: nothing here may import testing (TestBinariesDoNotLinkTesting).
//
// The package only works on Unix-like systems (it uses /bin/sh, setsid and,
// on Linux, /proc).
package pgtemp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrBinariesNotFound is returned (wrapped) by Start, and so by storetest's
// harness, when no PostgreSQL server binaries are installed.
// Test it with errors.Is.
var ErrBinariesNotFound = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found; install them with: apt-get install -y postgresql" +
	" (searched $PATH and /usr/lib/postgresql/*/bin); alternatively, for tests, set " + testDatabaseURLEnv +
	" to the URL of a database on an existing server, e.g. postgres://postgres@127.0.0.1:5432/postgres")

// testDatabaseURLEnv is storetest.EnvDatabaseURL, which ErrBinariesNotFound
// suggests; spelled out because pgtemp cannot import storetest.
const testDatabaseURLEnv = "BACKSTOP_TEST_DATABASE_URL"

const (
	// superuser is the name of the bootstrap superuser initdb creates.
	superuser = "postgres"
	// portAttempts is how many free ports Start tries when another process
	// grabs the port between probing it and the postmaster binding it.
	portAttempts = 3
	// maxSocketPath is the longest unix-domain socket path PostgreSQL
	// accepts (sizeof(sun_path) - 1 on Linux).
	maxSocketPath = 107
)

// Options configures Start. The zero value is ready to use.
type Options struct {
	// Logf, if not nil, receives progress messages, until Stop returns (so
	// a *testing.T's Logf fits only if the server stops within that test).
	Logf func(format string, args ...any)
	// Dir is the parent directory of the server's temporary directory;
	// os.TempDir() when empty. When running as root, every directory on the
	// path to Dir must be searchable by the postgres user.
	Dir string
}

// Server is a running private PostgreSQL server. Its only role is the
// superuser "postgres", which connects without a password over TCP to
// 127.0.0.1 (and over the unix socket in Dir). Stop it with Stop.
type Server struct {
	dir     string // the temporary directory; removed by Stop
	dataDir string // dir/data, the cluster
	logPath string // dir/server.log
	bins    binaries
	cred    *syscall.Credential // non-nil when running as root
	logf    func(format string, args ...any)

	port int
	pid  int
	// stopWait is how long pg_ctl stop waits before Stop kills the
	// postmaster; tests shorten it.
	stopWait time.Duration

	watchdog  *exec.Cmd
	watchdogW *os.File

	mu      sync.Mutex
	stopped bool
}

// versionedBinGlob matches the per-version binary directories of Debian's
// and Ubuntu's postgresql-NN packages.
const versionedBinGlob = "/usr/lib/postgresql/*/bin"

// binaries are the server programs Start runs.
type binaries struct {
	dir    string
	initdb string
	pgCtl  string
}

// Start initialises a cluster in a new temporary directory (initdb with
// -A trust, -U postgres, --no-sync, UTF8 encoding and the C locale), starts
// it with pg_ctl listening on 127.0.0.1 and a free TCP port (and on a unix
// socket in the directory) with fsync=off, full_page_writes=off,
// synchronous_commit=off and max_connections=200, waits until it accepts
// connections, and returns it. On failure nothing is left behind, and the
// error includes the end of the server log when the server did not start.
func Start(ctx context.Context, opts Options) (*Server, error) {
	began := time.Now()
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bins, err := findBinaries(os.Getenv("PATH"), versionedBinGlob)
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	parent, err := chooseParent(opts.Dir, cred)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parent, "pgtemp-")
	if err != nil {
		return nil, fmt.Errorf("pgtemp: create temporary directory: %w", err)
	}
	s := &Server{
		dir:      dir,
		dataDir:  filepath.Join(dir, "data"),
		logPath:  filepath.Join(dir, "server.log"),
		bins:     bins,
		cred:     cred,
		logf:     logf,
		stopWait: 30 * time.Second,
	}
	started := false
	defer func() {
		if !started {
			if err := s.Stop(); err != nil {
				logf("pgtemp: clean up after failed start: %v", err)
			}
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtemp: give %s to the postgres user: %w", dir, err)
		}
	}
	if err := s.startWatchdog(); err != nil {
		// Not fatal: only protects against this process dying without Stop.
		logf("pgtemp: no watchdog (the server will outlive this process if Stop is not called): %v", err)
	}

	logf("pgtemp: initdb %s (binaries in %s)", s.dataDir, bins.dir)
	if out, err := s.run(ctx, bins.initdb, "-D", s.dataDir, "-A", "trust", "-U", superuser,
		"--no-sync", "-E", "UTF8", "--no-locale"); err != nil {
		return nil, fmt.Errorf("pgtemp: initdb: %w\n%s", err, out)
	}
	if err := s.writeConfig(); err != nil {
		return nil, err
	}

	for attempt := 1; ; attempt++ {
		port, err := pickPort()
		if err != nil {
			return nil, err
		}
		err = s.startPostmaster(ctx, port)
		if err == nil {
			s.port = port
			break
		}
		if !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return nil, err
		}
		logf("pgtemp: port %d was taken before the server could bind it; trying another", port)
	}
	pid, err := readPID(s.dataDir)
	if err != nil {
		return nil, fmt.Errorf("pgtemp: %w%s", err, s.logTail())
	}
	s.pid = pid
	if err := s.waitAcceptingConnections(ctx); err != nil {
		return nil, err
	}
	logf("pgtemp: server pid %d ready on 127.0.0.1:%d in %v", s.pid, s.port, time.Since(began).Round(time.Millisecond))
	started = true
	return s, nil
}

// URL returns a postgres:// URL for database db on the server: user
// postgres, host 127.0.0.1, the server's port, sslmode=disable.
func (s *Server) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on (on 127.0.0.1).
func (s *Server) Port() int { return s.port }

// PID returns the process ID of the postmaster.
func (s *Server) PID() int { return s.pid }

// Dir returns the server's temporary directory, which holds the cluster
// (Dir/data), the server log (Dir/server.log) and the unix socket.
// Stop removes it.
func (s *Server) Dir() string { return s.dir }

// Stop stops the server (pg_ctl stop -m fast; then, if the postmaster is still
// alive, SIGKILL to it and its children, by PID) and removes its directory.
// It is safe to call more than once and concurrently; later calls return nil.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true

	var errs []error
	pid := s.pid
	if pid == 0 {
		pid, _ = readPID(s.dataDir) // a start that failed half way
	}
	if pid != 0 && processAlive(pid) {
		wait := max(1, int(s.stopWait/time.Second))
		ctx, cancel := context.WithTimeout(context.Background(), s.stopWait+15*time.Second)
		out, err := s.run(ctx, s.bins.pgCtl, "stop", "-D", s.dataDir, "-m", "fast", "-w", "-t", strconv.Itoa(wait))
		cancel()
		if err != nil {
			s.logf("pgtemp: pg_ctl stop: %v: %s", err, bytes.TrimSpace(out))
		}
		// After pg_ctl stop the postmaster removes its pid file just before
		// it exits: give it a moment before resorting to SIGKILL.
		if !waitDead(pid, 2*time.Second) && s.isOurPostmaster(pid) {
			s.logf("pgtemp: postmaster %d still alive; killing it", pid)
			children := childPIDs(pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			for _, c := range children {
				_ = syscall.Kill(c, syscall.SIGKILL)
			}
			if !waitDead(pid, 5*time.Second) {
				errs = append(errs, fmt.Errorf("pgtemp: postmaster %d survived SIGKILL", pid))
			}
		}
	}
	// Retry briefly in case a killed process was still creating files.
	for attempt := 1; ; attempt++ {
		err := os.RemoveAll(s.dir)
		if err == nil {
			break
		}
		if attempt == 5 {
			errs = append(errs, fmt.Errorf("pgtemp: remove %s: %w", s.dir, err))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.disarmWatchdog()
	return errors.Join(errs...)
}

// findBinaries looks for a directory holding both initdb and pg_ctl: first
// in pathEnv (a $PATH), then in the directories matching versionGlob, highest
// version first.
func findBinaries(pathEnv, versionGlob string) (binaries, error) {
	var dirs []string
	for _, d := range filepath.SplitList(pathEnv) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	versioned, _ := filepath.Glob(versionGlob)
	sort.SliceStable(versioned, func(i, j int) bool {
		return versionKey(versioned[i]) > versionKey(versioned[j])
	})
	dirs = append(dirs, versioned...)
	for _, d := range dirs {
		initdb, pgCtl := filepath.Join(d, "initdb"), filepath.Join(d, "pg_ctl")
		if isExecutable(initdb) && isExecutable(pgCtl) {
			if abs, err := filepath.Abs(d); err == nil {
				d, initdb, pgCtl = abs, filepath.Join(abs, "initdb"), filepath.Join(abs, "pg_ctl")
			}
			return binaries{dir: d, initdb: initdb, pgCtl: pgCtl}, nil
		}
	}
	return binaries{}, ErrBinariesNotFound
}

// versionKey extracts the version from .../postgresql/<version>/bin for
// sorting; unparsable versions sort last.
func versionKey(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return -1
	}
	return v
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// serverCredential returns nil when the server can run as the current user,
// and the postgres user's credential when running as root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, errors.New("pgtemp: running as root, and PostgreSQL refuses to run as root, so the server must run as the \"postgres\" user, which does not exist;" +
				" create it with: apt-get install -y postgresql (which creates it), or: useradd -r postgres")
		}
		return nil, fmt.Errorf("pgtemp: look up the postgres user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtemp: postgres user: bad uid %q", u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtemp: postgres user: bad gid %q", u.Gid)
	}
	if uid == 0 {
		return nil, errors.New("pgtemp: the postgres user has uid 0, and PostgreSQL refuses to run as root")
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// chooseParent returns the directory to create the server directory in.
// When running as root (cred != nil) it must be reachable by the postgres
// user; the default falls back to /tmp if os.TempDir() is not.
func chooseParent(dir string, cred *syscall.Credential) (string, error) {
	explicit := dir != ""
	if !explicit {
		dir = os.TempDir()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("pgtemp: %w", err)
	}
	if cred == nil {
		return dir, nil
	}
	err = checkSearchable(dir, cred)
	if err != nil && !explicit && dir != "/tmp" {
		if checkSearchable("/tmp", cred) == nil {
			return "/tmp", nil
		}
	}
	return dir, err
}

// checkSearchable reports an error unless the user of cred can search (and
// so reach entries in) dir and every directory above it. Supplementary groups
// are not considered: the server processes run without them.
func checkSearchable(dir string, cred *syscall.Credential) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgtemp: %w", err)
		}
		perm := fi.Mode().Perm()
		ok := perm&0o001 != 0
		if st, isStat := fi.Sys().(*syscall.Stat_t); isStat {
			ok = ok || (st.Uid == cred.Uid && perm&0o100 != 0) || (st.Gid == cred.Gid && perm&0o010 != 0)
		}
		if !ok {
			return fmt.Errorf("pgtemp: the server runs as the postgres user (uid %d), which cannot reach %s because %s has mode %v;"+
				" choose another Options.Dir (such as /tmp) or chmod o+x %s", cred.Uid, dir, d, perm, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// run runs a server program as the server user, in its own session, in the
// server directory, with the C locale and no PG* environment variables, and
// returns its combined output.
func (s *Server) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = s.dir
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: s.cred}
	// On cancellation kill the program's process group (it leads a new
	// session), so that initdb's postgres child dies with it. The
	// postmaster that pg_ctl starts is in a session of its own.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// Should a descendant keep the output pipe open, do not hang on it.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

// childEnv is this process's environment without PG* (which would steer
// pg_ctl and the server) and locale variables, plus the C locale.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "LANGUAGE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

// writeConfig appends the server settings to postgresql.conf. The port is
// given on the command line so that a retry can change it.
func (s *Server) writeConfig() error {
	socketDirs := s.dir
	if len(s.dir)+len("/.s.PGSQL.65535") > maxSocketPath {
		s.logf("pgtemp: %s is too long a path for a unix socket; listening on TCP only", s.dir)
		socketDirs = ""
	}
	conf := fmt.Sprintf(`
# Added by pgtemp: a throwaway server, so durability is off.
listen_addresses = '127.0.0.1'
unix_socket_directories = %s
fsync = off
full_page_writes = off
synchronous_commit = off
max_connections = 200
`, confQuote(socketDirs))
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtemp: %w", err)
	}
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return fmt.Errorf("pgtemp: write postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgtemp: write postgresql.conf: %w", err)
	}
	return nil
}

// confQuote quotes a string value for postgresql.conf.
func confQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
}

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port already in use")

// startPostmaster runs pg_ctl start on port and waits for the server to
// report itself ready.
func (s *Server) startPostmaster(ctx context.Context, port int) error {
	var logStart int64
	if fi, err := os.Stat(s.logPath); err == nil {
		logStart = fi.Size()
	}
	s.logf("pgtemp: pg_ctl start on 127.0.0.1:%d", port)
	out, err := s.run(ctx, s.bins.pgCtl, "start", "-D", s.dataDir, "-l", s.logPath,
		"-w", "-t", "60", "-o", "-p "+strconv.Itoa(port))
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("pgtemp: start server: %w", ctxErr)
	}
	if newLog := readFrom(s.logPath, logStart); strings.Contains(newLog, "Address already in use") {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return fmt.Errorf("pgtemp: pg_ctl start on port %d: %w\n%s%s", port, err, bytes.TrimSpace(out), s.logTail())
}

// waitAcceptingConnections connects until the server accepts a connection.
func (s *Server) waitAcceptingConnections(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, s.URL("postgres"))
		if err == nil {
			err = conn.Ping(cctx)
			conn.Close(cctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("pgtemp: server on port %d does not accept connections: %w%s", s.port, err, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pickPort is freePort; tests replace it.
var pickPort = freePort

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtemp: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// readPID returns the postmaster PID from dataDir/postmaster.pid.
func readPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster.pid: bad PID line %q", first)
	}
	return pid, nil
}

// logTail returns the end of the server log, formatted to append to an error.
func (s *Server) logTail() string {
	const tailBytes = 4096
	tail := readFrom(s.logPath, -tailBytes)
	if tail == "" {
		return ""
	}
	return "\nend of the server log:\n" + strings.TrimRight(tail, "\n")
}

// readFrom reads path from byte offset off; a negative off counts from the end.
func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if off < 0 {
		fi, err := f.Stat()
		if err != nil {
			return ""
		}
		off = max(0, fi.Size()+off)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// processAlive reports whether pid is a live (not zombie) process.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	if state, ok := procState(pid); ok && (state == 'Z' || state == 'X') {
		return false // a zombie waits for a parent that may never reap it
	}
	return true
}

// waitDead waits up to d for pid to die and reports whether it did.
func waitDead(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// procStat returns the fields of /proc/pid/stat after the command name,
// starting with the state.
func procStat(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(string(b[i+1:]))
	return f, len(f) >= 2
}

func procState(pid int) (byte, bool) {
	f, ok := procStat(pid)
	if !ok {
		return 0, false
	}
	return f[0][0], true
}

// childPIDs lists the children of pid, found through /proc (Linux); empty
// elsewhere.
func childPIDs(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, ok := procStat(p); ok && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

// isOurPostmaster guards against PID reuse before a SIGKILL: on Linux the
// postmaster's working directory is its data directory. Where /proc cannot
// tell, the PID from our own postmaster.pid is trusted.
func (s *Server) isOurPostmaster(pid int) bool {
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		if _, statErr := os.Stat("/proc/self/stat"); statErr != nil {
			return true // no /proc
		}
		return !errors.Is(err, os.ErrNotExist)
	}
	resolved, err := filepath.EvalSymlinks(s.dataDir)
	return cwd == s.dataDir || (err == nil && cwd == resolved)
}

// watchdogScript waits on stdin. "disarm" means Stop ran; end of file means
// the owning process died without Stop: stop the server, kill the postmaster
// by PID if pg_ctl could not, and remove the directory.
// Arguments: $1 pg_ctl, $2 data directory, $3 server directory.
const watchdogScript = `
while read -r line; do
	[ "$line" = disarm ] && exit 0
done
"$1" stop -D "$2" -m immediate -w -t 20 >/dev/null 2>&1
if [ -r "$2/postmaster.pid" ]; then
	read -r pid < "$2/postmaster.pid"
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null)
		if [ -z "$cwd" ] || [ "$cwd" = "$(cd "$2" && pwd -P)" ]; then
			kill -KILL "$pid"
		fi
	fi
fi
rm -rf "$3"
`

// startWatchdog starts the watchdog process, as the server user and in its
// own session. Its stdin is a pipe whose write end only this process holds
// (close-on-exec, so children do not inherit it). The write end is also kept
// in a package-level set so that a garbage-collected Server does not close it.
func (s *Server) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "pgtemp-watchdog", s.bins.pgCtl, s.dataDir, s.dir)
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: s.cred}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return err
	}
	r.Close()
	s.watchdog, s.watchdogW = cmd, w
	liveWatchdogs.Lock()
	liveWatchdogs.m[w] = struct{}{}
	liveWatchdogs.Unlock()
	return nil
}

var liveWatchdogs = struct {
	sync.Mutex
	m map[*os.File]struct{}
}{m: map[*os.File]struct{}{}}

// disarmWatchdog tells the watchdog Stop has run and reaps it.
func (s *Server) disarmWatchdog() {
	if s.watchdog == nil {
		return
	}
	_, _ = s.watchdogW.WriteString("disarm\n")
	_ = s.watchdogW.Close()
	liveWatchdogs.Lock()
	delete(liveWatchdogs.m, s.watchdogW)
	liveWatchdogs.Unlock()
	done := make(chan struct{})
	go func() { _ = s.watchdog.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.watchdog.Process.Kill() // our own child, by PID
		<-done
	}
	s.watchdog = nil
}
