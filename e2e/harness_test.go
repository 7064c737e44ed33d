package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/pki"
)

const (
	// adminSecret is the BACKSTOP_BOOTSTRAP_TOKEN the tests start
	// backstopd with: the secret of the admin token named "bootstrap".
	adminSecret = "e2e-bootstrap-admin-secret-0123456789"
	// sealSecret is the BACKSTOP_SECRET_KEY every backstopd of the tests
	// gets (it seals the command-signing keys kept in the database):
	// processes sharing a database must share it.
	sealSecret = "e2e-seal-secret-dGhpcyBpcyBvbmx5IGEgdGVzdA=="
	// readyDeadline bounds a start: process launch, migrations, /readyz.
	readyDeadline = 60 * time.Second
	// stopDeadline bounds a graceful shutdown after SIGTERM.
	stopDeadline = 20 * time.Second
	// templateName names pgtemp's template for the tests' databases: an
	// empty one, so that backstopd's own migration at start is exercised.
	templateName = "e2e_empty"
)

// newDatabase returns the URL of a fresh, empty database that is dropped
// when t ends. It skips t when no PostgreSQL is available.
func newDatabase(t *testing.T) string {
	t.Helper()
	if env.skip != "" {
		t.Skip("skipping:", env.skip)
	}
	return env.pg.NewDatabase(t, templateName, nil)
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test
// reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemon is one backstopd server, normally one process; see waitReady.
type daemon struct {
	t         *testing.T
	name      string
	dbURL     string
	bootstrap string // BACKSTOP_BOOTSTRAP_TOKEN, "" for none

	host string   // address to listen on; "" for 127.0.0.1
	args []string // more command-line flags
	// plain serves plain HTTP (--insecure-http) instead of HTTPS with a
	// certificate of env.ca in tls (written at the first launch).
	plain bool
	tls   pki.Files
	addr  string // host:port it listens on
	p     *proc  // the current process
}

// proc is one backstopd process.
type proc struct {
	cmd       *exec.Cmd
	stdout    *syncBuffer
	stderr    *syncBuffer
	exited    chan struct{} // closed when the process has exited
	once      sync.Once
	abandoned bool // exited before it was ready and was replaced
}

// startDaemon starts backstopd on dbURL and waits until /readyz answers
// 200. bootstrap is its BACKSTOP_BOOTSTRAP_TOKEN ("" for none). The process
// is stopped gracefully when t ends, and t fails unless it exits 0.
func startDaemon(t *testing.T, name, dbURL, bootstrap string) *daemon {
	t.Helper()
	d := launchDaemon(t, name, dbURL, bootstrap)
	d.waitReady()
	return d
}

// startDaemonOn is startDaemon listening on host (the test network's host
// address, where agents in namespaces reach it).
func startDaemonOn(t *testing.T, name, dbURL, bootstrap, host string) *daemon {
	t.Helper()
	d := &daemon{t: t, name: name, dbURL: dbURL, bootstrap: bootstrap, host: host}
	d.launch()
	d.waitReady()
	return d
}

// launchDaemon starts backstopd without waiting for it: tests that start
// several processes at the same moment launch them all, then wait.
func launchDaemon(t *testing.T, name, dbURL, bootstrap string) *daemon {
	t.Helper()
	d := &daemon{t: t, name: name, dbURL: dbURL, bootstrap: bootstrap}
	d.launch()
	return d
}

func (d *daemon) launch() {
	t := d.t
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	host := d.host
	if host == "" {
		host = "127.0.0.1"
	}
	d.addr = net.JoinHostPort(host, strconv.Itoa(port))
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	args := []string{"--listen", d.addr, "--database-url", d.dbURL}
	if d.plain {
		args = append(args, "--insecure-http")
	} else {
		if d.tls.Cert == "" {
			if d.tls, err = env.ca.WriteFiles(t.TempDir(), []string{"127.0.0.1", "localhost", host}, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		args = append(args, "--tls-cert", d.tls.Cert, "--tls-key", d.tls.Key, "--tls-ca", d.tls.CA)
	}
	cmd := exec.Command(env.bin, append(args, d.args...)...)
	cmd.Env = daemonEnv(d.bootstrap)
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", d.name, err)
	}
	p.cmd = cmd
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	d.p = p
	name := d.name
	t.Cleanup(func() {
		d.shutdown(p)
		if t.Failed() {
			t.Logf("%s (pid %d) stderr:\n%s", name, cmd.Process.Pid, withoutRoutineRequests(p.stderr.String()))
			if out := p.stdout.String(); out != "" {
				t.Logf("%s (pid %d) stdout:\n%s", name, cmd.Process.Pid, out)
			}
		}
	})
}

// stop stops the daemon gracefully now, as the test's end would: SIGTERM,
// then it must exit 0 within stopDeadline.
func (d *daemon) stop() { d.shutdown(d.p) }

// stderr returns what the current process wrote to its standard error.
func (d *daemon) stderr() string { return d.p.stderr.String() }

// daemonEnv is the test's environment without any BACKSTOP_ variable, plus
// BACKSTOP_SECRET_KEY and, when bootstrap is set, BACKSTOP_BOOTSTRAP_TOKEN:
// what the process sees is exactly what the test says.
func daemonEnv(bootstrap string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BACKSTOP_") {
			out = append(out, kv)
		}
	}
	out = append(out, "BACKSTOP_SECRET_KEY="+sealSecret)
	if bootstrap != "" {
		out = append(out, "BACKSTOP_BOOTSTRAP_TOKEN="+bootstrap)
	}
	return out
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// url returns the base URL of the daemon's API.
func (d *daemon) url() string {
	if d.plain {
		return "http://" + d.addr
	}
	return "https://" + d.addr
}

// client returns an API client for the daemon whose requests carry secret
// as their bearer token by default.
func (d *daemon) client(secret string) *client {
	return newClient(d.t, d.url(), secret)
}

// waitReady polls /readyz until it answers 200. A process that exits
// before because another process took its port in the meantime is started
// again on a new port; any other early exit fails the test.
func (d *daemon) waitReady() {
	t := d.t
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := d.pollReady()
		if err == nil {
			return
		}
		if errors.Is(err, errExited) && attempt < 3 && strings.Contains(d.stderr(), "address already in use") {
			t.Logf("%s: port %s was taken; starting again on another", d.name, d.addr)
			d.p.abandoned = true
			d.launch()
			continue
		}
		t.Fatalf("%s did not become ready: %v", d.name, err)
	}
}

