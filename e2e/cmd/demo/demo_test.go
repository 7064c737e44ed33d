//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backstop-ha/backstop/e2e/internal/nslab"
	"github.com/backstop-ha/backstop/e2e/testkit"
	"github.com/backstop-ha/backstop/pki"
)

// The demo as a user runs it: the built program, its printed one-liner
// typed into a shell, Ctrl-C (SIGINT). Each mode checks that the demo
// starts, that a failover follows the printed crash command (seen in the
// demo's report and, independently, through the API or the service), and
// that Ctrl-C leaves nothing behind: no namespace, no process that names
// the demo's data directory or its PostgreSQL, no data directory.

// demoRun is one running demo program.
type demoRun struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu    sync.Mutex
	lines []string
	more  chan struct{} // signalled on every new line
	done  chan struct{}
}

func startDemo(t *testing.T, bins map[string]string, args ...string) *demoRun {
	t.Helper()
	args = append([]string{"--backstopd", bins["backstopd"], "--agent", bins["backstop-agent"], "--tcpecho", bins["tcpecho"]}, args...)
	cmd := exec.Command(bins["demo"], args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &demoRun{t: t, cmd: cmd, stdin: stdin, more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			d.mu.Unlock()
			select {
			case d.more <- struct{}{}:
			default:
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-d.done:
			case <-time.After(time.Minute):
				_ = cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", d.output())
		}
	})
	return d
}

func (d *demoRun) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// await waits for a line matching re (after line from) and returns its
// submatches and the index of the next line.
func (d *demoRun) await(re *regexp.Regexp, from int, limit time.Duration) ([]string, int) {
	d.t.Helper()
	deadline := time.After(limit)
	for {
		d.mu.Lock()
		for i := from; i < len(d.lines); i++ {
			if m := re.FindStringSubmatch(d.lines[i]); m != nil {
				d.mu.Unlock()
				return m, i + 1
			}
		}
		d.mu.Unlock()
		select {
		case <-d.more:
		case <-d.done:
			// The reader may still be handing over the last lines: let
			// it, then look once more and give up.
			_ = testkit.Sleep(context.Background(), 100*time.Millisecond)
			d.mu.Lock()
			for i := from; i < len(d.lines); i++ {
				if m := re.FindStringSubmatch(d.lines[i]); m != nil {
					d.mu.Unlock()
					return m, i + 1
				}
			}
			d.mu.Unlock()
			d.t.Fatalf("the demo exited before printing a line matching %q", re)
		case <-deadline:
			d.t.Fatalf("no line matching %q within %s", re, limit)
		}
	}
}

// interrupt sends Ctrl-C and waits for the demo to end.
func (d *demoRun) interrupt() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(2 * time.Minute):
		d.t.Fatal("the demo did not exit within 2 minutes of Ctrl-C")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		d.t.Errorf("the demo exited with %d after Ctrl-C", code)
	}
}

// processesNaming returns the processes whose command line contains any
// of subs.
func processesNaming(subs ...string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ") + " "
		for _, s := range subs {
			if s != "" && strings.Contains(cl, s) {
				out = append(out, e.Name()+": "+cl)
				break
			}
		}
	}
	return out
}

var (
	buildOnce sync.Once
	builtBins map[string]string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildAll builds the demo and the programs it runs, once per test binary.
func buildAll(t *testing.T) map[string]string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("needs the go tool to build the demo: %v", err)
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "demo-test-bin-")
		if buildErr != nil {
			return
		}
		pkgs := map[string]string{"demo": ".", "backstopd": "../../../cmd/backstopd", "backstop-agent": "../../../cmd/backstop-agent", "tcpecho": "../../internal/tcpecho"}
		builtBins = map[string]string{}
		for name, pkg := range pkgs {
			builtBins[name] = filepath.Join(buildDir, name)
			if out, err := exec.Command("go", "build", "-o", builtBins[name], pkg).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBins
}

var (
	reData    = regexp.MustCompile(`Data: +(\S+) \(PostgreSQL on port (\d+)\)`)
	reAPI     = regexp.MustCompile(`API: +(\S+)/v1 `)
	reToken   = regexp.MustCompile(`Admin token: +(\S+)`)
	reConsole = regexp.MustCompile(`Console: +(https?://\S+/ui)$`)
	reCAFile  = regexp.MustCompile(`BACKSTOP_CA_FILE=(\S+)`)
)

