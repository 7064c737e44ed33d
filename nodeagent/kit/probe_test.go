package kit

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/e2e/testkit"
)

func probe(t *testing.T, kind string, params map[string]any) Instance {
	t.Helper()
	inst, err := New(backstop.Resource{Name: "p", Kind: kind, Params: params}, Env{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if inst.Start(ctx) != nil || inst.Stop(ctx) != nil || inst.Fence() != nil {
		t.Fatal("a probe's Start, Stop or Fence failed")
	}
	return inst
}

func hostPortParams(addr string) map[string]any {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return map[string]any{"host": host, "port": float64(p)}
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestTCPProbe(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx := t.Context()
	if err := probe(t, backstop.KindTCP, hostPortParams(l.Addr().String())).Check(ctx, false); err != nil {
		t.Errorf("open port: %v", err)
	}
	addr := closedPort(t)
	if err := probe(t, backstop.KindTCP, hostPortParams(addr)).Check(ctx, true); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: %v", err)
	}
	if _, err := New(backstop.Resource{Name: "p", Kind: backstop.KindTCP, Params: map[string]any{"host": "x", "port": 70000.0}}, Env{}); err == nil {
		t.Error("port 70000 accepted")
	}
}

func TestHTTPProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/slow":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}
	}))
	defer srv.Close()
	ctx := t.Context()
	check := func(path string, params map[string]any) error {
		p := map[string]any{"url": srv.URL + path}
		for k, v := range params {
			p[k] = v
		}
		c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		return probe(t, backstop.KindHTTP, p).Check(c, false)
	}
	if err := check("/ok", nil); err != nil {
		t.Errorf("/ok: %v", err)
	}
	if err := check("/down", nil); err == nil || !strings.Contains(err.Error(), "status 503, want 200") {
		t.Errorf("/down: %v", err)
	}
	if err := check("/down", map[string]any{"expect_status": 503.0}); err != nil {
		t.Errorf("/down expecting 503: %v", err)
	}
	if err := check("/moved", map[string]any{"expect_status": 302.0}); err != nil {
		t.Errorf("/moved expecting 302 (redirects not followed): %v", err)
	}
	began := time.Now()
	if err := check("/slow", nil); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("/slow: %v", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("/slow: check took %v with a 300 ms deadline", d)
	}
	if _, err := New(backstop.Resource{Name: "p", Kind: backstop.KindHTTP, Params: map[string]any{"url": "ftp://x/"}}, Env{}); err == nil {
		t.Error("ftp URL accepted")
	}
}

// smtpServer is a tiny SMTP responder: a greeting, then one reply per
// command, looked up by verb in replies (default "250 OK"); QUIT closes.
func smtpServer(t *testing.T, greeting string, replies map[string]string) (addr string, seen func() []string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var cmds []string
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if greeting == "" {
					bufio.NewReader(c).ReadString('\n') // silent: never greets
					return
				}
				c.Write([]byte(greeting))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					mu.Lock()
					cmds = append(cmds, line)
					mu.Unlock()
					verb, _, _ := strings.Cut(line, " ")
					reply, ok := replies[verb]
					if !ok {
						reply = "250 OK\r\n"
					}
					c.Write([]byte(reply))
					if verb == "QUIT" {
						return
					}
				}
			})
		}
	})
	return l.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), cmds...)
	}
}

func TestSMTPProbe(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	good := map[string]string{"EHLO": "250-mail.test.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n", "QUIT": "221 2.0.0 Bye\r\n"}
	addr, seen := smtpServer(t, "220-mail.test.example ESMTP\r\n220 ready\r\n", good)
	p := probe(t, backstop.KindSMTP, hostPortParams(addr))
	if err := p.Check(ctx, false); err != nil {
		t.Errorf("quick: %v", err)
	}
	if err := p.Check(ctx, true); err != nil {
		t.Errorf("deep: %v", err)
	}
	if err := testkit.Poll(t.Context(), 0, "4 requests at the server", func() (bool, error) { return len(seen()) == 4, nil }); err != nil {
		t.Fatalf("server saw %q", seen())
	}
	// The two checks used two connections, whose commands the server
	// may record interleaved (the quick check's QUIT can be read after
	// the deep check began): check each conversation, not the merge.
	s := seen()
	ehlo, noop, quits := -1, -1, 0
	for i, c := range s {
		switch {
		case strings.HasPrefix(c, "EHLO "):
			ehlo = i
		case c == "NOOP":
			noop = i
		case c == "QUIT":
			quits++
		}
	}
	if quits != 2 || ehlo < 0 || noop < ehlo || s[len(s)-1] != "QUIT" {
		t.Errorf("server saw %q, want QUIT (quick) and EHLO, NOOP, QUIT (deep)", s)
	}

	addr, _ = smtpServer(t, "554 5.3.2 not now\r\n", nil)
	if err := probe(t, backstop.KindSMTP, hostPortParams(addr)).Check(ctx, false); err == nil || !strings.Contains(err.Error(), "greeting: 554 5.3.2 not now, want 220") {
		t.Errorf("554 greeting: %v", err)
	}

	addr, _ = smtpServer(t, "220 ready\r\n", map[string]string{"NOOP": "421 4.3.0 shutting down\r\n"})
	p = probe(t, backstop.KindSMTP, hostPortParams(addr))
	if err := p.Check(ctx, false); err != nil {
		t.Errorf("quick with a broken NOOP: %v", err)
	}
	if err := p.Check(ctx, true); err == nil || !strings.Contains(err.Error(), "reply to NOOP: 421") {
		t.Errorf("deep with a broken NOOP: %v", err)
	}

	addr, _ = smtpServer(t, "", nil)
	c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := probe(t, backstop.KindSMTP, hostPortParams(addr)).Check(c, false); err == nil {
		t.Error("silent server passed")
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("silent server: check took %v with a 200 ms deadline", d)
	}
	if err := probe(t, backstop.KindSMTP, hostPortParams(closedPort(t))).Check(ctx, false); err == nil {
		t.Error("closed port passed")
	}
}

func TestCommandProbe(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	if err := probe(t, backstop.KindCommand, map[string]any{"check": "test 1 -eq 1"}).Check(ctx, false); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	err := probe(t, backstop.KindCommand, map[string]any{"check": "echo looking; echo broken >&2; exit 3"}).Check(ctx, true)
	if err == nil || !strings.Contains(err.Error(), "exit 3: looking | broken") {
		t.Errorf("exit 3: %v", err)
	}
	c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := probe(t, backstop.KindCommand, map[string]any{"check": "sleep 30"}).Check(c, false); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging command: %v", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("hanging command: check took %v with a 200 ms deadline", d)
	}
	// What a check leaves behind in its group is killed.
	pidFile := filepath.Join(t.TempDir(), "bg.pid")
	if err := probe(t, backstop.KindCommand, map[string]any{"check": "sleep 30 & echo $! > " + pidFile}).Check(ctx, false); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := testkit.Poll(t.Context(), 0, "the check's background process gone", func() (bool, error) { return !alive(pid, 0), nil }); err != nil {
		t.Errorf("background process %d of the check still alive", pid)
		syscallKill(pid)
	}
}
