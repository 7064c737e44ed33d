package nslab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/pki"
)

// Proc is a child process whose output goes to a log file. It gets
// SIGKILL from the kernel if this process dies without stopping it.
type Proc struct {
	Cmd    *exec.Cmd
	Log    string // path of its combined output
	exited chan struct{}
}

func startProc(logPath string, env []string, name string, args ...string) (*Proc, error) {
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Cmd: cmd, Log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited tells whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.exited }

// Signal sends sig to the process (by PID) unless it has exited.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p == nil || p.Exited() {
		return errors.New("the process has exited")
	}
	return syscall.Kill(p.Cmd.Process.Pid, sig)
}

// Kill SIGKILLs the process (by PID) and waits for it.
func (p *Proc) Kill() {
	if p == nil || p.Exited() {
		return
	}
	_ = syscall.Kill(p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM and waits up to d, then SIGKILL.
func (p *Proc) Stop(d time.Duration) {
	if p == nil || p.Exited() {
		return
	}
	_ = syscall.Kill(p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(d):
		p.Kill()
	}
}

// cleanEnv is this process's environment without BACKSTOP_ variables,
// plus extra.
func cleanEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BACKSTOP_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// Daemon is one backstopd.
type Daemon struct {
	*Proc
	Addr string // host:port
	// Roots trusts the daemon's certificate and CAFile holds it; nil and
	// empty when it serves plain HTTP.
	Roots  *x509.CertPool
	CAFile string
}

// URL is the daemon's base URL.
func (d *Daemon) URL() string {
	if d.Roots == nil {
		return "http://" + d.Addr
	}
	return "https://" + d.Addr
}

// HTTPClient returns a client of the daemon (trusting its CA).
func (d *Daemon) HTTPClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: d.Roots}
	return &http.Client{Timeout: timeout, Transport: tr}
}

// StartBackstopd starts backstopd listening on host (a free port) with
// the database dbURL, the admin bootstrap token and the key that seals
// its signing keys, and waits until /readyz answers 200. With certs it
// serves HTTPS with them (agents then pin certs.CA); without, plain HTTP
// (--insecure-http).
func StartBackstopd(ctx context.Context, bin, host, dbURL, adminToken, sealKey, logPath string, certs *pki.Files) (*Daemon, error) {
	var roots *x509.CertPool
	tlsArgs := []string{"--insecure-http"}
	if certs != nil {
		tlsArgs = []string{"--tls-cert", certs.Cert, "--tls-key", certs.Key, "--tls-ca", certs.CA}
		pool, err := pki.CertPool(certs.CA)
		if err != nil {
			return nil, err
		}
		roots = pool
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		p, err := startProc(logPath, cleanEnv("BACKSTOP_SECRET_KEY="+sealKey, "BACKSTOP_BOOTSTRAP_TOKEN="+adminToken),
			bin, append([]string{"--listen", addr, "--database-url", dbURL}, tlsArgs...)...)
		if err != nil {
			return nil, err
		}
		d := &Daemon{Proc: p, Addr: addr, Roots: roots}
		if certs != nil {
			d.CAFile = certs.CA
		}
		err = d.waitReady(ctx, time.Minute)
		if err == nil {
			return d, nil
		}
		d.Kill()
		b, _ := os.ReadFile(logPath)
		if attempt < 3 && strings.Contains(string(b), "address already in use") {
			continue
		}
		return nil, fmt.Errorf("backstopd: %w (log %s)", err, logPath)
	}
}

func (d *Daemon) waitReady(ctx context.Context, limit time.Duration) error {
	c := d.HTTPClient(2 * time.Second)
	defer c.CloseIdleConnections()
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		if d.Exited() {
			return errors.New("exited before it was ready")
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.URL()+"/readyz", nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := testkit.Sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("not ready after %v", limit)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Agent is backstop-agent of one node, run in the node's network
// namespace and a private mount namespace of its own.
type Agent struct {
	Bin     string
	Name    string
	NS      string
	DataDir string
	LogPath string
	Proc    *Proc
}

// NewAgent prepares an agent for node nd with its data directory under
// dir (created).
func NewAgent(bin, name string, nd *Node, dir string) (*Agent, error) {
	a := &Agent{Bin: bin, Name: name, NS: nd.NS, DataDir: filepath.Join(dir, name), LogPath: filepath.Join(dir, name+".log")}
	if err := os.MkdirAll(a.DataDir, 0o700); err != nil {
		return nil, err
	}
	return a, nil
}

// GuardLog is the path of the agent's fence guard's log.
func (a *Agent) GuardLog() string { return filepath.Join(a.DataDir, "guard.log") }

// Start starts the agent with the control plane's URLs (comma-separated)
// and, on its first start, its enrollment token. The process is the agent
// itself (ip netns exec and unshare exec it), so that signals sent to
// Proc reach it; the fence guard it spawns logs to GuardLog.
func (a *Agent) Start(servers, token string) error {
	args := []string{"netns", "exec", a.NS, "unshare", "--mount", "--propagation", "private", "--",
		a.Bin, "--server", servers, "--data-dir", a.DataDir, "--log-format", "json", "--metrics-listen", "off",
		"--guard-log", a.GuardLog()}
	if token != "" {
		args = append(args, "--enroll-token", token)
	}
	p, err := startProc(a.LogPath, cleanEnv(), "ip", args...)
	if err != nil {
		return fmt.Errorf("agent %s: %w", a.Name, err)
	}
	a.Proc = p
	return nil
}

// StartLocal starts the agent as a plain process of this host, without
// namespaces (the demo's mode without root), with extra environment
// variables, which its services inherit.
func (a *Agent) StartLocal(servers, token string, env ...string) error {
	args := []string{"--server", servers, "--data-dir", a.DataDir, "--log-format", "json", "--metrics-listen", "off",
		"--guard-log", a.GuardLog()}
	if token != "" {
		args = append(args, "--enroll-token", token)
	}
	p, err := startProc(a.LogPath, cleanEnv(env...), a.Bin, args...)
	if err != nil {
		return fmt.Errorf("agent %s: %w", a.Name, err)
	}
	a.Proc = p
	return nil
}

// NewLocalAgent prepares an agent run without namespaces (StartLocal).
func NewLocalAgent(bin, name, dir string) (*Agent, error) {
	return NewAgent(bin, name, &Node{}, dir)
}

// Kill SIGKILLs the agent (by PID).
func (a *Agent) Kill() { a.Proc.Kill() }