func TestDemoNamespacesFailover(t *testing.T) {
	if err := nslab.RequireRoot(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("the namespace demo %v", err)
	}
	if _, err := os.Stat(nslab.PostfixBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("needs Postfix: %v", err)
	}
	d := startDemo(t, buildAll(t))

	m, next := d.await(reConsole, 0, 5*time.Minute)
	console := m[1]
	m, _ = d.await(reAPI, 0, time.Second)
	base := m[1]
	m, _ = d.await(reToken, 0, time.Second)
	token := m[1]
	m, _ = d.await(reData, 0, time.Second)
	dataDir, pgPort := m[1], m[2]
	m, next = d.await(regexp.MustCompile(`crash mx1: +sudo sh -c '(.+)'$`), next, time.Second)
	crash := m[1]
	nsName := regexp.MustCompile(`ip netns pids (\S+)`).FindStringSubmatch(crash)[1]
	topo := strings.TrimSuffix(nsName[3:], "-1") // bdn<ID>-1 -> <ID>
	if !strings.HasPrefix(console, base) {
		t.Errorf("console %s is not on the API's server %s", console, base)
	}
	_, next = d.await(regexp.MustCompile(`postfix: in service on mx1`), next, time.Minute)

	// The user types the printed one-liner.
	if out, err := exec.Command("sh", "-c", crash).CombinedOutput(); err != nil {
		t.Fatalf("the printed crash command failed: %v\n%s", err, out)
	}
	_, after := d.await(regexp.MustCompile(`postfix: in service on mx2`), next, 2*time.Minute)
	d.await(regexp.MustCompile(`incident: failover \(node mx1 is down\), in service again after \d+ ms`), after, time.Minute)
	d.await(regexp.MustCompile(`crash mx2: +sudo sh -c`), after, time.Minute)
	// Mail keeps flowing: messages the demo's client sends through the
	// virtual IP land in the mailbox after the failover (on the volume,
	// which now is mx2's). Whether the client saw a refusal at all
	// depends on how fast the move was, so that line is not required.
	maildir := filepath.Join(dataDir, "mail", "vol", "vmail", "alice", "new")
	count := func() int { ents, _ := os.ReadDir(maildir); return len(ents) }
	before := count()
	testkit.Eventually(t, time.Minute, "mail delivered through mx2", func() bool { return count() > before+2 })

	// Independently of the demo's report: the API says so (over HTTPS
	// with the demo's throwaway CA when it prints one).
	api := nslab.NewClient(base, token)
	if m := reCAFile.FindStringSubmatch(d.output()); m != nil {
		pool, err := pki.CertPool(m[1])
		if err != nil {
			t.Fatal(err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		api.HTTP = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	}
	var clusters struct {
		Items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"items"`
	}
	if _, err := api.Do(context.Background(), "GET", "/v1/clusters", nil, 200, &clusters); err != nil || len(clusters.Items) != 1 {
		t.Fatalf("clusters: %v %+v", err, clusters)
	}
	var incidents struct {
		Items []struct {
			Kind  string `json:"kind"`
			State string `json:"state"`
		} `json:"items"`
	}
	if _, err := api.Do(context.Background(), "GET", "/v1/clusters/"+clusters.Items[0].ID+"/incidents", nil, 200, &incidents); err != nil ||
		len(incidents.Items) != 1 || incidents.Items[0].Kind != "failover" || incidents.Items[0].State != "resolved" {
		t.Errorf("incidents: %v %+v", err, incidents)
	}

	// Enter brings mx1 back.
	if _, err := io.WriteString(d.stdin, "\n"); err != nil {
		t.Fatal(err)
	}
	d.await(regexp.MustCompile(`mx1 rebooted \(empty\) and its agent started`), after, time.Minute)

	d.interrupt()
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), topo) {
		t.Errorf("namespaces left after Ctrl-C:\n%s", out)
	}
	if ps := processesNaming(dataDir, "-p "+pgPort+" ", topo); len(ps) > 0 {
		t.Errorf("processes left after Ctrl-C:\n%s", strings.Join(ps, "\n"))
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data directory %s left after Ctrl-C (%v)", dataDir, err)
	}
}

// Without root the demo runs on loopback: the printed one-liner kills the
// active node's agent, its fence guard stops the service at the end of
// the lease, and the service answers from mx2.
func TestDemoLoopbackFailover(t *testing.T) {
	if _, err := exec.LookPath("initdb"); err != nil {
		if _, err2 := os.Stat("/usr/lib/postgresql"); err2 != nil && os.Getenv("CI") == "" {
			t.Skipf("needs PostgreSQL's server binaries: %v", err)
		}
	}
	d := startDemo(t, buildAll(t), "--loopback")
	m, next := d.await(reData, 0, 5*time.Minute)
	dataDir, pgPort := m[1], m[2]
	m, _ = d.await(regexp.MustCompile(`Service: +(127\.0\.0\.1:\d+) answers`), 0, time.Second)
	svc := m[1]
	d.await(regexp.MustCompile(`As root \(sudo make demo\) it builds the nodes`), 0, time.Second)
	m, next = d.await(regexp.MustCompile(`crash mx1: +(kill -9 \d+)`), next, time.Second)
	crash := m[1]
	_, next = d.await(regexp.MustCompile(`echo: in service on mx1`), next, time.Minute)
	if g := nslab.Greeting(svc, 2*time.Second); g != "hello from mx1" {
		t.Errorf("the service greets %q before the crash, want hello from mx1", g)
	}
	if out, err := exec.Command("sh", "-c", crash).CombinedOutput(); err != nil {
		t.Fatalf("the printed crash command failed: %v\n%s", err, out)
	}
	_, after := d.await(regexp.MustCompile(`echo: in service on mx2`), next, 2*time.Minute)
	d.await(regexp.MustCompile(`incident: failover`), after, time.Minute)
	if g := nslab.Greeting(svc, 2*time.Second); g != "hello from mx2" {
		t.Errorf("the service greets %q after the failover, want hello from mx2", g)
	}
	if _, err := io.WriteString(d.stdin, "\n"); err != nil {
		t.Fatal(err)
	}
	d.await(regexp.MustCompile(`mx1's agent started again`), after, time.Minute)

	d.interrupt()
	if ps := processesNaming(dataDir, "-p "+pgPort+" "); len(ps) > 0 {
		t.Errorf("processes left after Ctrl-C:\n%s", strings.Join(ps, "\n"))
	}
	if g := nslab.Greeting(svc, time.Second); g != "" {
		t.Errorf("the service still answers %q after Ctrl-C", g)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data directory %s left after Ctrl-C (%v)", dataDir, err)
	}
}
