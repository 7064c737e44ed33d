package kit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"time"

	"github.com/backstop-ha/backstop"
)

// The check-only kinds: tcp, http, smtp and command. They have nothing to
// bring in or out of service, so Start, Stop and Fence do nothing and
// return nil at once; Check probes, within ctx's deadline (probeTimeout
// when ctx has none).

func init() {
	kinds[backstop.KindTCP] = newTCP
	kinds[backstop.KindHTTP] = newHTTP
	kinds[backstop.KindSMTP] = newSMTP
	kinds[backstop.KindCommand] = newCommand
}

// probeTimeout bounds a check whose context has no deadline.
const probeTimeout = 10 * time.Second

// checkOnly provides the no-op Start, Stop and Fence of probe kinds.
type checkOnly struct{}

// Start does nothing: a probe has nothing to start.
func (checkOnly) Start(context.Context) error { return nil }

// Stop does nothing: a probe has nothing to stop.
func (checkOnly) Stop(context.Context) error { return nil }

// Fence does nothing: a probe has nothing to fence.
func (checkOnly) Fence() error { return nil }

// withProbeDeadline gives ctx a deadline if it has none.
func withProbeDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, probeTimeout)
}

func hostPort(p params) (string, error) {
	host, err := p.str("host", true)
	if err != nil {
		return "", err
	}
	port, err := p.integer("port", 0, 1, 65535)
	if err != nil {
		return "", err
	}
	if port == 0 {
		return "", p.errorf("port", "required")
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// tcpKit connects to host:port: kind "tcp". Both checks are the connect.
type tcpKit struct {
	checkOnly
	addr string
}

func newTCP(r backstop.Resource, env Env) (Instance, error) {
	addr, err := hostPort(params{r})
	if err != nil {
		return nil, err
	}
	return &tcpKit{addr: addr}, nil
}

// Check connects to the address and closes the connection.
func (k *tcpKit) Check(ctx context.Context, deep bool) error {
	ctx, cancel := withProbeDeadline(ctx)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", k.addr)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", k.addr, err)
	}
	c.Close()
	return nil
}

// httpKit GETs a URL: kind "http". Both checks are the GET.
type httpKit struct {
	checkOnly
	url    string
	expect int
	client *http.Client
}

func newHTTP(r backstop.Resource, env Env) (Instance, error) {
	p := params{r}
	u, err := p.str("url", true)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.URL.Host == "" {
		return nil, p.errorf("url", "must be an absolute http:// or https:// URL")
	}
	expect, err := p.integer("expect_status", http.StatusOK, 100, 599)
	if err != nil {
		return nil, err
	}
	return &httpKit{
		url:    u,
		expect: expect,
		client: &http.Client{
			Transport: &http.Transport{
				// A fresh connection per check, straight to the
				// service: no proxy from the environment, no reused
				// connection that would hide a dead listener.
				Proxy:             nil,
				DisableKeepAlives: true,
				TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
				ForceAttemptHTTP2: false,
			},
			// Redirects are not followed, so that expect_status can be
			// a 3xx and a redirect to elsewhere is not what is checked.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Check GETs the URL and compares the status with expect_status.
func (k *httpKit) Check(ctx context.Context, deep bool) error {
	ctx, cancel := withProbeDeadline(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return fmt.Errorf("http GET %s: %w", k.url, err)
	}
	req.Header.Set("User-Agent", "backstop-probe")
	resp, err := k.client.Do(req)
	if err != nil {
		return fmt.Errorf("http GET %s: %w", k.url, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != k.expect {
		return fmt.Errorf("http GET %s: status %d, want %d", k.url, resp.StatusCode, k.expect)
	}
	return nil
}

// smtpKit talks SMTP to host:port: kind "smtp". The quick check reads the
// 220 greeting; the deep check goes on with EHLO (250), NOOP (250) and
// QUIT (221), a full exchange that exercises the server beyond its
// listener.
type smtpKit struct {
	checkOnly
	addr string
}

func newSMTP(r backstop.Resource, env Env) (Instance, error) {
	addr, err := hostPort(params{r})
	if err != nil {
		return nil, err
	}
	return &smtpKit{addr: addr}, nil
}

// Check reads the greeting (quick) or runs the whole exchange (deep).
func (k *smtpKit) Check(ctx context.Context, deep bool) error {
	ctx, cancel := withProbeDeadline(ctx)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", k.addr)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", k.addr, err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) }) // cancellation too
	defer stop()
	tc := textproto.NewConn(c)
	step := func(cmd string, want int) error {
		if cmd != "" {
			if err := tc.PrintfLine("%s", cmd); err != nil {
				return fmt.Errorf("smtp %s: send %s: %w", k.addr, cmd, err)
			}
		}
		code, msg, err := tc.ReadResponse(want)
		if err != nil {
			what := "greeting"
			if cmd != "" {
				what = "reply to " + cmd
			}
			var perr *textproto.Error
			if errors.As(err, &perr) {
				return fmt.Errorf("smtp %s: %s: %d %s, want %d", k.addr, what, code, msg, want)
			}
			return fmt.Errorf("smtp %s: %s: %w", k.addr, what, err)
		}
		return nil
	}
	if err := step("", 220); err != nil {
		return err
	}
	if !deep {
		tc.PrintfLine("QUIT") // courtesy; its reply is not awaited
		return nil
	}
	if err := step("EHLO "+ehloName(), 250); err != nil {
		return err
	}
	if err := step("NOOP", 250); err != nil {
		return err
	}
	return step("QUIT", 221)
}

// ehloName is this node's host name for EHLO.
func ehloName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// commandKit runs a shell command: kind "command". Exit 0 is healthy. Both
// checks run it; what it left in its process group is killed after it
// exits, and the whole group when ctx ends first.
type commandKit struct {
	checkOnly
	script string
	tmpDir string
}

func newCommand(r backstop.Resource, env Env) (Instance, error) {
	script, err := params{r}.str("check", true)
	if err != nil {
		return nil, err
	}
	return &commandKit{script: script, tmpDir: env.StateDir}, nil
}

// Check runs the command with /bin/sh -c.
func (k *commandKit) Check(ctx context.Context, deep bool) error {
	ctx, cancel := withProbeDeadline(ctx)
	defer cancel()
	began := time.Now()
	res, err := runCommand(ctx, shell(k.script), k.tmpDir, true)
	switch {
	case err != nil && !res.timedOut:
		return fmt.Errorf("command %q: %w", k.script, err)
	case res.timedOut:
		return fmt.Errorf("command %q: killed after %v: %w", k.script, time.Since(began).Round(time.Millisecond), ctx.Err())
	case res.code != 0:
		msg := fmt.Sprintf("command %q: exit %d", k.script, res.code)
		if out := lastLines(res.output, 3); out != "" {
			msg += ": " + out
		}
		return errors.New(msg)
	}
	return nil
}
