package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backstop-ha/backstop/openapi/client"
)

// apiClient speaks to the control plane through the generated client. It
// knows several backstopd URLs (replicas behind no load balancer): it
// keeps using the one that answered last and moves to the next on a
// connection error or a 5xx.
type apiClient struct {
	log     *slog.Logger
	urls    []string
	clients []*client.ClientWithResponses
	cur     atomic.Int64
	// credMu guards cred.
	credMu sync.RWMutex
	cred   string
}

func newAPIClient(urls []string, doerFor func(server string) (client.HttpRequestDoer, error), version string, log *slog.Logger) (*apiClient, error) {
	if len(urls) == 0 {
		return nil, errors.New("no control plane URL")
	}
	a := &apiClient{log: log, urls: urls}
	ua := "backstop-agent/" + version
	for _, u := range urls {
		doer, err := doerFor(u)
		if err != nil {
			return nil, err
		}
		c, err := client.NewClientWithResponses(u, client.WithHTTPClient(doer),
			client.WithRequestEditorFn(func(ctx context.Context, req *http.Request) error {
				req.Header.Set("User-Agent", ua)
				if cred := a.credential(); cred != "" {
					req.Header.Set("Authorization", "Bearer "+cred)
				}
				return nil
			}))
		if err != nil {
			return nil, fmt.Errorf("server %s: %w", u, err)
		}
		a.clients = append(a.clients, c)
	}
	return a, nil
}

func (a *apiClient) setCredential(c string) {
	a.credMu.Lock()
	a.cred = c
	a.credMu.Unlock()
}

func (a *apiClient) credential() string {
	a.credMu.RLock()
	defer a.credMu.RUnlock()
	return a.cred
}

// server returns the URL in use.
func (a *apiClient) server() string { return a.urls[a.cur.Load()%int64(len(a.urls))] }

// response is what every generated *XResponse has.
type response interface {
	StatusCode() int
}

// answer is what every generated response offers: its status, media type
// and body.
type answer interface {
	StatusCode() int
	ContentType() string
	GetBody() []byte
}

// unexpected is the statusError of an answer that is not the expected
// one, with its problem whatever status the contract declares for it.
func unexpected(resp answer) *statusError {
	return &statusError{Status: resp.StatusCode(), Problem: client.ProblemOf(resp.ContentType(), resp.GetBody())}
}

// statusError is an answer that is not the expected one.
type statusError struct {
	Status  int
	Problem *client.Problem
}

func (e *statusError) Error() string {
	if e.Problem != nil {
		d := ""
		if e.Problem.Detail != nil {
			d = ": " + *e.Problem.Detail
		}
		return fmt.Sprintf("HTTP %d %s%s", e.Status, e.Problem.Title, d)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

// call runs fn against the server in use, then against the others in
// turn while the answer is a transport error or a 5xx, each try bounded
// by perTry. It returns the first other answer, whatever its status (the
// caller judges it), or the last error.
func call[R response](ctx context.Context, a *apiClient, perTry time.Duration, fn func(context.Context, *client.ClientWithResponses) (R, error)) (R, error) {
	var zero R
	n := int64(len(a.clients))
	start := a.cur.Load()
	var last error
	for i := int64(0); i < n; i++ {
		idx := (start + i) % n
		tctx, cancel := context.WithTimeout(ctx, perTry)
		r, err := fn(tctx, a.clients[idx])
		cancel()
		if err == nil && r.StatusCode() < 500 {
			if idx != start && a.cur.CompareAndSwap(start, idx) {
				a.log.Warn("switched control plane server", keyEvent, eventServerSwitched,
					keyServer, a.urls[idx], "previous", a.urls[start%n], keyErr, fmt.Sprint(last))
			}
			return r, nil
		}
		if err == nil {
			err = fmt.Errorf("%s: HTTP %d", a.urls[idx], r.StatusCode())
		} else {
			err = fmt.Errorf("%s: %w", a.urls[idx], err)
		}
		last = err
		if ctx.Err() != nil {
			return zero, ctx.Err()
		}
	}
	return zero, last
}