var errExited = errors.New("process exited")

func (d *daemon) pollReady() error {
	c := newClient(d.t, d.url(), "")
	c.http.Timeout = 2 * time.Second
	deadline := time.Now().Add(readyDeadline)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-d.p.exited:
			return fmt.Errorf("%w with %v before it was ready", errExited, d.p.cmd.ProcessState)
		default:
		}
		req, err := http.NewRequestWithContext(withT(d.t.Context(), d.t), http.MethodGet, d.url()+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := c.http.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = "GET /readyz answered " + resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	return fmt.Errorf("not ready after %v (last: %s)", readyDeadline, last)
}

// shutdown sends SIGTERM to the process (by its PID) and checks that it
// exits with status 0 within stopDeadline: a graceful shutdown. A process
// that does not is killed, by PID, and fails the test.
func (d *daemon) shutdown(p *proc) {
	p.once.Do(func() { d.terminate(p) })
}

func (d *daemon) terminate(p *proc) {
	t, cmd, exited := d.t, p.cmd, p.exited
	if p.abandoned {
		return
	}
	select {
	case <-exited:
		t.Errorf("%s exited on its own, before the test stopped it: %v", d.name, cmd.ProcessState)
		return
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("%s: SIGTERM: %v", d.name, err)
	}
	timer := time.NewTimer(stopDeadline)
	defer timer.Stop()
	select {
	case <-exited:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited with %v after SIGTERM; want status 0 (graceful shutdown)", d.name, cmd.ProcessState)
		}
	case <-timer.C:
		t.Errorf("%s still running %v after SIGTERM; killing pid %d", d.name, stopDeadline, cmd.Process.Pid)
		_ = cmd.Process.Kill()
		<-exited
	}
}

// logHasNoErrors fails t when the daemon logged at level ERROR.
func (d *daemon) logHasNoErrors(t *testing.T) {
	t.Helper()
	for _, line := range strings.Split(d.stderr(), "\n") {
		if strings.Contains(line, "level=ERROR") {
			t.Errorf("%s logged an error: %s", d.name, line)
		}
	}
}

// routineRequestRE matches the access log line of a request answered
// below 500.
var routineRequestRE = regexp.MustCompile(`\bmsg=request\b.*\bstatus=[1-4]\d\d\b`)

// withoutRoutineRequests drops the access log lines of requests answered
// below 500 from a backstopd log: the tests report the requests that went
// wrong themselves, and what is left (start, migrations, errors, shutdown)
// is what explains a failure.
func withoutRoutineRequests(log string) string {
	var keep []string
	dropped := 0
	for _, line := range strings.Split(strings.TrimRight(log, "\n"), "\n") {
		if routineRequestRE.MatchString(line) {
			dropped++
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n") + fmt.Sprintf("\n(%d access log lines of requests answered below 500 left out)", dropped)
}

type tKey struct{}

// withT returns ctx carrying t, so that the validating transport reports a
// contract violation on the (sub)test that made the request.
func withT(ctx context.Context, t testing.TB) context.Context {
	return context.WithValue(ctx, tKey{}, t)
}
